"""Run directories: which folders are this project's, what a command may do with them, and the files a run
writes there.

A folder is a run directory only if it holds the project's marker, `kemdy_run.json`, and a `--num_fold all`
folder a fold set only if it holds `kemdy_fold_set.json` (or nothing but runs, see `read_set`); runs written
before markers existed are recognised by their config.json (`_legacy_run`). A marker is the first file
written into its folder and lists every entry the project writes there before writing it, so that
`--overwrite` removes exactly those. `claim` is the one place that decides, before anything is written,
whether a command may start, continue or replace the runs it aims at.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import platform
import shutil
import socket
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from common import atomic
from common.errors import UserError, writing
from common.folds import NUM_FOLDS, session_order
from common.grid import DIMENSIONS, EMOTIONS, SCRIPTS, SPEECH_ONLY, TEXT_ONLY, Cell, cell_of

MARKER = "kemdy_run.json"  # a run directory
SET_MARKER = "kemdy_fold_set.json"  # a --num_fold all folder
LOCK = ".kemdy_run.lock"
MARKER_FORMAT = 1
# What a run wrote before markers existed: a run recognised by its config.json owns these names.
LEGACY_RUN_FILES = (
    "config.json",
    "metrics.json",
    "predictions.csv",
    "confusion.csv",
    "model",
    "checkpoints",
    "tensorboard",
)
SUMMARY_FILES = ("summary.json", "summary.md")  # a fold set's, beside its fold<k>/

# Arguments that do not change the numbers a run produces: they may differ when resuming, and runs
# that differ only in them belong to one fold set.
NOT_RESULTS = {
    "resume",
    "overwrite",
    "num_workers",
    "gpus",
    "output_dir",
    "dataset_dir",  # the corpus itself is compared by its fingerprint
    "test_dataset_dir",  # the same for a cross-corpus run's test corpus
    "notes",  # what the command line said when the run started
    "save_model",
    "cache",
    "cache_dir",
    "keep_checkpoint",
    "report_to",
    "quiet",
    "ckpt",
    "demo",
    "original",  # a preset: the flags it sets are compared one by one
    "folds",  # which folds a command runs: each fold directory is compared on its own
    "encoder_tags",  # the names of non-default encoders, for folders: the encoders themselves are compared
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
    "whisper_window": "clip",
    "optimizer": "adamw",
    "test_dataset": None,
}


def settings(args: dict, cell: Cell | None = None) -> dict:
    """The arguments that change a run's numbers (settings added later at their earlier value); for a `cell`,
    without the flags of an encoder it does not have."""
    ignored = NOT_RESULTS | {"num_fold"}
    if cell is not None:
        ignored |= set(() if cell.uses_text else TEXT_ONLY) | set(() if cell.uses_speech else SPEECH_ONLY)
    return {k: v for k, v in (EARLIER | args).items() if k not in ignored}


def differences(a: dict, b: dict, cell: Cell | None = None) -> list[str]:
    """`--flag old -> new` for every result-changing argument that differs (for a `cell`, those it uses)."""
    a, b = settings(a, cell), settings(b, cell)
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return [f"--{k} {a.get(k)} -> {b.get(k)}" if k != "corpus" else "another corpus" for k in changed]


@dataclass
class Owner:
    """What the project wrote into a folder, as its marker says (for a run written before markers existed,
    as its config.json says)."""

    folder: Path
    kind: str  # "run" or "fold_set"
    script: str
    settings: dict  # the arguments that change results
    corpus: dict  # the corpus's fingerprints: "listing" and (runs with markers) "recordings"
    demo: bool
    entries: list[str]  # every file and folder the project has written into `folder`, the marker aside
    frozen: dict = field(default_factory=dict)  # frozen encoders: modality -> source and weights' fingerprint
    cell: dict = field(default_factory=dict)  # modality, task, fusion
    encoders: list[str] = field(default_factory=list)  # names of its encoders that are not the defaults
    legacy: bool = False  # recognised without a marker

    @property
    def marker(self) -> Path:
        return self.folder / (MARKER if self.kind == "run" else SET_MARKER)

    @property
    def where(self) -> Path:
        """The file that says what the folder holds (for messages)."""
        return self.folder / "config.json" if self.legacy and self.kind == "run" else self.marker

    def write(self) -> None:
        """The marker, replaced in one step."""
        data = {"format": MARKER_FORMAT} | {k: v for k, v in asdict(self).items() if k not in ("folder", "legacy")}
        atomic.write_json(self.marker, data)


class DamagedMarker(UserError):
    """A marker that cannot be read: the folder is left alone."""


def _read_marker(path: Path, kind: str) -> Owner:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        owner = Owner(
            folder=path.parent,
            kind=kind,
            script=str(data["script"]),
            settings=dict(data["settings"]),
            corpus=dict(data["corpus"]),
            demo=bool(data["demo"]),
            entries=[str(name) for name in data["entries"]],
            frozen=dict(data.get("frozen") or {}),
            cell=dict(data.get("cell") or {}),
            encoders=[str(tag) for tag in data.get("encoders") or []],
        )
        if data.get("kind") != kind:
            raise ValueError(f"kind {data.get('kind')!r}, expected {kind!r}")
        if int(data["format"]) > MARKER_FORMAT:
            raise ValueError(f"format {data['format']}, written by a newer version of this project")
        odd = [n for n in owner.entries if n in ("", ".", "..", MARKER, SET_MARKER, LOCK) or Path(n).name != n]
        if odd:  # only names inside the folder: an edited marker must never aim a removal elsewhere
            raise ValueError(f"entry {odd[0]!r} is not a name inside the folder")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DamagedMarker(
            f"{path}: damaged ({type(err).__name__}: {err}); nothing in {path.parent} is touched: remove that "
            "folder yourself if you no longer need it, or choose another --output_dir"
        ) from None
    return owner


def _legacy_run(folder: Path) -> Owner | None:
    """A run written before markers existed: config.json with the project's own keys."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        args, data, script = config["args"], config["data"], config["script"]
        known = script in SCRIPTS and isinstance(config["cell"], dict) and "environment" in config
        listing = data["fingerprint"]
        models = config.get("models", {})
        frozen = {m: d["frozen"] for m, d in models.items() if isinstance(d, dict) and "frozen" in d}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not (known and isinstance(args, dict) and isinstance(listing, str)):
        return None
    entries = [name for name in LEGACY_RUN_FILES if (folder / name).exists() or (folder / name).is_symlink()]
    corpus = {"listing": listing}
    demo = bool(args.get("demo"))
    cell = cell_of(script)
    return Owner(folder, "run", script, settings(args, cell), corpus, demo, entries, frozen, asdict(cell), legacy=True)


