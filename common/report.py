"""Results over folds: every run directory under a folder -> a Markdown and a CSV table, and figures.

    python -m common.report runs            # writes runs/report/results.md, results.csv, figures/*.png

A fold set is the run directories next to each other (runs/<script>/KEMDy20/fold1 .. fold5) of one
script, dataset and split. Each metric is reported as the mean and sample standard deviation (ddof=1)
of its five fold values; a set missing folds is marked, never silently averaged as if complete.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import re
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import atomic, paths, predictions, schema
from common.errors import UserError, run_cli, writing
from common.folds import NUM_FOLDS
from common.grid import CELLS, EMOTIONS
from common.protocols import PROTOCOLS
from common.rundir import differences, human, read_run, read_set, run_of, size
from common.rundir import settings as recorded_settings
from common.runfiles import read_config, read_metrics
from common.schema import Choice, Fields

CLASSIFICATION = ("micro_f1", "macro_f1", "weighted_f1", "top1_accuracy", "uar")
REGRESSION = ("valence_ccc", "arousal_ccc", "mean_ccc", "valence_mae", "arousal_mae")


@dataclass
class FoldSet:
    """The finished runs of one script, dataset and split in one folder."""

    folder: Path  # relative to the report's root
    script: str
    dataset: str
    split: str
    runs: dict[int, Path] = field(default_factory=dict)  # fold -> run directory
    metrics: dict[int, dict] = field(default_factory=dict)  # fold -> metrics.json
    duplicates: list[Path] = field(default_factory=list)  # a second run claiming a fold already seen
    settings: dict | None = None  # what changes results (the runs' arguments and corpus listing)
    mixed: list[str] = field(default_factory=list)  # how its settings differ from another set in its folder
    recordings: set = field(default_factory=set)  # the fingerprints of the recordings its runs read
    encoders: list[str] = field(default_factory=list)  # its encoders where not the defaults (their names)

    @property
    def folds(self) -> list[int]:
        return sorted(self.metrics)

    @property
    def complete(self) -> bool:
        return self.folds == list(range(1, NUM_FOLDS + 1)) and not self.duplicates and not self.mixed

    @property
    def status(self) -> str:
        missing = [k for k in range(1, NUM_FOLDS + 1) if k not in self.metrics]
        text = f"{len(self.metrics)}/{NUM_FOLDS}" + (f" (missing {', '.join(map(str, missing))})" if missing else "")
        text += f" ({len(self.duplicates)} duplicate runs ignored)" if self.duplicates else ""
        return text + (f" (settings differ in this folder: {', '.join(self.mixed[:3])})" if self.mixed else "")

    @property
    def name(self) -> str:
        """A file-name stem unique to the set: its folder, path parts joined by _."""
        return "_".join(self.folder.parts) or self.script


@dataclass
class CrossRun:
    """A finished cross-corpus run: trained on `dataset`, tested on all of `test_dataset`."""

    folder: Path  # the run directory, relative to the report's root
    run_dir: Path
    script: str
    dataset: str
    test_dataset: str
    metrics: dict
    settings: dict


def find_fold_sets(
    root: str | Path, skipped: list[str] | None = None, cross: list[CrossRun] | None = None
) -> list[FoldSet]:
    """Every finished run under `root` (a folder holding the project's run marker, or a run from before
    markers existed, with its metrics.json), grouped into fold sets, in grid order. Folders that are not this
    project's runs are left out; a damaged run is left out and described in `skipped`, one line each. Cross-corpus
    runs go into `cross`, if given."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder of run directories")
    skipped = [] if skipped is None else skipped
    sets: dict[tuple, FoldSet] = {}
    for path in sorted(root.rglob("metrics.json")):
        found = None if "checkpoints" in path.parts else _finished_run(path, skipped)
        if found is None:
            continue
        owner, m = found
        key = (path.parent.parent.relative_to(root), m["script"], m["dataset"], m.get("split", "contiguous"))
        fold = m["fold"]
        if fold is None:
            if cross is not None:
                folder = path.parent.relative_to(root)
                cross.append(
                    CrossRun(folder, path.parent, m["script"], m["dataset"], m["test_dataset"], m, owner.settings)
                )
            continue
        # Settings added since a run was written count at their earlier value: its folds join the new ones.
        settings = recorded_settings(owner.settings) | {"corpus": owner.corpus.get("listing")}
        key += (json.dumps(settings, sort_keys=True, default=str),)
        fs = sets.setdefault(key, FoldSet(*key[:4], settings=settings, encoders=owner.encoders))
        if fold in fs.metrics:
            fs.duplicates.append(path.parent)
            continue
        fs.runs[fold], fs.metrics[fold] = path.parent, m
        fs.recordings.add(owner.corpus.get("recordings"))

    _mark_mixed(list(sets.values()))

    def order(fs: FoldSet):
        rank = CELLS.index(fs.script) if fs.script in CELLS else len(CELLS)
        return fs.dataset, fs.split, rank, fs.script, str(fs.folder), fs.folds

    return sorted(sets.values(), key=order)


def _finished_run(path: Path, skipped: list[str]) -> tuple | None:
    """(marker, metrics.json) of the project's finished run whose metrics.json is `path`; None for another tool's
    file, and for a damaged run or one in another fold's place, which is described in `skipped`."""
    run_dir = path.parent
    try:
        owner = read_run(run_dir)
    except UserError as err:
        skipped.append(str(err).split("; nothing in")[0])
        return None
    if owner is None or "metrics.json" not in owner.entries:  # another tool's metrics.json
        return None
    try:
        m = read_metrics(run_dir)
        if (run_dir / "config.json").is_file():  # read for the run's threshold
            read_config(run_dir)
    except UserError as err:
        skipped.append(f"{str(err).split('; the run')[0]}; train that fold again with --overwrite")
        return None
    place = _fold_place(run_dir)
    if m["fold"] != owner.fold or place not in (None, m["fold"]):
        where = f"the place of fold {place} in its fold set" if place not in (None, m["fold"]) else "its folder"
        skipped.append(
            f"{run_dir}: holds {run_of(m['fold'])} in {where} (its marker says {run_of(owner.fold)}; "
            "a copy of another fold's folder?); not counted"
        )
        return None
    if (run_dir / predictions.FILE).is_file():
        try:
            predictions.read(run_dir / predictions.FILE, m["test"].get("n"))
        except UserError as err:
            skipped.append(f"{err}; train that fold again with --overwrite")
            return None
    return owner, m


