"""Which utterances a fold trains and tests on.

The original protocol tests fold k of 5 on the contiguous block [int(n*(k-1)/5), int(n*k/5)) of the
ordered utterances and trains on the rest; the integer boundaries are exactly the original's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from common.errors import UserError

NUM_FOLDS = 5
SPLITS = ("contiguous",)


@dataclass(frozen=True)
class Fold:
    fold: int  # 1-based
    train: list[int]  # indices into the ordered utterance list
    test: list[int]


def block_bounds(n: int, fold: int, num_folds: int = NUM_FOLDS) -> tuple[int, int]:
    """[start, end) of the test block, with the original's float division and truncation."""
    return int(n * (fold - 1) / num_folds), int(n * fold / num_folds)


def make_fold(n: int, fold: int, split: str = "contiguous", num_folds: int = NUM_FOLDS) -> Fold:
    """Train/test indices for `fold` (1-based) of `num_folds` over n ordered utterances."""
    if not 1 <= fold <= num_folds:
        raise UserError(f"--num_fold {fold}: choose a fold from 1 to {num_folds}")
    if split not in SPLITS:
        raise UserError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    start, end = block_bounds(n, fold, num_folds)
    return Fold(fold, [*range(start), *range(end, n)], list(range(start, end)))


def hold_out_validation(train: list[int], ratio: float) -> tuple[list[int], list[int]]:
    """(train, valid): the last `ratio` of the training fold. A contiguous block, like the test folds: a random
    subset would put most of KEMDy19's recordings, annotated twice, on both sides."""
    if not 0 <= ratio < 1:
        raise UserError(f"--valid_ratio {ratio}: choose a value in [0, 1)")
    n_valid = math.ceil(len(train) * ratio) if ratio else 0
    return train[: len(train) - n_valid], train[len(train) - n_valid :]
