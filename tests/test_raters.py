"""What the ten evaluators agree on, against hand counts."""

from collections import Counter
from types import SimpleNamespace

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
