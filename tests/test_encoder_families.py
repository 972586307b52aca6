"""Text and speech encoders of the families Korean emotion work uses, as tiny random models built offline: each
gets the pooling that fits it, its vectors do not depend on the batch, and it trains, freezes and predicts
with the default flags."""

import csv
import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from common.cli import parse_args
from common.data import Collator, TokenIds
from common.encoders import (
    PADDING_EXACT,
    audio_spec,
    auto_text_pooling,
    load_speech_encoder,
    load_text_encoder,
    padding_effect,
    pass_audio_mask,
)
from common.grid import EMOTIONS, Cell
from common.kemdy import read_corpus
from common.model import EmotionModel, ModelConfig
from common.synthetic import SPEECH_FAMILIES, TEXT_FAMILIES, write_tiny_speech_family, write_tiny_text_family
from common.train import train

from helpers import tiny_command

POOLING = {  # what --text_pooling auto gives each family
    "bert": "pooler",
    "roberta": "pooler",
    "xlm-roberta": "pooler",
    "electra": "cls",
    "deberta-v2": "cls",
    "distilbert": "cls",
    "modernbert": "cls",
    "qwen2": "last",
}
TEXTS = ["기분이 정말 좋아요 오늘은", "아", "왜 그렇게 화가 났어요 너무 슬퍼"]


@pytest.fixture(scope="session")
def text_families(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("text_families")
    return {family: write_tiny_text_family(root / family, family, tiny_models) for family in TEXT_FAMILIES}


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_auto_pooling_fits_the_family_and_a_vector_does_not_depend_on_its_batch(text_families, family):
    folder = str(text_families[family])
    pooling, _ = auto_text_pooling(folder)
    assert pooling == POOLING[family]
    vectors = {}
    for layers in ("last", "weighted"):
        tok, encoder = load_text_encoder(folder)
        config = ModelConfig("text", "classification", None, text_pooling=pooling, layers=layers)
        model, collate = EmotionModel(config, encoder).eval(), Collator(tok, 32)
        ids = TokenIds(tok, TEXTS, 32)
        items = [{"index": i, "input_ids": ids[i]} for i in range(len(TEXTS))]
        with torch.no_grad():
            together = model.encode_text(collate(items))
            alone = torch.cat([model.encode_text(collate([item])) for item in items])
        assert (together - alone).abs().max() < 1e-5
        vectors[layers] = together
    if pooling == "last":  # a decoder-only model's tokenizer pads on the left; its last token is found anyway
        assert tok.padding_side == "left"
        with torch.no_grad():
            by_hand = encoder(input_ids=torch.from_numpy(ids[2][None]).long()).last_hidden_state[0, -1]
        assert torch.allclose(vectors["last"][2], by_hand, atol=1e-6)


def trains_freezes_and_predicts(text: Path, speech: Path, corpus: Path, out: Path, seconds: str = "1") -> dict:
    """A multimodal cell with the default flags, fine-tuned and then frozen with weighted layers; the fine-tuned
    model predicts its first test utterances, in one batch, as the run scored them. The clips are read up to
    `seconds`: the whole clips ("5") pad the run's batches otherwise than the one batch predicted. Returns
    config.json's args."""
    from common.predict import Predictor

    models = out / "models"
    models.mkdir(parents=True)
    (models / "text").symlink_to(text)
    (models / "speech").symlink_to(speech)
    cell = Cell("multimodal", "classification", "concat")
    for name, flags in (("tuned", []), ("frozen", ["--freeze", "both", "--layers", "weighted"])):
        argv = tiny_command(cell.name, corpus, models, out / name, *flags, "--max_seq_len", seconds, epochs=1)[2:]
        (result,) = train(parse_args(cell, argv))
        assert result["test"]["n"] == 24
    with (out / "tuned" / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))[:6]
    by_id = {u.segment_id: u for u in read_corpus("20", corpus).utterances}
    utterances = [by_id[row["segment_id"]] for row in rows]
    answers = Predictor(out / "tuned")([str(u.wav) for u in utterances], [u.text for u in utterances], batch_size=6)
    for row, answer in zip(rows, answers, strict=True):
        assert max(abs(answer["probabilities"][e] - float(row[f"prob_{e}"])) for e in EMOTIONS) < 1e-5
    exports_or_says_why_not(out / "tuned")
    return json.loads((out / "tuned" / "config.json").read_text())["args"]


