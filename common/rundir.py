"""Run directories: which folders are this project's, what a command may do with them, and the files a run
writes there.

A folder is a run directory only if it holds the project's marker, `kemdy_run.json`, valid in every field, and
the folder above a run's fold1/ .. fold5/ a fold set only if it holds `kemdy_fold_set.json`: nothing else makes
a folder the project's, whatever its files are called. A marker is the first file written into its folder and
lists every entry the project writes there before writing it, so that `--overwrite` removes exactly those; a
run's marker records its fold, compared like every setting. Runs written before markers existed are brought in
only by `python -m common.rundir adopt DIR`. `claim` is the one place that decides, before anything is written,
whether a command may start, continue or replace the runs it aims at.
"""

from __future__ import annotations

import argparse
import errno
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

try:
    import fcntl
except ModuleNotFoundError:  # Windows: no POSIX locks (the scripts refuse to start there, see cli.main)
    fcntl = None

from common import atomic, cache, paths, runfiles, schema
from common.errors import UserError, run_cli, writing
from common.folds import NUM_FOLDS, session_order
from common.grid import CELLS, Cell, cell_of, command_of
from common.plan import RunPlan
from common.runfiles import CELL, FOLD, FROZEN, read_config, read_metrics
from common.schema import ANY, Choice, Fields, Map, Rule
from common.settings import EARLIER, FLAGS, NOT_RESULTS, Settings, concerned

MARKER = "kemdy_run.json"  # a run directory
SET_MARKER = "kemdy_fold_set.json"  # the folder of a run's folds
LOCK = ".kemdy_run.lock"
MARKER_FORMAT = 2  # 2: a run's marker records its fold
# Every name a run writes into its directory, and a fold set into its folder: a marker lists no other.
# A run written before markers existed wrote the first seven (adopting it lists those found); `robustness`,
# written after a run by common.robustness, is newer than markers.
RUN_FILES = ("config.json", "metrics.json", "predictions.csv", "confusion.csv", "model", "checkpoints", "tensorboard")
RUN_FILES += ("robustness", "onnx")
EARLIER_RUN_FILES = RUN_FILES[:7]
SUMMARY_FILES = ("summary.json", "summary.md")  # a fold set's, beside its fold<k>/
SET_FILES = (*(f"fold{k}" for k in range(1, NUM_FOLDS + 1)), *SUMMARY_FILES)
UNKNOWN = "unknown"  # the fold of a format-1 run that stopped before writing its config.json


def _marker_spec(kind: str) -> Fields:
    readable = f"a format this version reads (1..{MARKER_FORMAT}; a newer version wrote it?)"
    return Fields(
        {
            "format": Rule(int, lambda n: 1 <= n <= MARKER_FORMAT, readable),
            "kind": Choice(kind),
            "script": Choice(*CELLS),
            "settings": Map(ANY),
            "corpus": Fields({"listing": str}, {"recordings": (str, None)}),
            "demo": bool,
            "entries": [Choice(*(RUN_FILES if kind == "run" else SET_FILES))],
        },
        {
            "frozen": Map(FROZEN, keys=("text", "speech")),
            "cell": CELL,
            "encoders": [str],
            "fold": FOLD,
        },
    )


MARKER_SPECS = {"run": _marker_spec("run"), "fold_set": _marker_spec("fold_set")}
MARKER_BYTES = 1 << 20
LOCK_SPEC = Fields({"pid": schema.count(1), "host": str, "started": str})


def settings(recorded: dict, cell: Cell | None = None, context_speech: bool | None = None) -> dict:
    """The recorded settings that change a run's numbers (`common.settings`: those added later at their earlier
    value); for a `cell`, only those it reads (`context_speech`: as if it read the turns before's speech, whatever
    it recorded)."""
    values = EARLIER | recorded
    if context_speech is None:
        context_speech = values.get("context_speech") is True
    reads = concerned(cell, context_speech) if cell is not None else set(FLAGS)
    ignored = NOT_RESULTS | {name for name in FLAGS if name not in reads}
    return {k: v for k, v in values.items() if k not in ignored}


