"""The run directory's life cycle: refusing to overwrite a run, per-epoch checkpoints, and resuming.

A run directory is finished when it holds metrics.json (written last). While training, it holds
`checkpoints/epoch<k>/`: accelerate's state (model, optimizer, scheduler, every process's RNG states)
plus trainer.json (epochs done, their metrics, the best score and epoch) and, for the chosen epoch,
its test outputs. A checkpoint is written under a temporary name and renamed when complete; only the
latest and the chosen epoch's are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from common.errors import UserError

# Arguments that do not change the numbers a run produces: they may differ when resuming.
RESUMABLE_CHANGES = {
    "resume",
    "overwrite",
    "num_workers",
    "gpus",
    "output_dir",
    "save_model",
    "cache",
    "cache_dir",
    "keep_checkpoint",
    "report_to",
    "ckpt",
}
# Settings added after a run may have started, with the value that computes what the code computed
# before they existed: a run resumed after an update compares against these.
EARLIER = {
    "labels": "checked",
    "text_inputs": "masked",
    "speech_inputs": "extractor",
    "emotion_output": "sigmoid",
    "va_targets": "standardized",
    "va_loss": "mean",
    "dropout_on": "fused",
    "num_labels": 7,
    "regress": 1,
    "original": False,
}


def decide(run_dir: Path, args) -> str:
    """What to do with `run_dir`: "fresh", "resume" or "finished"; refuses to overwrite without a flag."""
    finished = (run_dir / "metrics.json").is_file()
    started = (run_dir / "config.json").is_file() or (run_dir / "checkpoints").is_dir()
    if args.overwrite:
        return "fresh"
    if args.resume:
        return "finished" if finished else "resume" if started else "fresh"
    if finished:
        raise UserError(
            f"{run_dir}: holds a finished run (metrics.json); add --overwrite to replace it, "
            "or choose another --output_dir"
        )
    if started:
        raise UserError(
            f"{run_dir}: holds an unfinished run; add --resume to continue it, or --overwrite to start over"
        )
    return "fresh"


def check_writable(run_dir: Path) -> None:
    """Fail before training, not after it, when the run directory cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"--output_dir {run_dir}: cannot write there ({err.strerror or err})") from None


def check_same_settings(config_path: Path, args) -> None:
    """A resumed run must continue with the settings it started with."""
    saved = EARLIER | json.loads(config_path.read_text(encoding="utf-8"))["args"]
    now = vars(args)
    changed = sorted(k for k in saved.keys() | now.keys() if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if changed:
        detail = ", ".join(f"--{k} {saved.get(k)} -> {now.get(k)}" for k in changed[:4])
        raise UserError(
            f"{config_path}: --resume with other settings than the run started with ({detail}); "
            "use the same flags, or --overwrite to start over"
        )


class Checkpoints:
    """`run_dir/checkpoints/epoch<k>/`, written through the accelerator by every process."""

    def __init__(self, run_dir: Path, accelerator):
        self.folder, self.accelerator = run_dir / "checkpoints", accelerator

    def epochs(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        found = (re.fullmatch(r"epoch(\d+)", p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch{epoch}"

    def save(self, epoch: int, state: dict, test_outputs: dict | None) -> None:
        acc, tmp = self.accelerator, self.folder / f".epoch{epoch}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()  # every process has written its RNG states before the rename
        if acc.is_main_process:
            (tmp / "trainer.json").write_text(json.dumps(state, indent=1))
            if test_outputs is not None:
                np.savez(tmp / "test_outputs.npz", **test_outputs)
            shutil.rmtree(self.path(epoch), ignore_errors=True)
            os.rename(tmp, self.path(epoch))
            keep = {epoch, state["chosen"]}
            for old in self.epochs():
                if old not in keep:
                    shutil.rmtree(self.path(old), ignore_errors=True)
        acc.wait_for_everyone()

    def load(self, epoch: int) -> dict:
        """Restore model, optimizer, scheduler and RNG states of `epoch`; return its trainer state."""
        self.accelerator.load_state(str(self.path(epoch)))
        return json.loads((self.path(epoch) / "trainer.json").read_text())

    def test_outputs(self, epoch: int) -> dict[str, np.ndarray]:
        with np.load(self.path(epoch) / "test_outputs.npz") as data:
            return {k: data[k] for k in data.files}

    def prune(self, keep: int) -> None:
        """Remove every checkpoint but `keep`'s."""
        if self.accelerator.is_main_process:
            for epoch in self.epochs():
                if epoch != keep:
                    shutil.rmtree(self.path(epoch), ignore_errors=True)

    def remove(self) -> None:
        if self.accelerator.is_main_process:
            shutil.rmtree(self.folder, ignore_errors=True)