def exports_or_says_why_not(run: Path) -> None:
    """The run's ONNX graph answers its test utterances as the model does (the export checks every one, and
    refuses beyond its tolerance), and as predictions.csv lists them; a Whisper run is refused with its reason."""
    from common import export
    from common.errors import UserError
    from common.predict import Predictor

    model = json.loads((run / "model" / "model.json").read_text())
    speech = Predictor(run).model.speech_encoder
    if speech is not None and type(speech).__name__ == "WhisperEncoder":
        with pytest.raises(UserError, match="Whisper encoder reads log-mel features"):
            export.export(run)
        assert not (run / export.FOLDER).exists()
        return
    found = export.export(run, batch_size=5)
    assert found["utterances"] == 24 and found["max_difference"] < export.TOLERANCE
    meta = export.OnnxModel(run / export.FOLDER / export.FILE).meta
    assert meta["one_length_per_run"] == (model["isolate_audio"] and not model["clip_norm"])


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_each_text_family_trains_fine_tuned_and_frozen_and_predicts_with_the_default_flags(
    text_families, tiny_models, corpus20, tmp_path, family
):
    args = trains_freezes_and_predicts(text_families[family], tiny_models / "speech", corpus20[0], tmp_path)
    assert args["text_pooling"] == POOLING[family]


