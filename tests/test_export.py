"""ONNX export (common.export): the graph, fed by hand with a tokenizer's ids and a file's raw samples, answers
every test utterance as the training run wrote it in predictions.csv, whatever its batch; every fusion and the
other inputs (turns before, the original's) export; `common.predict --backend onnx` answers as the model does;
nothing is written over, and a file that is not an export is refused in one line."""

import csv
import json

import numpy as np
import onnxruntime
import pytest
import soundfile as sf
from transformers import AutoTokenizer

from common import export, rundir
from common.cli import parse_script
from common.errors import UserError
from common.grid import EMOTIONS, FUSIONS
from common.kemdy import read_corpus
from common.predict import main as predict_main
from common.train import train

from helpers import tiny_command


def _trained(corpus, tiny_models, out, script, *flags):
    argv = tiny_command(script, corpus, tiny_models, out, *flags, epochs=1)
    train(parse_script(script, argv[2:]))
    return out


@pytest.fixture(scope="module")
def run(corpus20, tiny_models, tmp_path_factory):
    return _trained(corpus20[0], tiny_models, tmp_path_factory.mktemp("export") / "run", "multimodal_total")


def _written(run_dir):
    with (run_dir / "predictions.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _by_hand(run_dir, corpus, rows, session, meta):
    """The graph's inputs of `rows`' utterances, made without the project's code: the tokenizer's ids and the
    16-bit files' samples, cut to the run's seconds and padded on the right."""
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model" / "text")
    by_id = {u.segment_id: u for u in read_corpus("20", corpus).utterances}
    utterances = [by_id[r["segment_id"]] for r in rows]
    ids = [tokenizer(u.text, truncation=True, max_length=meta["max_text_len"])["input_ids"] for u in utterances]
    clips = [sf.read(u.wav, dtype="float32")[0][: int(16000 * meta["max_seconds"])] for u in utterances]
    width = max(max(map(len, clips)), meta["min_samples"])
    feeds = {
        "input_ids": np.zeros((len(rows), max(map(len, ids))), np.int64),
        "attention_mask": np.zeros((len(rows), max(map(len, ids))), np.int64),
        "audio": np.zeros((len(rows), width), np.float32),
        "audio_mask": np.zeros((len(rows), width), np.int64),
    }
    for k, (i, x) in enumerate(zip(ids, clips, strict=True)):
        feeds["input_ids"][k, : len(i)], feeds["attention_mask"][k, : len(i)] = i, 1
        feeds["audio"][k, : len(x)], feeds["audio_mask"][k, : len(x)] = x, 1
    assert [i.name for i in session.get_inputs()] == list(feeds)
    return feeds


def test_the_graph_fed_by_hand_answers_every_test_utterance_as_the_run_wrote_it_in_any_batch(
    run, corpus20, tmp_path, capsys
):
    copy = tmp_path / "copy.onnx"
    export.main([str(run), "--onnx", str(copy), "--batch_size", "3"])
    assert "the graph answers the 24 test utterances within" in capsys.readouterr().err
    details = json.loads((run / export.FOLDER / export.DETAILS).read_text())
    assert details["parity"]["utterances"] == 24 and details["parity"]["max_difference"] < 1e-4
    assert export.FOLDER in rundir.read_run(run).entries
    assert copy.read_bytes() == (run / export.FOLDER / export.FILE).read_bytes()
    session = onnxruntime.InferenceSession(str(copy), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["emotions"] == list(EMOTIONS) and meta["outputs"] == ["probabilities", "valence_arousal"]
    rows = _written(run)
    assert len(rows) == 24
    for size in (1, 5, 24):  # the axes of utterances, tokens and samples are free
        for start in range(0, len(rows), size):
            part = rows[start : start + size]
            probs, va = session.run(None, _by_hand(run, corpus20[0], part, session, meta))
            written = np.array([[float(r[f"prob_{e}"]) for e in EMOTIONS] for r in part])
            assert np.abs(probs - written).max() < 1e-4
            written_va = np.array([[float(r["pred_valence"]), float(r["pred_arousal"])] for r in part])
            assert np.abs(va - written_va).max() < 1e-4


def test_predict_with_the_onnx_backend_answers_as_the_model(run, corpus20, capsys):
    export.export(run)
    u = read_corpus("20", corpus20[0]).utterances[3]
    answers = {}
    for backend in ("torch", "onnx"):
        predict_main(["--run_dir", str(run), "--wav", str(u.wav), "--text", u.text, "--backend", backend])
        answers[backend] = json.loads(capsys.readouterr().out)
    assert answers["onnx"]["top1"] == answers["torch"]["top1"]
    for e in EMOTIONS:
        assert answers["onnx"]["probabilities"][e] == pytest.approx(answers["torch"]["probabilities"][e], abs=1e-5)
    assert answers["onnx"]["arousal"] == pytest.approx(answers["torch"]["arousal"], abs=1e-5)


def test_nothing_is_written_over_and_a_file_that_is_not_an_export_is_refused(run, tmp_path):
    taken = tmp_path / "mine.onnx"
    taken.write_text("the user's")
    with pytest.raises(UserError, match=r"mine.onnx: exists; give a new file's name"):
        export.main([str(run), "--onnx", str(taken)])
    assert taken.read_text() == "the user's"
    with pytest.raises(UserError, match=r"mine.onnx: not an ONNX model exported by common.export"):
        export.OnnxModel(taken)


def test_a_run_without_an_export_says_how_to_make_one(corpus20, tiny_models, tmp_path):
    bare = _trained(corpus20[0], tiny_models, tmp_path / "text", "text_classification")
    with pytest.raises(UserError, match=r"has no ONNX export; run python -m common.export"):
        predict_main(["--run_dir", str(bare), "--text", "안녕", "--backend", "onnx"])


CASES = [("multimodal_total", "--fusion", f) for f in FUSIONS if f != "concat"] + [
    ("text_total", "--context", "2"),
    ("multimodal_classification_concat", "--original"),
    ("speech_regression", "--layers", "weighted"),
]


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c) for c in CASES])
def test_every_fusion_and_input_exports_within_the_tolerance_of_what_the_run_wrote(
    case, corpus20, tiny_models, tmp_path
):
    trained = _trained(corpus20[0], tiny_models, tmp_path / "run", *case)
    found = export.export(trained, batch_size=7)
    assert found["utterances"] == 24 and found["max_difference"] < export.TOLERANCE
    graph = export.OnnxModel(trained / export.FOLDER / export.FILE)
    assert ("token_type_ids" in graph.inputs) == ("--context" in case)
    from common.predict import Predictor
    from common.robustness import CONDITIONS, FinishedRun, Inputs

    finished = FinishedRun(trained, log=lambda _: None)
    onnx = Predictor(trained, backend="onnx")
    probs, va = onnx.outputs(Inputs(finished, 0, predictor=onnx).items(CONDITIONS[0]), 24)
    rows = _written(trained)
    if probs is not None:
        assert np.abs(probs - [[float(r[f"prob_{e}"]) for e in EMOTIONS] for r in rows]).max() < 1e-4
    if va is not None:
        assert np.abs(va - [[float(r["pred_valence"]), float(r["pred_arousal"])] for r in rows]).max() < 1e-4


