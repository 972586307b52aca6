"""The one exception type users see, and the wrapper that turns it into a one-line message."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A problem the user can fix (bad path, bad flag, broken file); its message names what and where."""


def run_cli(fn: Callable[[], T]) -> T:
    """Run an entry point; a UserError becomes `error: <message>` on stderr and exit code 2, no traceback."""
    try:
        return fn()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
