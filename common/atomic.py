"""Files and folders that appear complete or not at all: written under a temporary name, then renamed.

A crash, a full disk or a second process can then never leave a half-written cache, corpus or run file
where a later command would read it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def _temporary(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


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
