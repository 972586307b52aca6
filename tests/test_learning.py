"""Learning is real: on the demo corpus, with the demo settings, text-only, speech-only and multimodal
models all beat the best constant predictors by clear margins.

The corpus plants the label in the text of 70 % of the utterances and in the voice of another,
independent 70 % (common/synthetic.py). Fold 1 of the demo KEMDy20 corpus (800 utterances, 160 in the
test fold): the best constant label set has micro-F1 0.39 and the best constant class top-1 0.37.
Observed (seeded, so fixed on a given machine): micro-F1 0.79 text, 0.64 speech, 0.77 both; top-1 0.80
text, 0.82 both; valence CCC 0.79, arousal CCC 0.75. Each margin below is at most half the observed
gain and at least 2.5 standard errors of an F1 or accuracy on 160 utterances (at most 0.04).

That each multimodal model uses both of its branches is tested in test_fusion.py.
"""

import itertools

import numpy as np
import pytest
from sklearn.metrics import f1_score

from common.cli import parse_args
from common.grid import Cell
from common.kemdy import read_corpus
from common.train import train


@pytest.fixture(scope="session")
def corpus(demo20):
    return demo20


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
    return train(cell, args)[0]["test"]


def constant_baselines(corpus) -> tuple[float, float]:
    """Best micro-F1 of any constant label set, and best top-1 accuracy of any constant class, on fold 1."""
    utts = read_corpus("20", corpus).utterances
    y = np.array([u.labels for u in utts[: int(len(utts) / 5)]])
    best_f1 = max(
        f1_score(y, np.tile(np.array(s), (len(y), 1)), average="micro", zero_division=0.0)
        for s in itertools.product((0, 1), repeat=7)
    )
    return best_f1, y.mean(axis=0).max()


@pytest.mark.parametrize("name", ["text", "speech", "both"])
def test_text_speech_and_multimodal_models_beat_the_best_constant_predictors(corpus, tiny_models, tmp_path, name):
    best_f1, best_top1 = constant_baselines(corpus)
    assert 0.3 < best_f1 < 0.45 and 0.3 < best_top1 < 0.45
    cell = {
        "text": Cell("text", "classification"),
        "speech": Cell("speech", "classification"),
        "both": Cell("multimodal", "total", "concat"),
    }[name]
    m = fit(cell, corpus, tiny_models, tmp_path)
    seen = {k: m.get(k) for k in ("micro_f1", "top1_accuracy", "valence_ccc", "arousal_ccc")}
    if name == "text":
        assert m["top1_accuracy"] > best_top1 + 0.15 and m["micro_f1"] > best_f1 + 0.1, seen
    if name == "speech":
        assert m["top1_accuracy"] > best_top1 + 0.1 and m["micro_f1"] > best_f1 + 0.1, seen
    if name == "both":
        assert m["micro_f1"] > best_f1 + 0.15 and m["top1_accuracy"] > best_top1 + 0.15, seen
        assert m["valence_ccc"] > 0.4 and m["arousal_ccc"] > 0.35, seen
