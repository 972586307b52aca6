"""Outputs -> the numbers reported: multi-label emotion metrics and valence/arousal agreement.

scikit-learn and SciPy compute them; only CCC, which has no library function, is written here. A value
that is undefined is null with a note, never NaN.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, mean_absolute_error, root_mean_squared_error

from common.grid import DIMENSIONS, EMOTIONS


def predicted(probs: np.ndarray, threshold: float) -> np.ndarray:
    """0/1 decisions: an emotion is predicted where its probability exceeds the threshold (as the original)."""
    return (probs > threshold).astype(int)


def _none_if_nan(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def classification_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> tuple[dict, list[str]]:
    """Multi-label metrics at `threshold`, plus notes on anything undefined (reported as null, never NaN).

    A class with neither true nor predicted positives has no F1: it is null per class and left out of
    the macro average (scikit-learn's zero_division=nan).
    """
    labels = labels.astype(int)
    pred = predicted(probs, threshold)
    per_class = f1_score(labels, pred, average=None, zero_division=np.nan)
    notes = [
        f"F1 of {EMOTIONS[i]} undefined: no true or predicted positives" for i in np.flatnonzero(np.isnan(per_class))
    ]
    top1 = labels[np.arange(len(labels)), probs.argmax(axis=1)]
    metrics = {
        "micro_f1": _none_if_nan(f1_score(labels, pred, average="micro", zero_division=0.0)),
        "macro_f1": _none_if_nan(f1_score(labels, pred, average="macro", zero_division=np.nan)),
        "weighted_f1": _none_if_nan(f1_score(labels, pred, average="weighted", zero_division=0.0)),
        "per_class_f1": {name: _none_if_nan(v) for name, v in zip(EMOTIONS, per_class, strict=True)},
        "hamming_accuracy": float(1.0 - hamming_loss(labels, pred)),
        "subset_accuracy": float(accuracy_score(labels, pred)),
        "top1_accuracy": float(top1.mean()),
    }
    return metrics, notes


def ccc(true: np.ndarray, pred: np.ndarray) -> float | None:
    """Lin's concordance correlation coefficient (population moments); None when both are one constant."""
    true, pred = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    mt, mp = true.mean(), pred.mean()
    cov = ((true - mt) * (pred - mp)).mean()
    denominator = true.var() + pred.var() + (mt - mp) ** 2
    return None if denominator == 0 else float(2 * cov / denominator)


def regression_metrics(true: np.ndarray, pred: np.ndarray) -> tuple[dict, list[str]]:
    """CCC, Pearson r, MAE and RMSE for valence and arousal (columns 0 and 1)."""
    metrics, notes = {}, []
    for j, name in enumerate(DIMENSIONS):
        t, p = true[:, j].astype(np.float64), pred[:, j].astype(np.float64)
        constant = np.ptp(t) == 0 or np.ptp(p) == 0
        r = None if constant or len(t) < 2 else _none_if_nan(pearsonr(t, p).statistic)
        if r is None:
            notes.append(f"{name} Pearson r undefined: constant {'targets' if np.ptp(t) == 0 else 'predictions'}")
        c = ccc(t, p)
        if c is None:
            notes.append(f"{name} CCC undefined: targets and predictions are the same constant")
        metrics |= {
            f"{name}_ccc": c,
            f"{name}_pearson": r,
            f"{name}_mae": float(mean_absolute_error(t, p)),
            f"{name}_rmse": float(root_mean_squared_error(t, p)),
        }
    cccs = [metrics[f"{d}_ccc"] for d in DIMENSIONS]
    metrics["mean_ccc"] = None if None in cccs else float(np.mean(cccs))
    return metrics, notes
