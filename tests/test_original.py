"""`--original` and the flags behind it: each restores one computation of the original code, checked
against an independent computation written here; and every modality trains with `--original` end to end."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import BertConfig, BertModel

from common.cli import parse_args
from common.data import Collator, KemdyDataset, prepare_inputs
from common.encoders import audio_padding, audio_spec, load_speech_encoder, load_text_encoder
from common.errors import UserError
from common.grid import EMOTIONS, Cell
from common.kemdy import read_corpus
from common.model import EmotionModel, ModelConfig
from common.predict import Predictor
from common.settings import ORIGINAL
from common.train import train

TEXT = Cell("text", "classification")
FOLDER = str(Path(__file__).parent)  # a --dataset_dir that exists: parsing the flags does not read it
SPEECH = Cell("speech", "regression")


def text_batch(tiny_models, corpus20, width=None, indices=(0, 5, 9)):
    tok, bert = load_text_encoder(str(tiny_models / "text"))
    utts = read_corpus("20", corpus20[0]).utterances
    ds = KemdyDataset(utts, list(indices), prepare_inputs(utts, tok, 32))
    collate = Collator(tok, width or 32, pad_to_max_length=width is not None)
    return tok, bert, collate([ds[i] for i in range(len(ds))])


def test_original_bert_inputs_attend_to_every_position_with_the_padding_mask_as_token_types(tiny_models, corpus20):
    tok, bert, batch = text_batch(tiny_models, corpus20, width=32)
    ids, pad = batch["input_ids"], batch["attention_mask"]
    assert ids.shape[1] == 32 and (pad == 0).any()  # padded to --max_text_len, padding present
    model = EmotionModel(ModelConfig("text", "classification", None, text_inputs="original"), bert).eval()
    got = model.encode_text(batch)
    # The original's call under its transformers 4.12: an all-zero attention mask added -10000 to every
    # score (a shift softmax ignores), so BERT attended to all positions; token types = padding mask.
    everything = bert(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=pad).pooler_output
    assert torch.allclose(got, everything, atol=1e-4)
    masked = bert(input_ids=ids, attention_mask=pad, token_type_ids=torch.zeros_like(ids)).pooler_output
    assert (got - masked).abs().max() > 100 * (got - everything).abs().max()
    # Attending to the padding, its output depends on how far the transcript is padded; masked, it does not.
    _, _, wider = text_batch(tiny_models, corpus20, width=48)
    assert not torch.allclose(model.encode_text(wider), got, atol=1e-4)
    correct = EmotionModel(ModelConfig("text", "classification", None), bert).eval()
    assert torch.allclose(correct.encode_text(wider), correct.encode_text(batch), atol=1e-5)


def test_original_bert_inputs_run_eager_attention_whose_gradients_are_transformers_4_12s(tiny_models, corpus20):
    _, bert, batch = text_batch(tiny_models, corpus20, width=32)
    ids, pad = batch["input_ids"], batch["attention_mask"]
    reference = BertModel.from_pretrained(tiny_models / "text", attn_implementation="eager")
    assert bert.config._attn_implementation != "eager"  # loaded as transformers 5 does: SDPA
    model = EmotionModel(ModelConfig("text", "classification", None, text_inputs="original"), bert)
    assert model.text_encoder.config._attn_implementation == "eager"
    model.encode_text(batch).square().sum().backward()
    # transformers 4.12's call, written out: the -10,000 bias on every score, token types = padding mask
    bias = torch.full((len(ids), 1, 1, ids.shape[1]), -10000.0)
    reference(input_ids=ids, attention_mask=bias, token_type_ids=pad).pooler_output.square().sum().backward()
    grads = dict(reference.named_parameters())
    for name, param in model.text_encoder.named_parameters():
        assert torch.allclose(param.grad, grads[name].grad, rtol=1e-5, atol=1e-7), name


def test_original_bert_inputs_need_a_model_with_two_token_types():
    bert = BertModel(
        BertConfig(
            vocab_size=50,
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=1,
            intermediate_size=8,
            type_vocab_size=1,
        )
    )
    with pytest.raises(UserError, match=r"--text_inputs original: .* two token types \(BERT\); this one has 1"):
        EmotionModel(ModelConfig("text", "classification", None, text_inputs="original"), bert)


def speech_batch(tiny_models, corpus20, config, indices):
    fe, w2v = load_speech_encoder(str(tiny_models / "speech"))
    utts = read_corpus("20", corpus20[0]).utterances
    spec = audio_spec(fe, w2v, config)
    ds = KemdyDataset(utts, list(indices), prepare_inputs(utts, None, 32, 5), spec)
    items = [ds[i] for i in range(len(ds))]
    return utts, w2v, spec, items, Collator(None, 32, spec)(items)


def test_original_audio_is_the_files_samples_unnormalised_padded_to_the_batch_without_a_mask(tiny_models, corpus20):
    config = ModelConfig("speech", "regression", None, speech_pooling="cnn_last", speech_inputs="original")
    utts, w2v, spec, items, batch = speech_batch(tiny_models, corpus20, config, (0, 17, 3))
    assert not spec.normalize and not spec.pass_mask and spec.pad_to == 0
    raw = []
    for i in (0, 17, 3):  # what torchaudio.load gave the original: 16-bit samples / 32768, first 80,000
        samples, rate = sf.read(str(utts[i].wav), dtype="int16")
        assert rate == 16000 and samples.ndim == 1
        raw.append(samples[:80000].astype(np.float32) / 32768)
    for item, x in zip(items, raw, strict=True):
        assert np.array_equal(item["audio"], x)
    longest = max(len(x) for x in raw)
    padded = np.zeros((3, longest), np.float32)
    for row, x in enumerate(raw):
        padded[row, : len(x)] = x
    assert torch.equal(batch["audio"], torch.from_numpy(padded))
    model = EmotionModel(config, None, w2v).eval()
    expected = w2v(torch.from_numpy(padded)).extract_features[:, -1]  # no attention mask
    assert torch.allclose(model.encode_speech(batch), expected, atol=1e-6)
    # So a clip's vector depends on the other clips of its batch.
    *_, alone = speech_batch(tiny_models, corpus20, config, (17,))
    assert not torch.allclose(model.encode_speech(alone)[0], model.encode_speech(batch)[1], atol=1e-3)


def test_default_audio_is_normalised_per_clip_and_cnn_last_padded_to_max_seq_len(tiny_models, corpus20):
    padding = audio_padding("cnn_last", "extractor", max_seq_len=5)
    config = ModelConfig("speech", "regression", None, speech_pooling="cnn_last", pad_to=padding)
    utts, _, spec, items, batch = speech_batch(tiny_models, corpus20, config, (0, 17))
    assert padding == 80000 and audio_padding("cnn_last", "original", 5) == audio_padding("mean", "extractor", 5) == 0
    samples = sf.read(str(utts[0].wav), dtype="int16")[0][:80000].astype(np.float64) / 32768
    assert np.allclose(items[0]["audio"], (samples - samples.mean()) / np.sqrt(samples.var() + 1e-7), atol=1e-5)
    assert batch["audio"].shape == (2, 80000)


@pytest.mark.parametrize("dropout_on", ["modalities", "fused"])
def test_dropout_placement_for_element_wise_add(tiny_models, dropout_on):
    _, bert = load_text_encoder(str(tiny_models / "text"))
    _, w2v = load_speech_encoder(str(tiny_models / "speech"))
    config = ModelConfig("multimodal", "classification", "element_wise_add", dropout=0.5, dropout_on=dropout_on)
    model = EmotionModel(config, bert, w2v).train()
    text, speech = torch.randn(4, 64), torch.randn(4, 32)
    torch.manual_seed(3)
    got = model({"text_vec": text, "speech_vec": speech})["emotion_logits"]
    torch.manual_seed(3)
    drop = torch.nn.functional.dropout
    if dropout_on == "modalities":  # the original: head(W·dropout(speech) + dropout(text))
        t, s = drop(text, 0.5), drop(speech, 0.5)
        fused = t + model.fusion.speech_projection(s)
    else:
        fused = drop(text + model.fusion.speech_projection(speech), 0.5)
    assert torch.allclose(got, model.emotion_head(fused), atol=1e-6)


def test_original_sets_every_restoring_flag_and_flags_given_still_win():
    argv = ["--dataset_dir", FOLDER, "--original"]
    args = parse_args(TEXT, argv).record()
    assert {k: args[k] for k in ORIGINAL} == ORIGINAL
    assert ORIGINAL == {
        "labels": "original",
        "duplicate_rows": "all",
        "text_inputs": "original",
        "pad_to_max_length": True,
        "speech_inputs": "original",
        "speech_pooling": "cnn_last",
        "emotion_output": "softmax",
        "va_targets": "raw",
        "va_loss": "sum",
        "dropout_on": "modalities",
        "valid_ratio": 0.0,
        "group_by_length": False,
        "optimizer": "original",
    }
    some = parse_args(TEXT, [*argv, "--labels", "checked", "--valid_ratio", "0.2"]).record()
    assert some["labels"] == "checked" and some["valid_ratio"] == 0.2 and some["va_loss"] == "sum"
    demo = parse_args(TEXT, ["--demo", "--original"]).record()
    assert demo["lr"] == 2e-3 and demo["group_by_length"] is False and demo["valid_ratio"] == 0.0
    defaults = parse_args(TEXT, ["--dataset_dir", FOLDER]).record()
    assert {k: defaults[k] for k in ORIGINAL} == {
        "labels": "checked",
        "duplicate_rows": "all",
        "text_inputs": "masked",
        "pad_to_max_length": False,
        "speech_inputs": "extractor",
        "speech_pooling": "mean",
        "emotion_output": "sigmoid",
        "va_targets": "standardized",
        "va_loss": "mean",
        "dropout_on": "modalities",
        "valid_ratio": 0.1,
        "group_by_length": False,
        "optimizer": "adamw",
    }
    # Attending to the padding makes its length part of the computation: the original's 256.
    assert parse_args(TEXT, ["--dataset_dir", FOLDER, "--text_inputs", "original"]).record()["pad_to_max_length"]


def test_the_original_scripts_flags_are_accepted_and_values_the_grid_cannot_honour_refused():
    args = parse_args(TEXT, ["--dataset_dir", FOLDER, "--ckpt", "3", "--num_labels", "7", "--regress", "1"]).settings
    assert (args.ckpt, args.num_labels, args.regress) == ("3", 7, 1)
    with pytest.raises(UserError, match=r"^--num_labels 5: KEMDy has 7 emotion classes; only 7 works$"):
        parse_args(TEXT, ["--dataset_dir", FOLDER, "--num_labels", "5"])
    with pytest.raises(UserError, match=r"^--regress 2: valence and arousal are one number each; only 1 works$"):
        parse_args(TEXT, ["--dataset_dir", FOLDER, "--regress", "2"])


@pytest.fixture(scope="module")
def original_runs(corpus20, tiny_models, tmp_path_factory):
    """Fold 1 of the small KEMDy20 corpus with --original and the demo's settings, 2 epochs, one cell per
    modality."""
    out = tmp_path_factory.mktemp("original")
    runs = {}
    for cell in (Cell("text", "total"), Cell("speech", "total"), Cell("multimodal", "total", "element_wise_add")):
        argv = ["--demo", "--original", "--dataset", "20", "--dataset_dir", str(corpus20[0]), "--epochs", "2"]
        argv += ["--max_seq_len", "1"]  # the original's computation on shorter clips: a faster test
        argv += ["--text_model", str(tiny_models / "text"), "--speech_model", str(tiny_models / "speech")]
        plan = parse_args(cell, [*argv, "--output_dir", str(out / cell.name)])
        plan = plan.but(demo=False)  # the corpus and encoders above, not the ones under demo/
        runs[cell.name] = (train(plan)[0], out / cell.name)
    return runs


@pytest.mark.parametrize("script", ["text_total", "speech_total", "multimodal_total_element_wise_add"])
def test_every_modality_trains_with_original_and_reports_the_last_epoch(original_runs, script):
    result, run_dir = original_runs[script]
    assert result["selection"] == "last_epoch" and result["chosen_epoch"] == 2 == len(result["epochs"])
    assert result["test"] == result["epochs"][-1]["test"] and "valid" not in result["epochs"][-1]
    config = json.loads((run_dir / "config.json").read_text())
    assert {k: config["args"][k] for k in ORIGINAL} == ORIGINAL
    assert config["data"]["split"]["valid"] == 0 and config["data"]["va_mean"] == [0.0, 0.0]
    assert config["data"]["va_std"] == [1.0, 1.0]
    saved = json.loads((run_dir / "model" / "model.json").read_text())
    assert saved["emotion_output"] == "softmax"
    with (run_dir / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    probs = np.array([[float(r[f"prob_{e}"]) for e in EMOTIONS] for r in rows])
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)  # a softmax over the seven
    assert ((probs > 0.5).sum(axis=1) <= 1).all()  # never two emotions


def test_a_run_with_original_predicts_new_utterances_as_it_evaluated_them(original_runs, corpus20):
    result, run_dir = original_runs["multimodal_total_element_wise_add"]
    utts = {u.segment_id: u for u in read_corpus("20", corpus20[0]).utterances}
    with (run_dir / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    predictor = Predictor(run_dir)
    wavs = [str(utts[r["segment_id"]].wav) for r in rows]
    texts = [utts[r["segment_id"]].text for r in rows]
    # In the run's batches: the original's speech vector depends on the other clips of a batch.
    got = predictor(wavs, texts, batch_size=16)
    for row, out in zip(rows, got, strict=True):
        assert out["probabilities"]["happy"] == pytest.approx(float(row["prob_happy"]), abs=2e-6)
        assert out["valence"] == pytest.approx(float(row["pred_valence"]), abs=2e-5)
        assert len(out["labels"]) <= 1


def test_kemdy19_disgust_is_trained_and_scored_as_all_seven_emotions_with_original(corpus19, tiny_models, tmp_path):
    root, truth = corpus19
    argv = ["--original", "--dataset", "19", "--dataset_dir", str(root), "--epochs", "1", "--num_fold", "1"]
    argv += ["--text_model", str(tiny_models / "text"), "--batch_size", "8", "--max_text_len", "32"]
    train(parse_args(TEXT, [*argv, "--output_dir", str(tmp_path / "run"), "--no-save_model"]))
    disgust = {r.segment_id for r in truth if "disgust" in r.labels}
    with (tmp_path / "run" / "predictions.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["segment_id"] in disgust]
    assert rows and all(all(r[f"true_{e}"] == "1" for e in EMOTIONS) for r in rows)


def test_the_whitespace_the_original_kept_around_a_transcript_changes_no_token(tiny_models):
    tok, _ = load_text_encoder(str(tiny_models / "text"))
    for text in ("기분이 정말 좋아요", "l/ 아 그래 b/ 진짜?"):
        assert tok(f"  {text} \r\n")["input_ids"] == tok(text)["input_ids"]