def differences(a: dict, b: dict, cell: Cell | None = None) -> list[str]:
    """`--flag old -> new` for every result-changing argument that differs (for a `cell`, those it uses)."""
    context_speech = any((EARLIER | x).get("context_speech") is True for x in (a, b))  # then both read --context
    a, b = settings(a, cell, context_speech), settings(b, cell, context_speech)
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return [f"--{k} {a.get(k)} -> {b.get(k)}" if k != "corpus" else "another corpus" for k in changed]


@dataclass
class Owner:
    """What the project wrote into a folder, as its marker says."""

    folder: Path
    kind: str  # "run" or "fold_set"
    script: str
    settings: dict  # the arguments that change results
    # the corpus's fingerprints: "listing" and "recordings" (None for a run adopted from before), "bio" (its
    # bio-signal files) for a run that reads them
    corpus: dict
    demo: bool
    entries: list[str]  # every file and folder the project has written into `folder`, the marker aside
    frozen: dict = field(default_factory=dict)  # frozen encoders: modality -> source and weights' fingerprint
    cell: dict = field(default_factory=dict)  # modality, task, fusion
    encoders: list[str] = field(default_factory=list)  # names of its encoders that are not the defaults
    fold: int | str | None = None  # a run's fold; None for a cross-corpus run (and for a fold set)

    @property
    def marker(self) -> Path:
        return self.folder / (MARKER if self.kind == "run" else SET_MARKER)

    def write(self) -> None:
        """The marker, replaced in one step."""
        assert self.fold != UNKNOWN, "a run of an unknown fold is never marked again"
        data = {"format": MARKER_FORMAT} | {k: v for k, v in asdict(self).items() if k != "folder"}
        data["cell"] = self.cell or asdict(cell_of(self.script))
        if self.kind != "run":
            del data["fold"]
        atomic.write_json(self.marker, data)


class DamagedMarker(UserError):
    """A marker that cannot be read: the folder is left alone."""


def _read_marker(path: Path, kind: str) -> Owner:
    """The owner a marker describes, every field checked; a damaged or edited marker is refused."""
    try:
        if path.is_symlink():
            raise schema.DamagedFile(path, "a link, not a file this project wrote")
        data = schema.load(path, MARKER_SPECS[kind], MARKER_BYTES)
        cell = asdict(cell_of(data["script"]))
        if data.get("cell", cell) != cell:
            raise schema.DamagedFile(path, f"cell {data['cell']} is not {data['script']}'s")
        if kind == "run" and data["format"] >= 2 and "fold" not in data:
            raise schema.DamagedFile(path, "fold: missing")
        fold = data.get("fold") if data["format"] >= 2 or kind != "run" else _earlier_fold(path.parent)
    except schema.DamagedFile as err:
        raise DamagedMarker(
            f"{err}; nothing in {path.parent} is touched: remove that folder yourself if you no longer need it, or "
            "choose another --output_dir"
        ) from None
    return Owner(
        path.parent,
        kind,
        data["script"],
        data["settings"],
        {"recordings": None} | data["corpus"],
        data["demo"],
        list(dict.fromkeys(data["entries"])),
        data.get("frozen", {}),
        cell,
        data.get("encoders", []),
        fold,
    )


def _earlier_fold(folder: Path) -> int | str | None:
    """The fold of a run whose marker is older than folds in markers: its config.json's."""
    if not (folder / "config.json").is_file():
        return UNKNOWN
    args = read_config(folder)["args"]
    return None if args.get("test_dataset") else args["num_fold"]


def read_run(folder: Path) -> Owner | None:
    """The project's run in `folder`; None where there is none (no folder, an empty one, someone else's)."""
    marker = Path(folder) / MARKER
    return _read_marker(marker, "run") if marker.exists() or marker.is_symlink() else None


def read_set(folder: Path) -> Owner | None:
    """The project's fold set in `folder`; None where there is none."""
    marker = Path(folder) / SET_MARKER
    return _read_marker(marker, "fold_set") if marker.exists() or marker.is_symlink() else None


def run_of(fold: int | str | None) -> str:
    """A run named by its fold, for messages."""
    if fold is None:
        return "a cross-corpus run"
    return "a run whose fold is not recorded" if fold == UNKNOWN else f"the run of fold {fold}"


