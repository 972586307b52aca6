"""Command lines shared by the end-to-end tests."""

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_command(script, corpus, tiny_models, out, *flags, dataset="20", epochs=2):
    """`python <script>.py` on `corpus` with the tiny encoders and settings that learn in a few steps, reading
    the first second of each clip (about half the speech encoder's work; `flags` may say otherwise)."""
    return [
        sys.executable,
        str(ROOT / f"{script}.py"),
        "--dataset",
        dataset,
        "--dataset_dir",
        str(corpus),
        "--epochs",
        str(epochs),
        "--batch_size",
        "8",
        "--lr",
        "1e-3",
        "--max_text_len",
        "32",
        "--max_seq_len",
        "1",
        "--text_model",
        str(tiny_models / "text"),
        "--speech_model",
        str(tiny_models / "speech"),
        "--output_dir",
        str(out),
        *map(str, flags),
    ]


def everything(folder) -> dict:
    """Every file, folder and link under `folder`, hidden ones included, with the files' bytes and where the
    links point: what a command that must change nothing there is compared by."""
    import os

    found = {}
    for p in sorted(Path(folder).rglob("*")):
        key = str(p.relative_to(folder))
        found[key] = os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None
    return found


def mark_run(folder, script, settings=None, encoders=()):
    """Mark a run directory written by hand as the project's, as a run's own marker would (of the fold its
    metrics.json names)."""
    import json

    from common.rundir import Owner

    entries = ["metrics.json", "predictions.csv"]
    fold = json.loads((Path(folder) / "metrics.json").read_text())["fold"]
    owner = Owner(Path(folder), "run", script, settings or {}, {"listing": "corpus"}, False, entries, fold=fold)
    owner.encoders = list(encoders)
    owner.write()


def ctrl_c_at_first_checkpoint(cmd, out, cwd, env, again_after=()) -> tuple[int, str]:
    """Run `cmd`, press Ctrl-C once `out` holds its first checkpoint, and again after each of `again_after`
    seconds; (exit code, stderr)."""
    import signal
    import subprocess
    import time

    # A shell's background job ignores Ctrl-C, and its children inherit that: give the run its own.
    victim = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    # an epoch takes a fraction of a second: epoch1/ is replaced by epoch2/ before a poll may see it
    while not any((Path(out) / "checkpoints").glob("epoch*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGINT)
    for gap in again_after:
        time.sleep(gap)
        victim.send_signal(signal.SIGINT)
    _, stderr = victim.communicate(timeout=120)
    return victim.returncode, stderr


def launch_two_processes() -> list[str]:
    """`accelerate launch` of 2 processes (gloo on CPU) on a free port: tests running side by side never meet."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    return launch + [
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
    ]


def train_in_process(script, argv, cwd=None):
    """A script's training run in this process, as its command line would start it (arguments parsed and
    checked, one-line errors): (exit code, what it printed, its one-line error). Much faster than a process
    of its own, which spends about 3 s importing torch and transformers."""
    import contextlib
    import io
    import os

    from common.cli import parse_script
    from common.errors import UserError
    from common.train import train

    printed, where = io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd or where)
        with contextlib.redirect_stdout(printed):
            train(parse_script(script, [str(a) for a in argv]))
    except UserError as err:
        return 2, printed.getvalue(), f"error: {err}"
    finally:
        os.chdir(where)
    return 0, printed.getvalue(), ""


def constant_baselines(corpus) -> tuple[float, float]:
    """Best micro-F1 of any constant label set, and best top-1 accuracy of any constant class, on fold 1 of a
    KEMDy20 corpus."""
    import itertools

    import numpy as np
    from sklearn.metrics import f1_score

    from common.kemdy import read_corpus

    utts = read_corpus("20", corpus).utterances
    y = np.array([u.labels for u in utts[: int(len(utts) / 5)]])
    best_f1 = max(
        f1_score(y, np.tile(np.array(s), (len(y), 1)), average="micro", zero_division=0.0)
        for s in itertools.product((0, 1), repeat=7)
    )
    return best_f1, y.mean(axis=0).max()


def interrupted_after_epoch_1(run) -> None:
    """`run()` stopped by Ctrl-C right after its first epoch's checkpoint is written: the interrupted run that a
    resume test then continues."""
    import pytest

    from common.checkpoints import Checkpoints
    from common.errors import Interrupted

    save = Checkpoints.save

    def killed_after_epoch_1(self, epoch, state, test_outputs):
        save(self, epoch, state, test_outputs)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Checkpoints, "save", killed_after_epoch_1)
        with pytest.raises(Interrupted, match="interrupted after epoch 1"):
            run()
