"""Preprocessing caches shared by every script and fold: token ids, decoded audio, frozen embeddings.

A cache is a folder `<cache_dir>/<kind>-<key>` whose key hashes everything its content depends on (the
recordings' content, the tokenizer, the maximum lengths, the sample rate). A changed input gets a new folder
instead of a stale one; folders are built under a temporary name and renamed when complete, so a half-written
cache is never read; and every file's checksum, taken when it was built, is checked again whenever the file's
stamp (size, inode, modification and change times: any write changes the change time, which cannot be set
back) differs from the one it had when its checksums last matched, so a cache changed since is built again.
`rm -rf cache/` is always safe.

A cache folder is the project's by its marker, `kemdy_cache.json`, written into a new or empty folder: only
there, and only names of the caches' own pattern, are ever removed (a damaged cache, a killed run's
temporary). A folder holding other files without the marker is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from common import atomic, schema
from common.atomic import build_folder, remove_stale_temporaries
from common.errors import UserError, writing

FORMAT = 1  # part of every key: a new on-disk format never reads an old cache
MARKER = "kemdy_cache.json"
NAME = re.compile(r"^[a-z0-9_]+-[0-9a-f]{20}(\.json)?$")  # `<kind>-<key>` folders, `digests-<key>.json`
MARKER_SPEC = schema.Fields({"format": schema.Choice(1), "kind": schema.Choice("cache")})


def is_ours(cache_dir: str | Path) -> bool:
    """Whether `cache_dir` holds the project's cache marker (a damaged one is one line)."""
    marker = Path(cache_dir) / MARKER
    if not (marker.exists() or marker.is_symlink()):
        return False
    if marker.is_symlink():
        raise UserError(f"{marker}: a link, not a marker this project wrote; nothing in {cache_dir} is touched")
    try:
        schema.load(marker, MARKER_SPEC, max_bytes=1 << 16)
    except schema.DamagedFile as err:
        raise UserError(f"{err}; nothing in {cache_dir} is touched: give another --cache_dir") from None
    return True


def check_folder(cache_dir: str | Path) -> None:
    """Refuse a --cache_dir that is neither the project's cache nor new or empty, before a run writes anything."""
    folder = Path(cache_dir)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--cache_dir {folder}: is a file; give a folder for the caches")
    if is_ours(folder) or not folder.is_dir():
        return
    names = sorted(p.name for p in folder.iterdir() if atomic.temporary_target(p.name) is None)
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise UserError(
            f"--cache_dir {folder}: holds files that are not the project's caches ({shown}; no {MARKER}); give a "
            f"new or empty folder (a cache of an earlier version: python -m common.rundir adopt {folder})"
        )


def own_folder(cache_dir: str | Path, adopt: bool = False) -> Path:
    """`cache_dir`, marked as the project's cache if it is new or empty (refused otherwise; with `adopt`, a
    cache folder of an earlier version, which `python -m common.rundir adopt` has shown)."""
    folder = Path(cache_dir)
    if not adopt:
        check_folder(folder)
    if not is_ours(folder):
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_json(folder / MARKER, {"format": 1, "kind": "cache"})
    return folder


