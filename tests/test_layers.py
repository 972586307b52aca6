"""--layers weighted: a learnt softmax-weighted sum of every hidden layer, pooled as the cell says; cached
once per corpus and encoder when the encoders are frozen."""

import csv
import json

import numpy as np
import pytest
import torch

from common.cli import parse_args
from common.data import Collator, KemdyDataset, prepare_inputs
from common.encoders import audio_spec, load_speech_encoder, load_text_encoder
from common.errors import UserError
from common.grid import Cell
from common.kemdy import read_corpus
from common.model import EmotionModel, ModelConfig
from common.predict import Predictor
from common.report import main as report
from common.train import train

from helpers import tiny_command


def batch_of(tiny_models, corpus20, config, indices=(0, 5, 9, 17)):
    tok, bert = load_text_encoder(str(tiny_models / "text"))
    fe, w2v = load_speech_encoder(str(tiny_models / "speech"))
    utts = read_corpus("20", corpus20[0]).utterances
    spec = audio_spec(fe, w2v, config)
    ds = KemdyDataset(utts, list(indices), prepare_inputs(utts, tok, 32, 5), spec)
    torch.manual_seed(0)
    model = EmotionModel(config, bert, w2v).eval()
    return model, Collator(tok, 32, spec)([ds[i] for i in range(len(ds))])


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_weighted_layers_pool_the_weighted_sum_of_every_hidden_layer(tiny_models, corpus20, pooling):
    config = ModelConfig("multimodal", "classification", "concat", text_pooling=pooling, layers="weighted")
    model, batch = batch_of(tiny_models, corpus20, config)
    with torch.no_grad():
        model.text_layer_weights.copy_(torch.tensor([0.3, -1.0, 2.0]))  # embedding output and 2 layers
        model.speech_layer_weights.copy_(torch.tensor([1.0, 0.0, -0.5]))
        w_text, w_speech = torch.softmax(model.text_layer_weights, 0), torch.softmax(model.speech_layer_weights, 0)
        # by hand: weigh the encoder's hidden states, then pool the weighted sequence
        bert = model.text_encoder
        states = bert(batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        mixed = sum(w * h for w, h in zip(w_text, states.hidden_states, strict=True))
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = {
            "mean": (mixed * mask).sum(1) / mask.sum(1),
            "cls": mixed[:, 0],
            "pooler": bert.pooler(mixed) if pooling == "pooler" else None,
        }[pooling]
        assert torch.allclose(model.encode_text(batch), expected, atol=1e-5)
        if pooling == "pooler":  # what a cache holds: each layer's [CLS] through the pooler's dense layer
            dense = torch.stack([bert.pooler.dense(h[:, 0]) for h in states.hidden_states], dim=1)
            assert torch.allclose(model.text_layers(batch), dense, atol=1e-6)
        w2v = model.speech_encoder
        out = w2v(batch["audio"], output_hidden_states=True)
        frames = w2v._get_feat_extract_output_lengths(batch["audio_mask"].sum(1))
        mixed = sum(w * h for w, h in zip(w_speech, out.hidden_states, strict=True))
        expected = torch.stack([mixed[i, : frames[i]].mean(0) for i in range(len(frames))])
        assert torch.allclose(model.encode_speech(batch), expected, atol=1e-5)
        # the cached form: every layer's summary, weighed and pooled by the model, gives the same outputs
        cached = dict(batch, text_vec=model.text_layers(batch), speech_vec=model.speech_layers(batch))
        for key in ("input_ids", "attention_mask", "audio", "audio_mask"):
            cached.pop(key)
        assert torch.allclose(model(cached)["emotion_logits"], model(batch)["emotion_logits"], atol=1e-5)


def test_the_layer_weights_start_equal_and_cnn_last_has_no_layers_to_weigh(tiny_models):
    _, bert = load_text_encoder(str(tiny_models / "text"))
    _, w2v = load_speech_encoder(str(tiny_models / "speech"))
    model = EmotionModel(ModelConfig("multimodal", "regression", "concat", layers="weighted"), bert, w2v)
    weights = model.layer_weights()
    assert weights["text"] == pytest.approx([1 / 3] * 3) and weights["speech"] == pytest.approx([1 / 3] * 3)
    config = ModelConfig("speech", "regression", None, speech_pooling="cnn_last", layers="weighted")
    with pytest.raises(UserError, match="--layers weighted: weighs the transformer's layers; cnn_last reads none"):
        EmotionModel(config, None, w2v)


def test_weighted_layers_under_a_pooler_need_its_dense_layer_apart(tiny_models):
    _, bert = load_text_encoder(str(tiny_models / "text"))
    bert.pooler = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh())  # no .dense / .activation
    config = ModelConfig("text", "classification", None, layers="weighted")
    with pytest.raises(UserError, match="--layers weighted --text_pooling pooler: .* this model's is Sequential"):
        EmotionModel(config, bert)
    EmotionModel(ModelConfig("text", "classification", None), bert)  # the last layer reads the pooler whole


