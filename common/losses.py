"""Outputs -> the number training minimises, and the probabilities read off the emotion logits.

Emotions are multi-label: by default binary cross-entropy on each of the 7 logits (the original put a
softmax before MultiLabelSoftMarginLoss, which can never predict two labels; `emotion_output="softmax"`
restores it). A training batch may carry `targets` in place of its labels (--targets raters: the share of the
evaluators who chose each emotion); both losses are linear in their targets, so the loss against the shares is
the mean of the losses against each evaluator's own choice.
Valence/arousal: MSE on targets standardised with the training fold's statistics (or, as
the original, on the raw 1-5 scale), averaged over the two dimensions (or summed, as the original).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def balanced_weights(labels) -> tuple[float, ...]:
    """Per emotion, negatives over positives among `labels` (utterances x emotions): the weight that makes
    an emotion's positives count as much as its negatives; 1 for an emotion with no positive."""
    labels = torch.as_tensor(labels, dtype=torch.float64)
    positives = labels.sum(dim=0)
    negatives = len(labels) - positives
    return tuple(float(n / p) if p > 0 else 1.0 for n, p in zip(negatives, positives, strict=True))


def emotion_probabilities(logits: torch.Tensor, output: str = "sigmoid") -> torch.Tensor:
    """Per-emotion probabilities: one sigmoid per emotion, or the original's softmax over the seven."""
    logits = logits.float()
    return torch.softmax(logits, dim=-1) if output == "softmax" else torch.sigmoid(logits)


@dataclass(frozen=True)
class Objective:
    """What training minimises: the emotion loss and/or the valence/arousal loss, weighted."""

    emotion_output: str = "sigmoid"  # "softmax": the original's MultiLabelSoftMarginLoss on softmax outputs
    va_loss: str = "mean"  # of the two dimensions' squared errors; "sum", as the original
    cls_weight: float = 1.0
    reg_weight: float = 1.0
    pos_weight: tuple[float, ...] | None = None  # per emotion, on its positives (--class_weight balanced)

    def per_sample(self, outputs: dict, batch: dict, va_mean: torch.Tensor, va_std: torch.Tensor) -> torch.Tensor:
        """Loss of every sample (so that evaluation averages exactly over the dataset, whatever the batches).

        The mean over a batch is the original's loss: MultiLabelSoftMarginLoss and MSELoss average over
        the batch, and the sum of the valence and arousal MSEs is the mean of their per-sample sums.
        """
        loss = 0.0
        if "emotion_logits" in outputs:
            logits, labels = outputs["emotion_logits"].float(), batch.get("targets", batch["labels"])
            if self.emotion_output == "softmax":
                emotion = F.multilabel_soft_margin_loss(torch.softmax(logits, dim=-1), labels, reduction="none")
            else:
                weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
                emotion = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=weight, reduction="none")
                emotion = emotion.mean(dim=1)
            loss = loss + self.cls_weight * emotion
        if "va_z" in outputs:
            target = (batch["va"] - va_mean) / va_std
            squared = F.mse_loss(outputs["va_z"].float(), target, reduction="none")
            loss = loss + self.reg_weight * (squared.sum(dim=1) if self.va_loss == "sum" else squared.mean(dim=1))
        return loss