def fingerprint(*parts) -> str:
    """A short stable hash of JSON-able parts (paths and other objects by their str)."""
    text = json.dumps([FORMAT, *parts], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _stamp(st: os.stat_result) -> list[int]:
    """What changes whenever a file's content does, without reading it: size, modification and change times
    (the change time cannot be set back by hand), inode."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def file_digests(paths: Sequence[str | Path], cache_dir=None) -> dict[str, str]:
    """The SHA-256 of each file's content, keyed by str(path). With `cache_dir`, remembered by file stamp in
    `<cache_dir>/digests-<key of the files' folder>.json`: a file is read again only once it changed."""
    given = list(dict.fromkeys(map(str, paths)))  # a corpus's paths share one form: compared as strings
    if not given:
        return {}
    files = given if len({os.path.isabs(p) for p in given}) == 1 else [os.path.abspath(p) for p in given]
    root = os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0])
    start = len(root) + 1 if root else 0
    index_path = Path(cache_dir, f"digests-{fingerprint(os.path.abspath(root))}.json") if cache_dir else None
    index: dict[str, str] = {}
    if index_path is not None and index_path.is_file():
        try:
            index = schema.load(index_path, DIGESTS, max_bytes=1 << 28)
        except schema.DamagedFile:
            index = {}  # damaged, or written in an earlier form: every file is read again
    digests, changed = {}, False
    for key, path in zip(given, files, strict=True):
        name = path[start:]
        stamp, _, digest = index.get(name, "").rpartition(" ")
        if digest and stamp == _stamp_text(os.stat(path)):
            digests[key] = digest
            continue
        with open(path, "rb") as f:  # the stamp of the content read
            stamp = _stamp_text(os.fstat(f.fileno()))
            digests[key] = hashlib.file_digest(f, "sha256").hexdigest()
        index[name], changed = f"{stamp} {digests[key]}", True
    if changed and index_path is not None:
        with writing("the recordings' digests", cache_dir, "; or give another --cache_dir, or --no-cache"):
            own_folder(cache_dir)
            atomic.write_json(index_path, index)
    return digests


def _stamp_text(st: os.stat_result) -> str:
    return " ".join(map(str, _stamp(st)))


# By each file's path: its stamp (size, modification and change times, inode) and content digest, in one string
# (strings leave the garbage collector nothing to scan, where 13,462 lists would be traced at every collection).
DIGESTS = schema.Map(
    schema.Rule(str, re.compile(r"\d+ \d+ \d+ \d+ [0-9a-f]{64}").fullmatch, "a stamp and a SHA-256 digest")
)


class DamagedCache(ValueError):
    """A cache folder whose files do not hold what its description says (truncated, overwritten)."""


CHECKSUMS = "checksums.json"
CHECKSUM_SPEC = schema.Map(
    schema.Fields({"bytes": schema.count(0), "crc32": [schema.count(0)]}),
    keys=schema.Rule(str, schema.name_in_folder, "a file name"),
)
VERIFIED = "verified.json"  # each file's stamp when its checksums were taken or last matched
VERIFIED_SPEC = schema.Map(schema.Rule([int], lambda v: len(v) == 4, "a file's stamp"))
BLOCK = 1 << 24  # bytes per checksum: blocks are checked in parallel (zlib releases the GIL)


def _block_crcs(path: Path) -> list[int]:
    """The CRC-32 of each 16 MiB block of a file, computed on every core."""
    from concurrent.futures import ThreadPoolExecutor

    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:

        def crc(offset: int) -> int:
            data = os.pread(fd, BLOCK, offset)
            if len(data) != min(BLOCK, size - offset):
                raise DamagedCache(f"{path.name}: shorter than when it was opened")
            return zlib.crc32(data)

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            return list(pool.map(crc, range(0, size, BLOCK)))
    finally:
        os.close(fd)


def seal(folder: Path, remember: bool = False) -> None:
    """Record every file's size and block checksums (CRC-32 of each 16 MiB) in the folder's checksums.json; with
    `remember`, also the stamp each file had when they were taken (see `verify`)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name not in (CHECKSUMS, VERIFIED))
    stamps = {p.name: _stamp(p.stat()) for p in files}
    sums = {p.name: {"bytes": stamps[p.name][0], "crc32": _block_crcs(p)} for p in files}
    (folder / CHECKSUMS).write_text(json.dumps(sums, indent=1))
    if remember and all(_stamp(p.stat()) == stamps[p.name] for p in files):  # unchanged while they were read
        atomic.write_json(folder / VERIFIED, stamps)


def verify(folder: Path, adopt: bool = True, remember: bool = False) -> None:
    """Raise DamagedCache unless every file of the folder has the size and checksums it had when sealed. A
    folder sealed before checksums were kept is taken as it is (and, with `adopt`, sealed now). With `remember`,
    each file's stamp is kept in verified.json once its checksums match, and a file is read again only once its
    stamp changes (any write changes its change time, which cannot be set back)."""
    if not (folder / CHECKSUMS).is_file():
        if not folder.is_dir():
            raise DamagedCache(f"{folder}: removed")
        if adopt:
            seal(folder)
        return
    try:
        sums = schema.load(folder / CHECKSUMS, CHECKSUM_SPEC)
    except schema.DamagedFile as err:
        raise DamagedCache(f"{CHECKSUMS}: {err.problem}") from None
    verified = _verified(folder) if remember else {}
    stamps = {name: _check_file(folder / name, expected, verified.get(name)) for name, expected in sums.items()}
    if remember and stamps != verified:
        try:
            atomic.write_json(folder / VERIFIED, stamps)
        except OSError:
            pass  # a cache on a read-only disk is checked in full every time