def _contents(folder: Path) -> list[str]:
    """The entries of `folder` other than the project's lock and half-written temporaries."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK and atomic.temporary_target(p.name) is None)


def _refuse_foreign(folder: Path, names: list[str], kind: str, given: bool) -> None:
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    what, marker = ("a run's", MARKER) if kind == "run" else ("a fold set's", SET_MARKER)
    familiar = [n for n in names if n in (*RUN_FILES, *SET_FILES, ".lock")]
    why = f"; no {marker}, so another tool's, whatever the names" if familiar else ""
    earlier = "config.json" in names or any(n in SET_FILES[:NUM_FOLDS] for n in names)
    hint = f" (a run or fold set of this project from before markers: python -m common.rundir adopt {folder})"
    raise UserError(
        f"{'--output_dir ' if given else ''}{folder}: holds files that are not {what} ({shown}{why}); give a new or "
        "empty folder" + (hint if earlier else "")
    )


def _check_ours(folder: Path, kind: str, given: bool = True) -> Owner | None:
    """The project's run (or fold set) in `folder`, None for a new or empty folder; anything else is refused
    (`given`: the folder is named by --output_dir, or lies under it)."""
    owner = read_run(folder) if kind == "run" else read_set(folder)
    if owner is None and _contents(folder):
        _refuse_foreign(folder, _contents(folder), kind, given)
    return owner


@dataclass
class Claim:
    """What a command does with its run directories: each fold's directory and mode ("fresh", "resume" or
    "finished"), and the fold set's folder (with --num_fold all, or the set a single fold belongs to)."""

    dirs: dict[int, Path]
    modes: dict[int, str]
    set_folder: Path | None = None

    @property
    def todo(self) -> list[int]:
        return [k for k, mode in self.modes.items() if mode != "finished"]


def _aim(plan: RunPlan, default: Callable[[int], Path], log) -> tuple[dict[int, Path], Path | None]:
    """Each fold's run directory (--output_dir, its fold<k>/ for all folds or for a fold set, else default(k)),
    and the fold set's folder, if any (the default folder of a fold, runs/.../fold<k>, is in one)."""
    folds = plan.folds
    if plan.settings.output_dir is None:
        dirs = {k: Path(default(k)) for k in folds}
        first = dirs[folds[0]]
        return dirs, first.parent if first.name == f"fold{folds[0]}" else None
    out = Path(plan.settings.output_dir)
    if len(folds) > 1:
        if read_run(out) is not None:
            raise UserError(f"--output_dir {out}: holds a single fold's run; give --num_fold all a folder of its own")
        return {k: out / f"fold{k}" for k in folds}, out
    (k,) = folds
    if read_run(out) is None and read_set(out) is not None:
        log(f"--output_dir {out} holds the folds of a --num_fold all run: fold {k} goes to {out / f'fold{k}'}")
        return {k: out / f"fold{k}"}, out
    return {k: out}, None


def _mode(owner: Owner | None, plan: RunPlan, fold: int) -> str:
    """What to do with a fold's run directory; refuses what its flags do not allow."""
    if owner is None:
        return "fresh"
    if plan.settings.demo and not owner.demo:
        raise UserError(
            f"{owner.folder}: holds a run that is not a demo's ({owner.script}); --demo replaces only its own "
            "runs: choose another --output_dir"
        )
    if plan.settings.overwrite:
        return "fresh"
    finished = "metrics.json" in owner.entries and (owner.folder / "metrics.json").is_file()
    if not plan.settings.resume:
        if finished:
            raise UserError(
                f"{owner.folder}: holds a finished run (metrics.json); add --overwrite to replace it, "
                "or choose another --output_dir"
            )
        raise UserError(
            f"{owner.folder}: holds an unfinished run; add --resume to continue it, or --overwrite to start over"
        )
    if owner.script != plan.cell.name:
        raise UserError(
            f"{owner.folder}: holds a run of {command_of(owner.script)}; --resume continues a run with the cell that "
            f"started it: run {command_of(owner.script)}, or give {command_of(plan.cell.name)} another --output_dir"
        )
    expected = None if plan.settings.test_dataset else fold
    if owner.fold != expected:
        raise UserError(
            f"{owner.folder}: holds {run_of(owner.fold)}, not {run_of(expected)} (a copy or link "
            "of another fold's folder?); --resume continues a run on its own fold: aim at that fold's folder, or "
            "start over with --overwrite"
        )
    changed = differences(owner.settings, plan.record(), plan.cell)
    if changed:
        raise UserError(
            f"{owner.marker}: --resume with other settings than the run started with ({', '.join(changed[:4])}); "
            "use the same flags, or --overwrite to start over"
        )
    return "finished" if finished else "resume"