def _fold_place(run_dir: Path) -> int | None:
    """The fold a run directory stands for in a fold set (its fold<k>/, listed in the set's marker), if any."""
    match = re.fullmatch(r"fold(\d)", run_dir.name)
    if match is None:
        return None
    try:
        the_set = read_set(run_dir.parent)
    except UserError:
        return None
    return int(match.group(1)) if the_set is not None and run_dir.name in the_set.entries else None


def _mark_mixed(sets: list[FoldSet]) -> None:
    """Runs of one folder with other settings never make one fold set: each group names how it differs. Runs
    of one set whose recordings differ (runs from before markers existed recorded none) are marked too."""
    by_place = defaultdict(list)
    for fs in sets:
        by_place[fs.folder, fs.script, fs.dataset, fs.split].append(fs)
        if len(fs.recordings - {None}) > 1:
            fs.mixed.append("the recordings' content differs between folds")
    for group in by_place.values():
        for fs in group:
            for other in group:
                if other is not fs:
                    fs.mixed += differences(other.settings or {}, fs.settings or {})


def flat_metrics(test: dict) -> dict[str, float | None]:
    """A run's test metrics as name -> number; per-class values as f1_<emotion>, precision_<emotion> ..."""
    out = {}
    for key, value in test.items():
        if isinstance(value, dict):  # per_class_f1 -> f1_<emotion>, per_class_recall -> recall_<emotion> ...
            out |= {f"{key.removeprefix('per_class_')}_{k}": v for k, v in value.items()}
        elif key != "n":
            out[key] = value
    return out


@dataclass(frozen=True)
class Stat:
    mean: float | None
    std: float | None  # sample standard deviation over folds; None with fewer than two values
    n: int  # folds where the metric is defined

    def __str__(self) -> str:
        if self.mean is None:
            return "n/a"
        return f"{self.mean:.4f}" + ("" if self.std is None else f" ± {self.std:.4f}")


def aggregate(metrics: list[dict]) -> dict[str, Stat]:
    """Mean and sample std over folds of every test metric; an undefined (null) fold value is left out."""
    values: dict[str, list[float]] = defaultdict(list)
    names: dict[str, None] = {}
    for m in metrics:
        for key, value in flat_metrics(m["test"]).items():
            names[key] = None
            if value is not None:
                values[key].append(float(value))
    out = {}
    for key in names:
        v = values[key]
        out[key] = Stat(statistics.fmean(v) if v else None, statistics.stdev(v) if len(v) > 1 else None, len(v))
    return out


def set_summary(results: list[dict], settings: dict) -> tuple[dict, str]:
    """(summary.json, summary.md) of a --num_fold all run: mean ± std over its folds, with its settings."""
    stats = aggregate(results)
    first = results[0]
    summary = {
        "script": first["script"],
        "dataset": first["dataset"],
        "split": first.get("split", "contiguous"),
        "folds": [r["fold"] for r in results],
        "settings": settings,
        "test": {k: {"mean": st.mean, "std": st.std, "n_folds": st.n} for k, st in stats.items()},
    }
    return summary, fold_summary(results) + "\n"


def fold_summary(results: list[dict]) -> str:
    """Lines for the end of a --num_fold all run: the headline metrics over its folds."""
    stats = aggregate(results)
    first = results[0]
    lines = [
        f"{first['script']} {first['dataset']} ({first.get('split', 'contiguous')} split), test metrics "
        f"over folds {', '.join(str(r['fold']) for r in results)}: mean ± sample std over {len(results)} folds"
    ]
    lines += [f"  {k:<18}{stats[k]}" for k in (*CLASSIFICATION, *REGRESSION) if k in stats]
    return "\n".join(lines)


def run_threshold(run_dir: Path):
    """The threshold a finished run decided with: --threshold, or its tuned per-emotion thresholds."""
    metrics = read_metrics(run_dir)
    if "thresholds" in metrics:
        return np.array([metrics["thresholds"][e] for e in EMOTIONS])
    if not (run_dir / "config.json").is_file():
        return 0.5
    threshold = read_config(run_dir)["args"]["threshold"]
    return 0.5 if threshold == "tuned" else float(threshold)


def decisions(run_dir: Path) -> dict[str, int | float] | None:
    """How a run's emotion decisions spread over its test utterances (from predictions.csv, at the run's
    --threshold): utterances with two or more emotions predicted, with none, with two or more true, and
    the Hamming accuracy of predicting no emotion at all, the floor its hamming_accuracy should clear."""
    path = run_dir / predictions.FILE
    if not path.is_file():
        return None
    p = predictions.read(path)
    if not len(p) or p.probs is None:
        return None
    from common.metrics import predicted  # scikit-learn: not for --help

    true, chosen = p.labels, predicted(p.probs, run_threshold(run_dir))
    return {
        "n": len(p),
        "two_or_more_predicted": int((chosen.sum(axis=1) >= 2).sum()),
        "none_predicted": int((chosen.sum(axis=1) == 0).sum()),
        "two_or_more_true": int((true.sum(axis=1) >= 2).sum()),
        "hamming_accuracy_of_none": float(1 - true.mean()),
    }


def _decision_rows(sets: list[FoldSet], stats: list[dict]) -> list[str]:
    """The Markdown table of emotion decisions, summed over each fold set's test utterances."""
    lines = []
    for fs, st in zip(sets, stats, strict=True):
        found = [d for d in (decisions(fs.runs[k]) for k in fs.folds) if d]
        if "hamming_accuracy" not in st or not found:
            continue
        n = sum(d["n"] for d in found)
        none = Stat(
            statistics.fmean(d["hamming_accuracy_of_none"] for d in found),
            statistics.stdev(d["hamming_accuracy_of_none"] for d in found) if len(found) > 1 else None,
            len(found),
        )
        counts = [f"{sum(d[k] for d in found)} / {n}" for k in ("two_or_more_predicted", "none_predicted")]
        counts.append(f"{sum(d['two_or_more_true'] for d in found)} / {n}")
        lines.append(
            f"| {fs.script} | {fs.dataset} | {fs.split} | `{fs.folder.as_posix()}` | "
            f"{st['hamming_accuracy']} | {none} | " + " | ".join(counts) + " |"
        )
    if not lines:
        return []
    return [
        "## Emotion decisions",
        "",
        "Test utterances of all folds; an emotion is predicted where its probability exceeds the run's threshold. "
        "Predicting nothing at all scores the Hamming accuracy in its column.",
        "",
        "| script | dataset | split | folder | hamming_accuracy | Hamming accuracy of predicting nothing | "
        "2+ emotions predicted | none predicted | 2+ emotions true |",
        "|" + "---|" * 9,
        *lines,
        "",
    ]


