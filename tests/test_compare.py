"""Paired comparisons: the pooled metrics equal scikit-learn's, the bootstrap interval covers a known
difference and excludes zero, and includes zero where there is no difference; the report's table."""

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from common.compare import Pooled, metrics_of, paired_bootstrap, pairs, pool
from common.grid import EMOTIONS
from common.metrics import classification_metrics, regression_metrics
from common.predictions import Predictions
from common.report import main

from helpers import mark_run


def predictions(rng, n: int, correct: np.ndarray, va_noise: float):
    """Single-label rows; where `correct`, the true emotion is the most probable and above 0.5."""
    true = rng.choice(7, size=n, p=[0.1, 0.05, 0.05, 0.2, 0.4, 0.1, 0.1])
    other = (true + 1 + rng.integers(0, 6, n)) % 7
    probs = np.full((n, 7), 0.05)
    probs[np.arange(n), np.where(correct, true, other)] = 0.9
    va = rng.uniform(1, 5, (n, 2))
    return true, probs, va, va + rng.normal(0, va_noise, (n, 2))


def rows_of(true, probs, va, va_pred, fold):
    return [
        {"segment_id": f"f{fold}_{i}"}
        | {f"true_{e}": str(int(true[i] == k)) for k, e in enumerate(EMOTIONS)}
        | {f"prob_{e}": f"{probs[i, k]:.6f}" for k, e in enumerate(EMOTIONS)}
        | {
            "true_valence": va[i, 0],
            "true_arousal": va[i, 1],
            "pred_valence": va_pred[i, 0],
            "pred_arousal": va_pred[i, 1],
        }
        for i in range(len(true))
    ]


def pooled(frames):
    """compare.pool over folds of rows as rows_of makes them, each fold's rows as the arrays of its predictions."""
    as_arrays = [
        Predictions(
            [r["segment_id"] for r in rows],
            np.array([[int(r[f"true_{e}"]) for e in EMOTIONS] for r in rows]),
            np.array([[float(r["true_valence"]), float(r["true_arousal"])] for r in rows]),
            np.array([[float(r[f"prob_{e}"]) for e in EMOTIONS] for r in rows]),
            np.array([[float(r["pred_valence"]), float(r["pred_arousal"])] for r in rows]),
        )
        for _, rows, _ in frames
    ]
    return pool([(fold, p, threshold) for (fold, _, threshold), p in zip(frames, as_arrays, strict=True)])