def _check_file(path: Path, expected: dict, verified: list | None) -> list[int]:
    """The file's stamp, once its size and checksums are those it was sealed with (unless `verified` is that stamp:
    then it has not changed since they last matched)."""
    try:
        stamp = _stamp(path.stat())
        if stamp == verified:
            return stamp
        crcs = _block_crcs(path) if stamp[0] == expected["bytes"] else None
    except OSError as err:
        raise DamagedCache(f"{path.name}: {err.strerror or err}") from None
    if stamp[0] != expected["bytes"]:
        raise DamagedCache(f"{path.name}: {stamp[0]} bytes, built with {expected['bytes']} (checksum)")
    if crcs != expected["crc32"]:
        raise DamagedCache(f"{path.name}: content changed (checksum)")
    return stamp


def _verified(folder: Path) -> dict:
    """The stamps verified.json holds; none if it is missing or damaged (then every file is read)."""
    try:
        return schema.load(folder / VERIFIED, VERIFIED_SPEC, max_bytes=1 << 20)
    except (schema.DamagedFile, OSError):
        return {}


def cached(cache_dir: str | Path, kind: str, key: str, build: Callable[[Path], None], log=print) -> tuple[Path, bool]:
    """(folder, built now) for `<cache_dir>/<kind>-<key>`, built with build(tmp_folder) and sealed if missing.

    Temporaries that killed runs left behind are removed first; a full disk or an unwritable folder stops
    with one line, leaving nothing half-written.
    """
    folder = Path(cache_dir) / f"{kind}-{key}"
    existed = folder.is_dir()

    def build_sealed(tmp: Path) -> None:
        build(tmp)
        seal(tmp, remember=True)

    with writing(f"the {kind} cache", cache_dir, "; or give another --cache_dir, or --no-cache"):
        own_folder(cache_dir)
        for path in remove_stale_temporaries(cache_dir, lambda target: NAME.match(target) is not None):
            log(f"removed {path}, left half-written by a run that is no longer running")
        return build_folder(folder, build_sealed), not existed


def open_cached(cache_dir, kind: str, key: str, build: Callable[[Path], None], read: Callable, log=print):
    """(read(folder), folder, built now) for a cache folder: built if missing, its checksums checked if not,
    and built again once if damaged (changed, truncated, or removed under the run)."""
    for attempt in (1, 2):
        folder, built = cached(cache_dir, kind, key, build, log)
        try:
            if not built:
                verify(folder, remember=True)
            return read(folder), folder, built
        except DamagedCache as err:
            if attempt == 2:
                raise UserError(f"{folder}: damaged again right after it was built ({err}); check the disk") from None
            log(f"{folder}: damaged ({err}); building it again")
            shutil.rmtree(folder, ignore_errors=True)
    raise AssertionError("unreachable")


class _FileRows:
    """A file read row by row, each row copied from the OS page cache straight into the array that holds it:
    none of the file stays in this process's memory, however large (a memory map keeps the pages it touched
    resident unless given back, and faulting them in again costs more than the copy: for a 40 KB row,
    14 us against 5 us).

    The file is opened once, when the cache is: a cache folder removed while a run reads it stays readable to
    the run (and to forked DataLoader workers, which share the descriptor: reads at an offset move no shared
    position)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = self._open()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDONLY)
        except OSError as err:
            raise DamagedCache(f"{self.path}: {err.strerror or err}") from None

    def __getstate__(self) -> dict:  # a spawned worker opens the file again
        return self.__dict__ | {"_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def _read_into(self, out: np.ndarray, offset: int) -> np.ndarray:
        if self._fd is None:
            try:
                self._fd = self._open()
            except DamagedCache as err:
                raise UserError(f"{err}: the cache was removed while the run used it; run the command again") from None
        view = memoryview(out).cast("B")
        if os.preadv(self._fd, [view], offset) != len(view):
            raise UserError(
                f"{self.path}: ends before byte {offset + len(view)}: the cache changed while the run used it; run "
                "the command again (the cache is rebuilt)"
            )
        return out


class VectorRows(_FileRows):
    """The rows of a .npy file of fixed-shape rows (every layer's summary of each utterance), read as they are
    asked for: a cache of the real encoders' layers (0.54 GB per encoder for KEMDy20) never sits in memory."""

    def __init__(self, path: str | Path):
        super().__init__(Path(path))
        array = np.load(self.path, mmap_mode="r")  # reads and checks the header only
        self.shape, self.dtype, self._offset = array.shape, array.dtype, int(array.offset)
        self._row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        del array

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int | Sequence[int]) -> np.ndarray:
        """One row, or for a sequence of indices those rows stacked (as a NumPy array indexes)."""
        if not np.ndim(index):
            return self[[index]][0]
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        for row, i in zip(out, index, strict=True):
            self._read_into(row, self._offset + self._checked(i) * self._row_bytes)
        return out

    def _checked(self, i) -> int:
        if not 0 <= int(i) < len(self):
            raise IndexError(f"row {i} of {self.path}, which holds {len(self)}")
        return int(i)


