"""The run directory's life cycle: where a run goes, whether a command may start, resume or replace it,
the lock that keeps two runs out of one directory, and the files a run writes there.

A run directory holds a run when it holds config.json (written when training starts), checkpoints/
or metrics.json (written last: the run is finished). A `--num_fold all` folder holds fold1/ .. fold5/
and the summary of the set. Nothing here removes a file that a run does not write.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import platform
import re
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from common import atomic
from common.errors import UserError
from common.folds import NUM_FOLDS, session_order
from common.grid import DIMENSIONS, EMOTIONS

# Everything a run writes into its directory, and what a --num_fold all run writes beside its folds.
RUN_FILES = ("config.json", "metrics.json", "predictions.csv", "confusion.csv", "model", "checkpoints", "tensorboard")
SET_FILES = ("summary.json", "summary.md")
LOCK = ".lock"
# Besides common.atomic's temporaries: checkpoints being written, and the writability probe.
_RUN_TEMPORARY = re.compile(r"^\.(epoch\d+\.tmp|write-test-\d+)$")


def _temporary(name: str) -> bool:
    return bool(atomic.TEMPORARY.match(name) or _RUN_TEMPORARY.match(name))


# Arguments that do not change the numbers a run produces: they may differ when resuming, and runs
# that differ only in them belong to one fold set.
NOT_RESULTS = {
    "resume",
    "overwrite",
    "num_workers",
    "gpus",
    "output_dir",
    "dataset_dir",  # the corpus itself is compared by its fingerprint
    "save_model",
    "cache",
    "cache_dir",
    "keep_checkpoint",
    "report_to",
    "ckpt",
    "demo",
    "original",  # a preset: the flags it sets are compared one by one
    "folds",  # which folds a command runs: each fold directory is compared on its own
}
# Settings added after a run may have started, with the value that computes what the code computed
# before they existed: a run resumed after an update compares against these.
EARLIER = {
    "labels": "checked",
    "duplicate_rows": "all",
    "text_inputs": "masked",
    "speech_inputs": "extractor",
    "emotion_output": "sigmoid",
    "va_targets": "standardized",
    "va_loss": "mean",
    "dropout_on": "fused",
    "num_labels": 7,
    "regress": 1,
    "class_weight": "none",
    "layers": "last",
}


def holds_run(folder: Path) -> bool:
    return (
        (folder / "config.json").is_file() or (folder / "metrics.json").is_file() or (folder / "checkpoints").is_dir()
    )


def set_folds(folder: Path) -> list[int]:
    """The folds k whose fold<k>/ under `folder` holds a run: `folder` is a --num_fold all folder."""
    return [k for k in range(1, NUM_FOLDS + 1) if holds_run(folder / f"fold{k}")]


def _foreign(folder: Path) -> list[str]:
    """Entries of `folder` that no run wrote."""
    if not folder.is_dir():
        return []
    ours = set(RUN_FILES) | {LOCK}
    return sorted(p.name for p in folder.iterdir() if p.name not in ours and not _temporary(p.name))


def run_dirs(default, output_dir: str | None, folds: list[int], log=print) -> dict[int, Path]:
    """Each fold's run directory: --output_dir (its fold<k>/ for all folds), else default(k).

    A single fold aimed at a --num_fold all folder goes to its fold<k>/; all folds aimed at the directory
    of a single run are refused: either would mix one run's files into another's.
    """
    if not output_dir:
        return {k: Path(default(k)) for k in folds}
    out = Path(output_dir)
    if len(folds) > 1:
        if holds_run(out):
            raise UserError(f"--output_dir {out}: holds a single fold's run; give --num_fold all a folder of its own")
        return {k: out / f"fold{k}" for k in folds}
    (k,) = folds
    if not holds_run(out) and set_folds(out):
        log(f"--output_dir {out} holds the folds of a --num_fold all run: fold {k} goes to {out / f'fold{k}'}")
        return {k: out / f"fold{k}"}
    return {k: out}


def run_mode(run_dir: Path, args) -> str:
    """What to do with `run_dir`: "fresh", "resume" or "finished"; refuses to replace a run without a flag
    and to write a run among files that are not a run's."""
    finished = (run_dir / "metrics.json").is_file()
    started = holds_run(run_dir)
    foreign = _foreign(run_dir)
    if foreign and not started:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise UserError(
            f"--output_dir {run_dir}: holds files that are not a run's ({shown}); give a new or empty folder"
        )
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