def _check_continued(owner: Owner, mode: str, plan: RunPlan, corpus: dict, frozen: Callable[[], dict]) -> None:
    """A run continued or counted again must have whole files of its own fold, no link among them, and read
    the corpus and frozen encoders it started with."""
    links = [name for name in owner.entries if (owner.folder / name).is_symlink()]
    if links:
        raise UserError(
            f"{owner.folder / links[0]}: a link where the run wrote its {links[0]}; the project never writes "
            "through links: put what it points to in its place, or start over with --overwrite"
        )
    if (owner.folder / "config.json").is_file() or mode == "finished":
        try:
            args_then = read_config(owner.folder)["args"]
        except schema.DamagedFile as err:
            raise UserError(f"{err}; the run cannot continue: start it over with --overwrite") from None
        then = None if args_then.get("test_dataset") else args_then["num_fold"]
        if then != owner.fold:
            raise UserError(
                f"{owner.folder}: its config.json describes {run_of(then)}, its marker {run_of(owner.fold)}; "
                "the run cannot continue: start it over with --overwrite"
            )
    if mode == "finished" and read_metrics(owner.folder)["fold"] != owner.fold:
        raise UserError(
            f"{owner.folder}: its metrics.json holds the results of another run than its marker's "
            f"({run_of(owner.fold)}); train it again with --overwrite"
        )
    keys = ("listing", "recordings", "bio")
    same = all(owner.corpus[k] == corpus.get(k) for k in keys if owner.corpus.get(k) is not None)
    if not same:
        raise UserError(
            f"{owner.marker}: the corpus under --dataset_dir {plan.settings.dataset_dir} is not the one this run "
            "started on (its utterances, labels, transcripts, recordings or bio-signal files changed); use that "
            "corpus, or --overwrite to start over"
        )
    if not owner.frozen:
        return
    for modality, reference in frozen().items():
        started = owner.frozen.get(modality, reference)["weights"]
        if started != reference["weights"]:
            raise UserError(
                f"{owner.marker}: the frozen {modality} encoder {reference['source']} holds other weights than "
                "when this run started; use those weights, or --overwrite to start over"
            )


def _check_set(folder: Path, dirs: dict[int, Path], plan: RunPlan) -> Owner | None:
    """The fold set the folds go into: the project's or new, its folds folders of their own, a demo's for a demo."""
    owner = _check_ours(folder, "fold_set", plan.settings.output_dir is not None)
    links = [d for d in dirs.values() if d.is_symlink()]
    if links:
        raise UserError(
            f"{links[0]}: a link inside the fold set {folder}; each fold of a set is a folder of its own: remove "
            "the link, or choose another --output_dir"
        )
    if owner is not None and plan.settings.demo and not owner.demo:
        raise UserError(f"{folder}: holds a fold set that is not a demo's; --demo replaces only its own")
    unlisted = [n for n in SUMMARY_FILES if len(dirs) > 1 and (folder / n).exists() and n not in owner.entries]
    if unlisted:
        raise UserError(
            f"{folder}: holds {', '.join(unlisted)}, not written by this project; --num_fold all writes its "
            "summary there: move them away, or choose another --output_dir"
        )
    return owner


def _other_folds(owner: Owner | None, dirs: dict[int, Path]) -> list[str]:
    """The folds a set holds beside those a command runs."""
    ours = {d.name for d in dirs.values()}
    if owner is None:
        return []
    return [n for n in owner.entries if n.startswith("fold") and n not in ours and (owner.folder / n).is_dir()]


