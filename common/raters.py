"""The ten evaluators of each utterance (read by `common.kemdy` into `Utterance.ratings`): what they agree on.
KEMDy's total evaluation is, by its documentation, the emotions chosen by the most evaluators (ties joined)
and the mean of their valence and arousal; these functions compute the same from the ratings, so that a copy
of the corpus can be checked against its own documentation and agreement can be measured."""

from __future__ import annotations

from collections import Counter

from common.grid import EMOTIONS

# An utterance on which at least this many of the ten evaluators chose one emotion: "high agreement".
HIGH_AGREEMENT = 7


def complete(ratings) -> bool:
    """Every evaluator's emotion, valence and arousal read."""
    return bool(ratings) and all(None not in (r.emotion, r.valence, r.arousal) for r in ratings)


def votes(ratings) -> Counter:
    """Evaluators per emotion index (those whose emotion was read)."""
    return Counter(r.emotion for r in ratings if r.emotion is not None)


def shares(ratings) -> tuple[float, ...] | None:
    """The share of the evaluators (those whose emotion was read) who chose each emotion; None where none was."""
    counts = votes(ratings)
    read = sum(counts.values())
    return tuple(counts[i] / read for i in range(len(EMOTIONS))) if read else None


def emotion_targets(utterances, indices) -> tuple[dict[int, tuple[float, ...]], int]:
    """--targets raters: each utterance's evaluators' shares by its index, and how many of them had no evaluator's
    emotion read (those keep their total evaluation's set)."""
    targets, missing = {}, 0
    for k in indices:
        share = shares(utterances[k].ratings)
        missing += share is None
        targets[k] = share if share is not None else tuple(map(float, utterances[k].labels))
    return targets, missing


def top_votes(ratings) -> int:
    """How many evaluators chose the most chosen emotion (0 where none was read)."""
    return max(votes(ratings).values(), default=0)


def high_agreement(utterances) -> list[bool] | None:
    """Whether at least HIGH_AGREEMENT of each utterance's evaluators chose one emotion; None where the corpus
    carries no ratings (a copy without the evaluators' columns)."""
    if not any(u.ratings for u in utterances):
        return None
    return [top_votes(u.ratings) >= HIGH_AGREEMENT for u in utterances]


def plurality(ratings) -> tuple[int, ...]:
    """The emotions chosen by the most evaluators, multi-hot over EMOTIONS (ties all set)."""
    counts = votes(ratings)
    top = max(counts.values(), default=0)
    return tuple(int(top > 0 and counts[i] == top) for i in range(len(EMOTIONS)))


def mean_scores(ratings) -> tuple[float, float]:
    """Mean valence and arousal over the evaluators (of a complete panel)."""
    return (
        sum(r.valence for r in ratings) / len(ratings),
        sum(r.arousal for r in ratings) / len(ratings),
    )


def summary(corpus) -> dict:
    """The audit's account of the evaluators: their names per file, the rater cells that could not be used,
    agreement, and how often the total evaluation differs from what its evaluators' ratings give."""
    utts = corpus.utterances
    full = [u for u in utts if complete(u.ratings)]
    names = Counter(corpus.rater_names.values())
    top = [max(votes(u.ratings).values()) for u in full]
    return {
        "names": [{"evaluators": list(n), "files": k} for n, k in names.most_common()],
        "complete": len(full),
        "cells_missing": corpus.rater_cells["missing"],
        "cells_unreadable": corpus.rater_cells["unreadable"],
        "not_fully_read": corpus.unreadable_ratings,
        f"at_least_{HIGH_AGREEMENT}_agree": sum(t >= HIGH_AGREEMENT for t in top),
        "votes_for_the_top_emotion": {str(k): n for k, n in sorted(Counter(top).items())},
        "emotion_not_their_plurality": sum(tuple(u.labels) != plurality(u.ratings) for u in full),
        "scores_not_their_mean": sum(
            max(abs(a - b) for a, b in zip((u.valence, u.arousal), mean_scores(u.ratings), strict=True)) > 0.05
            for u in full
        ),
    }


# The metrics a rater is scored with, as the models are: on the emotion set, and on valence/arousal.
REFERENCE_METRICS = ("micro_f1", "macro_f1", "top1_accuracy", "uar", "valence_ccc", "arousal_ccc", "mean_ccc")


def human_reference(utterances) -> dict | None:
    """Each evaluator against the other nine, with the very metrics a model gets, averaged over the ten: the
    evaluator's one emotion (as a probability of 1) against the emotions the other nine chose most (ties all
    kept), and the evaluator's valence and arousal against the other nine's mean; over the utterances whose ten
    ratings were all read ("n"). None where there are none. A model is scored against all ten evaluators'
    consensus, which no single evaluator is asked to predict: it can exceed this reference."""
    import numpy as np

    from common.metrics import classification_metrics, regression_metrics

    panels = [u.ratings for u in utterances if complete(u.ratings)]
    if not panels:
        return None
    scores: dict[str, list[float]] = {name: [] for name in REFERENCE_METRICS}
    for k in range(len(panels[0])):
        others = [p[:k] + p[k + 1 :] for p in panels]
        truth = np.array([plurality(o) for o in others])
        chosen = np.eye(len(EMOTIONS))[[p[k].emotion for p in panels]]
        m = classification_metrics(truth, chosen, 0.5)[0]
        va_true = np.array([mean_scores(o) for o in others])
        va_rater = np.array([[p[k].valence, p[k].arousal] for p in panels])
        m |= regression_metrics(va_true, va_rater)[0]
        for name in REFERENCE_METRICS:
            if m.get(name) is not None:
                scores[name].append(m[name])
    return {"n": len(panels)} | {name: float(np.mean(v)) for name, v in scores.items() if v}
