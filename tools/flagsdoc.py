"""docs/flags.md's tables of flags, made from the declarations in common/settings.py.

    python -m tools.flagsdoc           # rewrite the tables in docs/flags.md
    python -m tools.flagsdoc --check   # exit 1 if the page does not hold what the settings make

The suite runs the check, so a flag added, removed or changed in common/settings.py fails the tests until the
page is made again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.grid import FUSIONS
from common.settings import (
    COMPUTED,
    DEFAULTS,
    DEMO,
    FLAGS,
    ORIGINAL,
    ORIGINALS,
    TOPICS,
    flags_text,
    help_of,
)

PAGE = Path(__file__).resolve().parents[1] / "docs" / "flags.md"
BEGIN = "<!-- the tables below are made by `python -m tools.flagsdoc` from common/settings.py: edit them there -->"
END = "<!-- end of the tables made by tools.flagsdoc -->"
TITLES = {
    ORIGINALS: "The original's flags, with its names and defaults",
    COMPUTED: "What the original computed: `--original` sets each of these to the original's value",
    "data": "Data: the corpus, its folds and the inputs",
    "fusion": "Fusion: how text and speech are joined",
    "model": "Model",
    "training": "Training",
    "output": "Output: the run directory and what is printed",
}


def _default(name: str) -> str:
    meta, value = FLAGS[name], DEFAULTS[name]
    if meta["shown"]:
        return meta["shown"]
    if meta["kind"] != "value":
        return "on" if value else "off"
    return "none" if value is None else f"`{value}`"


def _meaning(name: str) -> str:
    doc = FLAGS[name]["doc"]
    if doc is None:
        return help_of(name).replace("%%", "%")
    return doc.format(demo=flags_text(DEMO), original=flags_text(ORIGINAL))


def _flag(name: str) -> str:
    return f"`--{name}`, `--no-{name}`" if FLAGS[name]["kind"] == "toggle" else f"`--{name}`"


def tables() -> str:
    """The tables, one per help section, in --help's order."""
    parts = []
    for topic in TOPICS:
        rows = [(_flag(name), _default(name), _meaning(name)) for name, meta in FLAGS.items() if meta["topic"] == topic]
        if topic == "fusion":  # the cell's fusion: a flag of the three multimodal_<task>.py scripts only
            fusion = "`multimodal_<task>.py` only: the fusion of the registry that joins text and speech: "
            fusion += ", ".join(f"`{name}`" for name in FUSIONS) + " (see [Fusions](fusions.md))"
            rows.insert(0, ("`--fusion`", "`concat`", fusion))
        lines = [f"**{TITLES[topic]}**", "", "| flag | default | meaning |", "|---|---|---|"]
        lines += [f"| {flag} | {default} | {meaning} |" for flag, default, meaning in rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def page_with_tables(page: str) -> str:
    """The page's text with the tables between the markers made again."""
    if BEGIN not in page or END not in page:
        raise SystemExit(f"{PAGE}: the markers of the tables are missing ({BEGIN} ... {END})")
    head, rest = page.split(BEGIN, 1)
    return f"{head}{BEGIN}\n\n{tables()}\n\n{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> None:
    from common.cli import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="python -m tools.flagsdoc", description=__doc__.splitlines()[0], formatter_class=HelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only check the page; exit 1 if it differs")
    args = parser.parse_args(argv)
    page = PAGE.read_text(encoding="utf-8")
    made = page_with_tables(page)
    if args.check:
        if made != page:
            print(f"{PAGE}: its tables of flags differ from common/settings.py; run python -m tools.flagsdoc")
            sys.exit(1)
        return
    PAGE.write_text(made, encoding="utf-8")
    print(f"wrote the tables of flags in {PAGE}")


if __name__ == "__main__":
    main()
