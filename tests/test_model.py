"""Every cell's model: shapes, gradients for every trainable parameter, pooling, save/load round trip."""

import itertools

import pytest
import torch

from common.data import Collator, KemdyDataset, prepare_inputs
from common.encoders import (
    audio_padding,
    audio_spec,
    load_speech_encoder,
    load_text_encoder,
    masked_mean,
    pass_audio_mask,
)
from common.errors import UserError
from common.grid import FUSIONS, TASKS, Cell
from common.kemdy import read_corpus
from common.model import EmotionModel, ModelConfig

CELLS = [Cell(m, t) for m, t in itertools.product(("text", "speech"), TASKS)] + [
    Cell("multimodal", t, f) for t, f in itertools.product(TASKS, FUSIONS)
]


def build(tiny_models, cell, **choices):
    tok, text = load_text_encoder(str(tiny_models / "text")) if cell.uses_text else (None, None)
    fe, speech = load_speech_encoder(str(tiny_models / "speech")) if cell.uses_speech else (None, None)
    inputs = choices.get("speech_inputs", "extractor")
    mask = speech is not None and pass_audio_mask(fe, inputs)
    pad_to = audio_padding(choices.get("speech_pooling", "mean"), inputs, max_seq_len=5)
    config = ModelConfig(cell.modality, cell.task, cell.fusion, pass_audio_mask=mask, pad_to=pad_to, **choices)
    spec = audio_spec(fe, speech, config) if speech is not None else None
    torch.manual_seed(0)
    model = EmotionModel(config, text, speech)
    return model, tok, fe, spec


def a_batch(corpus20, tok, spec, indices=(0, 17, 3)):  # utterance 17 is a clip shorter than 0.25 s
    root, _ = corpus20
    utts = read_corpus("20", root).utterances
    assert utts[17].duration < 0.25
    ds = KemdyDataset(utts, list(indices), prepare_inputs(utts, tok, 32, 5 if spec else None), spec)
    return Collator(tok, 32, spec)([ds[i] for i in range(len(ds))])


def test_the_twelve_cells_are_named_like_the_scripts():
    assert sorted(c.name for c in CELLS) == sorted(
        [f"{m}_{t}" for m in ("text", "speech") for t in TASKS]
        + [f"multimodal_{t}_{f}" for t in TASKS for f in FUSIONS]
    )


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_every_trainable_parameter_of_every_cell_gets_a_gradient(tiny_models, corpus20, cell):
    model, tok, fe, spec = build(tiny_models, cell)
    batch = a_batch(corpus20, tok, spec)
    model.train()
    out = model(batch)
    assert (
        set(out)
        == {"classification": {"emotion_logits"}, "regression": {"va_z"}, "total": {"emotion_logits", "va_z"}}[
            cell.task
        ]
    )
    for key, width in (("emotion_logits", 7), ("va_z", 2)):
        if key in out:
            assert out[key].shape == (3, width)
    sum(v.sum() for v in out.values()).backward()
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_element_wise_add_projects_speech_into_the_text_width(tiny_models):
    model, *_ = build(tiny_models, Cell("multimodal", "classification", "element_wise_add"))
    assert model.fusion.speech_projection.in_features == model.speech_encoder.config.hidden_size
    assert model.emotion_head.in_features == model.text_encoder.config.hidden_size
    concat, *_ = build(tiny_models, Cell("multimodal", "classification", "concat"))
    width = concat.text_encoder.config.hidden_size + concat.speech_encoder.config.hidden_size
    assert width == 64 + 32 and concat.emotion_head.in_features == width


def test_text_pooling_choices(tiny_models, corpus20):
    cell = Cell("text", "classification")
    pooler, tok, _, _ = build(tiny_models, cell)
    batch = a_batch(corpus20, tok, None)
    out = pooler.text_encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    pooler.eval()
    assert torch.allclose(pooler.encode_text(batch), out.pooler_output)
    cls, *_ = build(tiny_models, cell, text_pooling="cls")
    cls.eval()
    assert cls.text_encoder.pooler is None  # unused, so removed
    assert torch.allclose(cls.encode_text(batch), out.last_hidden_state[:, 0], atol=1e-6)
    mean, *_ = build(tiny_models, cell, text_pooling="mean")
    mean.eval()
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
    assert torch.allclose(mean.encode_text(batch), expected, atol=1e-6)