def test_a_graph_beyond_the_tolerance_is_not_kept(run, monkeypatch):
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # every graph differs by more than this
    with pytest.raises(UserError, match=r"the ONNX graph differs from the model by .* nothing was written"):
        export.export(run)
    assert not (run / export.FOLDER).exists()
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no half-built folder left either


def test_batch_prediction_with_the_onnx_backend_writes_the_rows_the_model_writes(run, corpus20, tmp_path):
    export.export(run)
    wav_dir = corpus20[0] / "wav" / "Session01"
    tables = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.csv"
        argv = ["--run_dir", str(run), "--wav_dir", str(wav_dir), "--out", str(out), "--batch_size", "4"]
        predict_main([*argv, "--backend", backend])
        with out.open(newline="") as f:
            tables[backend] = list(csv.DictReader(f))
    assert len(tables["onnx"]) == len(tables["torch"]) == len(list(wav_dir.glob("*.wav")))
    for a, b in zip(tables["torch"], tables["onnx"], strict=True):
        assert (a["wav"], a["error"], a["top1"]) == (b["wav"], b["error"], b["top1"])
        numbers = [k for k in a if k.startswith("prob_") or k in ("valence", "arousal")]
        assert [float(b[k]) for k in numbers] == pytest.approx([float(a[k]) for k in numbers], abs=1e-5)


def test_an_export_whose_metadata_was_edited_badly_is_refused_in_one_line(run, tmp_path):
    import onnx

    export.export(run)
    graph = onnx.load(str(run / export.FOLDER / export.FILE))
    onnx.helper.set_model_props(graph, {**{p.key: p.value for p in graph.metadata_props}, "inputs": "[1, 2]"})
    edited = tmp_path / "edited.onnx"
    onnx.save(graph, str(edited))
    with pytest.raises(UserError, match=r"edited.onnx: not an ONNX model exported by common.export \(.*not a string"):
        export.OnnxModel(edited)
