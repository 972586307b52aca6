"""Outputs -> numbers: the loss of each task and the metrics reported for it.

Emotions are multi-label: by default binary cross-entropy on each of the 7 logits and an emotion
predicted where its sigmoid exceeds the threshold (the original put a softmax before
MultiLabelSoftMarginLoss, which can never predict two labels; `emotion_output="softmax"` restores it).
Valence/arousal: MSE on targets standardised with the training fold's statistics (or, as the original,
on the raw 1-5 scale), averaged over the two dimensions (or summed, as the original).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, mean_absolute_error, root_mean_squared_error

from common.kemdy import EMOTIONS

DIMENSIONS = ("valence", "arousal")
EMOTION_OUTPUTS = ("sigmoid", "softmax")
VA_LOSSES = ("mean", "sum")


def emotion_probabilities(logits: torch.Tensor, output: str = "sigmoid") -> torch.Tensor:
    """Per-emotion probabilities: one sigmoid per emotion, or the original's softmax over the seven."""
    logits = logits.float()
    return torch.softmax(logits, dim=-1) if output == "softmax" else torch.sigmoid(logits)


def predicted(probs: np.ndarray, threshold: float) -> np.ndarray:
    """0/1 decisions: an emotion is predicted where its probability exceeds the threshold (as the original)."""
    return (probs > threshold).astype(int)


@dataclass(frozen=True)
class Objective:
    """What training minimises: the emotion loss and/or the valence/arousal loss, weighted."""

    emotion_output: str = "sigmoid"  # "softmax": the original's MultiLabelSoftMarginLoss on softmax outputs
    va_loss: str = "mean"  # of the two dimensions' squared errors; "sum", as the original
    cls_weight: float = 1.0
    reg_weight: float = 1.0

    def per_sample(self, outputs: dict, batch: dict, va_mean: torch.Tensor, va_std: torch.Tensor) -> torch.Tensor:
        """Loss of every sample (so that evaluation averages exactly over the dataset, whatever the batches).

        The mean over a batch is the original's loss: MultiLabelSoftMarginLoss and MSELoss average over
        the batch, and the sum of the valence and arousal MSEs is the mean of their per-sample sums.
        """
        loss = 0.0
        if "emotion_logits" in outputs:
            logits, labels = outputs["emotion_logits"].float(), batch["labels"]
            if self.emotion_output == "softmax":
                emotion = F.multilabel_soft_margin_loss(torch.softmax(logits, dim=-1), labels, reduction="none")
            else:
                emotion = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=1)
            loss = loss + self.cls_weight * emotion
        if "va_z" in outputs:
            target = (batch["va"] - va_mean) / va_std
            squared = F.mse_loss(outputs["va_z"].float(), target, reduction="none")
            loss = loss + self.reg_weight * (squared.sum(dim=1) if self.va_loss == "sum" else squared.mean(dim=1))
        return loss


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
