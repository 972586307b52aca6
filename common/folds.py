"""Which utterances a fold trains, validates and tests on.

contiguous (the original): fold k of 5 tests on the block [int(n*(k-1)/5), int(n*k/5)) of the ordered
utterances and trains on the rest; the integer boundaries are exactly the original's.
session: the sessions, in number order, are cut into 5 blocks the same way (KEMDy19's 20 sessions four
per fold, KEMDy20's 40 eight per fold) and fold k tests on every utterance of its block's sessions.
No speaker is then on both sides, the protocol of speaker-independent KEMDy results.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import UserError

NUM_FOLDS = 5
SPLITS = ("contiguous", "session")


@dataclass(frozen=True)
class Fold:
    fold: int  # 1-based
    train: list[int]  # indices into the ordered utterance list, in that order
    test: list[int]
    test_sessions: tuple[str, ...] = ()  # session split only


def block_bounds(n: int, fold: int, num_folds: int = NUM_FOLDS) -> tuple[int, int]:
    """[start, end) of the test block, with the original's float division and truncation."""
    return int(n * (fold - 1) / num_folds), int(n * fold / num_folds)


def session_order(sessions: Sequence[str]) -> list[str]:
    """The distinct sessions by number ("Sess2" before "Sess10"), then by name."""

    def key(s: str):
        number = re.search(r"\d+", s)
        return (int(number.group(0)) if number else math.inf, s)

    return sorted(set(sessions), key=key)


def make_fold(sessions: Sequence[str], fold: int, split: str = "contiguous", num_folds: int = NUM_FOLDS) -> Fold:
    """Train/test indices for `fold` (1-based) over the ordered utterances, given each one's session."""
    if not 1 <= fold <= num_folds:
        raise UserError(f"--num_fold {fold}: choose a fold from 1 to {num_folds}")
    if split not in SPLITS:
        raise UserError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    n = len(sessions)
    if split == "contiguous":
        start, end = block_bounds(n, fold, num_folds)
        return Fold(fold, [*range(start), *range(end, n)], list(range(start, end)))
    order = session_order(sessions)
    if len(order) < num_folds:
        raise UserError(f"--split session: the corpus has {len(order)} sessions, fewer than {num_folds} folds")
    start, end = block_bounds(len(order), fold, num_folds)
    held = set(order[start:end])
    test = [i for i, s in enumerate(sessions) if s in held]
    train = [i for i, s in enumerate(sessions) if s not in held]
    return Fold(fold, train, test, tuple(order[start:end]))


def hold_out_validation(
    train: list[int], ratio: float, sessions: Sequence[str] | None = None
) -> tuple[list[int], list[int]]:
    """(train, valid): the last `ratio` of the training fold, or with `sessions` (the session split) its
    last ceil(ratio x training sessions) whole sessions. A block, like the test folds: a random subset
    would put most of KEMDy19's recordings, annotated twice, on both sides."""
    if not 0 <= ratio < 1:
        raise UserError(f"--valid_ratio {ratio}: choose a value in [0, 1)")
    if not ratio:
        return train, []
    if sessions is None:
        n_valid = math.ceil(len(train) * ratio)
        return train[: len(train) - n_valid], train[len(train) - n_valid :]
    order = session_order([sessions[i] for i in train])
    held = set(order[len(order) - min(math.ceil(len(order) * ratio), len(order) - 1) :])
    return [i for i in train if sessions[i] not in held], [i for i in train if sessions[i] in held]


def fold_splits(
    sessions: Sequence[str], fold: int, split: str, valid_ratio: float
) -> tuple[Fold, list[int], list[int]]:
    """(fold, train, valid) of `fold` under `split`, validation held out as that split does it."""
    f = make_fold(sessions, fold, split)
    if not f.test or not f.train:
        raise UserError(
            f"the corpus has {len(sessions)} usable utterances: too few for {NUM_FOLDS} folds (fold {fold} would "
            f"{'test' if not f.test else 'train'} on none)"
        )
    train, valid = hold_out_validation(f.train, valid_ratio, sessions if split == "session" else None)
    if not train:
        raise UserError(f"--valid_ratio {valid_ratio}: leaves no training utterance in fold {fold}; choose less")
    return f, train, valid


def cross_corpus_splits(
    sessions: Sequence[str], n_test: int, split: str, valid_ratio: float
) -> tuple[Fold, list[int], list[int]]:
    """(fold, train, valid) of a cross-corpus run over the training corpus's utterances (given each one's
    session) followed by `n_test` of the test corpus: all of the first for training, its validation held out as
    `split` does it from a training fold (--valid_ratio), and all of the second for the test."""
    n = len(sessions)
    train, valid = hold_out_validation(list(range(n)), valid_ratio, sessions if split == "session" else None)
    if not train:
        raise UserError(f"--valid_ratio {valid_ratio}: leaves no training utterance; choose less")
    return Fold(1, list(range(n)), list(range(n, n + n_test))), train, valid


def fold_sizes(sessions: Sequence[str], split: str, valid_ratio: float = 0.1) -> list[dict]:
    """Per fold: its train/valid/test utterance counts and, for the session split, its test sessions."""
    rows = []
    for k in range(1, NUM_FOLDS + 1):
        fold, train, valid = fold_splits(sessions, k, split, valid_ratio)
        rows.append(
            {"fold": k, "train": len(train), "valid": len(valid), "test": len(fold.test)}
            | ({"test_sessions": list(fold.test_sessions)} if split == "session" else {})
        )
    return rows