AGREEMENT_METRICS = ("micro_f1", "macro_f1", "top1_accuracy", "uar")


def agreement_rows(sets: list[FoldSet]) -> list[str]:
    """Each fold set's emotion metrics on the test utterances where at least 7 of the 10 evaluators chose one
    emotion and on the rest (metrics.json's test_by_agreement), mean ± std over the folds that have them."""
    lines = []
    for fs in sets:
        found = [fs.metrics[k]["test_by_agreement"] for k in fs.folds if "test_by_agreement" in fs.metrics[k]]
        if not found:
            continue
        for name, what in (("high", "7+ of 10 agree"), ("rest", "fewer agree")):
            st = aggregate([{"test": f[name]} for f in found])
            n = sum(f[name]["n"] for f in found)
            cells = [str(st[k]) if k in st else "n/a" for k in AGREEMENT_METRICS]
            lines.append(
                f"| {fs.script} | {fs.dataset} | {fs.split} | `{fs.folder.as_posix()}` | {what} | {n} | "
                + " | ".join(cells)
                + " |"
            )
    intro = (
        "Test metrics of each fold's chosen epoch on the utterances where at least 7 of the 10 evaluators chose one "
        "emotion, and on the others (utterances: over all folds), mean ± sample std over the folds."
    )
    columns = ["script", "dataset", "split", "folder", "utterances", "n", *AGREEMENT_METRICS]
    return _section("By the evaluators' agreement", intro, columns, lines)


HUMAN_METRICS = ("micro_f1", "top1_accuracy", "uar", "mean_ccc")


def human_rows(sets: list[FoldSet], stats: list[dict]) -> list[str]:
    """Beside each fold set's own test metrics, its test utterances' evaluators, each scored against the other
    nine as the model is (metrics.json's human_reference), mean ± std over the folds."""
    lines = []
    for fs, st in zip(sets, stats, strict=True):
        found = [fs.metrics[k]["human_reference"] for k in fs.folds if "human_reference" in fs.metrics[k]]
        if not found:
            continue
        human = aggregate([{"test": f} for f in found])
        where = f"| {fs.script} | {fs.dataset} | {fs.split} | `{fs.folder.as_posix()}` |"
        for who, numbers in (("the model", st), ("one evaluator against the other nine", human)):
            lines.append(
                f"{where} {who} | "
                + " | ".join(str(numbers[k]) if k in numbers else "n/a" for k in HUMAN_METRICS)
                + " |"
            )
    intro = (
        "Each fold set's test metrics beside its test utterances' evaluators, each scored as the model is against "
        "the other nine (the emotions they chose most, ties kept; the mean of their valence and arousal) and "
        "averaged over the ten; mean ± sample std over the folds. The model is scored against all ten evaluators' "
        "consensus, which no single evaluator is asked to predict, so it can exceed this reference."
    )
    return _section("Human reference", intro, ["script", "dataset", "split", "folder", "scored", *HUMAN_METRICS], lines)


def protocol_rows(sets: list[FoldSet], stats: list[dict]) -> list[str]:
    """Each fold set run under a published protocol (--protocol): its headline metric, mean ± std over the folds,
    beside the five-fold mean the publication reports."""
    lines = []
    for fs, st in zip(sets, stats, strict=True):
        name = next((fs.metrics[k]["protocol"] for k in fs.folds if "protocol" in fs.metrics[k]), None)
        if name is None:
            continue
        protocol = PROTOCOLS[name]
        published = protocol.published.get(fs.dataset)
        lines.append(
            f"| {fs.script} | {fs.dataset} | {name} | `{fs.folder.as_posix()}` | {fs.status} | {protocol.headline} | "
            f"{st.get(protocol.headline, 'n/a')} | {_fmt(published)} | {protocol.source} |"
        )
    intro = (
        "Fold sets run under a published protocol: the publication's rows and folds, exactly; its headline metric "
        "here (mean ± sample std over the folds) beside the five-fold mean it published. The published figure comes "
        "from another implementation (its own model, training and code), so the two are set side by side for "
        "context, not compared as a paired test."
    )
    columns = ["script", "dataset", "protocol", "folder", "folds", "metric", "here", "published", "published by"]
    return _section("Published protocols", intro, columns, lines)


SEED_METRICS = ("micro_f1", "macro_f1", "uar", "mean_ccc")


def seed_rows(sets: list[FoldSet]) -> list[str]:
    """Complete fold sets that differ only by --seed, gathered: for each headline metric the mean over the seeds of
    their five-fold means ± the sample std over seeds of those means (what the seed moves), beside the mean over
    the seeds of the std over folds (what the folds move)."""
    groups = defaultdict(list)
    for fs in sets:
        if fs.complete and fs.settings and "seed" in fs.settings:
            rest = {k: v for k, v in fs.settings.items() if k != "seed"}
            groups[fs.script, fs.dataset, fs.split, json.dumps(rest, sort_keys=True, default=str)].append(fs)
    lines = []
    for (script, dataset, split, _), group in groups.items():
        seeds = sorted(fs.settings["seed"] for fs in group)
        if len(set(seeds)) < 2 or len(set(seeds)) != len(seeds):
            continue
        cells = []
        for key in SEED_METRICS:
            values = [[flat_metrics(fs.metrics[k]["test"]).get(key) for k in fs.folds] for fs in group]
            if any(v is None for row in values for v in row):
                cells.append("n/a")
                continue
            means = [statistics.fmean(row) for row in values]
            folds = statistics.fmean(statistics.stdev(row) for row in values)
            cells.append(f"{statistics.fmean(means):.4f} ± {statistics.stdev(means):.4f} (folds ± {folds:.4f})")
        lines.append(f"| {script} | {dataset} | {split} | {', '.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    intro = (
        "Complete fold sets that differ only by `--seed`: each metric's mean over the seeds of their five-fold "
        "means ± the sample std over the seeds of those means (what the seed moves), and in brackets the mean "
        "over the seeds of the sample std over the folds (what the choice of test fold moves)."
    )
    return _section("Seeds", intro, ["script", "dataset", "split", "seeds", *SEED_METRICS], lines)


