"""The one exception type users see, and the entry-point wrapper that turns it, a full disk, an error raised
in a DataLoader worker and Ctrl-C into one line."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A problem the user can fix (bad path, bad flag, broken file); its message names what and where."""


class Interrupted(UserError):
    """Ctrl-C: the message says what was kept and how to continue."""


def run_cli(fn: Callable[[], T], whole_process: bool = False) -> T:
    """Run an entry point; a UserError becomes `error: <message>` on stderr and exit code 2 (130 for
    Ctrl-C), no traceback. A second Ctrl-C while the first is being handled is ignored, so that what is
    being written is finished or removed, never left half-written. `whole_process`: the process ends with
    `fn`, so Ctrl-C keeps this handling until it has exited (else the caller's is restored)."""
    previous = signal.getsignal(signal.SIGINT)
    handler = _Interrupts()
    if previous is signal.default_int_handler:  # not when the caller (a test, a launcher) handles Ctrl-C itself
        signal.signal(signal.SIGINT, handler)
    try:
        return fn()
    except Interrupted as err:
        print(f"{err}", file=sys.stderr)
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except UserError as err:
        print(f"error: {worker_message(str(err))}", file=sys.stderr)
        raise SystemExit(2) from None
    except BrokenPipeError:  # the reader of the output went away (`| head`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
    finally:
        if previous is signal.default_int_handler:
            # A process about to end ignores Ctrl-C (the interpreter would restore the default, which kills
            # it while exiting); otherwise the caller gets its handling back.
            signal.signal(signal.SIGINT, signal.SIG_IGN if whole_process else previous)


class _Interrupts:
    """SIGINT under `run_cli`: the first raises KeyboardInterrupt, later ones are ignored while it unwinds;
    once the results are complete, Ctrl-C only says so."""

    def __init__(self):
        self.count, self.complete = 0, False

    def __call__(self, signum, frame) -> None:
        if self.complete:
            print("the results are complete; finishing", file=sys.stderr, flush=True)
            return
        self.count += 1
        if self.count == 1:
            raise KeyboardInterrupt


def results_complete() -> None:
    """Every result is written: a Ctrl-C from here on lets the command finish (exit 0)."""
    handler = signal.getsignal(signal.SIGINT)
    if isinstance(handler, _Interrupts):
        handler.complete = True


def worker_message(message: str) -> str:
    """A UserError raised in a DataLoader worker reaches the main process wrapped in the worker's traceback:
    its own message is the traceback's last line."""
    if not message.startswith("Caught ") or "Original Traceback" not in message:
        return message
    last = message.rstrip().splitlines()[-1]
    return re.sub(r"^[\w.]*(UserError|Interrupted): ", "", last)


# What torch.save (its C++ stream writer) and safetensors raise when a write fails, where Python raises OSError.
_WRITE_FAILED = re.compile(
    r"iostream error|PytorchStreamWriter failed|file write failed|unexpected pos \d+ vs \d+|I/O error|os error \d+"
)


def _disk_full(where) -> bool:
    """Whether the file system holding `where` has no space left."""
    path = Path(where)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free < 1 << 20
    except OSError:
        return False


@contextmanager
def writing(what: str, where, then: str = ""):
    """An OSError while writing `what` under `where` (or what torch.save and safetensors raise for a failed
    write) becomes one line: "disk full: ..." or "cannot write ...". `then` says how to continue."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"disk full: cannot write {what} in {where}; free some space{then}") from None
        raise UserError(f"cannot write {what} in {where} ({err.strerror or err}){then}") from None
    except Exception as err:  # RuntimeError from torch.save, SafetensorError from safetensors
        if isinstance(err, UserError) or not _WRITE_FAILED.search(str(err)):
            raise
        if _disk_full(where) or "os error 28" in str(err):
            raise UserError(f"disk full: cannot write {what} in {where}; free some space{then}") from None
        raise UserError(f"cannot write {what} in {where} (the write failed: {str(err).strip()}){then}") from None
