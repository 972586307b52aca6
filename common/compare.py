"""Paired comparisons of fold sets: is one cell better than another by more than fold noise?

Every script sees the same folds, so two complete fold sets of one dataset and split test the same
utterances once each. A comparison pools each set's test predictions over its folds, takes the
difference of a headline metric between the two (A - B), and resamples the utterances with replacement
(the same resample for both sets: a paired bootstrap) to put a 95 % percentile interval on it. The
per-fold differences of the metric (from each fold's metrics.json) are listed beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.grid import FUSIONS, TASKS
from common.metrics import from_counts, utterance_counts
from common.predictions import Predictions

# The metrics compared, by what a fold set predicts.
EMOTION_METRICS = ("micro_f1", "macro_f1", "uar")
VA_METRICS = ("mean_ccc",)


@dataclass
class Pooled:
    """One fold set's test utterances over all its folds, as the per-utterance numbers the metrics need."""

    ids: list[str]  # (fold, segment id), to check that two sets hold the same utterances
    labels: np.ndarray | None = None  # utterances x emotions, 0/1
    decisions: np.ndarray | None = None  # the same, at each run's threshold
    top1: np.ndarray | None = None  # index of the most probable emotion
    va: np.ndarray | None = None  # true valence, arousal
    va_pred: np.ndarray | None = None


def pool(frames: list[tuple[int, Predictions, object]]) -> Pooled:
    """Pool each fold's predictions.csv: [(fold, its predictions, threshold)], the threshold a scalar or one per
    emotion."""
    ids, labels, decisions, top1, va, va_pred = [], [], [], [], [], []
    for fold, p, threshold in frames:
        ids += [(fold, segment) for segment in p.segment_ids]
        if p.probs is not None:
            labels.append(p.labels)
            decisions.append((p.probs > np.asarray(threshold)).astype(np.int8))
            top1.append(p.probs.argmax(axis=1))
        if p.va_pred is not None:
            va.append(p.va)
            va_pred.append(p.va_pred)

    def stack(parts):
        return np.concatenate(parts) if parts else None

    return Pooled(ids, stack(labels), stack(decisions), stack(top1), stack(va), stack(va_pred))


def occurrences(ids: list) -> list[tuple[str, int]]:
    """(segment id, its k-th listing) of each utterance, in order: what identifies an utterance across runs
    that tested it in other folds or orders (KEMDy19 lists every recording twice, in both actors' files)."""
    seen: dict[str, int] = {}
    out = []
    for _, segment in ids:
        seen[segment] = seen.get(segment, 0) + 1
        out.append((segment, seen[segment]))
    return out


def aligned(a: Pooled, b: Pooled) -> Pooled | None:
    """`b`'s utterances in `a`'s order, with `a`'s ids (for `paired_bootstrap`), or None if the two did not test
    the same utterances with the same true labels."""
    keys = occurrences(a.ids)
    where = {key: k for k, key in enumerate(occurrences(b.ids))}
    if len(where) != len(keys) or any(key not in where for key in keys):
        return None
    order = np.array([where[key] for key in keys])

    def take(x):
        return None if x is None else x[order]

    out = Pooled(list(a.ids), *(take(getattr(b, f)) for f in ("labels", "decisions", "top1", "va", "va_pred")))
    same = all(
        (x is None) == (y is None) and (x is None or np.array_equal(x, y))
        for x, y in ((a.labels, out.labels), (a.va, out.va))
    )
    return out if same else None


def paired_bootstrap(
    a: Pooled, b: Pooled, metric: str, resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """(difference A - B on all pooled utterances, 2.5th and 97.5th percentiles over paired resamples)."""
    if a.ids != b.ids:
        raise ValueError("the two fold sets do not hold the same test utterances in the same order")
    sa, sb = (utterance_counts(p.labels, p.decisions, p.top1, p.va, p.va_pred, metric) for p in (a, b))
    n = len(a.ids)
    point = from_counts(sa.sum(0, keepdims=True), np.array([n]), metric) - from_counts(
        sb.sum(0, keepdims=True), np.array([n]), metric
    )
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, resamples, 100):  # weights of 100 resamples at a time: a matrix product each
        k = min(100, resamples - start)
        weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(k)]).astype(np.float64)
        counts = np.full(k, float(n))
        diffs.append(from_counts(weights @ sa, counts, metric) - from_counts(weights @ sb, counts, metric))
    low, high = np.nanpercentile(np.concatenate(diffs), [2.5, 97.5])
    return float(point[0]), float(low), float(high)


def paired_bootstrap_seeds(
    runs: list[tuple[Pooled, Pooled]], metric: str, resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float, list[float]]:
    """(the mean over seeds of A - B, 2.5th and 97.5th percentiles over resamples, each seed's A - B) of fold sets
    run with several seeds, one (A, B) pair per seed, every one on the same test utterances: each resample draws
    the utterances once, for every seed alike, and averages the seeds' differences on it, so the interval holds
    the utterances' part of the variance and the seeds' part is averaged out as the point is."""
    ids = runs[0][0].ids
    if any(p.ids != ids for pair in runs for p in pair):
        raise ValueError("the fold sets do not hold the same test utterances in the same order")
    counts = [
        tuple(utterance_counts(p.labels, p.decisions, p.top1, p.va, p.va_pred, metric) for p in pair) for pair in runs
    ]
    n = len(ids)

    def differences(weights: np.ndarray) -> np.ndarray:  # resamples x seeds
        k = len(weights)
        return np.stack(
            [
                from_counts(weights @ sa, np.full(k, float(n)), metric)
                - from_counts(weights @ sb, np.full(k, float(n)), metric)
                for sa, sb in counts
            ],
            axis=1,
        )

    per_seed = differences(np.ones((1, n)))[0]
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, 100):
        k = min(100, resamples - start)
        weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(k)]).astype(np.float64)
        means.append(differences(weights).mean(axis=1))
    low, high = np.nanpercentile(np.concatenate(means), [2.5, 97.5])
    return float(per_seed.mean()), float(low), float(high), [float(d) for d in per_seed]


def pairs(names: set[str]) -> list[tuple[str, str, str]]:
    """(A, B, what) for the cells present: each multimodal cell against each unimodal cell of its task (the better
    one is picked by the caller), and concatenation against every other fusion of the registry."""
    out = []
    for task in TASKS:
        for fusion in FUSIONS:
            mm = f"multimodal_{task}_{fusion}"
            if mm in names:
                out += [(mm, f"{m}_{task}", "unimodal") for m in ("text", "speech") if f"{m}_{task}" in names]
        concat = f"multimodal_{task}_concat"
        out += [
            (concat, f"multimodal_{task}_{fusion}", "fusion")
            for fusion in FUSIONS
            if fusion != "concat" and concat in names and f"multimodal_{task}_{fusion}" in names
        ]
    return out


def metrics_of(task: str) -> tuple[str, ...]:
    return {"classification": EMOTION_METRICS, "regression": VA_METRICS, "total": EMOTION_METRICS + VA_METRICS}[task]
