"""What the ten evaluators agree on, against hand counts."""

from collections import Counter
from types import SimpleNamespace

import pytest

from common import raters
from common.grid import EMOTIONS
from common.kemdy import Rating

A, H, N, S = (EMOTIONS.index(e) for e in ("angry", "happy", "neutral", "sad"))


def panel(emotions, valence=3.0, arousal=3.0):
    return tuple(Rating(e, valence, arousal) for e in emotions)


def test_the_plurality_keeps_every_tied_emotion_and_the_scores_are_the_mean():
    assert raters.plurality(panel([N] * 6 + [H] * 4)) == tuple(int(i == N) for i in range(7))
    assert raters.plurality(panel([N] * 4 + [H] * 4 + [S, A])) == tuple(int(i in (N, H)) for i in range(7))
    mixed = tuple(Rating(N, v, a) for v, a in zip([1, 2, 3, 4, 5] * 2, [5, 5, 4, 4, 3] * 2, strict=True))
    assert raters.mean_scores(mixed) == (3.0, 4.2)
    assert raters.complete(mixed) and not raters.complete(mixed[:9] + (Rating(None, 3.0, 3.0),))


def test_the_summary_counts_agreement_and_a_total_evaluation_that_differs_from_its_evaluators():
    one_hot = lambda i: tuple(int(k == i) for k in range(7))  # noqa: E731
    utterances = [
        SimpleNamespace(labels=one_hot(N), valence=3.0, arousal=3.0, ratings=panel([N] * 9 + [H])),  # 9 agree
        SimpleNamespace(labels=one_hot(N), valence=3.0, arousal=3.0, ratings=panel([N] * 7 + [H] * 3)),  # 7
        SimpleNamespace(labels=one_hot(H), valence=3.0, arousal=3.0, ratings=panel([N] * 6 + [H] * 4)),  # differs
        SimpleNamespace(labels=one_hot(N), valence=3.5, arousal=3.0, ratings=panel([N] * 10)),  # V not the mean
        SimpleNamespace(labels=one_hot(N), valence=3.0, arousal=3.0, ratings=panel([N] * 9 + [None])),  # part
    ]
    corpus = SimpleNamespace(
        utterances=utterances,
        rater_names={"a.csv": ("E1",) * 10, "b.csv": ("E1",) * 10},
        rater_cells=Counter({"missing": 1}),
        unreadable_ratings=[],
    )
    s = raters.summary(corpus)
    assert s["names"] == [{"evaluators": ["E1"] * 10, "files": 2}] and s["complete"] == 4
    assert s["at_least_7_agree"] == 3 and s["votes_for_the_top_emotion"] == {"6": 1, "7": 1, "9": 1, "10": 1}
    assert s["emotion_not_their_plurality"] == 1 and s["scores_not_their_mean"] == 1
    assert (s["cells_missing"], s["cells_unreadable"]) == (1, 0)