@pytest.fixture(scope="session")
def speech_families(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech_families")
    return {family: write_tiny_speech_family(root / family, family) for family in SPEECH_FAMILIES}


# What the probe finds: padding in a batch changes a clip's vector, mask or not, except for XLS-R's layer norms
# (Whisper's clips are all padded to its window); per-clip group norms and the mask make it exact for the
# group-norm models, not where the positional convolutions or the conformer's depthwise ones see the padding.
PADDING_CHANGES = {family: family not in ("xls-r", "whisper") for family in SPEECH_FAMILIES}
CLIP_NORM_EXACT = {family: family in ("wav2vec2", "hubert", "wavlm") for family in SPEECH_FAMILIES}


@pytest.mark.parametrize("family", SPEECH_FAMILIES)
def test_a_speech_vector_is_the_same_whatever_its_batch(speech_families, corpus20, family):
    from common.data import Collator, KemdyDataset, prepare_inputs

    extractor, encoder = load_speech_encoder(str(speech_families[family]))
    effect = padding_effect(encoder, extractor)
    assert (effect > PADDING_EXACT) == PADDING_CHANGES[family], effect
    clip_norm = padding_effect(encoder, extractor, clip_norm=True) <= PADDING_EXACT
    assert clip_norm == (CLIP_NORM_EXACT[family] or not PADDING_CHANGES[family])
    utterances = read_corpus("20", corpus20[0]).utterances
    durations = [u.duration for u in utterances]
    picks = [durations.index(min(durations)), durations.index(max(durations)), 0, 1, 2, 3]  # 0.1 s to 6 s
    isolation = [{"isolate_audio": effect > PADDING_EXACT}]  # the one the runs use first
    if effect > PADDING_EXACT and clip_norm:  # ... and each equal-length group alone, which they would without
        isolation = [{"isolate_audio": True, "clip_norm": True}, {"isolate_audio": True}]
    for layers, isolate in itertools.product(("last", "weighted"), isolation):
        mask = pass_audio_mask(extractor)
        config = ModelConfig("speech", "classification", None, pass_audio_mask=mask, layers=layers)
        model = EmotionModel(replace(config, **isolate), None, encoder).eval()
        spec = audio_spec(extractor, encoder, model.config)
        dataset = KemdyDataset(utterances, picks, prepare_inputs(utterances, max_seconds=5.0), spec)
        collate = Collator(audio_spec=spec)
        items = [dataset[i] for i in range(len(picks))]
        with torch.no_grad():
            together = model.encode_speech(collate(items))
            alone = torch.cat([model.encode_speech(collate([item])) for item in items])
        assert (together - alone).abs().max() < 1e-5


@pytest.mark.parametrize("family", SPEECH_FAMILIES)
def test_each_speech_family_trains_fine_tuned_and_frozen_and_predicts_with_the_default_flags(
    speech_families, tiny_models, corpus20, tmp_path, family
):
    trains_freezes_and_predicts(tiny_models / "text", speech_families[family], corpus20[0], tmp_path, seconds="5")
    model = json.loads((tmp_path / "tuned" / "model" / "model.json").read_text())
    assert (model["isolate_audio"], model["clip_norm"]) == (
        PADDING_CHANGES[family],
        PADDING_CHANGES[family] and CLIP_NORM_EXACT[family],
    )


def test_a_whisper_encoder_is_loaded_alone_and_pools_the_frames_of_the_audio(speech_families, corpus20):
    from common.data import Collator, KemdyDataset, prepare_inputs
    from common.encoders import whisper_frames

    extractor, encoder = load_speech_encoder(str(speech_families["whisper"]))
    assert type(encoder).__name__ == "WhisperEncoder" and not any("decoder" in n for n, _ in encoder.named_parameters())
    table = encoder.embed_positions.weight.detach().clone()
    utterances = read_corpus("20", corpus20[0]).utterances
    picks = [i for i, u in enumerate(utterances) if 0.5 < u.duration < 4][:3]
    vectors = {}
    for window in ("30s", "clip"):
        frames = whisper_frames(encoder, window, max_seq_len=5.0)
        config = ModelConfig("speech", "classification", None, audio_frames=frames)
        model = EmotionModel(config, None, encoder).eval()
        spec = audio_spec(extractor, encoder, config)
        assert spec.pad_to == frames * 320 and torch.equal(model.speech_encoder.embed_positions.weight, table[:frames])
        dataset = KemdyDataset(utterances, picks, prepare_inputs(utterances, max_seconds=5.0), spec)
        batch = Collator(audio_spec=spec)([dataset[i] for i in range(len(picks))])
        with torch.no_grad():
            vectors[window] = model.encode_speech(batch)
            states = encoder(batch["audio"]).last_hidden_state
        for row, i in enumerate(picks):  # the mean of the 20-ms frames that hold the clip's audio, by hand
            n = -(-round(utterances[i].duration * 16000) // 320)
            assert torch.allclose(vectors[window][row], states[row, :n].mean(dim=0), atol=1e-6)
    assert (frames, encoder.config.max_source_positions) == (250, 250)  # the table cut to 5 s, 1500 before
    # the window changes what the audio frames attend to (silence up to 30 s, or up to 5 s): close, not equal
    assert 0 < (vectors["30s"] - vectors["clip"]).abs().max() < 1


def test_a_grid_with_other_encoders_gets_default_folders_of_its_own():
    from common.grid import encoder_tags
    from common.train import _default_run_dir

    speech = Cell("speech", "classification")
    argv = ["--dataset", "20", "--dataset_dir", ".", "--num_fold", "1", "--freeze", "both", "--layers", "weighted"]
    argv += ["--speech_model", "microsoft/wavlm-base-plus", "--text_model", "/models/klue roberta/"]
    args = parse_args(speech, argv).settings
    tags = encoder_tags(speech, {"text": args.text_model, "speech": args.speech_model})
    assert tags == ["wavlm-base-plus"]  # a speech cell is not named by its unused text model
    folder = _default_run_dir(speech, args, 1, tags)
    assert folder.as_posix() == "runs/speech_classification/KEMDy20_freeze-both_layers-weighted_wavlm-base-plus/fold1"
    both = Cell("multimodal", "total", "concat")
    assert encoder_tags(both, {"text": args.text_model, "speech": args.speech_model}) == [
        "klue-roberta",
        "wavlm-base-plus",
    ]
    defaults = parse_args(both, ["--dataset", "20", "--dataset_dir", "."]).settings
    assert encoder_tags(both, {"text": defaults.text_model, "speech": defaults.speech_model}) == []
