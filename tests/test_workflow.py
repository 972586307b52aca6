"""The researcher's loop end to end: all folds in one run, session folds, the report, TensorBoard, predict."""

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.grid import EMOTIONS
from common.kemdy import read_corpus
from common.predict import Predictor
from common.synthetic import generate

from helpers import tiny_command, train_in_process

ROOT = Path(__file__).resolve().parents[1]
ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


def python(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, env=os.environ | ENV, cwd=cwd
    )


def train_here(script, corpus, tiny_models, out, *flags) -> str:
    """A script's run in this process (train_in_process): what it printed."""
    code, printed, error = train_in_process(script, tiny_command(script, corpus, tiny_models, out, *flags)[2:])
    assert code == 0, error
    return printed


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_models):
    """A 5-session corpus; multimodal_total_concat over all session folds (with TensorBoard), its fold 3
    alone, and text_classification on one contiguous fold."""
    base = tmp_path_factory.mktemp("workflow")
    corpus = base / "KEMDy20"
    generate("20", corpus, sessions=5, utterances_per_session=16, seed=3)
    runs = base / "runs"
    mm = "multimodal_total_concat"
    flags = ["--split", "session"]
    all_folds = train_here(
        mm, corpus, tiny_models, runs / "mm", *flags, "--num_fold", "all", "--report_to", "tensorboard"
    )
    train_here(mm, corpus, tiny_models, base / "single", *flags, "--num_fold", "3")
    train_here("text_classification", corpus, tiny_models, runs / "text" / "fold1", "--num_fold", "1")
    return {
        "base": base,
        "corpus": corpus,
        "runs": runs,
        "all": all_folds,
        "single": base / "single",
        "text": runs / "text" / "fold1",
    }


