"""The one exception type users see, and the wrapper that turns it into a one-line message."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A problem the user can fix (bad path, bad flag, broken file); its message names what and where."""


class Interrupted(UserError):
    """Ctrl-C: the message says what was kept and how to continue."""


def run_cli(fn: Callable[[], T]) -> T:
    """Run an entry point; a UserError becomes `error: <message>` on stderr and exit code 2 (130 for
    Ctrl-C), no traceback."""
    try:
        return fn()
    except Interrupted as err:
        print(f"{err}", file=sys.stderr)
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


@contextmanager
def writing(what: str, where, then: str = ""):
    """An OSError while writing `what` under `where` becomes one line: the disk is full, or the folder
    cannot be written. `then` says how to continue."""
    try:
        yield
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise UserError(f"disk full while writing {what} in {where}; free some space{then}") from None
        raise UserError(f"cannot write {what} in {where} ({err.strerror or err}){then}") from None
