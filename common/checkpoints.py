"""Per-epoch checkpoints of a run, and resuming from them.

While training, a run directory holds `checkpoints/epoch<k>/`: accelerate's state (model, optimizer,
scheduler, every process's RNG states) plus trainer.json (epochs done, their metrics, the best score and
epoch) and, for the chosen epoch, its test outputs. A checkpoint is written under a temporary name and
renamed when complete; only the latest and the chosen epoch's are kept, and none once the run finishes
(unless --keep_checkpoint).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from common.errors import writing


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
        last = f"; epoch {epoch - 1}'s checkpoint is kept: then continue with --resume" if epoch > 1 else ""
        with writing(f"the checkpoint of epoch {epoch}", self.folder, last):
            try:
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
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)  # never a half-written checkpoint taking the space
                raise
        if acc.is_main_process:
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