def read_run(folder: Path) -> Owner | None:
    """The project's run in `folder`; None where there is none (no folder, an empty one, someone else's)."""
    if (folder / MARKER).exists():
        return _read_marker(folder / MARKER, "run")
    return _legacy_run(folder)


def read_set(folder: Path) -> Owner | None:
    """The project's fold set in `folder`: its marker, or for a folder without one, the runs in its fold<k>/
    (single-fold runs side by side, or a set written before markers existed) and the summaries of such a set."""
    if (folder / SET_MARKER).exists():
        return _read_marker(folder / SET_MARKER, "fold_set")
    runs = [run for k in range(1, NUM_FOLDS + 1) if (run := read_run(folder / f"fold{k}")) is not None]
    if not runs:
        return None
    entries = [run.folder.name for run in runs] + [n for n in SUMMARY_FILES if _is_set_summary(folder / n)]
    first = runs[0]
    demo = all(run.demo for run in runs)
    return Owner(folder, "fold_set", first.script, first.settings, first.corpus, demo, entries, legacy=True)


def _is_set_summary(path: Path) -> bool:
    """A summary.json / summary.md that a --num_fold all run wrote before fold sets had markers."""
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".md":
        return "test metrics over folds" in text.split("\n", 1)[0]
    try:
        return {"script", "folds", "settings", "test"} <= set(json.loads(text))
    except (ValueError, TypeError):
        return False