def robustness_rows(sets: list[FoldSet]) -> list[str]:
    """The robustness tables (`common.robustness`) of the runs found: per run, each condition's headline metric and
    its difference from clean with the 95 % paired interval."""
    from common.robustness import difference_text, read_table

    lines, left_out = [], []
    for fs in sets:
        for fold in fs.folds:
            try:
                found = read_table(fs.runs[fold])
            except UserError as err:  # a damaged table leaves out that run's rows, not the report
                left_out.append(f"Left out: {err}")
                continue
            if found is None:
                continue
            metric, rows = found
            where = fs.runs[fold].as_posix()
            for row in rows:
                value = "n/a" if row.get(metric) is None else f"{row[metric]:.4f}"
                lines.append(f"| {where} | {row['condition']} | {metric} | {value} | {difference_text(row, metric)} |")
    intro = (
        "Each run's own test utterances scored again with one input changed (`python -m common.robustness RUN_DIR`: "
        "noise at a signal-to-noise ratio, a missing modality, damaged transcripts), its headline metric and the "
        "difference from the clean inputs with a 95 % interval from paired bootstrap resamples of the utterances; "
        "every metric is in the run's robustness/robustness.csv."
    )
    columns = ["run", "condition", "metric", "value", "− clean [95 % interval]"]
    section = _section("Robustness", intro, columns, lines) or (["## Robustness", ""] if left_out else [])
    return section + [line + "\n" for line in left_out]


def _section(title: str, intro: str, columns: list[str], lines: list[str]) -> list[str]:
    """A Markdown section of one table (nothing where it has no rows)."""
    if not lines:
        return []
    head = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return [f"## {title}", "", intro, "", *head, *lines, ""]


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _headline(m: dict) -> str:
    keys = [k for k in ("micro_f1", "macro_f1", "top1_accuracy", "valence_ccc", "arousal_ccc") if k in m]
    return "  ".join(f"{k} {_fmt(m[k])}" for k in ["loss", *keys])


def epoch_line(record: dict) -> str:
    """The console line of one epoch: training loss, then validation and test headline metrics."""
    parts = [f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}"]
    parts += [f"{name}: {_headline(record[name])}" for name in ("valid", "test") if name in record]
    return " | ".join(parts)


def run_summary(result: dict, run_dir: Path) -> str:
    """The lines that end a fold: every test metric of the chosen epoch, and where the run is."""
    where = f"-> {result['test_dataset']} (cross-corpus)" if result.get("test_dataset") else f"fold {result['fold']}"
    lines = [
        f"{result['script']} {result['dataset']} {where}: test metrics of epoch "
        f"{result['chosen_epoch']} (chosen by {result['selection'].replace('_', ' ')})"
    ]
    for key, value in result["test"].items():
        if isinstance(value, dict):  # per_class_f1, per_class_precision, per_class_recall
            name = key.removeprefix("per_class_").replace("f1", "F1")
            lines.append(f"  per-class {name}: " + "  ".join(f"{k} {_fmt(v)}" for k, v in value.items()))
        elif key != "n":
            lines.append(f"  {key:<18}{_fmt(value)}")
    lines.append(f"run directory: {run_dir} ({human(size(run_dir))})")
    return "\n".join(lines)


def tables(sets: list[FoldSet]) -> tuple[str, str]:
    """(Markdown, CSV) of every fold set's metrics over folds."""
    md = [
        "# Results over folds",
        "",
        "Mean ± sample standard deviation over the folds found; * marks an "
        "incomplete fold set. Test metrics of each fold's chosen epoch.",
        "",
    ]
    rows = []
    stats = [aggregate([fs.metrics[k] for k in fs.folds]) for fs in sets]
    protocols = Counter((fs.script, fs.dataset, fs.split) for fs in sets)
    for title, keys in (("Emotion classification", CLASSIFICATION), ("Valence and arousal", REGRESSION)):
        chosen = [(fs, st) for fs, st in zip(sets, stats, strict=True) if keys[0] in st]
        if not chosen:
            continue
        md += [
            f"## {title}",
            "",
            "| script | dataset | split | folds | " + " | ".join(keys) + " |",
            "|" + "---|" * (4 + len(keys)),
        ]
        for fs, st in chosen:
            name = fs.script + (" *" if not fs.complete else "")
            if protocols[fs.script, fs.dataset, fs.split] > 1:  # the same cell in several folders: name the folder
                name += f" (`{fs.folder.as_posix()}`)"
            cells = [name, fs.dataset, fs.split, fs.status, *(str(st[k]) if k in st else "n/a" for k in keys)]
            md.append("| " + " | ".join(cells) + " |")
        md.append("")
    md += _decision_rows(sets, stats)
    md += agreement_rows(sets)
    md += human_rows(sets, stats)
    md += protocol_rows(sets, stats)
    md += seed_rows(sets)
    md += robustness_rows(sets)
    md += encoder_tables(sets)
    for fs, set_stats in zip(sets, stats, strict=True):
        for key, st in set_stats.items():
            rows.append(
                [
                    fs.folder.as_posix(),
                    fs.script,
                    fs.dataset,
                    fs.split,
                    key,
                    st.mean,
                    st.std,
                    st.n,
                    " ".join(map(str, fs.folds)),
                    fs.complete,
                ]
            )
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(["folder", "script", "dataset", "split", "metric", "mean", "std", "n_folds", "folds", "complete"])
    writer.writerows(rows)
    return "\n".join(md), f.getvalue()


def read_predictions(fs: FoldSet) -> list[tuple[int, predictions.Predictions]]:
    """The test predictions of every fold of the set that has them: [(fold, its predictions)]."""
    return [
        (k, predictions.read(fs.runs[k] / predictions.FILE))
        for k in fs.folds
        if (fs.runs[k] / predictions.FILE).is_file()
    ]


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic.write_bytes(path, buf.getvalue())


