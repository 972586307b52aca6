"""Learning is real: on the demo-size synthetic corpus, with the demo settings, the models beat the best
constant predictors, and the two modalities together beat each alone.

The corpus plants the label in the text of 70 % of the utterances and in the voice of another,
independent 70 % (common/synthetic.py), so the reachable top-1 accuracy is about 0.75 from either
modality and 0.9 from both, against about 0.32 for the best constant. Observed on fold 1 (seeded, so
fixed on a given machine): top-1 0.58 text, 0.60 speech, 0.72 both; micro-F1 0.57, 0.61, 0.71 against
0.35 for the best constant label set; valence CCC 0.78. Each margin below is at most half the observed
gain and at least twice the standard error of an accuracy on the 100-utterance test fold (0.05).
"""

import itertools

import numpy as np
import pytest
from sklearn.metrics import f1_score

from common.cli import parse_args
from common.kemdy import read_corpus
from common.model import Cell
from common.synthetic import generate
from common.train import train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_size")
    generate("20", root, sessions=5, utterances_per_session=100, seed=0)
    return root


def fit(cell, corpus, tiny_models, tmp_path):
    argv = [
        "--demo",
        "--dataset",
        "20",
        "--dataset_dir",
        str(corpus),
        "--text_model",
        str(tiny_models / "text"),
        "--speech_model",
        str(tiny_models / "speech"),
        "--output_dir",
        str(tmp_path / cell.name),
        "--no-save_model",
    ]
    args = parse_args(cell, argv)
    args.demo = False  # the corpus and encoders above, not the ones under demo/
    return train(cell, args)["test"]


def constant_baselines(corpus) -> tuple[float, float]:
    """Best micro-F1 of any constant label set, and best top-1 accuracy of any constant class, on fold 1."""
    utts = read_corpus("20", corpus).utterances
    y = np.array([u.labels for u in utts[: int(len(utts) / 5)]])
    best_f1 = max(
        f1_score(y, np.tile(np.array(s), (len(y), 1)), average="micro", zero_division=0.0)
        for s in itertools.product((0, 1), repeat=7)
    )
    return best_f1, y.mean(axis=0).max()


def test_text_speech_and_both_beat_the_best_constant_predictors(corpus, tiny_models, tmp_path):
    best_f1, best_top1 = constant_baselines(corpus)
    assert 0.25 < best_f1 < 0.4 and 0.25 < best_top1 < 0.4
    text = fit(Cell("text", "classification"), corpus, tiny_models, tmp_path)
    speech = fit(Cell("speech", "classification"), corpus, tiny_models, tmp_path)
    both = fit(Cell("multimodal", "total", "concat"), corpus, tiny_models, tmp_path)
    seen = {
        name: {k: m.get(k) for k in ("micro_f1", "top1_accuracy", "valence_ccc", "arousal_ccc")}
        for name, m in (("text", text), ("speech", speech), ("both", both))
    }
    assert text["top1_accuracy"] > best_top1 + 0.1, seen
    assert speech["top1_accuracy"] > best_top1 + 0.1, seen
    assert text["micro_f1"] > best_f1 + 0.1 and speech["micro_f1"] > best_f1 + 0.1, seen
    assert both["micro_f1"] > best_f1 + 0.15, seen
    assert both["top1_accuracy"] > max(text["top1_accuracy"], speech["top1_accuracy"]) + 0.05, seen
    assert both["valence_ccc"] > 0.3 and both["arousal_ccc"] > 0.3, seen