def _check_joins(owner: Owner | None, dirs: dict[int, Path], plan: RunPlan, corpus: dict) -> None:
    """A fold joins a set whose other folds were run by the same script with the same settings on the same corpus."""
    others = _other_folds(owner, dirs)
    if not others:
        return
    if owner.script != plan.cell.name:
        raise UserError(
            f"{owner.folder}: holds the folds of {command_of(owner.script)} ({', '.join(others)}); give "
            f"{command_of(plan.cell.name)} another --output_dir"
        )
    changed = differences(owner.settings, plan.record(), plan.cell)
    if owner.corpus["listing"] != corpus["listing"]:
        changed.append("another corpus")
    elif owner.corpus.get("bio") != corpus.get("bio") and "bio" in owner.corpus:
        changed.append("other bio-signal files")
    if changed:
        raise UserError(
            f"{owner.marker}: the set's other folds ({', '.join(others)}) were run with other settings "
            f"({', '.join(changed[:4])}); a fold joins its set with the same flags: use them, give this run another "
            "--output_dir, or run every fold again with --num_fold all --overwrite"
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


def _remove_temporaries(owner: Owner, log) -> None:
    """The half-written files a killed process left of the entries a run lists (its marker's included)."""
    listed = set(owner.entries) | {owner.marker.name}
    with writing("over the run", owner.folder):
        for path in atomic.remove_stale_temporaries(owner.folder, lambda target: target in listed):
            log(f"removed {path}, left half-written by a run that is no longer running")


@contextmanager
def claim(
    plan: RunPlan,
    default: Callable[[int], Path],
    corpus: Callable[[], dict],
    frozen: Callable[[], dict],
    accelerator,
    log=print,
):
    """The run directories of `plan.folds`, held for the block: where each goes, and whether it starts,
    continues or replaces a run, decided under each directory's lock (and its fold set's) before anything is
    written; then the runs replaced are removed, the summary of a fold set whose folds change is removed, and
    the markers are written.

    `corpus()` reads the corpus and returns its fingerprints, `frozen()` the frozen encoders' references: both
    are called once the folders are known to be usable. The main process decides; every process gets the
    `Claim`, or raises the refusal."""
    locks, claimed, error = [], None, None
    if accelerator.is_main_process:
        try:
            claimed = _decide(plan, default, corpus, frozen, locks, log)
        except UserError as err:
            error = str(err)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error, claimed = broadcast_object_list([error, claimed])
    try:
        if error:
            raise UserError(error)
        yield claimed
    finally:
        for lock in reversed(locks):
            lock.release()


def _decide(plan: RunPlan, default, corpus, frozen, locks: list, log) -> Claim:
    """`claim`'s decisions and writes, in the main process; the locks taken go into `locks`. A fold set's lock
    is held while its folds are decided (folds of one set started together decide one after the other)."""
    dirs, set_folder = _aim(plan, default, log)
    set_lock = None
    if set_folder is not None:  # refused before any lock is taken: nothing there is created
        _check_set(set_folder, dirs, plan)
        set_lock = RunLock(set_folder).acquire(log, wait=True)
        locks.append(set_lock)
    set_owner = _check_set(set_folder, dirs, plan) if set_folder is not None else None
    given = plan.settings.output_dir is not None
    for folder in dirs.values():
        _check_ours(folder, "run", given)
    for folder in dirs.values():
        locks.append(RunLock(folder).acquire(log))
    owners = {k: _check_ours(folder, "run", given) for k, folder in dirs.items()}  # again, now under the locks
    modes = {k: _mode(owners[k], plan, k) for k in dirs}
    fingerprints = corpus()
    _check_joins(set_owner, dirs, plan, fingerprints)
    for k, owner in owners.items():
        if modes[k] != "fresh":
            _check_continued(owner, modes[k], plan, fingerprints, frozen)
    claimed = Claim(dirs, modes, set_folder)
    _carry_out(claimed, owners, plan, fingerprints, frozen, log)
    if set_lock is not None:
        locks.remove(set_lock)
        set_lock.release()
    return claimed


def _carry_out(claimed: Claim, owners: dict, plan: RunPlan, corpus: dict, frozen: Callable[[], dict], log) -> None:
    """The claim's writes, in an order that leaves every folder marked whatever happens: the runs replaced
    are removed (and a killed run's temporaries in those continued), the fold set's marker is written, then
    each fold's."""
    references = frozen() if claimed.todo else {}
    for k, owner in owners.items():
        if owner is not None and claimed.modes[k] == "fresh":
            _remove(owner, log)
        elif owner is not None:
            _remove_temporaries(owner, log)
    if claimed.set_folder is not None and (claimed.todo or len(claimed.dirs) > 1):
        _update_set(claimed, plan, corpus, log)
    for k in claimed.todo:
        if claimed.modes[k] != "fresh":
            continue
        fold = None if plan.settings.test_dataset else k
        owner = Owner(
            claimed.dirs[k],
            "run",
            plan.cell.name,
            settings(plan.record(), plan.cell),
            corpus,
            bool(plan.settings.demo),
            [],
        )
        owner.frozen, owner.cell, owner.fold = references, asdict(plan.cell), fold
        owner.encoders = list(plan.encoder_tags)
        with writing(MARKER, claimed.dirs[k]):
            claimed.dirs[k].mkdir(parents=True, exist_ok=True)
            owner.write()


def _update_set(claimed: Claim, plan: RunPlan, corpus: dict, log) -> None:
    """A fold set whose folds change loses its summary; its marker lists its folds, and takes the settings of
    the folds run now where no other fold is kept."""
    folder = claimed.set_folder
    owner = read_set(folder)
    listed = owner.entries if owner is not None and claimed.todo else []
    gone = [n for n in SUMMARY_FILES if n in listed and (folder / n).is_file()]
    for name in gone:
        (folder / name).unlink()
    if gone:
        log(f"{folder}: removed the fold set's summary (its folds change); a --num_fold all run writes it again")
    entries = [n for n in (owner.entries if owner else []) if n not in gone]
    entries += [d.name for d in claimed.dirs.values() if d.name not in entries]
    if owner is None or not _other_folds(owner, claimed.dirs):
        marked = Owner(
            folder,
            "fold_set",
            plan.cell.name,
            settings(plan.record(), plan.cell),
            corpus,
            bool(plan.settings.demo),
            entries,
            cell=asdict(plan.cell),
        )
    else:
        marked = replace(owner, entries=entries)
    with writing(SET_MARKER, folder):
        folder.mkdir(parents=True, exist_ok=True)
        atomic.remove_stale_temporaries(folder, lambda target: target in (SET_MARKER, *SUMMARY_FILES))
        marked.write()


def own(folder: Path, *names: str, kind: str = "run") -> None:
    """Record in the folder's marker that the project writes `names` there, before it writes them (a crash
    can leave a name listed that was never written, never one written that is not listed). A name that is
    not listed and already there is someone else's, and a link is never written through: both refused."""
    marker = folder / (MARKER if kind == "run" else SET_MARKER)
    if not marker.is_file():
        raise UserError(f"{marker}: gone while the run was writing {folder}; start the run again")
    owner = _read_marker(marker, kind)
    for name in names:
        if (folder / name).is_symlink():
            raise UserError(
                f"{folder / name}: a link; the project never writes through links: put what it points to in its "
                "place (or remove it), then continue with --resume"
            )
    new = [n for n in names if n not in owner.entries]
    for name in new:
        if (folder / name).exists():
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


def add_to_finished_run(folder: Path, name: str, build: Callable[[Path], None], what: str) -> Path:
    """`build_folder` into a finished run, the run locked meanwhile (no run of this folder writes it then); a
    failure says that `what` (its tables, its export) could not be written."""
    lock = RunLock(folder).acquire()
    try:
        with writing(what, folder):
            build_folder(folder, name, build)
    finally:
        lock.release()
    return folder / name


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

    def acquire(self, log=print, wait: bool = False) -> RunLock:
        """Take the lock; a run holding it is refused, or with `wait` waited for."""
        if fcntl is None:
            raise UserError(f"{self.folder}: locking a folder needs Linux or macOS; on Windows, run under WSL")
        self.created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
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
            if err.errno == errno.ELOOP:
                raise UserError(
                    f"{self.path}: a link, not this project's lock file; the project never writes through links: "
                    "remove it"
                ) from None
            raise UserError(f"--output_dir {self.folder}: cannot write there ({err.strerror or err})") from None
        left = os.read(fd, 4096)
        if left.strip():
            log(f"{self.folder}: {_taken_over(left)}")
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, atomic.json_text(mine).encode(), 0)
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