def _contents(folder: Path) -> list[str]:
    """The entries of `folder` other than the project's lock and half-written temporaries."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK and not atomic.TEMPORARY.match(p.name))


def _refuse_foreign(folder: Path, names: list[str]) -> None:
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    familiar = [n for n in names if n in (*LEGACY_RUN_FILES, *SUMMARY_FILES, ".lock")]
    why = f"; no {MARKER}, so another tool's, whatever the names" if familiar else ""
    raise UserError(
        f"--output_dir {folder}: holds files that are not a run's ({shown}{why}); give a new or empty folder"
    )


def _check_ours(folder: Path, kind: str) -> Owner | None:
    """The project's run (or fold set) in `folder`, None for a new or empty folder; anything else is refused."""
    owner = read_run(folder) if kind == "run" else read_set(folder)
    if owner is None and _contents(folder):
        _refuse_foreign(folder, _contents(folder))
    return owner


@dataclass
class Plan:
    """What a command does with its run directories: each fold's directory and mode ("fresh", "resume" or
    "finished"), and the fold set's folder (with --num_fold all, or the set a single fold belongs to)."""

    dirs: dict[int, Path]
    modes: dict[int, str]
    set_folder: Path | None = None

    @property
    def todo(self) -> list[int]:
        return [k for k, mode in self.modes.items() if mode != "finished"]


def _aim(args, default: Callable[[int], Path], log) -> tuple[dict[int, Path], Path | None]:
    """Each fold's run directory (--output_dir, its fold<k>/ for all folds or for a fold set, else default(k)),
    and the fold set's folder, if any."""
    folds = args.folds
    if not args.output_dir:
        dirs = {k: Path(default(k)) for k in folds}
        return dirs, dirs[folds[0]].parent
    out = Path(args.output_dir)
    if len(folds) > 1:
        if read_run(out) is not None:
            raise UserError(f"--output_dir {out}: holds a single fold's run; give --num_fold all a folder of its own")
        return {k: out / f"fold{k}" for k in folds}, out
    (k,) = folds
    if read_run(out) is None and read_set(out) is not None:
        log(f"--output_dir {out} holds the folds of a --num_fold all run: fold {k} goes to {out / f'fold{k}'}")
        return {k: out / f"fold{k}"}, out
    return {k: out}, None


def _mode(owner: Owner | None, cell, args) -> str:
    """What to do with a fold's run directory; refuses what its flags do not allow."""
    if owner is None:
        return "fresh"
    if args.demo and not owner.demo:
        raise UserError(
            f"{owner.folder}: holds a run that is not a demo's ({owner.script}); --demo replaces only its own "
            "runs: choose another --output_dir"
        )
    if args.overwrite:
        return "fresh"
    finished = "metrics.json" in owner.entries and (owner.folder / "metrics.json").is_file()
    if not args.resume:
        if finished:
            raise UserError(
                f"{owner.folder}: holds a finished run (metrics.json); add --overwrite to replace it, "
                "or choose another --output_dir"
            )
        raise UserError(
            f"{owner.folder}: holds an unfinished run; add --resume to continue it, or --overwrite to start over"
        )
    if owner.script != cell.name:
        raise UserError(
            f"{owner.folder}: holds a run of {owner.script}.py; --resume continues a run with the script that "
            f"started it: run {owner.script}.py, or give {cell.name}.py another --output_dir"
        )
    changed = differences(owner.settings, vars(args), cell)
    if changed:
        raise UserError(
            f"{owner.where}: --resume with other settings than the run started with ({', '.join(changed[:4])}); "
            "use the same flags, or --overwrite to start over"
        )
    return "finished" if finished else "resume"


