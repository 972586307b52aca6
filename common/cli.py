"""The command line shared by the twelve scripts: the original's flag names and defaults, plus new ones, all
declared in `common.settings`.

Every script accepts every flag, so one shell loop can pass the same flags to all twelve; a flag that does not
apply to a script (say --speech_model for a text script) is accepted and ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from common import paths
from common.errors import UserError, run_cli
from common.folds import NUM_FOLDS
from common.grid import FUSION_SCRIPTS, FUSIONS, Cell, cell_of
from common.plan import RunPlan
from common.settings import DEFAULTS, DEMO, FLAGS, ORIGINAL, TOPICS, Settings, check, help_of

CORPUS_FLAGS = ("dataset", "dataset_dir", "kemdy19_rows", "labels", "duplicate_rows")  # shared with the audit


class HelpFormatter(argparse.HelpFormatter):
    """Each default said once, in every command's --help: where the help does not say it already. A switch
    (--x, --no-x alone) and a flag without a default say none; a default of 0 is said like any other."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        switch = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
        if "default" in text or switch or action.default in (None, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def add_flag(add, name: str) -> None:
    """One flag of `common.settings` through `add` (an add_argument)."""
    meta, default = FLAGS[name], DEFAULTS[name]
    kwargs = {"default": default, "help": help_of(name)}
    if meta["kind"] == "switch":
        kwargs["action"] = "store_true"
    elif meta["kind"] == "toggle":
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = meta["parse"] or (str if default is None else type(default))
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
    add(f"--{name}", **kwargs)


def corpus_root(flag: str, given: str | None, dataset: str, hint: str = "") -> str:
    """The folder `flag` gives, or ./KEMDy19 / ./KEMDy20 where the original looked. A folder that is not there
    stops the command here, before torch and transformers are loaded (seconds), as a mistaken flag does."""
    if given:
        if not Path(given).is_dir():
            raise UserError(f"{flag} {given}: no such directory")
        return given
    default = Path(f"KEMDy{dataset}")
    if not default.is_dir():
        raise UserError(
            f"{flag} not given and no ./{default} folder here: pass the KEMDy{dataset} root holding annotation/ "
            f"and wav/{hint}"
        )
    return str(default)


def build_parser(cell: Cell, description: str | None = None, chooses_fusion: bool = False) -> argparse.ArgumentParser:
    """The parser of a cell's script, every flag of `common.settings` under its help section; `chooses_fusion`: a
    multimodal_<task>.py script, whose --fusion picks the cell's fusion from the registry (`cell` carries the
    default)."""
    name = f"multimodal_{cell.task}" if chooses_fusion else cell.name
    p = argparse.ArgumentParser(
        prog=f"python {name}.py",
        description=description or f"Train and evaluate {name} on one KEMDy fold.",
        formatter_class=HelpFormatter,
    )
    sections = {topic: p.add_argument_group(topic) for topic in TOPICS}
    if chooses_fusion:
        described = "; ".join(f"{name}: {info.summary} ({info.source})" for name, info in FUSIONS.items())
        sections["fusion"].add_argument(
            "--fusion", choices=list(FUSIONS), default=cell.fusion, help=f"how text and speech are joined: {described}"
        )
    for flag, meta in FLAGS.items():
        add_flag(sections[meta["topic"]].add_argument, flag)
    return p


def parse_args(
    cell: Cell, argv: list[str] | None = None, description: str | None = None, chooses_fusion: bool = False
) -> RunPlan:
    """The plan of a script's command line: its settings as given, presets applied, checked; a bad value raises
    UserError naming the flag. With `chooses_fusion` (a multimodal_<task>.py script) --fusion names the cell's
    fusion."""
    parser = build_parser(cell, description, chooses_fusion)
    given = parser.parse_args(argv)
    presets = {**(DEMO if given.demo else {}), **(ORIGINAL if given.original else {})}
    if given.resume:  # a resumed demo continues its run instead of replacing it
        presets.pop("overwrite", None)
    if presets:
        parser.set_defaults(**presets)
        given = parser.parse_args(argv)
    if chooses_fusion:
        cell = Cell("multimodal", cell.task, given.fusion)
    settings = Settings(**{name: getattr(given, name) for name in FLAGS})
    if settings.text_inputs == "original":  # the original attended to every position: its padding length matters
        settings = dataclasses.replace(settings, pad_to_max_length=True)
    notes = []
    if settings.test_dataset:
        settings, notes = _cross_corpus(settings, argv)
    for name, meta in FLAGS.items():
        if meta["path"]:
            paths.check(f"--{name}", getattr(settings, name))
    check(settings)
    settings = _corpus_roots(settings)  # after the flags' values: a mistaken flag is said first
    folds = tuple(range(1, NUM_FOLDS + 1)) if settings.num_fold == "all" else (settings.num_fold,)
    return RunPlan(cell, settings, folds, tuple(notes))


def _cross_corpus(settings: Settings, argv: list[str] | None) -> tuple[Settings, list[str]]:
    """A cross-corpus run: one run over the whole test corpus, in place of the folds."""
    import sys

    if settings.test_dataset == settings.dataset:
        raise UserError(
            f"--test_dataset {settings.test_dataset}: the corpus it trains on; a cross-corpus run tests on the other "
            "one (19 or 20), a within-corpus run uses --num_fold"
        )
    notes = []
    if any(a.split("=")[0] == "--num_fold" for a in (sys.argv[1:] if argv is None else argv)):
        notes.append(
            f"--num_fold {settings.num_fold}: does not apply to a cross-corpus run (it tests on all of "
            f"KEMDy{settings.test_dataset}); ignored"
        )
    return dataclasses.replace(settings, num_fold=1), notes  # the one run


def _corpus_roots(settings: Settings) -> Settings:
    """The corpus folders given, which must exist, or ./KEMDy19 and ./KEMDy20 (the demo finds its own later)."""
    if settings.demo:
        return settings
    roots = {"dataset_dir": corpus_root("--dataset_dir", settings.dataset_dir, settings.dataset, ", or use --demo")}
    if settings.test_dataset:
        roots["test_dataset_dir"] = corpus_root("--test_dataset_dir", settings.test_dataset_dir, settings.test_dataset)
    return dataclasses.replace(settings, **roots)


def parse_script(script: str, argv: list[str] | None = None) -> RunPlan:
    """The plan of a script's command line: one of the twelve, multimodal_<task> with its --fusion, or bio_<task>."""
    if script in FUSION_SCRIPTS:
        return parse_args(Cell("multimodal", script.split("_")[1], "concat"), argv, chooses_fusion=True)
    return parse_args(cell_of(script), argv)


def main(modality: str, task: str, fusion: str | None = None, argv: list[str] | None = None) -> None:
    """Entry point of the scripts: arguments first (fast, for --help and mistakes), then training. A multimodal
    script without a fusion (multimodal_<task>.py) takes it from --fusion (default: concatenation)."""
    import sys

    chooses = modality == "multimodal" and fusion is None
    cell = Cell(modality, task, "concat" if chooses else fusion)

    def run():
        if sys.platform == "win32":  # the run folders' locks are POSIX file locks (fcntl)
            raise UserError("training runs on Linux or macOS; on Windows, run the scripts under WSL")
        plan = parse_args(cell, argv, sys.modules["__main__"].__doc__, chooses_fusion=chooses)
        from common.train import train  # torch, transformers and accelerate: only once there is work

        for each in plan.per_seed():  # --seeds: one run (or fold set) per seed
            train(each)

    run_cli(run, whole_process=True)
