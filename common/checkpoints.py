"""Per-epoch checkpoints of a run, and resuming from them.

While training, a run directory holds `checkpoints/epoch<k>/`: accelerate's state (model, optimizer,
scheduler, every process's RNG states) plus trainer.json (epochs done, their metrics, the best score and
epoch), for the chosen epoch its test outputs, and checksums.json (every file's size and CRC-32). A
checkpoint is written under a temporary name and renamed when complete; only the latest and the chosen
epoch's are kept, and none once the run finishes (unless --keep_checkpoint). Resuming checks the latest
checkpoint's files against their checksums and falls back to the one before it if they differ or do not
load. Frozen encoders never change: a checkpoint leaves their weights out (at the real sizes 0.4-0.8 GB an
epoch), and resuming takes them from the pretrained encoders again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from pickle import UnpicklingError

import numpy as np
from safetensors import SafetensorError

from common import rundir, schema
from common.cache import DamagedCache, seal, verify
from common.errors import UserError, writing
from common.model import present_name
from common.runfiles import EPOCH

# trainer.json: the epochs done with their numbers, and the epoch chosen so far.
TRAINER = schema.Fields({"epoch": schema.count(1), "history": [EPOCH], "chosen": schema.count(1)})


class DamagedCheckpoint(UserError):
    """A checkpoint whose files changed since they were written, or do not load."""


class Checkpoints:
    """`run_dir/checkpoints/epoch<k>/`, written through the accelerator by every process; `frozen`: the
    prefixes of the model's weights that are not saved (its frozen encoders')."""

    def __init__(self, run_dir: Path, accelerator, frozen: tuple[str, ...] = ()):
        self.folder, self.accelerator, self.frozen = run_dir / "checkpoints", accelerator, frozen

    def _is_frozen(self, key: str) -> bool:
        return bool(self.frozen) and _name(key).startswith(self.frozen)

    def _drop_frozen(self, models, weights: list[dict], output_dir) -> None:
        for state in weights:
            for key in [k for k in state if self._is_frozen(k)]:
                del state[key]

    def _check_stored(self, models, input_dir) -> None:
        """Every weight that is not frozen must be in the checkpoint: loading is not strict about the rest."""
        from safetensors import safe_open

        path = Path(input_dir) / "model.safetensors"
        try:
            with safe_open(str(path), "pt") as f:
                stored = {_name(k) for k in f.keys()}
        except (OSError, SafetensorError) as err:
            raise DamagedCheckpoint(f"{path}: unreadable ({err})") from None
        needed = (_name(k) for k in models[0].state_dict() if not self._is_frozen(k))
        missing = sorted(k for k in needed if k not in stored)
        if missing:
            raise DamagedCheckpoint(f"{path}: lacks {', '.join(missing[:3])}")

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
                    rundir.own(self.folder.parent, self.folder.name)
                    shutil.rmtree(tmp, ignore_errors=True)
                    tmp.mkdir(parents=True)
                acc.wait_for_everyone()
                hook = acc.register_save_state_pre_hook(self._drop_frozen)
                try:
                    acc.save_state(str(tmp))
                finally:
                    hook.remove()
                acc.wait_for_everyone()  # every process has written its RNG states before the rename
                if acc.is_main_process:
                    (tmp / "trainer.json").write_text(json.dumps(state, indent=1))
                    if test_outputs is not None:
                        np.savez(tmp / "test_outputs.npz", **test_outputs)
                    seal(tmp)
                    shutil.rmtree(self.path(epoch), ignore_errors=True)
                    os.rename(tmp, self.path(epoch))
            except BaseException:  # a full disk, Ctrl-C: never a half-written checkpoint taking the space
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        if acc.is_main_process:
            keep = {epoch, state["chosen"]}
            for old in self.epochs():
                if old not in keep:
                    shutil.rmtree(self.path(old), ignore_errors=True)
        acc.wait_for_everyone()

    def load(self, epoch: int) -> dict:
        """Restore model, optimizer, scheduler and RNG states of `epoch`; return its trainer state. Raises
        DamagedCheckpoint if its files changed since they were written or do not load."""
        path = self.path(epoch)
        try:
            verify(path, adopt=False)
            state = schema.load(path / "trainer.json", TRAINER)
            if self.frozen:
                hook = self.accelerator.register_load_state_pre_hook(self._check_stored)
                try:
                    self.accelerator.load_state(str(path), strict=False)
                finally:
                    hook.remove()
            else:
                self.accelerator.load_state(str(path))
        except DamagedCheckpoint:
            raise
        except DamagedCache as err:
            raise DamagedCheckpoint(f"{path}: {err}") from None
        except schema.DamagedFile as err:
            raise DamagedCheckpoint(f"{err.path}: {err.problem}") from None
        except (
            OSError,
            ValueError,
            KeyError,
            RuntimeError,
            EOFError,
            SafetensorError,
            UnpicklingError,
        ) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise DamagedCheckpoint(f"{path}: {type(err).__name__}: {first}") from None
        return state

    def resume(self, log=print) -> dict | None:
        """Restore the latest whole checkpoint and return its trainer state (None without any); a damaged
        one is skipped for the one before it (the run then trains again from there, to the same numbers)."""
        damaged = []
        for epoch in reversed(self.epochs()):
            try:
                return self.load(epoch)
            except DamagedCheckpoint as err:
                log(f"the checkpoint of epoch {epoch} is damaged ({err}); trying the one before it")
                damaged.append(f"epoch {epoch}: {err}")
        if damaged:
            raise UserError(
                f"{self.folder}: no whole checkpoint is left ({'; '.join(damaged)}); the run must start over: "
                "add --overwrite"
            )
        return None

    def test_outputs(self, epoch: int) -> dict[str, np.ndarray]:
        path = self.path(epoch) / "test_outputs.npz"
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as err:
            raise UserError(f"{path}: damaged ({err}); the run must start over: add --overwrite") from None

    def prune(self, keep: int) -> None:
        """Remove every checkpoint but `keep`'s (and any half-written one)."""
        if self.accelerator.is_main_process and self.folder.is_dir():
            for path in self.folder.iterdir():
                if path != self.path(keep):
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()

    def remove(self) -> None:
        if self.accelerator.is_main_process:
            shutil.rmtree(self.folder, ignore_errors=True)


def _name(key: str) -> str:
    """A weight's name in the model itself (DDP's wrapper prefixes `module.`), as the model has it now."""
    return present_name(key.removeprefix("module."))
