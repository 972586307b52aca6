"""The files of a run's test predictions. predictions.csv: one row per test utterance in corpus order, its true
labels and valence/arousal beside the model's emotion probabilities and predicted valence/arousal (a cell
writes the outputs it has). Its writer and its reader side by side: the loop and the benchmark write it with
`text`; the report, its figures and the paired comparisons read it with `read`, which checks every row, so
that a damaged file is set aside with one line naming it, never averaged in. confusion.csv (`confusion_text`):
the same utterances counted by true and top-1 predicted emotion, for a reader of the run folder (the report
computes its own from predictions.csv)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.grid import DIMENSIONS, EMOTIONS

FILE = "predictions.csv"
CONFUSION = "confusion.csv"


@dataclass
class Predictions:
    """The rows of a predictions.csv as arrays (utterances in the file's order)."""

    segment_ids: list[str]
    labels: np.ndarray  # utterances x emotions, 0/1: the true emotion set
    va: np.ndarray  # utterances x 2: true valence, arousal on 1-5
    probs: np.ndarray | None = None  # utterances x emotions, where the cell classifies
    va_pred: np.ndarray | None = None  # utterances x 2 on 1-5, where the cell regresses

    def __len__(self) -> int:
        return len(self.segment_ids)


def header(emotions: bool, va: bool) -> list[str]:
    """The columns of a cell's file: `emotions` where it classifies, `va` where it regresses."""
    columns = ["segment_id", *[f"true_{e}" for e in EMOTIONS]]
    columns += [f"prob_{e}" for e in EMOTIONS] if emotions else []
    columns += [f"true_{d}" for d in DIMENSIONS]
    return columns + ([f"pred_{d}" for d in DIMENSIONS] if va else [])


def of_outputs(utterances, out: dict) -> Predictions:
    """A run's gathered test outputs ("index" into `utterances`, "probs", "va_pred") in corpus order, beside
    each utterance's truth."""
    order = np.argsort(out["index"], kind="stable")
    utts = [utterances[int(out["index"][k])] for k in order]
    return Predictions(
        [u.segment_id for u in utts],
        np.array([u.labels for u in utts], dtype=np.int64).reshape(len(utts), len(EMOTIONS)),
        np.array([[u.valence, u.arousal] for u in utts], dtype=np.float64).reshape(len(utts), 2),
        np.asarray(out["probs"])[order] if "probs" in out else None,
        np.asarray(out["va_pred"])[order] if "va_pred" in out else None,
    )


def text(p: Predictions) -> str:
    """The file's text: labels as 0/1, true valence/arousal as read from the corpus, outputs to 6 decimals."""
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(header(p.probs is not None, p.va_pred is not None))
    for k, segment in enumerate(p.segment_ids):
        row = [segment, *(int(x) for x in p.labels[k])]
        row += [f"{x:.6f}" for x in p.probs[k]] if p.probs is not None else []
        row += [float(x) for x in p.va[k]]
        row += [f"{x:.6f}" for x in p.va_pred[k]] if p.va_pred is not None else []
        writer.writerow(row)
    return f.getvalue()


def read(path: Path, n: int | None = None) -> Predictions:
    """A predictions.csv read back and checked: one of the four headers, every row complete, labels 0 or 1,
    finite numbers, and (given `n`, the number of utterances the run tested) that many rows. Raises UserError
    `<path>: damaged (<what>)`."""

    def damaged(problem: str) -> UserError:
        return UserError(f"{path}: damaged ({problem})")

    try:
        with Path(path).open(encoding="utf-8", newline="") as f:
            columns, *rows = list(csv.reader(f)) or [[]]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise damaged(f"{type(err).__name__}: {err}") from None
    kinds = {tuple(header(e, v)): (e, v) for e in (True, False) for v in (True, False)}
    if tuple(columns) not in kinds:
        raise damaged("its header is not one this project writes")
    emotions, va = kinds[tuple(columns)]
    values = []
    for k, row in enumerate(rows, 1):
        if len(row) != len(columns) or "" in row:
            raise damaged(f"row {k} of {len(rows)} is cut short")
        try:
            numbers = [float(cell) for cell in row[1:]]
        except ValueError:
            raise damaged(f"row {k} holds a value that is not a number") from None
        if not all(map(math.isfinite, numbers)) or any(x not in (0.0, 1.0) for x in numbers[: len(EMOTIONS)]):
            raise damaged(f"row {k} holds a value out of its range")
        values.append(numbers)
    if n is not None and len(rows) != n:
        raise damaged(f"holds {len(rows)} rows, the run tested {n} utterances")
    table = np.array(values, dtype=np.float64).reshape(len(rows), len(columns) - 1)
    e = len(EMOTIONS)
    probs = table[:, e : 2 * e] if emotions else None
    at = 2 * e if emotions else e
    return Predictions(
        [row[0] for row in rows],
        table[:, :e].astype(np.int64),
        table[:, at : at + 2],
        probs,
        table[:, at + 2 : at + 4] if va else None,
    )


def confusion_text(labels: np.ndarray, probs: np.ndarray) -> str:
    """confusion.csv: test utterances counted by true emotion (rows; a multi-label utterance in each of its
    rows) and top-1 predicted emotion (columns)."""
    from common.metrics import confusion  # scikit-learn: not for --help

    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(["true", *[f"top1_{e}" for e in EMOTIONS]])
    writer.writerows([e, *map(int, row)] for e, row in zip(EMOTIONS, confusion(labels, probs), strict=True))
    return f.getvalue()
