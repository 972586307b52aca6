"""Every shell block of the README, README.ko.md and docs/ works as printed.

A block's info string says what it is: `bash run` is run as printed on the demo (in a fresh copy of the
tree, after the set-up's demo), `bash parse` needs the real corpus, a GPU, a cluster or hours and is checked
for parsing only (tests/docs_shim.py stands in for python, accelerate, sbatch and hf), `bash parse FILE` is
a file's content written to FILE for the blocks after it, and `bash setup` is the README's set-up."""

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import docs_shim
import pytest

from common.synthetic import DEMO_DIR

from helpers import constant_baselines

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "README.ko.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```", re.M | re.S)
SHELLS = {"bash", "sh", "shell", "console"}
KINDS = {"run", "parse", "setup"}


def shell_blocks(page: Path) -> list[tuple[str, list[str], str]]:
    """(kind, the words after it, text) of each shell block of a page, in order."""
    found = []
    for lang, info, text in FENCE.findall(page.read_text()):
        if lang in SHELLS:
            kind, *rest = info.split() or [""]
            found.append((kind, rest, text))
    return found


def environment(bin_dir: Path) -> dict:
    return os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def bash(text: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=cwd, env=env, capture_output=True, text=True)


def named_paths(text: str) -> list[str]:
    """The relative paths a block names as arguments (folders and files it reads or writes)."""
    words = shlex.split(text.replace("\\\n", " "), comments=True)
    return [w for w in words if re.fullmatch(r"[\w.-]+(/[\w.-]+)+/?", w, re.A) and not w.startswith(".venv/")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shell_block_says_whether_it_is_run_or_parsed(page):
    assert page.is_file(), f"{page.name} is linked from the README"
    for kind, _, text in shell_blocks(page):
        assert kind in KINDS, f"{page.name}: a shell block marked {kind!r} instead of run / parse: {text[:80]!r}"


def test_the_korean_quickstart_runs_the_same_commands_as_the_readme():
    english, korean = (shell_blocks(ROOT / name) for name in ("README.md", "README.ko.md"))
    assert [b for b in korean if b[0] != "parse"] == [b for b in english if b[0] != "parse"]
    assert {b[2] for b in korean if b[0] == "parse"} <= {b[2] for b in english if b[0] == "parse"}
    # the demo's output as the English shows it, and a line for each page of the English list
    pages = [(ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "README.ko.md")]
    outputs = [re.findall(r"```text\n(.*?)```", page, re.S) for page in pages]
    assert outputs[1] == outputs[0] and len(outputs[0]) == 1
    listed = [re.findall(r"^- \[[^]]+\]\((docs/\w+\.md)\)", page, re.M) for page in pages]
    assert listed[1] == listed[0] and len(listed[0]) >= 10


def shimmed_tree(tmp_path: Path) -> tuple[Path, dict]:
    """A folder holding the twelve scripts, `.venv/bin/python` and PATH commands that only check arguments."""
    work, bin_dir = tmp_path / "parse", tmp_path / "bin"
    (work / ".venv" / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    for script in ROOT.glob("*.py"):
        (work / script.name).symlink_to(script)
    (work / ".venv" / "bin" / "python").write_text(docs_shim.PYTHON_SHIM)
    shim = ROOT / "tests" / "docs_shim.py"
    for name in ("accelerate", "sbatch", "hf"):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" "{shim}" {name} "$@"\n')
    for command in [work / ".venv" / "bin" / "python", *bin_dir.iterdir()]:
        command.chmod(0o755)
    return work, environment(bin_dir) | {"DOCS_SHIM_RECORD": str(tmp_path / "commands")}


def parse(text: str, work: Path, env: dict) -> str | None:
    """A parse block run through the shims, its python command lines then checked here: None where all pass,
    else what the first failure printed."""
    record = Path(env["DOCS_SHIM_RECORD"])
    record.unlink(missing_ok=True)
    proc = bash(text, work, env)
    if proc.returncode:
        return proc.stderr[-2000:]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(io.StringIO()):
            docs_shim.check_recorded(record)
    except SystemExit:
        return printed.getvalue()[-2000:]
    return None


def test_every_parse_block_parses(tmp_path):
    work, env = shimmed_tree(tmp_path)
    checked = 0
    for page in PAGES:
        for kind, rest, text in shell_blocks(page):
            if kind == "parse" and rest:
                (work / rest[0]).write_text(text)
            elif kind in ("parse", "setup"):
                if kind == "setup":  # the install and the suite itself are CI's (test_readme.py)
                    text = "\n".join(line.split("&&")[-1] for line in text.splitlines() if "pytest" not in line)
                failed = parse(text, work, env)
                assert failed is None, f"{page.name}:\n{text}\n{failed}"
                if ".venv/bin/python" in text:  # its python commands were recorded, so checked
                    assert docs_shim.recorded(env["DOCS_SHIM_RECORD"]), f"{page.name}: none recorded:\n{text}"
                checked += 1
    assert checked >= 10


def test_the_shims_refuse_a_bad_flag(tmp_path):
    work, env = shimmed_tree(tmp_path)
    for bad, message in [
        (
            ".venv/bin/python multimodal_total_concat.py --dataset 20 --dataset_dir /data/KEMDy20 --num_fold 6",
            "--num_fold 6: choose a fold from 1 to 5",
        ),
        (".venv/bin/python multimodal_total_concat.py --dataset 20 --mixed_precision bf17", "invalid choice: 'bf17'"),
        (".venv/bin/python -m common.report runs --no_such_flag", "unrecognized arguments: --no_such_flag"),
        (".venv/bin/python speech_emotion.py --dataset 20", "not a script of the repository"),
        ("accelerate launch --num_processes two multimodal_total_concat.py --dataset 20", "invalid int value: 'two'"),
        ("sbatch --wrap '.venv/bin/python -m common.report runs --no_such_flag'", "unrecognized arguments"),
    ]:
        failed = parse(bad, work, env)
        assert failed is not None and message in failed, (bad, failed)


# The pages whose `run` blocks continue the README's tour (they use the demo's run); the other pages' run on
# their own, in tests/test_docs_pages.py (another worker).
TOUR_PAGES = [ROOT / "README.md", ROOT / "README.ko.md", ROOT / "docs" / "results.md"]


def fresh_tree(tmp_path: Path) -> tuple[Path, dict]:
    """A copy of the scripts and common/ with `.venv` the environment running the suite, and its environment."""
    work = tmp_path / "tree"
    work.mkdir()
    for script in ROOT.glob("*.py"):
        shutil.copy(script, work)
    shutil.copytree(ROOT / "common", work / "common", ignore=shutil.ignore_patterns("__pycache__"))
    # the environment running the suite, under the name the README uses (the demo prints its own python)
    (work / ".venv").symlink_to(Path(sys.executable).parents[1])
    return work, environment(tmp_path)


def run_blocks(pages: list[Path], work: Path, env: dict) -> set[str]:
    """Every `run` block of `pages` in order, once each: it exits 0 and leaves the paths it names."""
    done = set()
    for page in pages:
        for kind, _, text in shell_blocks(page):
            if kind != "run" or text in done:
                continue
            done.add(text)
            proc = bash(text, work, env)
            assert proc.returncode == 0, f"{page.name}:\n{text}\n{proc.stderr[-3000:]}"
            for path in named_paths(text):
                assert (work / path).exists(), f"{page.name}: {path} named by {text!r} does not exist afterwards"
    return done


def test_the_readme_tour_and_every_run_block_work_as_printed(tmp_path):
    """The set-up's demo in a fresh copy of the tree, then every `run` block of the tour's pages in order (the
    README's tour first): each exits 0 and leaves the paths it names; the demo ends by printing the tour's
    commands."""
    work, env = fresh_tree(tmp_path)
    (setup,) = [text for kind, _, text in shell_blocks(ROOT / "README.md") if kind == "setup"]
    demo = setup.splitlines()[0].split("&&")[-1].strip()
    proc = bash(demo, work, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = [line.strip() for line in proc.stdout.splitlines()[-3:]]
    tour = [line for kind, _, text in shell_blocks(ROOT / "README.md") if kind == "run" for line in text.splitlines()]
    assert printed == [tour[0], tour[1], tour[3]], "the README's tour is what the demo prints"
    excerpt = re.search(r"## Set-up\n.*?```text\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[1]
    assert [line.strip() for line in excerpt.splitlines()[-4:]] == [
        line.strip() for line in proc.stdout.splitlines()[-4:]
    ]
    demo_learns(work)
    assert len(run_blocks(TOUR_PAGES, work, env)) >= 4
    demo_is_worse_without_its_transcript_and_in_babble(work)
    # As the tour says: the demo's single fold shows its value and which folds are missing, text_total five folds'
    results = (work / "runs" / "demo" / "report" / "results.md").read_text(encoding="utf-8")
    assert re.search(r"^\| multimodal_total_concat .*\| 1/5 \(missing 2, 3, 4, 5\) \| \d\.\d{4} \|", results, re.M)
    assert re.search(r"^\| text_total .*\| 5/5 \| \d\.\d{4} ± \d\.\d{4} \|", results, re.M)


def demo_learns(work: Path) -> None:
    """The demo's model beats the best constant predictors by clear margins (test_learning.py's rule for its
    text and speech models): the README's claim that the demo shows the pipeline learning."""
    best_f1, best_top1 = constant_baselines(work / DEMO_DIR.relative_to(ROOT) / "KEMDy20")
    run = work / "runs" / "demo" / "multimodal_total_concat" / "KEMDy20" / "fold1"
    m = json.loads((run / "metrics.json").read_text())["test"]
    seen = {k: m[k] for k in ("micro_f1", "top1_accuracy", "valence_ccc", "arousal_ccc")}
    assert m["micro_f1"] > best_f1 + 0.15 and m["top1_accuracy"] > best_top1 + 0.15, seen
    assert m["valence_ccc"] > 0.4 and m["arousal_ccc"] > 0.35, seen


def demo_is_worse_without_its_transcript_and_in_babble(work: Path) -> None:
    """docs/results.md's robustness run on the demo's model: without its transcript, and in 0-dB babble, the model
    is clearly worse than on the clean inputs (each interval below zero), the page's claim."""
    from common.robustness import read_table

    metric, rows = read_table(work / "runs" / "demo" / "multimodal_total_concat" / "KEMDy20" / "fold1")
    by = {row["condition"]: row for row in rows}
    for condition in ("no transcript", "babble 0 dB"):
        assert by[condition][f"{metric}_high"] < 0, by[condition]


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    return {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"(?m)^#+ (.*)$", page.read_text())
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_reaches_a_file_and_heading_of_the_repository(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        linked = (page.parent / file) if file else page
        assert linked.exists(), f"{page.name}: {target} names no file"
        if anchor:
            assert anchor in heading_anchors(linked), f"{page.name}: {target} names no heading of {linked.name}"


def test_the_layout_page_names_every_module_of_the_package_and_the_tools():
    page = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^((?:common|tools)/\w+\.py) ", page, re.M))
    modules = {str(p.relative_to(ROOT)) for d in ("common", "tools") for p in (ROOT / d).glob("*.py")}
    modules -= {"common/__init__.py", "tools/__init__.py"}
    assert listed == modules, (sorted(modules - listed), sorted(listed - modules))


def test_nothing_in_the_package_imports_the_tools():
    for module in (ROOT / "common").glob("*.py"):
        assert not re.search(r"^\s*(from|import) tools\b", module.read_text(encoding="utf-8"), re.M), module.name