def run(cell, corpus, tiny_models, out, *flags):
    argv = tiny_command(cell.name, corpus, tiny_models, out, *flags, "--lr", "1e-2", epochs=2)[2:]
    (result,) = train(parse_args(cell, argv))
    return result


def test_frozen_weighted_layers_train_from_one_cached_extraction_and_report_their_weights(
    corpus20, tiny_models, tmp_path
):
    cache = tmp_path / "cache"
    flags = ["--freeze", "both", "--layers", "weighted", "--cache_dir", str(cache)]
    concat = run(Cell("multimodal", "total", "concat"), corpus20[0], tiny_models, tmp_path / "a", *flags)
    weights = concat["layer_weights"]
    assert set(weights) == {"text", "speech"} and all(len(w) == 3 for w in weights.values())
    assert all(sum(w) == pytest.approx(1.0) for w in weights.values())
    assert weights["text"] != pytest.approx([1 / 3] * 3, abs=1e-4)  # they learnt
    stored = sorted(p.name.split("-")[0] for p in cache.iterdir() if p.is_dir())
    assert stored == ["audio", "speech_vectors", "text_vectors", "tokens"]
    vectors = np.load(next(cache.glob("text_vectors-*")) / "vectors.npy", mmap_mode="r")
    assert vectors.shape == (120, 3, 64) and vectors.dtype == np.float32
    # another cell and script reads the same extraction: nothing is computed again
    add = run(
        Cell("multimodal", "classification", "element_wise_add"), corpus20[0], tiny_models, tmp_path / "b", *flags
    )
    assert sorted(p.name.split("-")[0] for p in cache.iterdir() if p.is_dir()) == stored and "layer_weights" in add
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["args"]["layers"] == "weighted"
    # the saved model weighs the encoders' layers itself: it predicts the test fold as the run scored it
    utts = {u.segment_id: u for u in read_corpus("20", corpus20[0]).utterances}
    with (tmp_path / "a" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    got = Predictor(tmp_path / "a")(
        [str(utts[r["segment_id"]].wav) for r in rows], [utts[r["segment_id"]].text for r in rows], batch_size=1
    )
    for row, out in zip(rows, got, strict=True):
        assert out["probabilities"]["fear"] == pytest.approx(float(row["prob_fear"]), abs=1e-5)
        assert out["arousal"] == pytest.approx(float(row["pred_arousal"]), abs=1e-4)
    report([str(tmp_path), "--bootstrap", "100"])  # and the report plots them
    assert (tmp_path / "report" / "figures" / "multimodal_total_concat_layer_weights.png").stat().st_size > 10_000


def test_weighted_layers_also_train_with_the_encoders(corpus20, tiny_models, tmp_path):
    result = run(Cell("text", "regression"), corpus20[0], tiny_models, tmp_path / "run", "--layers", "weighted")
    assert result["layer_weights"]["text"] != pytest.approx([1 / 3] * 3, abs=1e-4)
    assert np.isfinite(result["test"]["mean_ccc"])


def test_all_twelve_scripts_train_from_one_extraction(corpus20, tiny_models, tmp_path, capsys):
    from common.grid import SCRIPTS, cell_of

    flags = ["--freeze", "both", "--layers", "weighted", "--cache_dir", str(tmp_path / "cache"), "--num_fold", "3"]
    first, *others = sorted(SCRIPTS, key=lambda s: s != "multimodal_total_concat")
    run(cell_of(first), corpus20[0], tiny_models, tmp_path / first, *flags)
    assert capsys.readouterr().out.count(" vectors ") == 2  # the text and the speech encoder's layers, once
    for script in others:
        cell = cell_of(script)
        result = run(cell, corpus20[0], tiny_models, tmp_path / script, *flags)
        printed = capsys.readouterr().out
        used = {m for m in ("text", "speech") if getattr(cell, f"uses_{m}")}
        assert " computed in " not in printed and printed.count(": reused (120 x 3 x ") == len(used), printed
        assert set(result["layer_weights"]) == used
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir() if p.is_dir()) == [
        "audio",
        "speech_vectors",
        "text_vectors",
        "tokens",
    ]


