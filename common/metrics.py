"""Outputs -> the numbers reported: multi-label emotion metrics and valence/arousal agreement.

The emotion metrics are computed from one count of true/false positives per emotion (every epoch
evaluates two splits, and scikit-learn's six calls took longer than a frozen cell's training step
loop); tests check each against scikit-learn, including every undefined case. The regression metrics are
a few lines of NumPy each, checked against SciPy and scikit-learn: every training and prediction process
imports this module, and importing those two libraries took about a second of each start. A value that is
undefined is null with a note, never NaN.
"""

from __future__ import annotations

import math

import numpy as np

from common.grid import DIMENSIONS, EMOTIONS


def predicted(probs: np.ndarray, threshold: float) -> np.ndarray:
    """0/1 decisions: an emotion is predicted where its probability exceeds the threshold (as the original)."""
    return (probs > threshold).astype(int)


def _none_if_nan(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def tune_thresholds(labels: np.ndarray, probs: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per emotion, the threshold that maximises its F1 on these utterances (an emotion is predicted where
    its probability exceeds it): halfway between the lowest probability still predicted and the next one
    down. An emotion nobody here carries keeps `default` (its F1 is undefined at every threshold)."""
    out = np.full(labels.shape[1], default, dtype=np.float64)
    for c in range(labels.shape[1]):
        y, p = labels[:, c].astype(int), probs[:, c].astype(np.float64)
        positives = y.sum()
        if positives == 0:
            continue
        order = np.argsort(-p, kind="stable")
        ps, ys = p[order], y[order]
        k = np.arange(1, len(p) + 1)  # predict the k most probable
        f1 = 2 * np.cumsum(ys) / (k + positives)
        below = np.append(ps[1:], -np.inf)  # the next probability down
        valid = ps > below  # only between distinct probabilities can a threshold split them
        best = int(np.argmax(np.where(valid, f1, -1.0)))
        out[c] = (ps[best] + below[best]) / 2 if np.isfinite(below[best]) else ps[best] / 2
    return out


def confusion(true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Counts [true emotion, top-1 predicted emotion]; a multi-label utterance counts in each of its rows."""
    top1 = probs.argmax(axis=1)
    counts = np.zeros((true.shape[1], true.shape[1]), dtype=np.int64)
    for row, pred in zip(true.astype(bool), top1, strict=True):
        counts[row, pred] += 1
    return counts


def uar(true: np.ndarray, probs: np.ndarray) -> float | None:
    """Unweighted average recall of the top-1 emotion: for each emotion that some utterance carries, the
    share of its utterances whose most probable emotion is it (a multi-label utterance counts for each of
    its emotions), averaged over those emotions. On single-label data, scikit-learn's balanced accuracy."""
    counts = confusion(true, probs)
    support = counts.sum(axis=1)
    present = support > 0
    return float((np.diag(counts)[present] / support[present]).mean()) if present.any() else None


def top1_weighted_f1(true: np.ndarray, probs: np.ndarray) -> float:
    """The F1 of the most probable emotion, per emotion from the top-1 confusion counts, averaged weighted by each
    emotion's true count: published KEMDy work's "weighted F1" (on single-label data, scikit-learn's
    f1_score(average="weighted", zero_division=0) of the argmax); 0 where no utterance carries an emotion."""
    counts = confusion(true, probs)
    support, tp = counts.sum(axis=1), np.diag(counts)
    f1 = _ratio(2 * tp, support + counts.sum(axis=0), undefined=0.0)
    return float((f1 * support).sum() / support.sum()) if support.sum() else 0.0


def _ratio(num, den, undefined=np.nan):
    """num / den, elementwise, and `undefined` where den is 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.full(np.shape(den), undefined), where=den > 0)


def classification_metrics(labels: np.ndarray, probs: np.ndarray, threshold) -> tuple[dict, list[str]]:
    """Multi-label metrics at `threshold` (one for all emotions, or one per emotion), plus notes on
    anything undefined (reported as null, never NaN).

    A class with neither true nor predicted positives has no F1: it is null per class and left out of
    the macro average (scikit-learn's zero_division=nan). Top-1 accuracy is the weighted accuracy (WA) of
    speech-emotion papers: the share of utterances whose most probable emotion is one of theirs.
    """
    labels = labels.astype(bool)
    pred = predicted(probs, np.asarray(threshold)).astype(bool)
    tp, fp, fn = (labels & pred).sum(0), (~labels & pred).sum(0), (labels & ~pred).sum(0)
    per_class = _ratio(2 * tp, 2 * tp + fp + fn)  # NaN: no true or predicted positives
    notes = [
        f"F1 of {EMOTIONS[i]} undefined: no true or predicted positives" for i in np.flatnonzero(np.isnan(per_class))
    ]
    support = tp + fn
    top1 = labels[np.arange(len(labels)), probs.argmax(axis=1)]
    metrics = {
        "micro_f1": float(_ratio(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum(), undefined=0.0)),
        "macro_f1": _none_if_nan(per_class[~np.isnan(per_class)].mean() if (~np.isnan(per_class)).any() else np.nan),
        "weighted_f1": float((np.nan_to_num(per_class) * support).sum() / support.sum() if support.sum() else 0.0),
        "per_class_f1": {name: _none_if_nan(v) for name, v in zip(EMOTIONS, per_class, strict=True)},
        "hamming_accuracy": 1.0 - float((labels != pred).sum() / labels.size),
        "subset_accuracy": float((labels == pred).all(axis=1).mean()),
        "top1_accuracy": float(top1.mean()),
        "top1_weighted_f1": top1_weighted_f1(labels, probs),
        "uar": uar(labels, probs),
        "per_class_precision": dict(zip(EMOTIONS, map(_none_if_nan, _ratio(tp, tp + fp)), strict=True)),
        "per_class_recall": dict(zip(EMOTIONS, map(_none_if_nan, _ratio(tp, support)), strict=True)),
    }
    return metrics, notes


def ccc(true: np.ndarray, pred: np.ndarray) -> float | None:
    """Lin's concordance correlation coefficient (population moments); None when both are one constant."""
    true, pred = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    mt, mp = true.mean(), pred.mean()
    cov = ((true - mt) * (pred - mp)).mean()
    denominator = true.var() + pred.var() + (mt - mp) ** 2
    return None if denominator == 0 else float(2 * cov / denominator)


def pearson(true: np.ndarray, pred: np.ndarray) -> float:
    """Pearson's r of two non-constant series, as SciPy computes it (each centred and scaled to unit length
    before their dot product, which keeps it within [-1, 1])."""
    t, p = true - true.mean(), pred - pred.mean()
    return float(np.clip(np.dot(t / np.linalg.norm(t), p / np.linalg.norm(p)), -1.0, 1.0))


def regression_metrics(true: np.ndarray, pred: np.ndarray) -> tuple[dict, list[str]]:
    """CCC, Pearson r, MAE and RMSE for valence and arousal (columns 0 and 1)."""
    metrics, notes = {}, []
    for j, name in enumerate(DIMENSIONS):
        t, p = true[:, j].astype(np.float64), pred[:, j].astype(np.float64)
        constant = np.ptp(t) == 0 or np.ptp(p) == 0
        r = None if constant or len(t) < 2 else _none_if_nan(pearson(t, p))
        if r is None:
            notes.append(f"{name} Pearson r undefined: constant {'targets' if np.ptp(t) == 0 else 'predictions'}")
        c = ccc(t, p)
        if c is None:
            notes.append(f"{name} CCC undefined: targets and predictions are the same constant")
        metrics |= {
            f"{name}_ccc": c,
            f"{name}_pearson": r,
            f"{name}_mae": float(np.abs(t - p).mean()),
            f"{name}_rmse": float(np.sqrt(((t - p) ** 2).mean())),
        }
    cccs = [metrics[f"{d}_ccc"] for d in DIMENSIONS]
    metrics["mean_ccc"] = None if None in cccs else float(np.mean(cccs))
    return metrics, notes


# The paired bootstrap of the report (common.compare) resamples utterances thousands of times: each metric it
# compares as per-utterance counts whose sums over any resample give the metric, then the metric from the sums.


def utterance_counts(labels, decisions, top1, va, va_pred, metric: str) -> np.ndarray:
    """Per-utterance counts (utterances x columns) whose sums over any resample give `metric` (micro_f1,
    macro_f1: true/false positives and false negatives per emotion; uar: top-1 hits and support per emotion;
    mean_ccc: sums of t, q, t^2, q^2, t*q per dimension)."""
    if metric in ("micro_f1", "macro_f1"):
        tp = labels * decisions
        fp, fn = (1 - labels) * decisions, labels * (1 - decisions)
        return np.concatenate([tp, fp, fn], axis=1).astype(np.float64)
    if metric == "uar":
        hits = labels * (np.eye(len(EMOTIONS))[top1])
        return np.concatenate([hits, labels], axis=1).astype(np.float64)
    t, q = va, va_pred
    return np.concatenate([t, q, t * t, q * q, t * q], axis=1)


def from_counts(sums: np.ndarray, n: np.ndarray, metric: str) -> np.ndarray:
    """`metric` from column sums of `utterance_counts` (resamples x columns) over n utterances per resample; nan
    where undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric in ("micro_f1", "macro_f1"):
            tp, fp, fn = np.split(sums, 3, axis=1)
            if metric == "micro_f1":
                tp, fp, fn = tp.sum(1), fp.sum(1), fn.sum(1)
                return np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
            f1 = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
            return np.nanmean(f1, axis=1)  # a class with no true and no predicted positive is left out
        if metric == "uar":
            hits, support = np.split(sums, 2, axis=1)
            return np.nanmean(np.where(support > 0, hits / support, np.nan), axis=1)
        t, q, tt, qq, tq = np.split(sums / n[:, None], 5, axis=1)
        cov, vt, vq = tq - t * q, tt - t * t, qq - q * q
        return np.mean(2 * cov / (vt + vq + (t - q) ** 2), axis=1)
