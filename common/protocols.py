"""Published KEMDy protocols, reproduced exactly (`--protocol NAME`): the annotation rows a publication used, its
folds and validation, and the figure it published, so that a run's number stands beside the published one.

A protocol is one entry of PROTOCOLS: a function that says which utterances it drops (and why), one that gives
fold k's training, validation and test utterances, the metric it publishes, and its published five-fold means.
Each is tested against an independent transcription of the publishing code on the real-layout fixtures.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common.errors import UserError
from common.folds import NUM_FOLDS, Fold


@dataclass(frozen=True)
class Protocol:
    source: str  # where the publishing code is
    rows: str  # which rows it keeps, in words
    folds: str  # how it cuts them, in words
    headline: str  # the metric it publishes: a key of metrics.json's "test"
    published: dict[str, float]  # its five-fold mean of `headline`, by corpus ("KEMDy19", "KEMDy20")
    dropped: Callable  # (utterances) -> the reason each one is dropped, or None where it is kept
    splits: Callable  # (segment ids, fold 1..5) -> (Fold, train, valid), indices into those ids


def _session(segment_id: str) -> str:
    """The session an id names (`Sess07`), as the publishing code reads it."""
    found = re.search(r"(Sess\d{2})_", segment_id)
    if found is None:
        raise UserError(f"{segment_id}: names no session (SessNN_); --protocol continual_erc needs KEMDy's ids")
    return found.group(1)


def _continual_erc_dropped(utterances) -> list[str | None]:
    """WoongheeLee/continual_erc_etri's rows: the speaker's rows only (a file whose name holds F or M, KEMDy19's,
    keeps the ids holding that letter), one emotion only (`disqust` read as `disgust`, as the readers do), and a
    recording found under the id the annotation file writes (it looks files up by that name: KEMDy20's
    session-17 ids, which name another session, find none)."""
    reasons = []
    for u in utterances:
        actor = "F" if "F" in u.annotation else "M" if "M" in u.annotation else None
        if actor is not None and actor not in u.annotation_id:
            reasons.append("a listener's row")
        elif sum(u.labels) != 1:
            reasons.append("more than one emotion")
        elif u.annotation_id != u.segment_id:
            reasons.append("no recording under its annotated id")
        else:
            reasons.append(None)
    return reasons


def _continual_erc_splits(segment_ids: Sequence[str], fold: int) -> tuple[Fold, list[int], list[int]]:
    """Fold `fold` (their fold - 1): scikit-learn's KFold(5, shuffle=True, random_state=12) over the sorted session
    ids, then two of the training sessions for validation, drawn by np.random.RandomState(12 + their fold). KFold
    is written out here (a permutation by RandomState(12), cut into five blocks, the first n % 5 one larger), so
    that the test holds it against scikit-learn's own."""
    import numpy as np

    sessions = [_session(s) for s in segment_ids]
    keys = sorted(set(sessions))
    if len(keys) < NUM_FOLDS:
        raise UserError(f"--protocol continual_erc: the corpus has {len(keys)} sessions, fewer than {NUM_FOLDS} folds")
    order = np.arange(len(keys))
    np.random.RandomState(12).shuffle(order)
    sizes = [len(keys) // NUM_FOLDS + (k < len(keys) % NUM_FOLDS) for k in range(NUM_FOLDS)]
    start = sum(sizes[: fold - 1])
    test = order[start : start + sizes[fold - 1]]
    train = np.setdiff1d(np.arange(len(keys)), test)  # ascending, as KFold gives it
    valid = np.random.RandomState(12 + fold - 1).choice(train, 2, replace=False)
    held = {"test": {keys[k] for k in test}, "valid": {keys[k] for k in valid}}
    part = {i: next((p for p, s in held.items() if sessions[i] in s), "train") for i in range(len(sessions))}
    indices = {p: [i for i in range(len(sessions)) if part[i] == p] for p in ("train", "valid", "test")}
    train_all = indices["train"] + indices["valid"]
    the_fold = Fold(fold, sorted(train_all), indices["test"], tuple(sorted(held["test"])))
    return the_fold, indices["train"], indices["valid"]


PROTOCOLS = {
    "continual_erc": Protocol(
        source="WoongheeLee/continual_erc_etri (utils/data_utils.py; README, task_a)",
        rows="KEMDy19: the speaker's rows only; one emotion only; a recording under the annotated id",
        folds="KFold(5, shuffle, seed 12) over the sorted sessions; 2 training sessions for validation",
        headline="top1_weighted_f1",
        published={"KEMDy19": 0.70389, "KEMDy20": 0.87122},
        dropped=_continual_erc_dropped,
        splits=_continual_erc_splits,
    )
}


def select(name: str, corpus):
    """The corpus with only the utterances protocol `name` uses; the others join its exclusions with the reason."""
    from common.kemdy import Exclusion

    reasons = PROTOCOLS[name].dropped(corpus.utterances)
    kept = [u for u, r in zip(corpus.utterances, reasons, strict=True) if r is None]
    dropped = [
        Exclusion(u.segment_id, f"--protocol {name}: {r}", u.annotation, u.line)
        for u, r in zip(corpus.utterances, reasons, strict=True)
        if r is not None
    ]
    if not kept:
        raise UserError(f"--protocol {name}: keeps none of the {len(reasons)} utterances of {corpus.root}")
    return dataclasses.replace(corpus, utterances=kept, excluded=corpus.excluded + dropped)