class ArrayStore(_FileRows):
    """Variable-length 1-D arrays in one flat file, read row by row (rows may share storage: KEMDy19
    annotates every recording twice)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        super().__init__(folder / "data.bin")
        try:
            self.dtype = np.dtype(schema.load(folder / "store.json", schema.Fields({"dtype": str}))["dtype"])
            self.starts = np.load(folder / "starts.npy")
            self.lengths = np.load(folder / "lengths.npy")
            expected = int((self.starts + self.lengths).max()) * self.dtype.itemsize if len(self.starts) else 0
            found = self.path.stat().st_size
        except schema.DamagedFile as err:
            raise DamagedCache(err.problem) from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DamagedCache(f"{type(err).__name__}: {err}") from None
        if len(self.starts) != len(self.lengths) or found != expected:
            raise DamagedCache(f"data.bin holds {found} bytes, its index describes {expected}")

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        n = int(self.lengths[i])
        if n == 0:
            return np.zeros(0, self.dtype)
        return self._read_into(np.empty(n, self.dtype), int(self.starts[i]) * self.dtype.itemsize)

    @staticmethod
    def write(folder: Path, rows: Sequence, dtype, keys: Sequence | None = None, progress=None) -> None:
        """Store rows[i] for every i; rows with equal keys are read and stored once."""
        folder.mkdir(parents=True, exist_ok=True)
        n = len(rows)
        starts, lengths = np.zeros(n, np.int64), np.zeros(n, np.int64)
        seen: dict = {}
        offset = 0
        with open(folder / "data.bin", "wb") as f:
            for i in progress(range(n)) if progress else range(n):
                key = keys[i] if keys is not None else i
                if key not in seen:
                    row = np.ascontiguousarray(rows[i], dtype=dtype)
                    f.write(row.tobytes())
                    seen[key] = (offset, len(row))
                    offset += len(row)
                starts[i], lengths[i] = seen[key]
        np.save(folder / "starts.npy", starts)
        np.save(folder / "lengths.npy", lengths)
        (folder / "store.json").write_text(json.dumps({"dtype": np.dtype(dtype).str, "rows": n}))


class SequenceStore:
    """Each utterance's sequence of rows of one width (a frozen encoder's states: positions x width), stored flat
    as an ArrayStore and read one utterance at a time."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        try:
            self.width = schema.load(folder / "sequences.json", schema.Fields({"width": schema.count(1)}))["width"]
        except schema.DamagedFile as err:
            raise DamagedCache(err.problem) from None
        self.rows = ArrayStore(folder)

    @property
    def path(self) -> Path:
        """Its data file (whose folder names the cache entry)."""
        return self.rows.path

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.rows[i].reshape(-1, self.width)

    @staticmethod
    def write(folder: Path, sequences, n: int, dtype) -> None:
        """Store `sequences`, (utterance index, positions x width) pairs in any order, for `n` utterances, one at a
        time: a corpus's states never sit in memory together."""
        folder.mkdir(parents=True, exist_ok=True)
        starts, lengths, offset, width = np.zeros(n, np.int64), np.zeros(n, np.int64), 0, None
        with open(folder / "data.bin", "wb") as f:
            for index, rows in sequences:
                width = rows.shape[-1] if width is None else width
                flat = np.ascontiguousarray(rows, dtype=dtype).reshape(-1)
                f.write(flat.tobytes())
                starts[index], lengths[index], offset = offset, len(flat), offset + len(flat)
        np.save(folder / "starts.npy", starts)
        np.save(folder / "lengths.npy", lengths)
        (folder / "store.json").write_text(json.dumps({"dtype": np.dtype(dtype).str, "rows": n}))
        (folder / "sequences.json").write_text(json.dumps({"width": width or 1}))
