"""Losses and metrics against scikit-learn, SciPy and hand computations, including the undefined cases."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    mean_absolute_error,
    precision_score,
    recall_score,
)

from common.grid import EMOTIONS
from common.losses import Objective, balanced_weights, emotion_probabilities
from common.metrics import ccc, classification_metrics, regression_metrics, tune_thresholds


def test_classification_metrics_on_a_hand_computed_example():
    # 4 utterances x 7 classes; threshold 0.5
    labels = np.zeros((4, 7), dtype=int)
    labels[0, [0]] = 1  # angry
    labels[1, [3, 4]] = 1  # happy + neutral
    labels[2, [5]] = 1  # sad
    labels[3, [4]] = 1  # neutral
    probs = np.full((4, 7), 0.1)
    probs[0, 0] = 0.9  # angry: TP
    probs[1, 3] = 0.6  # happy: TP, neutral missed (0.1): FN; top-1 happy is a true label
    probs[2, 4] = 0.7  # neutral predicted for sad: FP neutral, FN sad; top-1 neutral is wrong
    probs[3, 4] = 0.8  # neutral: TP
    m, notes = classification_metrics(labels, probs, 0.5)
    # micro: TP 3, FP 1, FN 2 -> 2*3 / (2*3 + 1 + 2) = 6/9
    assert m["micro_f1"] == pytest.approx(6 / 9)
    # per class: angry 1, happy 1, neutral TP1 FP1 FN1 -> 0.5, sad 0, disgust/fear/surprise undefined
    assert m["per_class_f1"] == {
        "angry": 1.0,
        "disgust": None,
        "fear": None,
        "happy": 1.0,
        "neutral": 0.5,
        "sad": 0.0,
        "surprise": None,
    }
    assert m["macro_f1"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    # weighted by support: angry 1, happy 1, neutral 2, sad 1 -> (1 + 1 + 2*0.5 + 0) / 5
    assert m["weighted_f1"] == pytest.approx(3 / 5)
    # 28 decisions, 3 wrong (neutral FN on row 1, neutral FP and sad FN on row 2)
    assert m["hamming_accuracy"] == pytest.approx(25 / 28)
    assert m["subset_accuracy"] == pytest.approx(2 / 4)
    assert m["top1_accuracy"] == pytest.approx(3 / 4)
    assert len(notes) == 3 and all("no true or predicted positives" in n for n in notes)


def test_classification_metrics_match_scikit_learn_on_random_data():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 7)) < 0.25).astype(int)
    labels[np.arange(200), rng.integers(0, 7, 200)] = 1
    probs = np.clip(labels * 0.4 + rng.random((200, 7)) * 0.6, 0, 1)
    m, notes = classification_metrics(labels, probs, 0.5)
    pred = (probs >= 0.5).astype(int)
    assert notes == []
    for avg in ("micro", "macro", "weighted"):
        assert m[f"{avg}_f1"] == pytest.approx(f1_score(labels, pred, average=avg))
    assert list(m["per_class_f1"].values()) == pytest.approx(list(f1_score(labels, pred, average=None)))
    assert m["hamming_accuracy"] == pytest.approx((labels == pred).mean())
    assert m["subset_accuracy"] == pytest.approx((labels == pred).all(axis=1).mean())
    assert list(m["per_class_f1"]) == list(EMOTIONS)


@pytest.mark.parametrize("seed", range(40))
def test_classification_metrics_equal_scikit_learn_exactly_including_undefined_cases(seed):
    from sklearn.metrics import accuracy_score, hamming_loss

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    labels = (rng.random((n, 7)) < rng.random(7) * 0.5).astype(int)  # some emotions absent, some rare
    probs = rng.random((n, 7)) * rng.random(7)  # some never predicted
    thresholds = rng.choice([0.5, 0.2], 7) if seed % 2 else 0.5
    m, notes = classification_metrics(labels, probs, thresholds)
    pred = (probs > thresholds).astype(int)

    def sk(f, **kw):
        return [None if np.isnan(v) else v for v in np.atleast_1d(f(labels, pred, zero_division=np.nan, **kw))]

    assert list(m["per_class_f1"].values()) == sk(f1_score, average=None)
    assert list(m["per_class_precision"].values()) == sk(precision_score, average=None)
    assert list(m["per_class_recall"].values()) == sk(recall_score, average=None)
    assert [m["macro_f1"]] == sk(f1_score, average="macro")
    assert m["micro_f1"] == f1_score(labels, pred, average="micro", zero_division=0.0)
    assert m["weighted_f1"] == f1_score(labels, pred, average="weighted", zero_division=0.0)
    assert m["hamming_accuracy"] == 1.0 - hamming_loss(labels, pred)
    assert m["subset_accuracy"] == accuracy_score(labels, pred)
    assert len(notes) == sum(v is None for v in m["per_class_f1"].values())


def test_a_class_predicted_but_absent_scores_zero_not_undefined():
    labels = np.zeros((2, 7), dtype=int)
    labels[:, 4] = 1
    probs = np.zeros((2, 7))
    probs[:, 4] = 0.9
    probs[0, 1] = 0.9  # disgust predicted, never true
    m, notes = classification_metrics(labels, probs, 0.5)
    assert m["per_class_f1"]["disgust"] == 0.0 and m["per_class_f1"]["neutral"] == 1.0
    assert m["macro_f1"] == pytest.approx(0.5)
    assert not any(isinstance(v, float) and math.isnan(v) for v in m["per_class_f1"].values())


def test_ccc_matches_a_hand_computation():
    true = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, 2.0, 2.5, 5.0])
    # means 2.5 and 2.75; population variances 1.25 and 7.25/4; covariance 5.5/4
    assert ccc(true, pred) == pytest.approx(2 * (5.5 / 4) / (1.25 + 7.25 / 4 + 0.25**2))
    assert ccc(true, pred) == pytest.approx(0.88)
    assert ccc(true, true) == pytest.approx(1.0)
    assert ccc(true, -true) == pytest.approx(-1.0 * 2 * 1.25 / (2.5 + 25))


def test_regression_metrics_match_scipy_and_scikit_learn():
    rng = np.random.default_rng(1)
    true = rng.uniform(1, 5, size=(50, 2))
    pred = true + rng.normal(0, 0.5, size=(50, 2))
    m, notes = regression_metrics(true, pred)
    assert notes == []
    for j, name in enumerate(("valence", "arousal")):
        assert m[f"{name}_pearson"] == pytest.approx(pearsonr(true[:, j], pred[:, j]).statistic)
        assert m[f"{name}_mae"] == pytest.approx(mean_absolute_error(true[:, j], pred[:, j]))
        assert m[f"{name}_rmse"] == pytest.approx(np.sqrt(((true[:, j] - pred[:, j]) ** 2).mean()))
        # Lin's CCC from Pearson's r and population deviations: 2 r sx sy / (sx^2 + sy^2 + (mx - my)^2)
        t, p = true[:, j], pred[:, j]
        r, sx, sy = pearsonr(t, p).statistic, t.std(), p.std()
        assert m[f"{name}_ccc"] == pytest.approx(2 * r * sx * sy / (sx**2 + sy**2 + (t.mean() - p.mean()) ** 2))
    assert m["mean_ccc"] == pytest.approx((m["valence_ccc"] + m["arousal_ccc"]) / 2)


def test_constant_predictions_give_defined_ccc_null_pearson_and_a_note():
    true = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
    pred = np.array([[3.0, 2.0], [3.0, 2.0], [3.0, 2.0]])
    m, notes = regression_metrics(true, pred)
    assert m["valence_ccc"] == 0.0  # covariance 0 over a non-zero denominator
    assert m["valence_pearson"] is None and m["arousal_pearson"] is None
    assert m["arousal_ccc"] is None and m["mean_ccc"] is None  # constant 2 predicted for constant 2
    assert m["arousal_mae"] == 0.0
    assert "valence Pearson r undefined: constant predictions" in notes
    assert "arousal Pearson r undefined: constant targets" in notes
    assert "arousal CCC undefined: targets and predictions are the same constant" in notes


def test_loss_is_per_sample_bce_plus_weighted_standardised_mse():
    torch.manual_seed(0)
    logits, va_z = torch.randn(3, 7), torch.randn(3, 2)
    labels = (torch.rand(3, 7) < 0.3).float()
    va = torch.tensor([[3.0, 2.0], [4.5, 1.0], [1.0, 5.0]])
    mean, std = torch.tensor([3.0, 2.5]), torch.tensor([1.0, 0.5])
    batch = {"labels": labels, "va": va}
    got = Objective(cls_weight=2.0, reg_weight=0.5).per_sample(
        {"emotion_logits": logits, "va_z": va_z}, batch, mean, std
    )
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)
    mse = ((va_z - (va - mean) / std) ** 2).mean(1)
    assert torch.allclose(got, 2.0 * bce + 0.5 * mse)
    assert torch.allclose(Objective().per_sample({"emotion_logits": logits}, batch, mean, std), bce)
    assert torch.allclose(Objective().per_sample({"va_z": va_z}, batch, mean, std), mse)


def test_the_original_emotion_loss_is_multilabel_soft_margin_on_the_softmax():
    torch.manual_seed(1)
    logits = torch.randn(5, 7) * 3
    labels = (torch.rand(5, 7) < 0.3).float()
    labels[0] = 1.0  # a row of all seven emotions, as the original's dictionary made of unknown labels
    got = Objective(emotion_output="softmax").per_sample({"emotion_logits": logits}, {"labels": labels}, 0, 1)
    p = torch.softmax(logits, dim=1)
    # torch's own criterion on the softmax, averaged over the batch as the original did ...
    assert torch.allclose(got.mean(), torch.nn.MultiLabelSoftMarginLoss()(p, labels))
    # ... and per utterance by hand: -mean_c [y log s(p) + (1 - y) log(1 - s(p))], s the logistic function
    s = 1 / (1 + torch.exp(-p))
    by_hand = -(labels * torch.log(s) + (1 - labels) * torch.log(1 - s)).mean(1)
    assert torch.allclose(got, by_hand)
    assert not torch.allclose(got, Objective().per_sample({"emotion_logits": logits}, {"labels": labels}, 0, 1))


def test_softmax_probabilities_sum_to_one_so_that_the_original_never_predicts_two_emotions():
    logits = torch.tensor([[5.0, 5.0, -9, -9, -9, -9, -9], [0.1, 0.0, 0, 0, 0, 0, 0]])
    p = emotion_probabilities(logits, "softmax").numpy()
    assert np.allclose(p.sum(1), 1.0) and np.allclose(p, F.softmax(logits, dim=1).numpy())
    assert ((p > 0.5).sum(1) <= 1).all()  # two equal leaders at 0.4999...: neither predicted
    sig = emotion_probabilities(logits, "sigmoid").numpy()
    assert np.allclose(sig, 1 / (1 + np.exp(-logits.numpy())))
    assert (sig[0] > 0.5).sum() == 2


def test_an_emotion_is_predicted_only_where_its_probability_exceeds_the_threshold():
    labels = np.array([[1, 0, 0, 0, 0, 0, 0]])
    at = np.array([[0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1]])  # exactly at the threshold: not predicted (original: >)
    m, _ = classification_metrics(labels, at, 0.5)
    assert m["subset_accuracy"] == 0.0 and m["hamming_accuracy"] == pytest.approx(6 / 7)
    m, _ = classification_metrics(labels, at + [[1e-6, 0, 0, 0, 0, 0, 0]], 0.5)
    assert m["subset_accuracy"] == 1.0


def test_the_original_va_loss_is_the_sum_of_two_mses_on_the_raw_scale():
    torch.manual_seed(2)
    va_pred = torch.rand(6, 2) * 4 + 1
    va = torch.rand(6, 2) * 4 + 1
    # Raw targets: the trainer sets the model's scaling to mean 0, deviation 1.
    got = Objective(va_loss="sum").per_sample({"va_z": va_pred}, {"va": va}, torch.zeros(2), torch.ones(2))
    mse = torch.nn.MSELoss()
    assert torch.allclose(got.mean(), mse(va_pred[:, 0], va[:, 0]) + mse(va_pred[:, 1], va[:, 1]))
    mean = Objective().per_sample({"va_z": va_pred}, {"va": va}, torch.zeros(2), torch.ones(2))
    assert torch.allclose(got, 2 * mean)


def test_uar_is_balanced_accuracy_on_single_label_data_and_wa_is_accuracy():
    rng = np.random.default_rng(3)
    true_class = rng.choice(7, size=300, p=[0.05, 0.05, 0.05, 0.2, 0.5, 0.1, 0.05])
    labels = np.eye(7, dtype=int)[true_class]
    probs = rng.random((300, 7)) + 0.8 * labels * (rng.random((300, 1)) < 0.6)
    m, _ = classification_metrics(labels, probs, 0.5)
    top1 = probs.argmax(axis=1)
    assert m["uar"] == pytest.approx(balanced_accuracy_score(true_class, top1))
    assert m["top1_accuracy"] == pytest.approx(accuracy_score(true_class, top1))  # the papers' WA


def test_uar_counts_a_multi_label_utterance_in_each_of_its_emotions():
    labels = np.zeros((4, 7), dtype=int)
    labels[0, [3, 4]] = 1  # happy + neutral, top-1 happy: a hit for happy, a miss for neutral
    labels[1, 4] = 1  # neutral, top-1 neutral: hit
    labels[2, 5] = 1  # sad, top-1 neutral: miss
    labels[3, 4] = 1  # neutral, top-1 sad: miss
    probs = np.full((4, 7), 0.1)
    probs[0, 3], probs[1, 4], probs[2, 4], probs[3, 5] = 0.9, 0.9, 0.9, 0.9
    m, _ = classification_metrics(labels, probs, 0.5)
    # happy 1/1, neutral 1/3 (rows 0, 1, 3), sad 0/1; emotions nobody carries are left out
    assert m["uar"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert m["top1_accuracy"] == pytest.approx(2 / 4)


def test_per_class_precision_and_recall_match_scikit_learn_and_thresholds_can_differ_per_emotion():
    rng = np.random.default_rng(4)
    labels = (rng.random((200, 7)) < 0.3).astype(int)
    probs = np.clip(labels * 0.3 + rng.random((200, 7)) * 0.7, 0, 1)
    thresholds = np.array([0.3, 0.4, 0.5, 0.6, 0.5, 0.45, 0.7])
    m, _ = classification_metrics(labels, probs, thresholds)
    pred = (probs > thresholds).astype(int)
    for i, e in enumerate(EMOTIONS):
        assert m["per_class_precision"][e] == pytest.approx(precision_score(labels[:, i], pred[:, i]))
        assert m["per_class_recall"][e] == pytest.approx(recall_score(labels[:, i], pred[:, i]))
    assert m["micro_f1"] == pytest.approx(f1_score(labels, pred, average="micro"))


def test_tuned_thresholds_give_each_emotion_its_best_f1_among_all_thresholds():
    rng = np.random.default_rng(5)
    labels = (rng.random((120, 7)) < [0.05, 0.1, 0.02, 0.3, 0.6, 0.1, 0.0]).astype(int)
    probs = np.round(np.clip(labels * 0.25 + rng.random((120, 7)) * 0.75, 0, 1), 2)  # ties among probabilities
    tuned = tune_thresholds(labels, probs)
    for c in range(7):
        if labels[:, c].sum() == 0:
            assert tuned[c] == 0.5  # nobody carries it: F1 is undefined everywhere, the default stays
            continue
        # every threshold that splits the probabilities differently, checked with scikit-learn
        candidates = np.unique(np.concatenate([probs[:, c], [0.0]])) - 1e-9
        best = max(f1_score(labels[:, c], probs[:, c] > t, zero_division=0) for t in candidates)
        assert f1_score(labels[:, c], probs[:, c] > tuned[c]) == pytest.approx(best)
        assert not np.any(np.isclose(probs[:, c], tuned[c]))  # strictly between two probabilities


def test_balanced_weights_make_positives_weigh_as_much_as_negatives():
    labels = torch.tensor([[1, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0]])
    w = balanced_weights(labels)
    assert w == pytest.approx((3.0, 1.0, 1.0, 3.0, 1 / 3, 1.0, 1.0))  # angry 3 neg / 1 pos; disgust none: 1
    logits = torch.randn(4, 7)
    got = Objective(pos_weight=w).per_sample({"emotion_logits": logits}, {"labels": labels.float()}, 0, 1)
    s = torch.sigmoid(logits)
    by_hand = -(torch.tensor(w) * labels * torch.log(s) + (1 - labels) * torch.log(1 - s)).mean(1)
    assert torch.allclose(got, by_hand, atol=1e-6)


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_the_loss_on_the_evaluators_shares_is_the_mean_of_the_losses_on_each_evaluators_choice(output):
    """--targets raters: the emotion loss against the share of the evaluators per emotion equals, utterance by
    utterance, the mean over the ten evaluators of the loss against each one's own (one-hot) choice."""
    torch.manual_seed(2)
    logits = torch.randn(4, 7) * 2
    choices = torch.randint(0, 7, (4, 10))  # each utterance's ten evaluators' emotions
    shares = torch.stack([torch.bincount(c, minlength=7) for c in choices]).float() / 10
    objective = Objective(emotion_output=output)
    labels = torch.zeros(4, 7)  # the total evaluation: not what is learnt when targets are given
    got = objective.per_sample({"emotion_logits": logits}, {"labels": labels, "targets": shares}, 0, 1)
    each = [
        objective.per_sample({"emotion_logits": logits}, {"labels": F.one_hot(choices[:, r], 7).float()}, 0, 1)
        for r in range(10)
    ]
    assert torch.allclose(got, torch.stack(each).mean(0), atol=1e-6)
    assert not torch.allclose(got, objective.per_sample({"emotion_logits": logits}, {"labels": labels}, 0, 1))