def test_a_run_scores_its_test_utterances_by_how_many_evaluators_agreed(corpus20, tiny_models, tmp_path):
    """metrics.json's test_by_agreement: scikit-learn's micro-F1 on the test utterances where at least 7 of the
    ten evaluators (read here from the annotation files with the csv module) chose one emotion, and on the rest;
    the run's own test metrics are left as they were."""
    import csv
    import json

    import numpy as np
    from sklearn.metrics import f1_score

    from common.cli import parse_script
    from common.kemdy import read_corpus
    from common.train import train

    from helpers import tiny_command

    out = tmp_path / "run"
    (result,) = train(
        parse_script(
            "text_classification", tiny_command("text_classification", corpus20[0], tiny_models, out, epochs=1)[2:]
        )
    )
    metrics = json.loads((out / "metrics.json").read_text())
    tables = {p.name: list(csv.reader(p.open(encoding="utf-8"))) for p in (corpus20[0] / "annotation").iterdir()}
    votes = {  # each utterance's row (found by the reader: session 3's ids name another session), its ten emotions
        u.segment_id: max(Counter(tables[u.annotation][u.line - 1][7:37:3]).values())
        for u in read_corpus("20", corpus20[0]).utterances
    }
    with (out / "predictions.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    high = np.array([votes[r["segment_id"]] >= 7 for r in rows])
    labels = np.array([[int(r[f"true_{e}"]) for e in EMOTIONS] for r in rows])
    decided = np.array([[float(r[f"prob_{e}"]) > 0.5 for e in EMOTIONS] for r in rows])
    strata = metrics["test_by_agreement"]
    assert 0 < strata["high"]["n"] < len(rows) and strata["high"]["n"] + strata["rest"]["n"] == len(rows)
    for name, part in (("high", high), ("rest", ~high)):
        assert strata[name]["n"] == part.sum()
        expected = f1_score(labels[part], decided[part], average="micro", zero_division=0)
        assert strata[name]["micro_f1"] == pytest.approx(expected, abs=1e-9), name
    assert result["test"] == metrics["test"] and "high" not in metrics["test"]
    # the report's table of them: one fold, so each value alone
    from common.report import main as report

    report([str(tmp_path), "--no-figures", "--out", str(tmp_path / "report")])
    md = (tmp_path / "report" / "results.md").read_text()
    assert "## By the evaluators' agreement" in md
    for name, what in (("high", "7+ of 10 agree"), ("rest", "fewer agree")):
        row = next(line for line in md.splitlines() if f"| {what} |" in line)
        assert f"| {strata[name]['n']} | {strata[name]['micro_f1']:.4f} |" in row, row
    # the human reference of the same test utterances, beside the model's own numbers
    reference = metrics["human_reference"]
    assert reference["n"] == len(rows)  # every synthetic panel is complete
    for who, numbers in (("the model", metrics["test"]), ("one evaluator against the other nine", reference)):
        row = next(line for line in md.splitlines() if f"| {who} |" in line)
        assert f"| {who} | {numbers['micro_f1']:.4f} | {numbers['top1_accuracy']:.4f} |" in row, row


def test_the_human_reference_scores_each_evaluator_against_the_other_nine_as_a_model_is_scored():
    """Against scikit-learn's micro-F1 and a CCC written out here, evaluator by evaluator, then averaged."""
    import numpy as np
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    utterances = []
    for _ in range(40):
        main = int(rng.integers(7))
        emotions = [main if rng.random() < 0.7 else int(rng.integers(7)) for _ in range(10)]
        v, a = rng.integers(1, 6, 10), rng.integers(1, 6, 10)
        utterances.append(
            SimpleNamespace(
                ratings=tuple(Rating(e, float(x), float(y)) for e, x, y in zip(emotions, v, a, strict=True))
            )
        )
    utterances.append(SimpleNamespace(ratings=utterances[0].ratings[:9] + (Rating(None, 3.0, 3.0),)))  # left out
    got = raters.human_reference(utterances)

    def ccc(t, p):
        return 2 * np.cov(t, p, bias=True)[0, 1] / (t.var() + p.var() + (t.mean() - p.mean()) ** 2)

    micro, top1, va = [], [], []
    for k in range(10):
        truth, chosen, ccc_k = [], [], []
        for u in utterances[:40]:
            others = [r for j, r in enumerate(u.ratings) if j != k]
            counts = Counter(r.emotion for r in others)
            truth.append([int(counts[i] == max(counts.values())) for i in range(7)])
            chosen.append([int(i == u.ratings[k].emotion) for i in range(7)])
        truth, chosen = np.array(truth), np.array(chosen)
        micro.append(f1_score(truth, chosen, average="micro"))
        top1.append(np.mean([truth[i, u.ratings[k].emotion] for i, u in enumerate(utterances[:40])]))
        for d in (1, 2):
            t = np.array([np.mean([r[d] for j, r in enumerate(u.ratings) if j != k]) for u in utterances[:40]])
            p = np.array([u.ratings[k][d] for u in utterances[:40]])
            ccc_k.append(ccc(t, p))
        va.append(np.mean(ccc_k))
    assert got["n"] == 40
    assert got["micro_f1"] == pytest.approx(np.mean(micro), abs=1e-12)
    assert got["top1_accuracy"] == pytest.approx(np.mean(top1), abs=1e-12)
    assert got["mean_ccc"] == pytest.approx(np.mean(va), abs=1e-12)
    assert raters.human_reference([SimpleNamespace(ratings=())]) is None


def test_the_shares_count_the_evaluators_whose_emotion_was_read():
    from common.kemdy import Rating

    shares = raters.shares(panel([N] * 6 + [H] * 3) + (Rating(None, 3.0, 3.0),))
    assert shares == tuple(6 / 9 if i == N else 3 / 9 if i == H else 0.0 for i in range(7))
    assert raters.shares(()) is None and raters.shares((Rating(None, 3.0, 3.0),)) is None
    utterances = [
        SimpleNamespace(ratings=panel([A] * 10), labels=(1, 0, 0, 0, 0, 0, 0)),
        SimpleNamespace(ratings=(), labels=(0, 0, 0, 1, 0, 0, 1)),  # no evaluator read: its total evaluation
    ]
    assert raters.emotion_targets(utterances, [1, 0]) == (
        {0: tuple(float(i == A) for i in range(7)), 1: (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0)},
        1,
    )