def read_metrics(run_dir: Path) -> dict:
    """A finished run's metrics.json."""
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def clear_run(run_dir: Path) -> None:
    """Remove what a run wrote into `run_dir` (for --overwrite); every other file stays."""
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    if run_dir.is_dir():
        for path in run_dir.iterdir():
            if _temporary(path.name):
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def remove_set_summary(folder: Path, log=print) -> None:
    """Remove the summary of a --num_fold all folder (rewritten when its five folds are run together);
    files of those names that a run did not write stay."""
    found = [folder / name for name in SET_FILES if (folder / name).is_file() and _is_set_summary(folder / name)]
    for path in found:
        path.unlink()
    if found:
        log(f"{folder}: removed the fold set's summary (its folds change); a --num_fold all run writes it again")


def _is_set_summary(path: Path) -> bool:
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".md":
        return "test metrics over folds" in text.split("\n", 1)[0]
    try:
        return {"script", "folds", "settings", "test"} <= set(json.loads(text))
    except (ValueError, TypeError):
        return False


def check_writable(run_dir: Path) -> None:
    """Fail before training, not after it, when the run directory cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"--output_dir {run_dir}: cannot write there ({err.strerror or err})") from None


def settings(args: dict) -> dict:
    """The arguments that change a run's numbers (settings added later at their earlier value)."""
    return {k: v for k, v in (EARLIER | args).items() if k not in NOT_RESULTS and k != "num_fold"}


def differences(a: dict, b: dict) -> list[str]:
    """`--flag old -> new` for every result-changing argument that differs."""
    a, b = settings(a), settings(b)
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return [f"--{k} {a.get(k)} -> {b.get(k)}" if k != "corpus" else "another corpus" for k in changed]