def test_masked_mean_ignores_padding_and_survives_empty_rows():
    hidden = torch.arange(24, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    got = masked_mean(hidden, mask)
    assert torch.equal(got[0], hidden[0, :2].mean(0)) and torch.equal(got[1], torch.zeros(3))


def test_speech_mean_pooling_uses_only_the_clips_own_frames(tiny_models, corpus20):
    model, _, fe, spec = build(tiny_models, Cell("speech", "classification"))
    model.eval()
    batch = a_batch(corpus20, None, spec, indices=(0, 1))
    frames = model.speech_encoder._get_feat_extract_output_lengths(batch["audio_mask"].sum(1))
    out = model.speech_encoder(batch["audio"]).last_hidden_state
    expected = torch.stack([out[i, : frames[i]].mean(0) for i in range(2)])
    assert torch.allclose(model.encode_speech(batch), expected, atol=1e-6)


def test_cnn_last_is_the_last_frame_of_wav2vec2s_extract_features_and_freezes_the_rest(tiny_models, corpus20):
    model, _, fe, spec = build(tiny_models, Cell("speech", "regression"), speech_pooling="cnn_last")
    model.eval()
    batch = a_batch(corpus20, None, spec)
    assert batch["audio"].shape == (3, 80000)
    expected = model.speech_encoder(batch["audio"]).extract_features[:, -1]
    assert torch.allclose(model.encode_speech(batch), expected, atol=1e-6)
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad and n.startswith("speech")}
    assert trainable == {"feature_extractor", "feature_projection"}
    assert not model.speech_encoder.feature_projection.projection.weight.requires_grad


def test_clips_too_short_for_specaugment_are_padded_up_not_crashing(tiny_models, corpus20):
    model, _, fe, spec = build(tiny_models, Cell("speech", "classification"))
    config = model.speech_encoder.config
    assert int(model.speech_encoder._get_feat_extract_output_lengths(spec.min_samples)) > config.mask_time_length
    batch = a_batch(corpus20, None, spec, indices=(17,))  # a single 0.1-0.25 s clip
    model.train()
    assert model(batch)["emotion_logits"].shape == (1, 7)


def test_save_and_load_give_the_same_outputs(tiny_models, corpus20, tmp_path):
    cell = Cell("multimodal", "total", "element_wise_add")
    model, tok, fe, spec = build(tiny_models, cell, text_pooling="mean")
    model.va_mean.fill_(3.1)
    model.va_std.fill_(0.7)
    with torch.no_grad():
        model.emotion_head.bias.add_(0.5)
    model.save(tmp_path / "model", tok, fe)
    loaded, tok2, fe2 = EmotionModel.load(tmp_path / "model")
    model.eval()
    batch = a_batch(corpus20, tok, spec)
    for key, value in model(batch).items():
        assert torch.allclose(value, loaded(batch)[key], atol=1e-6)
    assert loaded.config == model.config and torch.equal(loaded.va_mean, model.va_mean)
    assert tok2("오늘 정말 행복해")["input_ids"] == tok("오늘 정말 행복해")["input_ids"]


def test_a_model_that_is_neither_local_nor_offline_says_so(tmp_path):
    with pytest.raises(
        UserError, match=r"--text_model nobody/no-such-model: not a local folder and not available offline"
    ):
        load_text_encoder("nobody/no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"--speech_model .*empty: cannot load from this folder"):
        load_speech_encoder(str(tmp_path / "empty"))


def test_static_padding_gives_the_outputs_of_dynamic_padding(tiny_models, corpus20):
    model, tok, _, spec = build(tiny_models, Cell("multimodal", "total", "concat"))
    model.eval()
    utts = read_corpus("20", corpus20[0]).utterances
    ds = KemdyDataset(utts, [0, 5, 9], prepare_inputs(utts, tok, 32, 5), spec)
    items = [ds[i] for i in range(3)]
    dynamic, static = Collator(tok, 32, spec)(items), Collator(tok, 32, spec, pad_to_max_length=True)(items)
    assert dynamic["input_ids"].shape[1] < static["input_ids"].shape[1] == 32
    with torch.no_grad():
        a, b = model(dynamic), model(static)
    for key in a:  # BERT masks the padding: only the float summation order differs
        assert torch.allclose(a[key], b[key], atol=1e-5), key
