"""Paths given on a command line, refused in one line before anything runs where no file system could hold
them: empty (an empty --output_dir would silently mean the current folder), over the system's limits, or
holding a line break (which would also break every message naming it)."""

from __future__ import annotations

import os

from common.errors import UserError

NAME_MAX = 255  # bytes of one file or folder name (Linux, macOS)
PATH_MAX = 4095  # bytes of a whole path (Linux)


def check(flag: str, value: str | None) -> str | None:
    """`value` of `flag` (e.g. "--output_dir"), or one line saying why no file system could hold it."""
    if value is None:
        return None
    if value == "":
        raise UserError(f"{flag}: empty; give a path, or leave the flag out for its default")
    if any(c in value for c in "\n\r\0"):
        raise UserError(f"{flag} {value!r}: holds a line break or NUL; give a path on one line")
    encoded = os.fsencode(value)
    if len(encoded) > PATH_MAX:
        raise UserError(f"{flag} {value[:40]}...: {len(encoded)} bytes long, beyond the system's {PATH_MAX}")
    longest = max(encoded.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        shown = os.fsdecode(longest[:40])
        raise UserError(
            f"{flag}: its name {shown}... is {len(longest)} bytes long, beyond the system's {NAME_MAX} for a name"
        )
    return value