def check_same_run(config_path: Path, args, corpus_fingerprint: str) -> None:
    """A run continued or counted again must have the settings and the corpus it started with."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        saved, data = config["args"], config.get("data", {})
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{config_path}: unreadable ({err}); start the run over with --overwrite") from None
    changed = differences(saved, vars(args))
    if changed:
        raise UserError(
            f"{config_path}: --resume with other settings than the run started with ({', '.join(changed[:4])}); "
            "use the same flags, or --overwrite to start over"
        )
    if data.get("fingerprint", corpus_fingerprint) != corpus_fingerprint:
        raise UserError(
            f"{config_path}: the corpus under --dataset_dir {args.dataset_dir} is not the one this run started "
            "on (its utterances, labels or transcripts changed); use that corpus, or --overwrite to start over"
        )


def check_same_encoders(config_path: Path, frozen: dict) -> None:
    """A run continued with frozen encoders takes their weights from the pretrained ones again (checkpoints
    leave them out): those must be the weights it started with."""
    models = json.loads(config_path.read_text(encoding="utf-8")).get("models", {})
    for modality, reference in frozen.items():
        started = models.get(modality, {}).get("frozen", reference)["weights"]
        if started != reference["weights"]:
            raise UserError(
                f"{config_path}: the frozen {modality} encoder {reference['source']} holds other weights than "
                "when this run started; use those weights, or --overwrite to start over"
            )


class RunLock:
    """An exclusive lock on a run directory for the run's lifetime (a locked `.lock` file).

    The operating system releases it when its process dies; a `.lock` left with a holder's details
    then tells that it was taken over.
    """

    def __init__(self, folder: Path):
        self.folder, self.path, self.fd, self.created = Path(folder), Path(folder) / LOCK, None, False

    def acquire(self, log=print) -> RunLock:
        self.created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _describe(os.read(fd, 4096))
                    os.close(fd)
                    raise UserError(
                        f"{self.folder}: in use by another run ({holder}); wait for it to end, or choose another "
                        "--output_dir"
                    ) from None
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:  # released and removed while we waited for it
                    same = False
                if same:
                    break
                os.close(fd)
        except OSError as err:
            raise UserError(f"--output_dir {self.folder}: cannot write there ({err.strerror or err})") from None
        left = os.read(fd, 4096)
        if left.strip():
            log(f"{self.folder}: took over the lock of a run that is no longer running ({_describe(left)})")
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing releases the lock
        self.fd = None
        if self.created:
            try:
                self.folder.rmdir()  # only if nothing was written: a refused run leaves no trace
            except OSError:
                pass


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        return f"process {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, UnicodeDecodeError):
        return "unknown process"


@contextmanager
def locked(folders, accelerator, log=print):
    """Hold the locks of `folders` (main process) for the block; every process raises if one is taken."""
    locks, error = [], None
    if accelerator.is_main_process:
        try:
            for folder in folders:
                locks.append(RunLock(folder).acquire(log))
        except UserError as err:
            error = str(err)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error = broadcast_object_list([error])[0]
    try:
        if error:
            raise UserError(error)
        yield
    finally:
        for lock in reversed(locks):
            lock.release()


def size(folder: Path) -> int:
    """Bytes of the files under `folder` (its lock aside)."""
    files = (p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p.name != LOCK)
    return sum(p.stat().st_size for p in files)


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def write_predictions(path: Path, utterances, out: dict) -> None:
    """predictions.csv: one row per test utterance in corpus order, true labels and scores beside the outputs."""
    import numpy as np

    order = np.argsort(out["index"], kind="stable")
    header = ["segment_id", *[f"true_{e}" for e in EMOTIONS]]
    if "probs" in out:
        header += [f"prob_{e}" for e in EMOTIONS]
    header += [f"true_{d}" for d in DIMENSIONS]
    if "va_pred" in out:
        header += [f"pred_{d}" for d in DIMENSIONS]
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(header)
    for k in order:
        u = utterances[int(out["index"][k])]
        row = [u.segment_id, *u.labels]
        if "probs" in out:
            row += [f"{p:.6f}" for p in out["probs"][k]]
        row += [u.valence, u.arousal]
        if "va_pred" in out:
            row += [f"{v:.6f}" for v in out["va_pred"][k]]
        writer.writerow(row)
    atomic.write_text(path, f.getvalue())


def write_confusion(path: Path, out: dict) -> None:
    """confusion.csv: test utterances counted by true emotion (rows; a multi-label utterance in each of its
    rows) and top-1 predicted emotion (columns)."""
    from common.metrics import confusion

    counts = confusion(out["labels"], out["probs"])
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(["true", *[f"top1_{e}" for e in EMOTIONS]])
    writer.writerows([emotion, *map(int, row)] for emotion, row in zip(EMOTIONS, counts, strict=True))
    atomic.write_text(path, f.getvalue())


def _describe_model(name: str, encoder) -> dict:
    return {
        "name": name,
        "path": str(Path(name).resolve()) if Path(name).is_dir() else None,
        "model_type": encoder.config.model_type,
        "class": type(encoder).__name__,
        "hidden_size": encoder.config.hidden_size,
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "trained_parameters": sum(p.numel() for p in encoder.parameters() if p.requires_grad),
    }


def provenance(cell, args, corpus, fingerprint: str, accelerator, split, model, frozen: dict | None = None) -> dict:
    """config.json: every argument, the command, the models, the data and its split, and the environment.
    `split` is (fold, train indices, valid indices); `frozen`: each frozen encoder's source and weights'
    fingerprint."""
    import accelerate
    import numpy as np
    import torch
    import transformers

    fold, train, valid = split
    return {
        "script": cell.name,
        "cell": asdict(cell),
        "args": vars(args),
        "command": " ".join(sys.argv),
        "models": {
            modality: _describe_model(name, encoder)
            | ({"frozen": frozen[modality]} if modality in (frozen or {}) else {})
            for modality, name, encoder in (
                ("text", args.text_model, model.text_encoder),
                ("speech", args.speech_model, model.speech_encoder),
            )
            if encoder is not None
        },
        "data": {
            "dataset_dir": str(Path(args.dataset_dir).resolve()),
            "annotation_files": len(corpus.annotation_files),
            "rows": corpus.rows,
            "used": len(corpus.utterances),
            "excluded": len(corpus.excluded),
            "exclusions": [asdict(e) for e in corpus.excluded],
            "split": {"train": len(train), "valid": len(valid), "test": len(fold.test)},
            "test_sessions": session_order([corpus.utterances[i].session for i in fold.test]),
            "va_mean": model.va_mean.tolist(),
            "va_std": model.va_std.tolist(),
            "fingerprint": fingerprint,
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
            "numpy": np.__version__,
            "device": str(accelerator.device),
            "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision,
        },
    }


def record_size(run_dir: Path) -> None:
    """The finished run directory's size, in config.json (its `disk_bytes`)."""
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    config["disk_bytes"] = size(run_dir)
    atomic.write_json(run_dir / "config.json", config)


def write_set_summary(folder: Path, results: list[dict], args) -> None:
    """summary.json and summary.md of a --num_fold all run: mean ± std over its folds, with its settings."""
    from common.report import aggregate, fold_summary

    stats = aggregate(results)
    first = results[0]
    summary = {
        "script": first["script"],
        "dataset": first["dataset"],
        "split": first.get("split", "contiguous"),
        "folds": [r["fold"] for r in results],
        "settings": settings(vars(args)),
        "test": {k: {"mean": st.mean, "std": st.std, "n_folds": st.n} for k, st in stats.items()},
    }
    atomic.write_json(folder / "summary.json", summary)
    atomic.write_text(folder / "summary.md", fold_summary(results) + "\n")
