"""Preprocessing caches shared by every script and fold: token ids, decoded audio, frozen embeddings.

A cache is a folder `<cache_dir>/<kind>-<key>` whose key hashes everything its content depends on (the
corpus files with their sizes and modification times, the tokenizer, the maximum lengths, the sample
rate). A changed input gets a new folder instead of a stale one, and folders are built under a temporary
name and renamed when complete, so a half-written cache is never read. `rm -rf cache/` is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from common.atomic import build_folder, remove_stale_temporaries
from common.errors import writing

FORMAT = 1  # part of every key: a new on-disk format never reads an old cache


def fingerprint(*parts) -> str:
    """A short stable hash of JSON-able parts (paths and other objects by their str)."""
    text = json.dumps([FORMAT, *parts], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def file_stamp(path: str | Path) -> tuple[str, int, int]:
    """What identifies a file's content without reading it: absolute path, size, modification time."""
    st = os.stat(path)
    return os.path.abspath(path), st.st_size, st.st_mtime_ns


class DamagedCache(ValueError):
    """A cache folder whose files do not hold what its description says (truncated, overwritten)."""


def cached(cache_dir: str | Path, kind: str, key: str, build: Callable[[Path], None], log=print) -> tuple[Path, bool]:
    """(folder, built now) for `<cache_dir>/<kind>-<key>`, built with build(tmp_folder) if missing.

    Temporaries that killed runs left behind are removed first; a full disk or an unwritable folder stops
    with one line, leaving nothing half-written.
    """
    folder = Path(cache_dir) / f"{kind}-{key}"
    existed = folder.is_dir()
    with writing(f"the {kind} cache", cache_dir, "; or give another --cache_dir, or --no-cache"):
        for path in remove_stale_temporaries(cache_dir):
            log(f"removed {path}, left half-written by a run that is no longer running")
        return build_folder(folder, build), not existed


def rebuild(folder: Path, problem: str, log=print) -> None:
    """Remove a damaged cache folder (the next `cached` call builds it again), saying so."""
    log(f"{folder}: damaged ({problem}); building it again")
    shutil.rmtree(folder)


class _FileRows:
    """A file read row by row, each row copied from the OS page cache straight into the array that holds it:
    none of the file stays in this process's memory, however large (a memory map keeps the pages it touched
    resident unless given back, and faulting them in again costs more than the copy: for a 40 KB row,
    14 us against 5 us)."""

    def __init__(self, path: Path):
        self.path = path
        self._file = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:  # DataLoader workers open their own file (a file position is not shared)
        return self.__dict__ | {"_file": None, "_pid": None}

    def __del__(self) -> None:
        self._close()

    def _close(self) -> None:  # in a forked process, closes that process's copy of the descriptor only
        if getattr(self, "_file", None) is not None:
            self._file.close()

    def _read_into(self, out: np.ndarray, offset: int) -> np.ndarray:
        if self._file is None or self._pid != os.getpid():
            self._close()
            self._file, self._pid = open(self.path, "rb", buffering=0), os.getpid()
        view = memoryview(out).cast("B")
        self._file.seek(offset)
        if self._file.readinto(view) != len(view):
            raise DamagedCache(f"{self.path}: ends before byte {offset + len(view)}; delete it to rebuild the cache")
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
            self.dtype = np.dtype(json.loads((folder / "store.json").read_text())["dtype"])
            self.starts = np.load(folder / "starts.npy")
            self.lengths = np.load(folder / "lengths.npy")
            expected = int((self.starts + self.lengths).max()) * self.dtype.itemsize if len(self.starts) else 0
            found = self.path.stat().st_size
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