def _check_inputs(owner: Owner, args, corpus: dict, frozen: Callable[[], dict]) -> None:
    """A run continued or counted again must read the corpus and frozen encoders it started with."""
    same = all(owner.corpus[k] == corpus[k] for k in ("listing", "recordings") if k in owner.corpus)
    if not same:
        raise UserError(
            f"{owner.where}: the corpus under --dataset_dir {args.dataset_dir} is not the one this run started "
            "on (its utterances, labels, transcripts or recordings changed); use that corpus, or --overwrite to "
            "start over"
        )
    if not owner.frozen:
        return
    for modality, reference in frozen().items():
        started = owner.frozen.get(modality, reference)["weights"]
        if started != reference["weights"]:
            raise UserError(
                f"{owner.where}: the frozen {modality} encoder {reference['source']} holds other weights than "
                "when this run started; use those weights, or --overwrite to start over"
            )


def _remove(owner: Owner, log) -> None:
    """Remove what the project wrote into `owner.folder` (its listed entries and their half-written
    temporaries); every other file stays."""
    listed = set(owner.entries) | {owner.marker.name}
    doomed = [owner.folder / name for name in owner.entries]
    doomed += [p for p in owner.folder.iterdir() if atomic.temporary_target(p.name) in listed]
    with writing("over the run", owner.folder):
        for path in doomed:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    log(f"{owner.folder}: replaced the {'fold set' if owner.kind == 'fold_set' else 'run'} there (--overwrite)")


@contextmanager
def claim(
    cell,
    args,
    default: Callable[[int], Path],
    corpus: Callable[[], dict],
    frozen: Callable[[], dict],
    accelerator,
    log=print,
):
    """The run directories of `args.folds`, held for the block: where each goes, and whether it starts,
    continues or replaces a run, decided under each directory's lock before anything is written; then the
    runs replaced are removed, the summary of a fold set whose folds change is removed, and the markers are
    written.

    `corpus()` reads the corpus and returns its fingerprints, `frozen()` the frozen encoders' references: both
    are called once the folders are known to be usable. The main process decides; every process gets the
    `Plan`, or raises the refusal."""
    locks, plan, error = [], None, None
    if accelerator.is_main_process:
        try:
            plan = _decide(cell, args, default, corpus, frozen, locks, log)
        except UserError as err:
            error = str(err)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error, plan = broadcast_object_list([error, plan])
    try:
        if error:
            raise UserError(error)
        yield plan
    finally:
        for lock in reversed(locks):
            lock.release()


def _decide(cell, args, default, corpus, frozen, locks: list, log) -> Plan:
    """`claim`'s decisions and writes, in the main process; the locks taken go into `locks`."""
    dirs, set_folder = _aim(args, default, log)
    for folder in dirs.values():  # refused before any lock is taken: nothing there is created
        _check_ours(folder, "run")
    many = len(dirs) > 1
    set_owner = _check_ours(set_folder, "fold_set") if many else None
    if many and args.demo and set_owner is not None and not set_owner.demo:
        raise UserError(f"{set_folder}: holds a fold set that is not a demo's; --demo replaces only its own")
    unlisted = [n for n in SUMMARY_FILES if many and (set_folder / n).exists() and n not in set_owner.entries]
    if unlisted:
        raise UserError(
            f"{set_folder}: holds {', '.join(unlisted)}, not written by this project; --num_fold all writes its "
            "summary there: move them away, or choose another --output_dir"
        )
    for folder in dirs.values():
        locks.append(RunLock(folder).acquire(log))
    owners = {k: _check_ours(folder, "run") for k, folder in dirs.items()}  # again, now under the locks
    modes = {k: _mode(owners[k], cell, args) for k in dirs}
    fingerprints = corpus()
    for k, owner in owners.items():
        if modes[k] != "fresh":
            _check_inputs(owner, args, fingerprints, frozen)
    plan = Plan(dirs, modes, set_folder if many or set_folder is None else _set_of(set_folder))
    _carry_out(plan, owners, cell, args, fingerprints, frozen, log)
    return plan


def _set_of(folder: Path) -> Path | None:
    """The fold set a single fold's default directory belongs to, if its parent holds one."""
    try:
        return folder if read_set(folder) is not None else None
    except DamagedMarker:
        return None