def metrics(run_dir):
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def predictions(run_dir):
    with (Path(run_dir) / "predictions.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_all_folds_hold_out_each_session_once_into_per_fold_run_directories(grid):
    utts = read_corpus("20", grid["corpus"]).utterances
    session_of = {u.segment_id: u.session for u in utts}
    seen = []
    for k in range(1, 6):
        run = grid["runs"] / "mm" / f"fold{k}"
        m = metrics(run)
        assert (m["fold"], m["split"]) == (k, "session")
        ids = [r["segment_id"] for r in predictions(run)]
        assert {session_of[i] for i in ids} == {f"Sess{k:02d}"}  # exactly session k, whole
        assert len(ids) == sum(u.session == f"Sess{k:02d}" for u in utts) == m["test"]["n"]
        config = json.loads((run / "config.json").read_text())
        assert config["args"]["num_fold"] == k and config["data"]["test_sessions"] == [f"Sess{k:02d}"]
        seen += ids
    assert sorted(seen) == sorted(u.segment_id for u in utts)


def test_the_audit_prints_the_session_fold_sizes(grid):
    proc = python("-m", "common.audit", "--dataset", "20", "--dataset_dir", grid["corpus"])
    assert proc.returncode == 0, proc.stderr
    # 5 sessions of 16: one tested, one of the other four (ceil(0.1 x 4)) validates, three train
    for k in range(1, 6):
        assert f"  --split session    --num_fold {k}:     48 /    16 /    16   test sessions Sess0{k}\n" in proc.stdout


def test_a_fold_of_an_all_folds_run_equals_the_same_fold_run_alone(grid):
    inside, alone = grid["runs"] / "mm" / "fold3", grid["single"]
    assert metrics(inside)["epochs"] == metrics(alone)["epochs"]
    assert predictions(inside) == predictions(alone)


def test_an_all_folds_run_ends_with_the_mean_and_std_over_its_folds(grid):
    header = "multimodal_total_concat KEMDy20 (session split), test metrics over folds 1, 2, 3, 4, 5: mean ± sample std"
    summary = grid["all"].split(header)[1].splitlines()
    for key in ("top1_accuracy", "valence_ccc", "arousal_mae"):
        values = [metrics(grid["runs"] / "mm" / f"fold{k}")["test"][key] for k in range(1, 6)]
        line = next(x for x in summary if x.split()[:1] == [key])
        assert line.split()[1:] == [f"{statistics.fmean(values):.4f}", "±", f"{statistics.stdev(values):.4f}"]


def test_an_all_folds_rerun_is_refused_before_training_and_resume_reports_the_finished_folds(grid, tiny_models):
    before = [metrics(grid["runs"] / "mm" / f"fold{k}") for k in range(1, 6)]
    argv = tiny_command("multimodal_total_concat", grid["corpus"], tiny_models, grid["runs"] / "mm")[2:]
    code, printed, error = train_in_process(
        "multimodal_total_concat", [*argv, "--split", "session", "--num_fold", "all"]
    )
    assert code == 2 and "epoch 1:" not in printed
    assert error == (
        f"error: {grid['runs'] / 'mm' / 'fold1'}: holds a finished run (metrics.json); add --overwrite to replace "
        "it, or choose another --output_dir"
    )
    resumed = train_here(
        "multimodal_total_concat",
        grid["corpus"],
        tiny_models,
        grid["runs"] / "mm",
        "--split",
        "session",
        "--num_fold",
        "all",
        "--resume",
    )
    assert resumed.count("already finished") == 5 and "epoch 1:" not in resumed
    assert "test metrics over folds 1, 2, 3, 4, 5: mean ± sample std" in resumed
    assert [metrics(grid["runs"] / "mm" / f"fold{k}") for k in range(1, 6)] == before


def test_tensorboard_events_hold_every_epochs_losses(grid):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for k in (1, 5):
        run = grid["runs"] / "mm" / f"fold{k}"
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
        expected = [(e["epoch"], e["train_loss"]) for e in metrics(run)["epochs"]]
        assert logged == [(step, pytest.approx(loss, rel=1e-6)) for step, loss in expected]
        assert [e.value for e in events.Scalars("test/valence_ccc")] == pytest.approx(
            [e["test"]["valence_ccc"] for e in metrics(run)["epochs"]], rel=1e-6
        )


def test_report_tables_and_figures_of_real_runs(grid):
    out = grid["base"] / "report"
    proc = python("-m", "common.report", grid["runs"], "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with (out / "results.csv").open(encoding="utf-8") as f:
        rows = {(r["folder"], r["metric"]): r for r in csv.DictReader(f)}
    values = [metrics(grid["runs"] / "mm" / f"fold{k}")["test"]["arousal_mae"] for k in range(1, 6)]
    row = rows[("mm", "arousal_mae")]
    assert float(row["mean"]) == pytest.approx(statistics.fmean(values), rel=1e-12)
    assert float(row["std"]) == pytest.approx(statistics.stdev(values), rel=1e-12)
    assert row["complete"] == "True" and row["split"] == "session"
    assert rows[("text", "micro_f1")]["complete"] == "False"
    md = (out / "results.md").read_text()
    assert "| text_classification * | KEMDy20 | contiguous | 1/5 (missing 2, 3, 4, 5) |" in md
    import matplotlib.image

    kinds = {
        "mm": ("confusion", "per_class_f1", "curves", "va_scatter"),
        "text": ("confusion", "per_class_f1", "curves"),
    }
    for folder, names in kinds.items():
        for kind in names:
            image = matplotlib.image.imread(out / "figures" / f"{folder}_{kind}.png")
            assert image.shape[0] > 200 and image.shape[1] > 300 and image[..., :3].std() > 0.05
    assert not (out / "figures" / "text_va_scatter.png").exists()


def test_predict_one_utterance_gives_the_runs_own_probabilities(grid, capsys):
    row = predictions(grid["text"])[4]
    utt = next(u for u in read_corpus("20", grid["corpus"]).utterances if u.segment_id == row["segment_id"])
    assert predict_main("--run_dir", grid["text"], "--text", utt.text) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["probabilities"]) == list(EMOTIONS)
    assert [out["probabilities"][e] for e in EMOTIONS] == pytest.approx(
        [float(row[f"prob_{e}"]) for e in EMOTIONS], abs=2e-6
    )
    config = json.loads((grid["text"] / "config.json").read_text())
    threshold = config["args"]["threshold"]
    assert out["threshold"] == threshold
    assert out["labels"] == [e for e in EMOTIONS if out["probabilities"][e] >= threshold]


def test_predict_a_csv_batch_reproduces_a_multimodal_runs_predictions(grid, tmp_path, capsys):
    run = grid["runs"] / "mm" / "fold2"
    rows = predictions(run)
    utts = {u.segment_id: u for u in read_corpus("20", grid["corpus"]).utterances}
    batch = tmp_path / "batch.csv"
    with batch.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["segment_id", "wav", "text"])
        for r in rows:  # in test order, batches of the run's size: the same padding as in evaluation
            u = utts[r["segment_id"]]
            writer.writerow([u.segment_id, u.wav, u.text])
    assert predict_main("--run_dir", run, "--csv", batch, "--batch_size", "8") == 0
    outs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["segment_id"] for o in outs] == [r["segment_id"] for r in rows]
    for o, r in zip(outs, rows, strict=True):
        assert [o["probabilities"][e] for e in EMOTIONS] == pytest.approx(
            [float(r[f"prob_{e}"]) for e in EMOTIONS], abs=2e-6
        )
        assert [o["valence"], o["arousal"]] == pytest.approx(
            [float(r["pred_valence"]), float(r["pred_arousal"])], abs=2e-5
        )