def _confusion_figure(plt, parts: list, label: str):
    from common.metrics import confusion

    counts = confusion(np.concatenate([p.labels for _, p in parts]), np.concatenate([p.probs for _, p in parts]))
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(EMOTIONS)):
        for j in range(len(EMOTIONS)):
            color = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EMOTIONS)), [f"{e} ({n})" for e, n in zip(EMOTIONS, counts.sum(axis=1), strict=True)])
    ax.set_xlabel("top-1 predicted emotion")
    ax.set_ylabel("true emotion (utterances)")
    ax.set_title(f"Top-1 predictions, share of each true emotion\n{label}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    return fig


def over(folds: list[int]) -> str:
    """What a figure's numbers are: one fold's, or the mean ± std over how many folds."""
    return f"fold {folds[0]}" if len(folds) == 1 else f"mean ± std over {len(folds)} folds"


def _per_class_f1_figure(plt, stats: dict, label: str, folds: list[int]):
    means = [stats.get(f"f1_{e}", Stat(None, None, 0)) for e in EMOTIONS]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(EMOTIONS, [s.mean or 0 for s in means], yerr=[s.std or 0 for s in means], capsize=4, color="tab:blue")
    for i, s in enumerate(means):
        text = "n/a" if s.mean is None else f"{s.mean:.2f}"
        ax.text(i, (s.mean or 0) + (s.std or 0) + 0.02, text, ha="center", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(f"F1 ({over(folds)})")
    ax.set_title(f"Per-class F1\n{label}", fontsize=9)
    return fig


def _curves_figure(plt, fs: FoldSet, stats: dict, label: str):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    headline = "micro_f1" if "micro_f1" in stats else "mean_ccc"
    for k in fs.folds:
        epochs = fs.metrics[k]["epochs"]
        x = [e["epoch"] for e in epochs]
        (line,) = axes[0].plot(x, [e["train_loss"] for e in epochs], label=f"fold {k} train")
        if all("valid" in e for e in epochs):
            axes[0].plot(x, [e["valid"]["loss"] for e in epochs], "--", color=line.get_color(), label=f"fold {k} valid")
        y = [e["test"].get(headline) for e in epochs]
        axes[1].plot(x, [np.nan if v is None else v for v in y], color=line.get_color(), label=f"fold {k}")
        chosen = fs.metrics[k]["chosen_epoch"]
        if y[chosen - 1] is not None:
            axes[1].plot([chosen], [y[chosen - 1]], "o", color=line.get_color())
    axes[0].set(xlabel="epoch", ylabel="loss", title="training (solid) and validation (dashed) loss")
    axes[1].set(xlabel="epoch", ylabel=f"test {headline}", title=f"test {headline} (dot: chosen epoch)")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(label, fontsize=9)
    return fig


def _va_scatter_figure(plt, parts: list, stats: dict, label: str, folds: list[int]):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    fold = np.concatenate([np.full(len(p), k) for k, p in parts])
    true, pred = np.concatenate([p.va for _, p in parts]), np.concatenate([p.va_pred for _, p in parts])
    for d, (ax, dim) in enumerate(zip(axes, ("valence", "arousal"), strict=True)):
        colours = {"c": fold, "cmap": "tab10", "vmin": 0.5, "vmax": 10.5}
        ax.scatter(true[:, d], pred[:, d], s=8, alpha=0.35, **colours)
        ax.plot([1, 5], [1, 5], color="gray", lw=1, label="prediction = truth")
        ax.set(xlim=(0.8, 5.2), ylim=(0.8, 5.2), xlabel=f"true {dim}", ylabel=f"predicted {dim}", aspect="equal")
        ax.set_title(f"{dim}: CCC {stats[f'{dim}_ccc']} ({over(folds)})", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Valence/arousal, test utterances of every fold (colour: fold)\n{label}", fontsize=9)
    return fig


def _layer_weights_figure(plt, fs: FoldSet, label: str):
    """Which layers carry emotion: each encoder's learnt layer weights, mean ± std over the folds."""
    found = [fs.metrics[k]["layer_weights"] for k in fs.folds if "layer_weights" in fs.metrics[k]]
    encoders = [name for name in ("text", "speech") if any(name in weights for weights in found)]
    fig, axes = plt.subplots(1, len(encoders), figsize=(5.5 * len(encoders), 3.8), squeeze=False)
    for ax, name in zip(axes[0], encoders, strict=True):
        w = np.array([weights[name] for weights in found])
        ax.bar(range(w.shape[1]), w.mean(0), yerr=w.std(0, ddof=1) if len(w) > 1 else None, capsize=3)
        ax.axhline(1 / w.shape[1], color="gray", lw=1, ls="--", label="equal weights")
        ax.set(xlabel="hidden layer (0: embedding output)", ylabel="weight", title=f"{name} encoder")
        ax.set_xticks(range(w.shape[1]))
        ax.legend(fontsize=7)
    fig.suptitle(f"Learnt layer weights ({over(fs.folds)})\n{label}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def figures(fs: FoldSet, out: Path) -> list[Path]:
    """The set's PNG figures in `out`: confusion matrix, per-class F1, training curves, V/A scatter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    which = f"fold {fs.folds[0]}" if len(fs.folds) == 1 else f"{len(fs.folds)} folds ({','.join(map(str, fs.folds))})"
    label = f"{fs.script}, {fs.dataset}, {fs.split} split, {which}"
    parts = read_predictions(fs)
    stats = aggregate([fs.metrics[k] for k in fs.folds])
    made = {}
    if parts and parts[0][1].probs is not None:
        made["confusion"] = _confusion_figure(plt, parts, label)
        made["per_class_f1"] = _per_class_f1_figure(plt, stats, label, fs.folds)
    made["curves"] = _curves_figure(plt, fs, stats, label)
    if parts and parts[0][1].va_pred is not None:
        made["va_scatter"] = _va_scatter_figure(plt, parts, stats, label, fs.folds)
    if any("layer_weights" in fs.metrics[k] for k in fs.folds):
        made["layer_weights"] = _layer_weights_figure(plt, fs, label)
    written = []
    for kind, fig in made.items():
        path = out / f"{fs.name}_{kind}.png"
        _save(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def _pooled(fs: FoldSet):
    from common.compare import pool

    return pool([(k, predictions.read(fs.runs[k] / predictions.FILE), run_threshold(fs.runs[k])) for k in fs.folds])


def _comparison_groups(sets: list[FoldSet]) -> list[tuple[str, str, dict[str, FoldSet]]]:
    """Complete fold sets with predictions, by dataset, split and protocol folder (KEMDy20, KEMDy20_original
    ...), each script once: (dataset, split, script -> fold set)."""
    groups = defaultdict(list)
    for fs in sets:
        if _comparable(fs):
            groups[fs.dataset, fs.split, fs.folder.name].append(fs)
    out = []
    for (dataset, split, _), group in groups.items():
        by_name = {fs.script: fs for fs in group}
        if len(by_name) == len(group):  # one script twice in a protocol folder: no single pairing
            out.append((dataset, split, by_name))
    return out


def _chosen_pairs(by_name: dict[str, FoldSet]) -> list[tuple[str, str, str]]:
    """(A, B, task): each multimodal cell against the better of its unimodal cells by the task's headline
    (fold mean), and concatenation against every other fusion."""
    from common.compare import metrics_of, pairs

    def mean(name: str, metric: str) -> float:
        fs = by_name[name]
        return aggregate([fs.metrics[k] for k in fs.folds]).get(metric, Stat(None, None, 0)).mean or 0.0

    chosen: dict[str, tuple[str, str, str]] = {}
    for a, b, kind in pairs(set(by_name)):
        task = by_name[a].metrics[by_name[a].folds[0]]["task"]
        if kind == "fusion":
            chosen[f"{a}|{b}"] = (a, b, task)
        elif a not in chosen or mean(b, metrics_of(task)[0]) > mean(chosen[a][1], metrics_of(task)[0]):
            chosen[a] = (a, b, task)
    return list(chosen.values())


def _difference(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{a - b:+.3f}"


def _paired(a: str, fa: FoldSet, b: str, fb: FoldSet, pooled: dict, resamples: int, seed: int) -> list[list]:
    """CSV rows [a, b, dataset, split, protocol folder, metric, A - B, interval low, high, per-fold differences] of
    two complete fold sets that tested the same utterances, for each metric of their task."""
    from common.compare import metrics_of, paired_bootstrap

    for fs in (fa, fb):
        if fs.name not in pooled:
            pooled[fs.name] = _pooled(fs)
    rows = []
    for metric in metrics_of(fa.metrics[fa.folds[0]]["task"]):
        diff, low, high = paired_bootstrap(pooled[fa.name], pooled[fb.name], metric, resamples, seed)
        tests = [[fs.metrics[k]["test"] for k in fs.folds] for fs in (fa, fb)]
        per_fold = " ".join(_difference(x.get(metric), y.get(metric)) for x, y in zip(*tests, strict=True))
        rows.append([a, b, fa.dataset, fa.split, fa.folder.name, metric, diff, low, high, per_fold])
    return rows


def _row_line(row: list) -> str:
    a, b, dataset, split, protocol, metric, diff, low, high, per_fold = row
    return (
        f"| {a} | {b} | {dataset} | {split} | `{protocol}` | {metric} | {diff:+.4f} | [{low:+.4f}, {high:+.4f}] | "
        f"{per_fold} |"
    )


def comparisons(sets: list[FoldSet], resamples: int = 1000, seed: int = 0) -> tuple[list[str], str]:
    """(Markdown lines, CSV) of the paired comparisons between complete fold sets of one dataset, split and
    protocol folder: each multimodal cell against the better of its unimodal cells, concatenation against every
    other fusion, between the encoders a cell was run with (see `encoder_sets`), and between the values of one
    setting a cell was run with (see `setting_pairs`)."""
    pooled: dict = {}

    def paired(found) -> list[list]:
        return [row for (la, fa), (lb, fb) in found for row in _paired(la, fa, lb, fb, pooled, resamples, seed)]

    what = (
        f"A - B on the pooled test utterances of all five folds, with a 95 % interval from {resamples} paired "
        "bootstrap resamples of the utterances (the same resample for both), and each fold's difference."
    )
    over_seeds = (
        "Fold sets run with several seeds (`--seeds`: folders that differ only by their `_seed<k>` ending): the mean "
        "over the seeds of A - B on the pooled test utterances of all five folds, with a 95 % interval from "
        f"{resamples} bootstrap resamples of the utterances, each drawn once for every seed and the seeds' "
        "differences on it averaged, and each seed's difference."
    )
    sections = [
        ("Paired comparisons", what, "per fold", paired(_cell_pairs(sets))),
        (
            "Paired comparisons of encoders",
            "The same cell with other encoders. " + what,
            "per fold",
            paired(_encoder_pairs(sets)),
        ),
        (
            "Paired comparisons of settings",
            "The same cell with one setting changed (`--context 2` against `--context 0` ...). " + what,
            "per fold",
            paired(_same_tests(setting_pairs(sets), pooled)),
        ),
        ("Paired comparisons over seeds", over_seeds, "per seed", _seed_paired(sets, pooled, resamples, seed)),
    ]
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(["a", "b", "dataset", "split", "protocol", "metric", "difference", "ci_low", "ci_high", "per_fold"])
    lines = []
    for title, intro, each, rows in sections:
        writer.writerows(rows)
        head = [f"| A | B | dataset | split | protocol | metric | A - B | 95 % interval | {each} |", "|" + "---|" * 9]
        if rows:
            lines += [f"## {title}", "", intro, "", *head, *map(_row_line, rows), ""]
    return lines, f.getvalue()


def seed_groups(sets: list[FoldSet]) -> dict[tuple, dict[int, dict[str, FoldSet]]]:
    """Complete fold sets whose protocol folders differ only by a `_seed<k>` ending (`--seeds`), run with two or
    more seeds: (dataset, split, folder without the ending) -> seed -> script -> fold set."""
    groups: dict[tuple, dict] = defaultdict(lambda: defaultdict(dict))
    for fs in sets:
        if _comparable(fs) and fs.settings and "seed" in fs.settings:
            base = re.sub(r"_seed\d+$", "", fs.folder.name)
            groups[fs.dataset, fs.split, base][fs.settings["seed"]][fs.script] = fs
    return {key: dict(by_seed) for key, by_seed in groups.items() if len(by_seed) >= 2}


def _seed_paired(sets: list[FoldSet], pooled: dict, resamples: int, seed: int) -> list[list]:
    """The rows of each cell pair over every seed that ran both (`compare.paired_bootstrap_seeds`)."""
    from common.compare import metrics_of, paired_bootstrap_seeds

    rows = []
    for (dataset, split, base), by_seed in seed_groups(sets).items():
        seeds = sorted(by_seed)
        common = set.intersection(*(set(by_seed[s]) for s in seeds))
        for a, b, task in _chosen_pairs({name: by_seed[seeds[0]][name] for name in common}):
            for s in seeds:
                for fs in (by_seed[s][a], by_seed[s][b]):
                    if fs.name not in pooled:
                        pooled[fs.name] = _pooled(fs)
            runs = [(pooled[by_seed[s][a].name], pooled[by_seed[s][b].name]) for s in seeds]
            if any(x.ids != runs[0][0].ids for pair in runs for x in pair):
                continue
            for metric in metrics_of(task):
                diff, low, high, per_seed = paired_bootstrap_seeds(runs, metric, resamples, seed)
                each = " ".join(f"{d:+.3f}" for d in per_seed)
                rows.append(
                    [
                        a,
                        b,
                        dataset,
                        split,
                        f"{base} (seeds {', '.join(map(str, seeds))})",
                        metric,
                        diff,
                        low,
                        high,
                        each,
                    ]
                )
    return rows


def _cell_pairs(sets: list[FoldSet]) -> list:
    """Each multimodal cell against the better of its unimodal cells, and concatenation against every other fusion,
    within one protocol folder."""
    out = []
    for _, _, by_name in _comparison_groups(sets):
        for a, b, _ in _chosen_pairs(by_name):
            out.append(
                tuple(
                    (name + (f" [{encoder_label(fs)}]" if fs.encoders else ""), fs)
                    for name, fs in ((a, by_name[a]), (b, by_name[b]))
                )
            )
    return out


def _encoder_pairs(sets: list[FoldSet]) -> list:
    """A cell against itself with other encoders."""
    out = []
    for _, by_label in encoder_sets(sets).items():
        for script in CELLS:
            found = [(label, sets_[script]) for label, sets_ in by_label.items() if script in sets_]
            for (la, fa), (lb, fb) in itertools.combinations(found, 2):
                if _comparable(fa) and _comparable(fb):
                    out.append(((f"{script} [{la}]", fa), (f"{script} [{lb}]", fb)))
    return out


def _same_tests(found: list, pooled: dict) -> list:
    """The pairs whose two fold sets tested the same utterances in the same order."""
    for (_, fa), (_, fb) in found:
        for fs in (fa, fb):
            if fs.name not in pooled:
                pooled[fs.name] = _pooled(fs)
    return [pair for pair in found if pooled[pair[0][1].name].ids == pooled[pair[1][1].name].ids]


# Compared elsewhere: the seeds in their own table, the encoders by their names.
NOT_SETTING_PAIRS = ("seed", "text_model", "speech_model")


def setting_pairs(sets: list[FoldSet]) -> list[tuple[tuple[str, FoldSet], tuple[str, FoldSet]]]:
    """((label, fold set) A, (label, fold set) B): complete fold sets of one script, dataset and split on the same
    corpus whose settings differ in exactly one flag (A the one off its default, where one is on it)."""
    from common.grid import cell_of
    from common.settings import DEFAULTS, FLAGS, concerned

    ready = [fs for fs in sets if _comparable(fs) and fs.settings]
    out = []
    for fa, fb in itertools.combinations(ready, 2):
        if (fa.script, fa.dataset, fa.split) != (
            fb.script,
            fb.dataset,
            fb.split,
        ) or fa.settings.keys() != fb.settings.keys():
            continue
        # The flags the cell reads either way (a speech cell reads --context only with --context_speech, so a set
        # with it pairs with the set without), and what is no flag (the corpus).
        reads = concerned(cell_of(fa.script)) | (fa.settings.keys() - FLAGS.keys())
        changed = [k for k in fa.settings if k in reads and fa.settings[k] != fb.settings[k]]
        if len(changed) != 1 or changed[0] not in DEFAULTS or changed[0] in NOT_SETTING_PAIRS:
            continue
        key = changed[0]
        if fa.settings[key] == DEFAULTS[key]:
            fa, fb = fb, fa
        out.append(tuple((f"{fs.script} [--{key} {fs.settings[key]}]", fs) for fs in (fa, fb)))
    return out


def _comparable(fs: FoldSet) -> bool:
    return fs.complete and all((fs.runs[k] / predictions.FILE).is_file() for k in fs.folds)


def encoder_label(fs: FoldSet) -> str:
    """The encoders a fold set ran with where they are not the defaults, as its folder names them."""
    return " + ".join(fs.encoders) or "default encoders"


def encoder_sets(sets: list[FoldSet]) -> dict[tuple, dict[str, dict[str, FoldSet]]]:
    """Fold sets of one dataset, split and protocol (their folder's name without the encoders' names) run with
    two or more encoder choices: (dataset, split, protocol) -> label -> script -> fold set."""
    groups: dict[tuple, dict] = defaultdict(lambda: defaultdict(dict))
    for fs in sets:
        protocol = fs.folder.name.removesuffix("".join(f"_{tag}" for tag in fs.encoders))
        if not fs.mixed and not fs.duplicates:
            groups[fs.dataset, fs.split, protocol][encoder_label(fs)].setdefault(fs.script, fs)
    return {key: dict(by_label) for key, by_label in groups.items() if len(by_label) > 1}


def encoder_tables(sets: list[FoldSet]) -> list[str]:
    """Markdown: each cell's headline test metric (mean ± std over its folds) with each encoder choice."""
    lines = []
    for (dataset, split, protocol), by_label in encoder_sets(sets).items():
        scripts = [script for script in CELLS if any(script in found for found in by_label.values())]
        lines += [f"### {dataset}, {split} split, `{protocol}`", ""]
        lines += ["| encoders | " + " | ".join(scripts) + " |", "|" + "---|" * (len(scripts) + 1)]
        for label, found in by_label.items():
            cells = []
            for script in scripts:
                fs = found.get(script)
                if fs is None:
                    cells.append("")
                    continue
                stats = aggregate([fs.metrics[k] for k in fs.folds])
                values = [f"{key} {stats[key]}" for key in ("micro_f1", "mean_ccc") if key in stats]
                cells.append("<br>".join(values) + ("" if fs.complete else f" ({fs.status})"))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    if not lines:
        return []
    intro = "Each cell's headline test metrics, mean ± sample std over its folds, with each choice of encoders."
    return ["## Encoders", "", intro, "", *lines]


def _within_partner(run: CrossRun, sets: list[FoldSet], dataset: str) -> FoldSet | None:
    """The fold set of the same cell and protocol within `dataset` (its folder named as the cross-corpus run's,
    without the direction: KEMDy20-to-KEMDy19_original -> KEMDy19_original)."""
    name = run.folder.name.replace(f"{run.dataset}-to-{run.test_dataset}", dataset, 1)
    found = [fs for fs in sets if fs.script == run.script and fs.dataset == dataset and fs.folder.name == name]
    found = [fs for fs in found if not fs.duplicates and not fs.mixed]
    return found[0] if len(found) == 1 else None


def cross_corpus(runs: list[CrossRun], sets: list[FoldSet], resamples: int = 1000, seed: int = 0) -> tuple[list, str]:
    """(Markdown lines, CSV) of every cross-corpus run beside the same cell within each corpus: the within-corpus
    mean ± std over folds, the cross-corpus score, and cross - within on the test corpus's utterances (all of
    them, which a complete within-corpus fold set tested once each) with a paired bootstrap interval."""
    from common.compare import aligned, metrics_of, paired_bootstrap, pool

    if not runs:
        return [], ""
    rank = {name: k for k, name in enumerate(CELLS)}
    runs = sorted(runs, key=lambda r: (rank.get(r.script, len(CELLS)), r.dataset, str(r.folder)))
    md = [
        "## Within and across corpora",
        "",
        "Each cross-corpus run (trained on all of one corpus, tested on all of the other) beside the same cell "
        "within each corpus (mean ± sample std over its folds). cross − within: on the test corpus's "
        f"utterances, pooled over the within-corpus folds, with a 95 % interval from {resamples} paired bootstrap "
        "resamples of the utterances; n/a where the within-corpus fold set is incomplete or tested other "
        "utterances.",
        "",
        "| script | trained on | tested on | metric | within the training corpus | within the test corpus "
        "| cross-corpus | cross − within | 95 % interval |",
        "|" + "---|" * 9,
    ]
    rows = []
    for run in runs:
        at_home, within = (_within_partner(run, sets, d) for d in (run.dataset, run.test_dataset))
        crossed = pool([(0, predictions.read(run.run_dir / predictions.FILE), run_threshold(run.run_dir))])
        paired = aligned(crossed, _pooled(within)) if within is not None and _comparable(within) else None
        mixed = [] if within is None else differences(within.settings or {}, run.settings)
        mixed = [d for d in mixed if not d.startswith(("--test_dataset ", "--dataset ")) and d != "another corpus"]
        for metric in metrics_of(run.metrics["task"]):
            cells, diff, low, high = [], None, None, None
            for fs in (at_home, within):
                stats = aggregate([fs.metrics[k] for k in fs.folds]) if fs is not None else {}
                stat = stats.get(metric)
                folds = "" if fs is None else f"fold {fs.folds[0]}" if len(fs.folds) == 1 else f"{len(fs.folds)} folds"
                cells.append("none" if fs is None else f"{stat} ({folds})" if stat else "n/a")
            score = flat_metrics(run.metrics["test"]).get(metric)
            if paired is not None and not mixed:
                diff, low, high = paired_bootstrap(crossed, paired, metric, resamples, seed)
            shown = ("n/a", "n/a") if diff is None else (f"{diff:+.4f}", f"[{low:+.4f}, {high:+.4f}]")
            note = f" (settings differ: {', '.join(mixed[:3])})" if mixed else ""
            md.append(
                f"| {run.script} | {run.dataset} | {run.test_dataset} | {metric} | {cells[0]} | {cells[1]} | "
                f"{_fmt(score)}{note} | {shown[0]} | {shown[1]} |"
            )
            rows.append(
                [run.folder.as_posix(), run.script, run.dataset, run.test_dataset, metric, score, diff, low, high]
            )
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(
        ["run", "script", "trained_on", "tested_on", "metric", "cross", "cross_minus_within", "ci_low", "ci_high"]
    )
    writer.writerows(rows)
    return [*md, ""], f.getvalue()


REPORT_MARKER = "kemdy_report.json"
REPORT_FILES = ("results.md", "results.csv", "comparisons.csv", "cross_corpus.csv", "figures")
REPORT_SPEC = Fields({"format": Choice(1), "kind": Choice("report"), "entries": [Choice(*REPORT_FILES)]})


def _claim_report_folder(out: Path) -> None:
    """The report's folder must be the report's: new or empty, or marked by an earlier report (whatever its
    files are called otherwise); anything else is refused before anything is written, and no file is written
    through a link."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; give a folder for the report")
    names = sorted(p.name for p in out.iterdir() if atomic.temporary_target(p.name) is None) if out.is_dir() else []
    marker = out / REPORT_MARKER
    if names and REPORT_MARKER not in names:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise UserError(
            f"--out {out}: holds files that are not a report's ({shown}; no {REPORT_MARKER}, so not this project's "
            "whatever the names); give a new or empty folder"
        )
    try:
        if marker.is_symlink():
            raise schema.DamagedFile(marker, "a link, not a file this project wrote")
        if names:
            schema.load(marker, REPORT_SPEC, max_bytes=1 << 16)
    except schema.DamagedFile as err:
        raise UserError(f"{err}; nothing in {out} is touched: give another --out") from None
    links = [n for n in REPORT_FILES if (out / n).is_symlink()]
    if links:
        raise UserError(
            f"{out / links[0]}: a link; the report never writes through links: remove it, or give another --out"
        )
    with writing("the report", out):
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_json(marker, {"format": 1, "kind": "report", "entries": list(REPORT_FILES)})


def main(argv: list[str] | None = None) -> None:
    from common.cli import HelpFormatter

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="python -m common.report",
        description="Tables (mean ± std over folds) and figures of every finished run under RUNS_DIR.",
    )
    parser.add_argument("runs_dir", help="folder searched for run directories (those holding metrics.json)")
    parser.add_argument("--out", help="report folder (default: RUNS_DIR/report)")
    parser.add_argument("--no-figures", dest="figures", action="store_false", help="tables only")
    parser.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples per comparison")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    args = parser.parse_args(argv)
    paths.check("RUNS_DIR", args.runs_dir)
    paths.check("--out", args.out)
    if args.bootstrap < 100:
        raise UserError(f"--bootstrap {args.bootstrap}: at least 100 resamples for a 95 % interval")
    skipped: list[str] = []
    cross: list[CrossRun] = []
    sets = find_fold_sets(args.runs_dir, skipped, cross)
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if not sets and not cross:
        raise UserError(f"{args.runs_dir}: no finished run directories (metrics.json) found")
    out = Path(args.out or Path(args.runs_dir, "report"))
    _claim_report_folder(out)
    md, table = tables(sets)
    compared, compared_csv = comparisons(sets, args.bootstrap, args.seed)
    crossed, crossed_csv = cross_corpus(cross, sets, args.bootstrap, args.seed)
    md = "\n".join([md, *compared, *crossed])
    with writing("the report", out):
        atomic.write_text(out / "results.md", md + "\n")
        atomic.write_text(out / "results.csv", table)
        atomic.write_text(out / "comparisons.csv", compared_csv)
        if crossed_csv:
            atomic.write_text(out / "cross_corpus.csv", crossed_csv)
        written = [p for fs in sets for p in figures(fs, out / "figures")] if args.figures else []
    print(md)
    incomplete = [fs for fs in sets if not fs.complete]
    print(
        f"{len(sets)} fold sets ({len(incomplete)} incomplete), {len(cross)} cross-corpus runs; wrote "
        f"{out / 'results.md'}, {out / 'results.csv'} and {len(written)} figures in {out / 'figures'}"
    )


if __name__ == "__main__":
    run_cli(main)