def _holder(raw: bytes) -> dict | None:
    try:
        return schema.parse(raw.decode("utf-8"), LOCK_SPEC)
    except ValueError:  # UnicodeDecodeError and Invalid among them
        return None


def _describe(raw: bytes) -> str:
    info = _holder(raw)
    return "unknown process" if info is None else f"process {info['pid']} on {info['host']}, started {info['started']}"


def _taken_over(raw: bytes) -> str:
    """What a lock file left behind says: a run that ended, or one that runs elsewhere (the folder was copied)."""
    info = _holder(raw)
    if info is None:
        return "took over a lock file whose holder cannot be told (damaged)"
    if info["host"] == socket.gethostname() and info["pid"] != os.getpid() and atomic.alive(info["pid"]):
        return (
            f"took over the lock file left by {_describe(raw)}: that process still runs, but does not hold this "
            "folder (the folder is a copy, or was moved, while it ran)"
        )
    return f"took over the lock of a run that is no longer running ({_describe(raw)})"


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
    plan: RunPlan, corpus, fingerprint: dict, accelerator, split, model, frozen: dict | None = None, utterances=None
) -> dict:
    """config.json: every setting (`plan.record()`), the command, the models, the data and its split, and the
    environment. `fingerprint`: the corpus's (listing and recordings); `split` is (fold, train indices, valid
    indices) into `utterances` (the corpus's, unless given); `frozen`: each frozen encoder's source and weights'
    fingerprint."""
    import accelerate
    import numpy as np
    import torch
    import transformers

    fold, train, valid = split
    utterances = corpus.utterances if utterances is None else utterances
    return {
        "script": plan.cell.name,
        "cell": asdict(plan.cell),
        "args": plan.record(),
        "command": " ".join(sys.argv),
        "models": {
            modality: _describe_model(name, encoder)
            | ({"frozen": frozen[modality]} if modality in (frozen or {}) else {})
            for modality, name, encoder in (
                ("text", plan.settings.text_model, model.text_encoder),
                ("speech", plan.settings.speech_model, model.speech_encoder),
            )
            if encoder is not None
        },
        "data": {
            **_describe_corpus(plan.settings.dataset_dir, corpus),
            "split": {"train": len(train), "valid": len(valid), "test": len(fold.test)},
            "test_sessions": session_order([utterances[i].session for i in fold.test]),
            "va_mean": model.va_mean.tolist(),
            "va_std": model.va_std.tolist(),
            "fingerprint": fingerprint["listing"],
            "recordings": fingerprint["recordings"],
            **({"bio": fingerprint["bio"], "bio_signals": list(model.config.signals)} if "bio" in fingerprint else {}),
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


def describe_test_corpus(settings: Settings, corpus, labels: dict) -> dict:
    """config.json's data about a cross-corpus run's test corpus, and both corpora's label distributions."""
    test_corpus = {"dataset": f"KEMDy{settings.test_dataset}", **_describe_corpus(settings.test_dataset_dir, corpus)}
    return {"test_corpus": test_corpus, "label_distribution": labels}


def record_size(run_dir: Path) -> None:
    """The finished run directory's size, in config.json (its `disk_bytes`)."""
    config = schema.load(run_dir / "config.json", max_bytes=64 << 20)  # checked when the run was claimed
    config["disk_bytes"] = size(run_dir)
    with writing("config.json", run_dir):
        write_file(run_dir, "config.json", runfiles.config_text(config))


def _earlier_run(folder: Path) -> Owner:
    """The owner of a run written before markers existed: its config.json (checked) and the names runs wrote."""
    try:
        config = read_config(folder)
    except schema.DamagedFile as err:
        raise UserError(f"{err}; {folder} is not adopted") from None
    links = [n for n in EARLIER_RUN_FILES if (folder / n).is_symlink()]
    if links:
        raise UserError(f"{folder / links[0]}: a link, not what a run wrote; {folder} is not adopted")
    args, cell = config["args"], cell_of(config["script"])
    models = config.get("models", {})
    return Owner(
        folder,
        "run",
        config["script"],
        settings(args, cell),
        {"listing": config["data"]["fingerprint"], "recordings": config["data"].get("recordings")}
        | ({"bio": config["data"]["bio"]} if "bio" in config["data"] else {}),
        bool(args.get("demo", False)),
        [n for n in EARLIER_RUN_FILES if (folder / n).exists()],
        {m: d["frozen"] for m, d in models.items() if "frozen" in d},
        asdict(cell),
        list(args.get("encoder_tags", [])),
        None if args.get("test_dataset") else args["num_fold"],
    )


def _earlier_set(folder: Path) -> list[Owner]:
    """The owners to write for a fold set from before markers: each fold not yet marked, then the set."""
    folds = []
    for name in SET_FILES[:NUM_FOLDS]:
        run = folder / name
        if run.is_symlink():
            raise UserError(f"{run}: a link, not a fold of its own; {folder} is not adopted")
        if run.is_dir():
            owner = read_run(run) or _earlier_run(run)
            if owner.fold != int(name[4:]):
                raise UserError(f"{run}: holds {run_of(owner.fold)}; {folder} is not adopted")
            folds.append(owner)
    first = folds[0]
    for owner in folds[1:]:
        changed = differences(first.settings, owner.settings) + (
            ["another corpus"] if owner.corpus["listing"] != first.corpus["listing"] else []
        )
        if owner.script != first.script or changed:
            why = command_of(owner.script) if owner.script != first.script else ", ".join(changed[:3])
            raise UserError(
                f"{owner.folder}: not run as {first.folder.name} was ({why}); {folder} is not adopted as one set"
            )
    entries = [o.folder.name for o in folds] + [n for n in SUMMARY_FILES if (folder / n).is_file()]
    demo = all(o.demo for o in folds)
    the_set = Owner(folder, "fold_set", first.script, first.settings, first.corpus, demo, entries, cell=first.cell)
    return [o for o in folds if not (o.folder / MARKER).exists()] + [the_set]


def adopt(folder: Path, dry_run: bool = False, log=print) -> None:
    """Bring a run, a fold set or a cache folder this project wrote before markers existed under its ownership:
    show what it will own (the names such a run, set or cache writes that are there), write the marker, and
    touch nothing else."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    for name in (MARKER, SET_MARKER, cache.MARKER):
        if (folder / name).exists() or (folder / name).is_symlink():
            raise UserError(f"{folder}: already holds {name}; nothing to adopt")
    names = _contents(folder)
    if "config.json" in names:
        owners = [_earlier_run(folder)]
    elif any(n in SET_FILES[:NUM_FOLDS] for n in names):
        owners = _earlier_set(folder)
    elif names and all(cache.NAME.match(n) for n in names):
        log(f"{folder}: {'would own' if dry_run else 'owns'} {len(names)} caches ({', '.join(names[:3])}, ...)")
        if not dry_run:
            with writing(cache.MARKER, folder):
                cache.own_folder(folder, adopt=True)
        return
    else:
        raise UserError(
            f"{folder}: neither a run (config.json), a fold set (fold1/ .. fold5/) nor a cache of this project; "
            "nothing adopted"
        )
    for owner in owners:
        kept = [n for n in _contents(owner.folder) if n not in owner.entries]
        what = "run" if owner.kind == "run" else "fold set"
        line = f"{owner.folder}: {'would own' if dry_run else 'owns'}, as a {what}, {', '.join(owner.entries)}"
        log(line + (f"; leaves alone {', '.join(kept)}" if kept else ""))
        if not dry_run:
            with writing(owner.marker.name, owner.folder):
                owner.write()


def main(argv: list[str] | None = None) -> None:
    from common.cli import HelpFormatter

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="python -m common.rundir",
        description="Bring a run, a fold set or a cache folder written by a version of this project from before "
        "markers under the project's ownership (until then every command refuses it).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    adopting = commands.add_parser("adopt", help="write the marker of an earlier run, fold set or cache folder")
    adopting.add_argument("folder", help="the run directory, the folder of fold1/ .. fold5/, or the cache folder")
    adopting.add_argument("--dry_run", action="store_true", help="only show what it would own")
    args = parser.parse_args(argv)
    adopt(Path(paths.check("folder", args.folder)), args.dry_run)


if __name__ == "__main__":
    run_cli(main)