def two_sets(better: float, worse: float, seed: int = 0, n: int = 200):
    """Two fold sets over the same 5 x n utterances; A right where its draw < better, B where < worse (the
    same draw: B is right on a subset of A's rows)."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    for fold in range(1, 6):
        u = rng.random(n)
        state = rng.bit_generator.state
        true, pa, va, va_a = predictions(rng, n, u < better, 0.4)
        rng.bit_generator.state = state  # the same utterances for B
        _, pb, _, va_b = predictions(rng, n, u < worse, 0.8)
        a.append((fold, rows_of(true, pa, va, va_a, fold), 0.5))
        b.append((fold, rows_of(true, pb, va, va_b, fold), 0.5))
    return a, b


def test_pooled_metrics_are_those_of_scikit_learn_and_scipy_on_all_utterances():
    a, _ = two_sets(0.8, 0.6)
    p = pooled(a)
    rows = [r for _, fold_rows, _ in a for r in fold_rows]
    labels = np.array([[int(r[f"true_{e}"]) for e in EMOTIONS] for r in rows])
    probs = np.array([[float(r[f"prob_{e}"]) for e in EMOTIONS] for r in rows])
    va = np.array([[r["true_valence"], r["true_arousal"]] for r in rows], dtype=float)
    va_pred = np.array([[r["pred_valence"], r["pred_arousal"]] for r in rows], dtype=float)
    expected = classification_metrics(labels, probs, 0.5)[0] | regression_metrics(va, va_pred)[0]
    # A B whose metrics are known by hand: nothing predicted, the top-1 always wrong, V/A exactly right
    wrong = (p.labels.argmax(1) + 1) % 7
    known = Pooled(p.ids, p.labels, np.zeros_like(p.decisions), wrong, p.va, p.va)
    for metric in metrics_of("total"):
        floor = {"micro_f1": 0.0, "macro_f1": 0.0, "uar": 0.0, "mean_ccc": 1.0}[metric]
        diff, _, _ = paired_bootstrap(p, known, metric, resamples=100)
        assert diff + floor == pytest.approx(expected[metric], abs=1e-9), metric


def test_a_known_difference_is_covered_and_zero_is_not():
    a, b = two_sets(0.85, 0.65)
    pa, pb = pooled(a), pooled(b)
    decisions = {name: p.decisions for name, p in (("a", pa), ("b", pb))}
    known = f1_score(pa.labels, decisions["a"], average="micro") - f1_score(pb.labels, decisions["b"], average="micro")
    diff, low, high = paired_bootstrap(pa, pb, "micro_f1", resamples=1000, seed=1)
    assert diff == pytest.approx(known) and known > 0.15
    assert low < known < high and low > 0
    again = paired_bootstrap(pa, pb, "micro_f1", resamples=1000, seed=1)
    assert again == (diff, low, high)  # seeded
    diff, low, high = paired_bootstrap(pa, pb, "mean_ccc", resamples=1000, seed=1)  # A's V/A noise is half B's
    assert low < diff < high and low > 0


def test_no_difference_gives_an_interval_around_zero():
    a, _ = two_sets(0.75, 0.75, seed=2)
    b, _ = two_sets(0.75, 0.75, seed=2)
    rng = np.random.default_rng(3)
    for fold, (_, rows, _) in enumerate(b, 1):  # the same utterances, each prediction drawn afresh
        true = np.array([[int(r[f"true_{e}"]) for e in EMOTIONS] for r in rows]).argmax(1)
        va = np.array([[r["true_valence"], r["true_arousal"]] for r in rows])
        _, probs, _, va_pred = predictions(rng, len(rows), rng.random(len(rows)) < 0.75, 0.4)
        probs = np.full_like(probs, 0.05)
        right = rng.random(len(rows)) < 0.75
        probs[np.arange(len(rows)), np.where(right, true, (true + 1) % 7)] = 0.9
        b[fold - 1] = (fold, rows_of(true, probs, va, va + rng.normal(0, 0.4, va.shape), fold), 0.5)
    for metric in ("micro_f1", "uar", "mean_ccc"):
        diff, low, high = paired_bootstrap(pooled(a), pooled(b), metric, resamples=1000)
        assert low < 0 < high, (metric, diff, low, high)


def test_different_utterances_are_not_compared():
    a, _ = two_sets(0.8, 0.6, n=50)
    c, _ = two_sets(0.8, 0.6, n=60)
    with pytest.raises(ValueError, match="do not hold the same test utterances"):
        paired_bootstrap(pooled(a), pooled(c), "micro_f1", resamples=100)


def write_set(root, script: str, folds, folder: str = "KEMDy20", encoders=(), settings=None) -> None:
    """A finished classification fold set of `script` in root/script/folder, from two_sets' rows."""
    for fold, rows, _ in folds:
        run = root / script / folder / f"fold{fold}"
        run.mkdir(parents=True)
        labels = np.array([[int(r[f"true_{e}"]) for e in EMOTIONS] for r in rows])
        probs = np.array([[float(r[f"prob_{e}"]) for e in EMOTIONS] for r in rows])
        test = classification_metrics(labels, probs, 0.5)[0]
        metrics = {"script": script, "dataset": "KEMDy20", "split": "contiguous", "fold": fold}
        metrics |= {"task": "classification", "chosen_epoch": 1, "test": test, "epochs": []}
        (run / "metrics.json").write_text(json.dumps(metrics))
        mark_run(run, script, settings, encoders=list(encoders))
        columns = ["segment_id", *[f"true_{e}" for e in EMOTIONS], *[f"prob_{e}" for e in EMOTIONS]]
        columns += ["true_valence", "true_arousal"]  # a classification run's file, as the loop writes it
        with (run / "predictions.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def test_the_report_compares_each_multimodal_cell_with_its_better_unimodal_cell_and_the_fusions(tmp_path):
    sets = {
        "text_classification": two_sets(0.7, 0.7, seed=5)[0],
        "speech_classification": two_sets(0.6, 0.6, seed=5)[0],
        "multimodal_classification_concat": two_sets(0.85, 0.85, seed=5)[0],
        "multimodal_classification_element_wise_add": two_sets(0.8, 0.8, seed=5)[0],
    }
    for script, folds in sets.items():
        write_set(tmp_path, script, folds)
    main([str(tmp_path), "--no-figures", "--bootstrap", "200"])
    with (tmp_path / "report" / "comparisons.csv").open() as f:
        table = list(csv.DictReader(f))
    pairs = {(r["a"], r["b"]) for r in table}
    assert pairs == {
        ("multimodal_classification_concat", "text_classification"),  # text is the better unimodal cell
        ("multimodal_classification_element_wise_add", "text_classification"),
        ("multimodal_classification_concat", "multimodal_classification_element_wise_add"),
    }
    row = next(r for r in table if r["b"] == "text_classification" and r["metric"] == "micro_f1" and "concat" in r["a"])
    assert float(row["ci_low"]) > 0
    per_fold = [float(x) for x in row["per_fold"].split()]
    mm = [json.loads((tmp_path / row["a"] / "KEMDy20" / f"fold{k}" / "metrics.json").read_text()) for k in range(1, 6)]
    text = [
        json.loads((tmp_path / row["b"] / "KEMDy20" / f"fold{k}" / "metrics.json").read_text()) for k in range(1, 6)
    ]
    expected = [m["test"]["micro_f1"] - t["test"]["micro_f1"] for m, t in zip(mm, text, strict=True)]
    assert per_fold == pytest.approx(expected, abs=5e-4)
    assert "## Paired comparisons" in (tmp_path / "report" / "results.md").read_text()


def test_the_report_puts_encoders_side_by_side_and_compares_them_on_the_same_cell(tmp_path):
    better, worse = two_sets(0.85, 0.65, seed=4)
    write_set(tmp_path, "speech_classification", worse)  # the default encoders
    write_set(tmp_path, "speech_classification", better, "KEMDy20_wavlm", ["wavlm"])
    main([str(tmp_path), "--no-figures", "--bootstrap", "200"])
    md = (tmp_path / "report" / "results.md").read_text()
    assert "## Encoders" in md and "### KEMDy20, contiguous split, `KEMDy20`" in md
    for label, folds in (("default encoders", worse), ("wavlm", better)):
        micro = [classification_metrics(*arrays(rows), 0.5)[0]["micro_f1"] for _, rows, _ in folds]
        assert f"| {label} | micro_f1 {np.mean(micro):.4f} ± {np.std(micro, ddof=1):.4f} |" in md
    with (tmp_path / "report" / "comparisons.csv").open() as f:
        (row,) = [r for r in csv.DictReader(f) if r["metric"] == "micro_f1"]
    assert (row["a"], row["b"]) == ("speech_classification [default encoders]", "speech_classification [wavlm]")
    pa, pb = pooled(worse), pooled(better)
    known = f1_score(pa.labels, pa.decisions, average="micro") - f1_score(pb.labels, pb.decisions, average="micro")
    assert float(row["difference"]) == pytest.approx(known) and float(row["ci_high"]) < 0
    assert "## Paired comparisons of encoders" in md


def arrays(rows):
    labels = np.array([[int(r[f"true_{e}"]) for e in EMOTIONS] for r in rows])
    return labels, np.array([[float(r[f"prob_{e}"]) for e in EMOTIONS] for r in rows])


def test_concatenation_is_compared_with_every_other_fusion_run_and_each_fusion_with_the_unimodal_cells():
    names = {"text_total", "speech_total", "multimodal_total_concat", "multimodal_total_gated"}
    names |= {"multimodal_total_cross_attention", "multimodal_classification_gated", "text_classification"}
    assert sorted(pairs(names)) == sorted(
        [
            ("multimodal_total_concat", "text_total", "unimodal"),
            ("multimodal_total_concat", "speech_total", "unimodal"),
            ("multimodal_total_gated", "text_total", "unimodal"),
            ("multimodal_total_gated", "speech_total", "unimodal"),
            ("multimodal_total_cross_attention", "text_total", "unimodal"),
            ("multimodal_total_cross_attention", "speech_total", "unimodal"),
            ("multimodal_total_concat", "multimodal_total_gated", "fusion"),
            ("multimodal_total_concat", "multimodal_total_cross_attention", "fusion"),
            ("multimodal_classification_gated", "text_classification", "unimodal"),
        ]
    )


def test_a_comparison_over_seeds_averages_each_seeds_difference_over_utterances_drawn_once_for_all():
    """paired_bootstrap_seeds against a transcription with scikit-learn's micro-F1: the point is the mean over seeds
    of A - B, each resample draws the utterances once (in the function's order of draws) for every seed, and the
    interval is the percentiles of the seeds' mean difference; with one seed it is paired_bootstrap itself."""
    from common.compare import paired_bootstrap_seeds

    rng = np.random.default_rng(4)
    n, runs = 120, []
    for s in range(3):
        a = predictions(rng, n, rng.random(n) < 0.8 - 0.05 * s, 0.3)
        b = predictions(rng, n, rng.random(n) < 0.6, 0.3)
        true = a[0]
        b = (true, *b[1:])  # the same utterances, the same truth
        runs.append(tuple(pooled([(1, rows_of(*x, 1), 0.5)]) for x in (a, b)))

    def micro(p, rows):
        return f1_score(p.labels[rows], p.decisions[rows], average="micro", zero_division=0)

    everything = np.arange(n)
    per_seed = [micro(a, everything) - micro(b, everything) for a, b in runs]
    draws = np.random.default_rng(9)
    means = [
        np.mean([micro(a, rows) - micro(b, rows) for a, b in runs])
        for rows in (draws.integers(0, n, n) for _ in range(300))
    ]
    diff, low, high, each = paired_bootstrap_seeds(runs, "micro_f1", resamples=300, seed=9)
    assert each == pytest.approx(per_seed) and diff == pytest.approx(np.mean(per_seed))
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    one = paired_bootstrap_seeds(runs[:1], "micro_f1", resamples=300, seed=9)
    assert one[:3] == pytest.approx(paired_bootstrap(*runs[0], "micro_f1", resamples=300, seed=9))
    a, b = runs[0]
    other = Pooled([("x", i) for i in range(n)], a.labels, a.decisions, a.top1)
    with pytest.raises(ValueError, match="the same test utterances"):
        paired_bootstrap_seeds([(a, b), (other, b)], "micro_f1")


def test_the_report_compares_two_cells_over_every_seed_they_both_ran(tmp_path):
    from common.compare import paired_bootstrap_seeds

    seeds = {1: 5, 2: 6, 3: 7}  # each seed: the draw of its fold sets
    for seed, draw in seeds.items():
        mm, text = two_sets(0.85, 0.7, seed=draw)
        for script, folds in (("multimodal_classification_concat", mm), ("text_classification", text)):
            write_set(tmp_path, script, folds, folder=f"KEMDy20_seed{seed}", settings={"seed": seed})
    main([str(tmp_path), "--no-figures", "--bootstrap", "200"])
    with (tmp_path / "report" / "comparisons.csv").open() as f:
        table = [r for r in csv.DictReader(f) if r["protocol"].endswith("(seeds 1, 2, 3)")]
    row = next(r for r in table if r["metric"] == "micro_f1")
    assert (row["a"], row["b"], row["protocol"]) == (
        "multimodal_classification_concat",
        "text_classification",
        "KEMDy20 (seeds 1, 2, 3)",
    )
    runs = [tuple(pooled(two_sets(0.85, 0.7, seed=draw)[k]) for k in (0, 1)) for draw in seeds.values()]
    diff, low, high, each = paired_bootstrap_seeds(runs, "micro_f1", resamples=200, seed=0)
    assert float(row["difference"]) == pytest.approx(diff) and float(row["ci_low"]) == pytest.approx(low)
    assert [float(x) for x in row["per_fold"].split()] == pytest.approx(each, abs=5e-4)
    assert low > 0 and "## Paired comparisons over seeds" in (tmp_path / "report" / "results.md").read_text()
