"""Progress of the loops that can take long (training and evaluation batches, cache building, frozen-vector
extraction): a live bar on a terminal; in a log file, under `accelerate launch` or a scheduler, a plain line
about every 10 %, once the loop has run a few seconds, never a bar redrawn thousands of times into a file."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

AFTER_SECONDS = 5.0  # a loop that ends sooner prints no line into a file


class Progress:
    """Iterate over `iterable` showing progress on stderr (nothing where `show` is false); `note(...)` adds
    values such as the loss so far."""

    def __init__(self, iterable: Iterable, desc: str, total: int | None = None, show: bool = True):
        self.iterable, self.desc, self.show = iterable, desc, show
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.values: dict[str, str] = {}
        self._bar = None

    def note(self, **values) -> None:
        self.values = {k: str(v) for k, v in values.items()}
        if self._bar is not None:
            self._bar.set_postfix(self.values, refresh=False)

    def __iter__(self) -> Iterator:
        if not self.show:
            yield from self.iterable
        elif sys.stderr.isatty():
            yield from self._live()
        else:
            yield from self._lines()

    def _live(self) -> Iterator:
        from tqdm.auto import tqdm

        with tqdm(self.iterable, self.desc, total=self.total, leave=False, dynamic_ncols=True) as self._bar:
            yield from self._bar
        self._bar = None

    def _lines(self) -> Iterator:
        start, mark = time.monotonic(), 1
        for done, item in enumerate(self.iterable, 1):
            yield item
            elapsed = time.monotonic() - start
            if not self.total or elapsed < AFTER_SECONDS or done * 10 < mark * self.total and done != self.total:
                continue
            mark = done * 10 // self.total + 1
            rate = done / elapsed
            left = (self.total - done) / rate
            extra = "".join(f", {k} {v}" for k, v in self.values.items())
            line = f"{self.desc}: {done}/{self.total} ({done / self.total:.0%}), {rate:.2f}/s, {left:.0f} s left{extra}"
            print(line, file=sys.stderr, flush=True)