def _carry_out(plan: Plan, owners: dict, cell, args, corpus: dict, frozen: Callable[[], dict], log) -> None:
    """The plan's writes, in an order that leaves every folder marked whatever happens: the runs replaced
    are removed, the fold set's marker is written, then each fold's."""
    references = frozen() if plan.todo else {}
    for k in plan.todo:
        if plan.modes[k] == "fresh" and owners[k] is not None:
            _remove(owners[k], log)
    if plan.set_folder is not None and (plan.todo or len(plan.dirs) > 1):
        _update_set(plan, cell, args, corpus, log)
    for k in plan.todo:
        owner = owners[k]
        with writing(MARKER, plan.dirs[k]):
            if plan.modes[k] == "fresh":
                owner = Owner(plan.dirs[k], "run", cell.name, settings(vars(args), cell), corpus, bool(args.demo), [])
                owner.frozen, owner.cell = references, asdict(cell)
                owner.encoders = list(getattr(args, "encoder_tags", []))
                plan.dirs[k].mkdir(parents=True, exist_ok=True)
                owner.write()
            elif owner.legacy:  # a run from before markers, continued: marked now, with what it wrote then
                replace(owner, legacy=False).write()


def _update_set(plan: Plan, cell, args, corpus: dict, log) -> None:
    """A fold set whose folds change loses its summary; with --num_fold all its marker lists its folds."""
    folder = plan.set_folder
    owner = read_set(folder)
    listed = owner.entries if owner is not None and plan.todo else []
    gone = [n for n in SUMMARY_FILES if n in listed and (folder / n).is_file()]
    for name in gone:
        (folder / name).unlink()
    if gone:
        log(f"{folder}: removed the fold set's summary (its folds change); a --num_fold all run writes it again")
    if len(plan.dirs) == 1 and (owner is None or owner.legacy):
        return  # a single fold beside others: nothing to mark
    entries = [n for n in (owner.entries if owner else []) if n not in gone]
    entries += [d.name for d in plan.dirs.values() if d.name not in entries]
    marked = Owner(
        folder, "fold_set", cell.name, settings(vars(args), cell), corpus, bool(args.demo), entries, cell=asdict(cell)
    )
    if owner is not None and len(plan.dirs) == 1:
        marked = replace(owner, entries=entries, legacy=False)
    with writing(SET_MARKER, folder):
        folder.mkdir(parents=True, exist_ok=True)
        marked.write()


def own(folder: Path, *names: str, kind: str = "run") -> None:
    """Record in the folder's marker that the project writes `names` there, before it writes them (a crash
    can leave a name listed that was never written, never one written that is not listed). A name that is
    not listed and already there is someone else's: refused."""
    marker = folder / (MARKER if kind == "run" else SET_MARKER)
    if not marker.is_file():
        raise UserError(f"{marker}: gone while the run was writing {folder}; start the run again")
    owner = _read_marker(marker, kind)
    new = [n for n in names if n not in owner.entries]
    for name in new:
        if (folder / name).exists() or (folder / name).is_symlink():
            raise UserError(
                f"{folder / name}: not written by this run (not in {marker.name}); move it out of {folder}, then "
                "continue with --resume"
            )
    if new:
        replace(owner, entries=owner.entries + new).write()


def write_file(folder: Path, name: str, content: str | bytes, kind: str = "run") -> None:
    """`name` in a run directory (or fold set), recorded in its marker, then written in one step (an OSError is
    the caller's to report, in `common.errors.writing`)."""
    own(folder, name, kind=kind)
    atomic.write_bytes(folder / name, content.encode("utf-8") if isinstance(content, str) else content)


def write_json(folder: Path, name: str, data, ensure_ascii: bool = False, kind: str = "run") -> None:
    write_file(folder, name, atomic.json_text(data, ensure_ascii), kind)


def build_folder(folder: Path, name: str, build: Callable[[Path], None]) -> None:
    """A run's folder `name` (its model/), recorded in its marker, built under a temporary name; one the run
    wrote before is replaced."""
    own(folder, name)
    shutil.rmtree(folder / name, ignore_errors=True)
    atomic.build_folder(folder / name, build)


