"""The twelve cells give, to the last digit, the numbers they gave before the encoders handed over sequences and
the fusions became modules of their own: the code of that commit, taken from the repository's history, and
today's code train each cell on the same corpus, in one process each, and their metrics.json files are compared.
Each cell runs under one of the settings whose computation the change touched (the defaults, --original, frozen
encoders, every layer's weighted mix, both), so each setting is met by two or three cells."""

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from common.grid import SCRIPTS

from helpers import ROOT, tiny_command

BEFORE_FUSIONS = "95bd4ac9cd3f53a832b01511207833fbf7670017"  # the last commit with pooled vectors only
SETTINGS = [
    [],
    ["--original"],
    ["--freeze", "both"],
    ["--layers", "weighted"],
    ["--layers", "weighted", "--freeze", "both"],
]

# One process trains the cells listed in a JSON file, each by running its script as `python <script>.py` would.
DRIVER = """
import json, runpy, sys
tree, listing = sys.argv[1], sys.argv[2]
sys.path.insert(0, tree)
for script, argv in json.load(open(listing)):
    sys.argv = [script, *argv]
    try:
        runpy.run_path(f"{tree}/{script}.py", run_name="__main__")
    except SystemExit as exit:
        if exit.code:
            raise
"""


def _history_tree(commit, folder):
    """The scripts and package of `commit`, read from the repository's history (nothing written there)."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", commit], capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:
        pytest.skip(f"the repository's history is not here (git ls-tree: {listed.stderr.strip()})")
    paths = ["common", *(p for p in listed.stdout.split() if p.endswith(".py"))]
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, *paths], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def _train_all(tree, cells, work):
    """Run `cells` ([script, argv] pairs) with the code of `tree`, in one process."""
    listing = work / f"{tree.name}.json"
    listing.write_text(json.dumps(cells))
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(tree)}
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tree), str(listing)], cwd=work, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_twelve_cells_give_the_numbers_they_gave_before_fusions_were_modules(corpus20, tiny_models, tmp_path):
    trees = {"before": _history_tree(BEFORE_FUSIONS, tmp_path / "before"), "now": ROOT}
    metrics = {}
    for name, tree in trees.items():
        cells = []
        for i, script in enumerate(SCRIPTS):
            out = tmp_path / "runs" / name / script
            flags = [*SETTINGS[i % len(SETTINGS)], "--quiet", "--num_fold", "2", "--cache_dir", f"cache_{name}"]
            cells.append([script, tiny_command(script, corpus20[0], tiny_models, out, *flags)[2:]])
        _train_all(tree, cells, tmp_path)
        metrics[name] = {s: json.loads((tmp_path / "runs" / name / s / "metrics.json").read_text()) for s in SCRIPTS}
    for script in SCRIPTS:
        then, now = metrics["before"][script], metrics["now"][script]
        assert _as_then(now["test"]) == then["test"] and now["chosen_epoch"] == then["chosen_epoch"], script
        assert [(e["train_loss"], _as_then(e.get("valid"))) for e in now["epochs"]] == [
            (e["train_loss"], e.get("valid")) for e in then["epochs"]
        ], script
        emotions = "classification" in script or "total" in script
        assert set(now["test"]) - set(then["test"]) == (ADDED if emotions else set()), script


# Metrics reported since, beside every number that was there: nothing else may be new.
ADDED = {"top1_weighted_f1"}


def _as_then(split: dict | None) -> dict | None:
    """A split's metrics without those added since."""
    return None if split is None else {k: v for k, v in split.items() if k not in ADDED}