def test_frozen_and_weighted_grids_default_to_folders_of_their_own():
    from pathlib import Path

    from common.train import _default_run_dir

    cell = Cell("multimodal", "total", "concat")
    given = {
        (): "runs/multimodal_total_concat/KEMDy20/fold2",
        ("--freeze", "both"): "runs/multimodal_total_concat/KEMDy20_freeze-both/fold2",
        (
            "--freeze",
            "both",
            "--layers",
            "weighted",
        ): "runs/multimodal_total_concat/KEMDy20_freeze-both_layers-weighted/fold2",
        (
            "--layers",
            "weighted",
            "--split",
            "session",
        ): "runs/multimodal_total_concat/KEMDy20_session_layers-weighted/fold2",
        ("--original", "--freeze", "text"): "runs/multimodal_total_concat/KEMDy20_original_freeze-text/fold2",
    }
    for flags, expected in given.items():
        args = parse_args(cell, ["--dataset", "20", "--dataset_dir", ".", "--num_fold", "2", *flags]).settings
        assert _default_run_dir(cell, args, 2) == Path(expected)


def test_the_benchmarks_layer_probes_count_the_steps_and_batches_the_cell_ran(
    corpus20, tiny_models, tmp_path, monkeypatch
):
    """The benchmark's extraction time, the steps and evaluation batches it hands to the compute floor, and
    the floor itself, against counts taken from the optimizer and the model while they run."""
    from tools.bench import compute_floor, layers_probe

    steps, batches = [], []
    step, forward = torch.optim.AdamW.step, EmotionModel.forward
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: steps.append(1) or step(self, *a, **k))
    monkeypatch.setattr(
        EmotionModel, "forward", lambda self, b: batches.append(torch.is_grad_enabled()) or forward(self, b)
    )
    corpus, models, cache = str(corpus20[0]), str(tiny_models), str(tmp_path / "cache")
    cold = layers_probe(corpus, models, cache, str(tmp_path / "a"), "multimodal_total_concat")
    steps.clear()
    batches.clear()
    script = "multimodal_classification_element_wise_add"
    warm = layers_probe(corpus, models, cache, str(tmp_path / "b"), script)
    assert cold["extraction_s"] > 0 and warm["extraction_s"] == 0  # the second cell reads the first's cache
    assert warm["steps"] == len(steps) > 0
    assert warm["eval_batches"] == batches.count(False) > 0
    assert 0 < warm["ready_rss_bytes"] <= warm["peak_rss_bytes"]
    steps.clear()
    floor = compute_floor(corpus, models, script, str(warm["steps"]), str(warm["eval_batches"]))
    assert len(steps) == warm["steps"] and floor["seconds"] > 0
