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

TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]{8}$")  # the names `_temporary` gives


def temporary_target(name: str) -> str | None:
    """The name a temporary of `_temporary`'s naming stands in for (".x.json.tmp-12-ab12cd34" -> "x.json")."""
    match = TEMPORARY.match(name)
    return name[1 : name.rindex(".tmp-")] if match else None


def _temporary(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporaries that processes no longer running left in `folder` (killed mid-write)."""
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = TEMPORARY.match(path.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` in one step."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
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
