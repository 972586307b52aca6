"""Every fusion of the registry keeps each guarantee the original two have: it trains every parameter it has (so
several processes work), predicts alike in any batch and as its run scored, with the default encoders and another
family, in every task, fine-tuned and frozen; resumes exactly; runs in bf16; and a model saved before fusions were
modules of their own still loads."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from common.cli import parse_script
from common.data import Collator, KemdyDataset, prepare_inputs
from common.encoders import Encoders, audio_spec
from common.errors import UserError
from common.grid import EMOTIONS, FUSIONS
from common.kemdy import read_corpus
from common.model import EmotionModel, build_model
from common.predict import Predictor
from common.synthetic import write_tiny_speech_family, write_tiny_text_family
from common.train import train

from helpers import ROOT, interrupted_after_epoch_1, launch_two_processes, tiny_command

NEW = [name for name in FUSIONS if name not in ("concat", "element_wise_add")]
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


@pytest.fixture(scope="module")
def families(tiny_models, tmp_path_factory):
    """Another text and speech family than the tiny BERT and wav2vec2: ELECTRA and WavLM (whose attention mask
    makes padding exact, where wav2vec2-base's group norm needs its clips run apart)."""
    root = tmp_path_factory.mktemp("families")
    text = write_tiny_text_family(root / "electra", "electra", tiny_models)
    return {"text": text, "speech": write_tiny_speech_family(root / "wavlm", "wavlm")}


@pytest.mark.parametrize(
    "fusion, layers, freeze",
    [(f, layers, freeze) for f in FUSIONS for layers in ("last", "weighted") for freeze in ("none", "both")],
)
def test_every_fusion_trains_every_parameter_it_has(corpus20, tiny_models, fusion, layers, freeze):
    """A parameter without a gradient stops training in several processes (DDP): after one backward pass every
    trainable parameter has one, fine-tuned or frozen, with the last layer or every layer's weighted mix."""
    argv = tiny_command("multimodal_total", corpus20[0], tiny_models, "unused", "--fusion", fusion)[2:]
    plan = parse_script("multimodal_total", [*argv, "--layers", layers, "--freeze", freeze])
    cell, args = plan.cell, plan.settings
    encoders = Encoders(cell, args)
    model = build_model(cell, args, encoders)
    model.freeze(args.freeze)
    utts = read_corpus("20", corpus20[0]).utterances[:6]
    spec = audio_spec(encoders.extractor, model.speech_encoder, model.config)
    inputs = prepare_inputs(utts, encoders.tokenizer, 32, 1.0)
    batch = Collator(encoders.tokenizer, 32, spec)([KemdyDataset(utts, range(6), inputs, spec)[i] for i in range(6)])
    out = model.train()(batch)
    (out["emotion_logits"].sum() + out["va_z"].sum()).backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == [] and any(p.requires_grad for p in model.fusion.parameters()) == (fusion != "concat")


# (fusion, task, flags): every new fusion in every task, fine-tuned and with both encoders frozen, on both corpora's
# layouts ("19": the KEMDy19 fixture), with the default encoders and with another family ("family"), on two seconds
# of each clip (clips of unequal length: padding in most batches). The original two are held to the same in
# test_scripts.py and test_encoder_families.py.
RUNS = [
    ("gated", "classification", []),
    ("gated", "classification", ["--freeze", "both", "19"]),
    ("gated", "regression", ["--layers", "weighted"]),
    ("gated", "regression", ["--freeze", "both", "family"]),
    ("gated", "total", ["family", "19"]),
    ("gated", "total", ["--freeze", "both", "--layers", "weighted"]),
    ("low_rank_tensor", "classification", ["family"]),
    ("low_rank_tensor", "classification", ["--freeze", "both", "--fusion_rank", "2"]),
    ("low_rank_tensor", "regression", ["--freeze", "speech", "19"]),
    ("low_rank_tensor", "regression", ["--freeze", "both", "--layers", "weighted", "family"]),
    ("low_rank_tensor", "total", ["--layers", "weighted"]),
    ("low_rank_tensor", "total", ["--freeze", "both", "19"]),
    ("cross_attention", "classification", ["--layers", "weighted"]),
    ("cross_attention", "classification", ["--freeze", "both", "family"]),
    ("cross_attention", "regression", ["family", "19"]),
    ("cross_attention", "regression", ["--freeze", "both", "--layers", "weighted"]),
    ("cross_attention", "total", ["family", "--fusion_heads", "2", "--fusion_layers", "2"]),
    ("cross_attention", "total", ["--freeze", "both", "19"]),
]


def test_the_runs_below_hold_every_new_fusion_in_every_task_fine_tuned_and_frozen_on_both_layouts():
    frozen = lambda flags: "--freeze" in flags and flags[flags.index("--freeze") + 1] == "both"  # noqa: E731
    assert {(f, t, frozen(x)) for f, t, x in RUNS} == {
        (f, t, z) for f in NEW for t in ("classification", "regression", "total") for z in (False, True)
    }
    for fusion in NEW:
        assert {("19" in x, "family" in x) for f, _, x in RUNS if f == fusion} >= {(True, False), (False, True)}


def _run(corpora, tiny_models, families, out, fusion, task, flags, *more):
    script = f"multimodal_{task}"
    dataset = "19" if "19" in flags else "20"
    argv = tiny_command(
        script, corpora[dataset], tiny_models, out, "--fusion", fusion, "--max_seq_len", "2", dataset=dataset, epochs=1
    )[2:]
    argv += [f for f in flags if f not in ("family", "19")] + list(more)
    if "family" in flags:
        argv += ["--text_model", str(families["text"]), "--speech_model", str(families["speech"])]
    return train(parse_script(script, argv))


@pytest.mark.parametrize("fusion, task, flags", RUNS, ids=[f"{f}-{t}-{'-'.join(x)}" for f, t, x in RUNS])
def test_every_fusion_predicts_alike_in_any_batch_and_as_its_run_scored(
    corpus20, corpus19, tiny_models, families, tmp_path, fusion, task, flags
):
    out = tmp_path / "run"
    corpora = {"20": corpus20[0], "19": corpus19[0]}
    (result,) = _run(corpora, tiny_models, families, out, fusion, task, flags)
    assert result["script"] == f"multimodal_{task}_{fusion}"
    with (out / "predictions.csv").open(encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    dataset = "19" if "19" in flags else "20"
    utts = {u.segment_id: u for u in read_corpus(dataset, corpora[dataset]).utterances}
    wavs, texts = [utts[r["segment_id"]].wav for r in table], [utts[r["segment_id"]].text for r in table]
    predictor = Predictor(out)
    assert predictor.model.config.cell.fusion == fusion
    batched, alone = predictor(wavs, texts, batch_size=8), predictor(wavs, texts, batch_size=1)
    columns = [f"prob_{e}" for e in EMOTIONS] if task != "regression" else []
    columns += ["pred_valence", "pred_arousal"] if task != "classification" else []
    for row, a, b in zip(table, batched, alone, strict=True):
        scored = [float(row[c]) for c in columns]
        got = [a["probabilities"][c[5:]] if c.startswith("prob_") else a[c[5:]] for c in columns]
        got_alone = [b["probabilities"][c[5:]] if c.startswith("prob_") else b[c[5:]] for c in columns]
        assert got == pytest.approx(scored, abs=1e-5) and got_alone == pytest.approx(got, abs=1e-5)


@pytest.mark.parametrize("fusion", NEW)
def test_every_fusion_resumes_to_exactly_the_uninterrupted_run(corpus20, tiny_models, families, tmp_path, fusion):
    flags = ["--freeze", "both"] if FUSIONS[fusion].reads == "sequences" else []
    corpora = {"20": corpus20[0]}
    (whole,) = _run(corpora, tiny_models, families, tmp_path / "whole", fusion, "total", flags, "--epochs", "2")
    interrupted_after_epoch_1(
        lambda: _run(corpora, tiny_models, families, tmp_path / "cut", fusion, "total", flags, "--epochs", "2")
    )
    (resumed,) = _run(
        corpora, tiny_models, families, tmp_path / "cut", fusion, "total", flags, "--epochs", "2", "--resume"
    )
    assert resumed == whole


# One process trains each new fusion in bf16 (a process keeps the precision it started with).
BF16 = """
import sys
from common.cli import parse_script
from common.train import train

out, fusions, argv = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
for fusion in fusions:
    train(parse_script("multimodal_total", [*argv, "--output_dir", f"{out}/{fusion}", "--fusion", fusion]))
"""


@pytest.fixture(scope="module")
def bf16_runs(corpus20, tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("bf16")
    argv = tiny_command("multimodal_total", corpus20[0], tiny_models, "unused", epochs=1)[2:]
    argv = [*argv[: argv.index("--output_dir")], *argv[argv.index("--output_dir") + 2 :], "--mixed_precision", "bf16"]
    command = [sys.executable, "-c", BF16, str(out), ",".join(NEW), *argv]
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.parametrize("fusion", NEW)
def test_every_fusion_runs_in_bf16_close_to_fp32(corpus20, tiny_models, tmp_path, bf16_runs, fusion):
    (fp32,) = _run({"20": corpus20[0]}, tiny_models, None, tmp_path / "fp32", fusion, "total", [], "--max_seq_len", "1")
    bf16 = json.loads((bf16_runs / fusion / "metrics.json").read_text())
    config = json.loads((bf16_runs / fusion / "config.json").read_text())
    assert config["environment"]["mixed_precision"] == "bf16" and config["args"]["max_seq_len"] == 1.0
    a, b = fp32["epochs"][0]["train_loss"], bf16["epochs"][0]["train_loss"]
    assert a != b and b == pytest.approx(a, rel=0.05)  # autocast is on, and bf16 keeps the numbers close


def test_a_sequence_fusion_trains_in_two_processes_in_context_and_with_modality_dropout(
    corpus20, tiny_models, tmp_path
):
    out = tmp_path / "run"
    flags = ("--fusion", "cross_attention", "--context", "2", "--modality_dropout", "0.3")
    cmd = tiny_command("multimodal_total", corpus20[0], tiny_models, out, *flags, epochs=1)
    proc = subprocess.run([*launch_two_processes(), *cmd[1:]], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["environment"]["num_processes"] == 2 and metrics["script"] == "multimodal_total_cross_attention"
    assert config["args"]["context"] == 2 and config["args"]["modality_dropout"] == 0.3


def test_the_old_name_of_element_wise_additions_projection_still_loads(corpus20, tiny_models, tmp_path):
    """A model/ or checkpoint saved before fusions were modules of their own names the projection
    `speech_projection.`: it loads into `fusion.speech_projection.`."""
    out = tmp_path / "run"
    _run({"20": corpus20[0]}, tiny_models, None, out, "element_wise_add", "total", [])
    from safetensors.torch import load_file, save_file

    layers = load_file(str(out / "model" / "layers.safetensors"))
    old = {k.removeprefix("fusion."): v for k, v in layers.items()}
    assert "speech_projection.weight" in old
    save_file(old, str(out / "model" / "layers.safetensors"))
    model, _, _ = EmotionModel.load(out / "model")
    assert torch.equal(model.fusion.speech_projection.weight, layers["fusion.speech_projection.weight"])
    assert Path(out / "model" / "model.json").is_file()


def test_a_saved_text_encoder_without_its_pooler_loads_without_one(corpus20, tiny_models, tmp_path, capfd):
    """A model that did not pool with the pooler (a fusion of sequences) saved its text encoder without it: it is
    built without one again, not with a random one announced as missing weights."""
    from transformers.utils import logging as hf_logging

    out = tmp_path / "run"
    _run({"20": corpus20[0]}, tiny_models, None, out, "cross_attention", "classification", [])
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    try:
        capfd.readouterr()
        model, _, _ = EmotionModel.load(out / "model")
        said = capfd.readouterr()
    finally:
        hf_logging.set_verbosity(verbosity)
    assert model.text_encoder.pooler is None and "MISSING" not in said.out + said.err and "pooler" not in said.err


@pytest.mark.parametrize("modality", ["text", "speech"])
def test_frozen_sequences_are_each_utterances_own_states_and_are_cached(corpus20, tiny_models, tmp_path, modality):
    from common.frozen import frozen_sequences

    argv = tiny_command("multimodal_total", corpus20[0], tiny_models, "unused", "--fusion", "cross_attention")[2:]
    plan = parse_script("multimodal_total", [*argv, "--freeze", "both", "--max_seq_len", "2"])
    cell, args = plan.cell, plan.settings
    encoders = Encoders(cell, args)
    model = build_model(cell, args, encoders)
    model.freeze("both")
    utts = read_corpus("20", corpus20[0]).utterances[:20]
    spec = audio_spec(encoders.extractor, model.speech_encoder, model.config)
    log = []
    inputs = prepare_inputs(utts, encoders.tokenizer, 32, 2.0, tmp_path / "cache", log.append)
    collate = Collator(encoders.tokenizer, 32, spec)
    kwargs = {"batch_size": 8, "accelerator": Accelerator(cpu=True), "log": log.append, "show_progress": False}
    fresh = frozen_sequences(modality, model, utts, inputs, collate, **kwargs)  # no cache: kept in memory
    cached = frozen_sequences(modality, model, utts, inputs, collate, cache_dir=tmp_path / "cache", **kwargs)
    again = frozen_sequences(modality, model, utts, inputs, collate, cache_dir=tmp_path / "cache", **kwargs)
    assert "computed" in log[-2] and "reused" in log[-1] and f"{modality}_sequences-" in log[-1]
    model.eval()
    for i in range(len(utts)):
        with torch.no_grad():
            alone = _own(getattr(model, f"{modality}_states")(collate([KemdyDataset(utts, [i], inputs, spec)[0]])))
        assert fresh[i].shape == alone.shape and np.allclose(fresh[i], alone, atol=1e-5), i
        assert np.array_equal(cached[i], fresh[i]) and np.array_equal(again[i], fresh[i])


def _own(states) -> np.ndarray:
    """The one utterance's states over its own positions."""
    hidden, mask = states.padded()
    return hidden[0, mask[0].bool()].numpy()


def test_a_frozen_sequence_fusion_never_runs_its_encoders_once_their_states_are_cached(
    corpus20, tiny_models, tmp_path, monkeypatch
):
    def run(out, *flags):
        argv = tiny_command("multimodal_total", corpus20[0], tiny_models, out, "--fusion", "cross_attention")[2:]
        return train(parse_script("multimodal_total", [*argv, "--freeze", "both", *flags]))[0]

    first = run(tmp_path / "first", "--cache_dir", str(tmp_path / "cache"))

    def ran(self, *args, **kwargs):
        raise AssertionError("a frozen encoder ran")

    with monkeypatch.context() as patch:
        patch.setattr(EmotionModel, "text_states", ran)
        patch.setattr(EmotionModel, "speech_states", ran)
        second = run(tmp_path / "second", "--cache_dir", str(tmp_path / "cache"))
    in_memory = run(tmp_path / "third", "--no-cache")
    assert second["epochs"] == first["epochs"] and in_memory["epochs"] == first["epochs"]


def test_a_run_made_with_the_text_encoders_width_is_resumed_only_with_it(corpus20, tiny_models, families, tmp_path):
    """--fusion_width 0 (the text encoder's width, the default before 256) is a setting of the run: resumed
    without it, the run is refused, even where the two widths would be equal, rather than continued as another."""
    corpora, out = {"20": corpus20[0]}, tmp_path / "run"
    (first,) = _run(corpora, tiny_models, families, out, "gated", "classification", ["--fusion_width", "0"])
    with pytest.raises(UserError, match=r"other settings than the run started with \(--fusion_width 0 -> 256\)"):
        _run(corpora, tiny_models, families, out, "gated", "classification", [], "--resume")
    (again,) = _run(corpora, tiny_models, families, out, "gated", "classification", ["--fusion_width", "0"], "--resume")
    assert again == first