def test_predict_accepts_any_sample_rate_and_channel_count(grid, tmp_path):
    predictor = Predictor(grid["runs"] / "mm" / "fold1")
    u = read_corpus("20", grid["corpus"]).utterances[0]
    x, rate = sf.read(u.wav, dtype="float32")
    sf.write(tmp_path / "stereo.wav", np.stack([x, x], axis=1), rate)  # two identical channels: the same mono
    # A clip with nothing above 3 kHz loses nothing at 8 kHz: predicted from its 8 kHz copy (resampled back
    # to 16 kHz by predict), it gives what the 16 kHz clip gives.
    t = np.arange(16000 * 2) / 16000
    clip = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1900 * t)) * np.hanning(len(t))
    sf.write(tmp_path / "16k.wav", clip.astype(np.float32), 16000)
    sf.write(tmp_path / "8k.wav", clip[::2].astype(np.float32), 8000)
    mono, stereo, high, low = predictor(
        [u.wav, tmp_path / "stereo.wav", tmp_path / "16k.wav", tmp_path / "8k.wav"], [u.text] * 4
    )
    assert stereo["probabilities"] == pytest.approx(mono["probabilities"], abs=1e-6)
    assert stereo["valence"] == pytest.approx(mono["valence"], abs=1e-6)
    assert low["probabilities"] == pytest.approx(high["probabilities"], abs=2e-3)
    assert [low["valence"], low["arousal"]] == pytest.approx([high["valence"], high["arousal"]], abs=2e-3)
    assert low["probabilities"] != pytest.approx(mono["probabilities"], abs=1e-3)  # the audio matters at all


def predict_main(*args):
    """The exit code of `python -m common.predict ARGS`, run in this process (what it prints goes to capsys)."""
    from common.errors import run_cli
    from common.predict import main

    try:
        run_cli(lambda: main([str(a) for a in args]))
    except SystemExit as stop:
        return stop.code
    return 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", "hi"], "error: this run reads speech: give --wav (or a wav column in --csv)"),
        (["--wav", "missing.wav", "--text", "hi"], "error: missing.wav: no such audio file"),
        ([], "error: give --wav, --text and/or --bio for one utterance, or --csv for a batch"),
    ],
)
def test_predict_stops_with_one_line_on_bad_input(grid, args, message, capsys):
    assert predict_main("--run_dir", grid["runs"] / "mm" / "fold1", *args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message


def test_predict_csv_needs_a_wav_or_text_column(grid, tmp_path, capsys):
    batch = tmp_path / "batch.csv"
    batch.write_text("audio,transcript\na.wav,hi\n", encoding="utf-8")
    assert predict_main("--run_dir", grid["runs"] / "mm" / "fold1", "--csv", batch) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --csv {batch}: needs a header with a wav, a text and/or a bio column, and at least one row"
    )


def test_predict_refuses_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    assert predict_main("--run_dir", tmp_path, "--text", "hi") == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --run_dir {tmp_path}: not a finished run with a saved model (needs config.json and model/); "
        "train without --no-save_model"
    )


def test_session_split_on_too_few_sessions_stops_before_training(corpus20, tiny_models, tmp_path):
    root, _ = corpus20  # three sessions
    argv = tiny_command("text_classification", root, tiny_models, tmp_path / "run", "--split", "session")[2:]
    code, printed, error = train_in_process("text_classification", [*argv, "--num_fold", "1"])
    assert code == 2 and "epoch 1:" not in printed
    assert error == "error: --split session: the corpus has 3 sessions, fewer than 5 folds"
    assert not (tmp_path / "run" / "config.json").exists()
