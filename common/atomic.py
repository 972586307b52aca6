"""Files and folders that appear complete or not at all: written under a temporary name, then renamed.

A crash, a full disk or a second process can then never leave a half-written cache, corpus or run file
where a later command would read it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

# The names `_temporary` gives: `.<target>.tmp-<pid>-<8 hex>`; a pid beyond any system's is not one of ours.
TEMPORARY = re.compile(r"^\.(.+)\.tmp-(\d{1,7})-[0-9a-f]{8}$")
PID_MAX = 1 << 22  # the largest process id Linux allows


def temporary_target(name: str) -> str | None:
    """The name a temporary of `_temporary`'s naming stands in for (".x.json.tmp-12-ab12cd34" -> "x.json")."""
    match = TEMPORARY.match(name)
    return match.group(1) if match and 0 < int(match.group(2)) <= PID_MAX else None


def _temporary(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine."""
    if not 0 < pid <= PID_MAX:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | Path, ours: Callable[[str], bool]) -> list[Path]:
    """Remove the temporaries that processes no longer running left in `folder` (killed mid-write), of the
    targets `ours` accepts only: the caller owns `folder` and knows which names it writes there."""
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        target = temporary_target(path.name)
        if target is None or not ours(target) or alive(int(TEMPORARY.match(path.name).group(2))):
            continue
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink()
        removed.append(path)
    return removed


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` in one step."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        # A new file of a fresh name, never one found there (nor what a link there points to).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # replaces a link at `path` itself, never what it points to
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) in one step."""
    write_bytes(path, text.encode("utf-8"))


def json_text(data, ensure_ascii: bool = False) -> str:
    """`data` as indented JSON; NaN or infinity is refused, never written."""
    return json.dumps(data, indent=1, ensure_ascii=ensure_ascii, allow_nan=False)


def write_json(path: str | Path, data, ensure_ascii: bool = False) -> None:
    """Replace `path` with `data` as indented JSON in one step."""
    write_text(path, json_text(data, ensure_ascii))


def build_folder(target: str | Path, build: Callable[[Path], None]) -> Path:
    """`target`, built by build(tmp_folder) unless it exists; a concurrent builder's result is kept."""
    target = Path(target)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(target)
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: keep its folder
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