def read_metrics(run_dir: Path) -> dict:
    """A finished run's metrics.json; a damaged one is one line."""
    path = run_dir / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(
            f"{path}: damaged ({type(err).__name__}: {err}); the run's results are lost: train it again with "
            "--overwrite"
        ) from None


def write_set_summary(folder: Path, summary: dict, text: str) -> None:
    """summary.json and summary.md of a --num_fold all run, beside its folds."""
    with writing("the fold set's summary", folder):
        write_json(folder, "summary.json", summary, kind="fold_set")
        write_file(folder, "summary.md", text, kind="fold_set")


class RunLock:
    """An exclusive lock on a run directory for the run's lifetime (a locked `.kemdy_run.lock` file).

    The operating system releases it when its process dies; a lock file left with a holder's details
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


def write_predictions(run_dir: Path, utterances, out: dict) -> None:
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
    write_file(run_dir, "predictions.csv", f.getvalue())


def write_confusion(run_dir: Path, out: dict) -> None:
    """confusion.csv: test utterances counted by true emotion (rows; a multi-label utterance in each of its
    rows) and top-1 predicted emotion (columns)."""
    from common.metrics import confusion

    counts = confusion(out["labels"], out["probs"])
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(["true", *[f"top1_{e}" for e in EMOTIONS]])
    writer.writerows([emotion, *map(int, row)] for emotion, row in zip(EMOTIONS, counts, strict=True))
    write_file(run_dir, "confusion.csv", f.getvalue())


def _describe_model(name: str, encoder) -> dict:
    return {
        "name": name,
        "path": str(Path(name).resolve()) if Path(name).is_dir() else None,
        "model_type": encoder.config.model_type,
        "attention": getattr(encoder.config, "_attn_implementation", None),
        "class": type(encoder).__name__,
        "hidden_size": encoder.config.hidden_size,
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "trained_parameters": sum(p.numel() for p in encoder.parameters() if p.requires_grad),
    }


def provenance(
    cell, args, corpus, fingerprint: dict, accelerator, split, model, frozen: dict | None = None, utterances=None
) -> dict:
    """config.json: every argument, the command, the models, the data and its split, and the environment.
    `fingerprint`: the corpus's (listing and recordings); `split` is (fold, train indices, valid indices) into
    `utterances` (the corpus's, unless given); `frozen`: each frozen encoder's source and weights' fingerprint."""
    import accelerate
    import numpy as np
    import torch
    import transformers

    fold, train, valid = split
    utterances = corpus.utterances if utterances is None else utterances
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
            **_describe_corpus(args.dataset_dir, corpus),
            "split": {"train": len(train), "valid": len(valid), "test": len(fold.test)},
            "test_sessions": session_order([utterances[i].session for i in fold.test]),
            "va_mean": model.va_mean.tolist(),
            "va_std": model.va_std.tolist(),
            "fingerprint": fingerprint["listing"],
            "recordings": fingerprint["recordings"],
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


def _describe_corpus(root, corpus) -> dict:
    """Where a corpus is and what of it was used."""
    return {
        "dataset_dir": str(Path(root).resolve()),
        "annotation_files": len(corpus.annotation_files),
        "rows": corpus.rows,
        "used": len(corpus.utterances),
        "excluded": len(corpus.excluded),
        "exclusions": [asdict(e) for e in corpus.excluded],
    }


def describe_test_corpus(args, corpus, labels: dict) -> dict:
    """config.json's data about a cross-corpus run's test corpus, and both corpora's label distributions."""
    test_corpus = {"dataset": f"KEMDy{args.test_dataset}", **_describe_corpus(args.test_dataset_dir, corpus)}
    return {"test_corpus": test_corpus, "label_distribution": labels}


def record_size(run_dir: Path) -> None:
    """The finished run directory's size, in config.json (its `disk_bytes`)."""
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    config["disk_bytes"] = size(run_dir)
    with writing("config.json", run_dir):
        write_json(run_dir, "config.json", config)
