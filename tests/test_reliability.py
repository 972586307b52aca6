"""Resume after a kill, determinism, refusing to overwrite runs, and bad input reported, not crashing."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common import rundir
from common.cli import parse_args
from common.errors import UserError
from common.folds import make_fold
from common.grid import EMOTIONS, Cell
from common.kemdy import read_corpus
from common.rundir import LOCK
from common.train import train

from helpers import tiny_command

ROOT = Path(__file__).resolve().parents[1]
CELL = Cell("multimodal", "total", "concat")


def command(corpus, tiny_models, out, *flags, epochs=3):
    return tiny_command("multimodal_total_concat", corpus, tiny_models, out, "--num_fold", "3", *flags, epochs=epochs)


ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def run(argv, cwd):
    return subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=cwd)


@pytest.fixture(scope="module")
def killed_and_resumed(corpus20, tiny_models, tmp_path_factory):
    """Two uninterrupted runs of the same command, and one killed after epoch 1 then resumed."""
    base = tmp_path_factory.mktemp("reliability")
    runs = {name: base / name for name in ("first", "second", "killed")}
    for name in ("first", "second"):
        proc = run(command(corpus20[0], tiny_models, runs[name]), base)
        assert proc.returncode == 0, proc.stderr[-2000:]

    victim = subprocess.Popen(
        command(corpus20[0], tiny_models, runs["killed"]),
        cwd=base,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    checkpoints = runs["killed"] / "checkpoints"
    deadline = time.monotonic() + 300
    # killed at its first checkpoint (epoch1/ lives one epoch, a fraction of a second: any will do)
    while not any(checkpoints.glob("epoch*")) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_state = {
        "metrics": (runs["killed"] / "metrics.json").exists(),
        "epochs": sorted(p.name for p in (runs["killed"] / "checkpoints").iterdir()),
    }
    refused = run(command(corpus20[0], tiny_models, runs["killed"]), base)
    resumed = run(command(corpus20[0], tiny_models, runs["killed"], "--resume"), base)
    return runs, killed_state, refused, resumed


def test_a_run_killed_at_its_first_checkpoint_resumes_to_exactly_the_uninterrupted_metrics(killed_and_resumed):
    runs, killed_state, refused, resumed = killed_and_resumed
    assert not killed_state["metrics"] and killed_state["epochs"] and "epoch3" not in killed_state["epochs"]
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout and "after epoch" in resumed.stdout
    assert (runs["killed"] / "metrics.json").read_text() == (runs["first"] / "metrics.json").read_text()
    assert (runs["killed"] / "predictions.csv").read_text() == (runs["first"] / "predictions.csv").read_text()


def test_the_same_command_twice_gives_identical_metrics(killed_and_resumed):
    runs = killed_and_resumed[0]
    first = json.loads((runs["first"] / "metrics.json").read_text())
    assert (runs["second"] / "metrics.json").read_text() == (runs["first"] / "metrics.json").read_text()
    losses = [e["valid"]["loss"] for e in first["epochs"]]
    assert len(losses) == 3 and first["chosen_epoch"] == 1 + int(np.argmin(losses))  # the lowest validation loss


def test_a_finished_run_keeps_no_checkpoint_and_records_its_size(killed_and_resumed):
    runs = killed_and_resumed[0]
    for name in ("first", "killed"):
        assert not (runs[name] / "checkpoints").exists()  # the model is in model/; the optimizer state is not kept
        assert not [p for p in runs[name].rglob(".*tmp*")] and not (runs[name] / LOCK).exists()
        config = json.loads((runs[name] / "config.json").read_text())
        on_disk = sum(p.stat().st_size for p in runs[name].rglob("*") if p.is_file())
        assert 0 < on_disk - config["disk_bytes"] < 100  # all but the few digits written into config.json


def test_an_unfinished_run_is_not_restarted_without_resume(killed_and_resumed):
    refused = killed_and_resumed[2]
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().endswith(
        "holds an unfinished run; add --resume to continue it, or --overwrite to start over"
    )


def args_for(corpus, tiny_models, out, *flags):
    argv = command(corpus, tiny_models, out, *flags, epochs=1)[2:]
    return parse_args(CELL, argv)


def test_a_finished_run_is_refused_reported_with_resume_and_replaced_with_overwrite(
    killed_and_resumed, corpus20, tiny_models
):
    runs = killed_and_resumed[0]
    done = runs["first"]
    with pytest.raises(UserError, match=r"holds a finished run \(metrics.json\); add --overwrite to replace it"):
        train(CELL, parse_args(CELL, command(corpus20[0], tiny_models, done)[2:]))
    before = (done / "metrics.json").read_text()
    assert train(CELL, parse_args(CELL, command(corpus20[0], tiny_models, done, "--resume")[2:])) == [
        json.loads(before)
    ]
    assert (done / "metrics.json").read_text() == before


def test_resume_with_other_settings_is_refused(corpus20, tiny_models, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    settings = rundir.settings(vars(args_for(corpus20[0], tiny_models, out)))
    rundir.Owner(out, "run", CELL.name, settings, {"listing": "corpus"}, False, []).write()  # an unfinished run
    with pytest.raises(
        UserError, match=r"--resume with other settings than the run started with \(--lr 0.001 -> 0.002\)"
    ):
        train(CELL, args_for(corpus20[0], tiny_models, out, "--resume", "--lr", "2e-3"))


def test_overwrite_replaces_a_run_and_an_unwritable_output_dir_stops_before_training(corpus20, tiny_models, tmp_path):
    out = tmp_path / "run"
    train(CELL, args_for(corpus20[0], tiny_models, out, "--lr", "2e-3"))
    (out / "notes.txt").write_text("the user's own notes")
    (result,) = train(CELL, args_for(corpus20[0], tiny_models, out, "--overwrite", "--no-save_model"))
    # --overwrite replaces the run's own files only (earlier it removed the whole folder, notes included)
    assert (out / "notes.txt").read_text() == "the user's own notes"
    assert json.loads((out / "metrics.json").read_text()) == result

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"--output_dir .*a_file/run: cannot write there \(Not a directory\)"):
        train(CELL, args_for(corpus20[0], tiny_models, blocker / "run"))


def test_bad_utterances_are_skipped_counted_and_reported_and_odd_audio_is_used(corpus20, tiny_models, tmp_path):
    root = Path(shutil.copytree(corpus20[0], tmp_path / "KEMDy20"))
    wavs = sorted((root / "wav").rglob("*.wav"))
    wavs[0].write_bytes(b"not a wav file at all")  # unreadable: skipped
    wavs[1].with_suffix(".txt").unlink()  # missing transcript: skipped
    wavs[2].with_suffix(".txt").write_bytes(b"\xff\xfe\xfa broken")  # neither UTF-8 nor cp949: skipped
    wavs[3].with_suffix(".txt").write_bytes(b"")  # empty transcript: kept
    data, rate = sf.read(str(wavs[4]))
    sf.write(str(wavs[4]), np.stack([data, data], axis=1), 16000)  # stereo: downmixed
    sf.write(str(wavs[5]), np.interp(np.arange(0, len(data), 16000 / 44100), np.arange(len(data)), data), 44100)
    sf.write(str(wavs[6]), data[:40], 16000)  # 2.5 ms: padded up for the CNN
    proc = run(command(root, tiny_models, tmp_path / "run", epochs=1), tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 rows excluded: {'unreadable_wav': 1, 'missing_transcript': 1, 'undecodable_transcript': 1}" in proc.stdout
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert {(e["segment_id"], e["reason"]) for e in config["data"]["exclusions"]} == {
        (wavs[0].stem, "unreadable_wav"),
        (wavs[1].stem, "missing_transcript"),
        (wavs[2].stem, "undecodable_transcript"),
    }
    assert config["data"]["excluded"] == 3 and config["data"]["used"] == 117


def test_two_processes_train_and_gather_exactly_the_test_fold_once(tmp_path, tiny_models):
    """accelerate launch with 2 CPU processes (gloo); 66 utterances give an uneven 13-utterance test fold."""
    import torch
    from accelerate import Accelerator
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from common.data import Collator, KemdyDataset, prepare_inputs
    from common.losses import Objective
    from common.model import EmotionModel, audio_spec
    from common.synthetic import generate
    from common.train import evaluate, split_metrics

    corpus = tmp_path / "KEMDy20"
    generate("20", corpus, sessions=2, utterances_per_session=33, seed=3)
    # A speech model that takes an attention mask (layer norm, as wav2vec2-large): its outputs do not
    # depend on how a batch is padded, so two processes and one must agree (see README, Reliability).
    models = tmp_path / "models"
    shutil.copytree(tiny_models / "text", models / "text")
    config = Wav2Vec2Config.from_pretrained(tiny_models / "speech")
    config.feat_extract_norm, config.do_stable_layer_norm = "layer", True
    torch.manual_seed(0)
    Wav2Vec2Model(config).save_pretrained(models / "speech")
    Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(models / "speech")

    out = tmp_path / "run"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    argv = command(corpus, models, out, "--batch_size", "4", "--keep_checkpoint", epochs=2)
    argv[argv.index("--num_fold") + 1] = "2"
    proc = run(launch + argv[1:], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("test metrics of epoch") == 1  # only the main process reports and writes

    utts = read_corpus("20", corpus).utterances
    test = make_fold([u.session for u in utts], 2).test
    metrics = json.loads((out / "metrics.json").read_text())
    lines = (out / "predictions.csv").read_text().splitlines()[1:]
    assert len(test) == 13 and [line.split(",")[0] for line in lines] == [utts[i].segment_id for i in test]
    assert metrics["test"]["n"] == 13
    config = json.loads((out / "config.json").read_text())
    assert config["environment"]["num_processes"] == 2
    (kept,) = (out / "checkpoints").iterdir()  # --keep_checkpoint: the chosen epoch's only
    assert kept.name == f"epoch{metrics['chosen_epoch']}"
    assert sorted(p.name for p in kept.glob("random_states_*")) == ["random_states_0.pkl", "random_states_1.pkl"]

    model, tokenizer, extractor = EmotionModel.load(out / "model")
    assert model.config.pass_audio_mask
    args = parse_args(CELL, argv[2:])
    spec = audio_spec(extractor, model.speech_encoder)
    inputs = prepare_inputs(utts, tokenizer, args.max_text_len, args.max_seq_len)
    loader = torch.utils.data.DataLoader(
        KemdyDataset(utts, test, inputs, spec), batch_size=4, collate_fn=Collator(tokenizer, args.max_text_len, spec)
    )
    single, _ = split_metrics(evaluate(model, loader, Accelerator(cpu=True), Objective()), args.threshold)
    differ = {
        key: (value, single[key])
        for key, value in metrics["test"].items()
        if isinstance(value, float) and single[key] != pytest.approx(value, rel=1e-5, abs=1e-6)
    }
    assert not differ


def test_two_processes_run_all_folds_one_after_the_other_with_tensorboard(corpus20, tiny_models, tmp_path):
    out = tmp_path / "runs"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    argv = tiny_command("text_total", corpus20[0], tiny_models, out, "--num_fold", "all", "--report_to", "tensorboard")
    argv += ["--class_weight", "balanced", "--threshold", "tuned"]
    proc = run(launch + argv[1:], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test metrics over folds 1, 2, 3, 4, 5" in proc.stdout
    utts = read_corpus("20", corpus20[0]).utterances
    for k in range(1, 6):
        test = make_fold([u.session for u in utts], k).test
        lines = (out / f"fold{k}" / "predictions.csv").read_text().splitlines()[1:]
        assert [line.split(",")[0] for line in lines] == [utts[i].segment_id for i in test]  # each once
        assert list((out / f"fold{k}" / "tensorboard").glob("events.out.tfevents.*"))
        metrics = json.loads((out / f"fold{k}" / "metrics.json").read_text())
        config = json.loads((out / f"fold{k}" / "config.json").read_text())
        assert set(metrics["thresholds"]) == set(EMOTIONS) and set(config["data"]["class_weights"]) == set(EMOTIONS)


def test_two_processes_checkpoint_frozen_encoders_out_and_resume_from_it(corpus20, tiny_models, tmp_path):
    """Under DDP the model is wrapped: the frozen encoders' weights are still left out, and a run continued
    from such a checkpoint ends with the uninterrupted run's numbers."""
    from safetensors import safe_open

    out = tmp_path / "run"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    flags = ["--freeze", "both", "--layers", "weighted", "--keep_checkpoint", "--cache_dir", str(tmp_path / "cache")]
    argv = tiny_command("multimodal_classification_concat", corpus20[0], tiny_models, out, *flags, epochs=2)
    proc = run(launch + argv[1:], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    (kept,) = (out / "checkpoints").iterdir()
    with safe_open(str(kept / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    names = {"text_layer_weights", "speech_layer_weights", "emotion_head.weight", "emotion_head.bias"}
    assert keys == names | {"va_mean", "va_std"}
    # the run without its results is unfinished: continued from the kept checkpoint, it ends the same
    (out / "metrics.json").unlink()
    proc = run(launch + argv[1:] + ["--resume"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stdout
    again = json.loads((out / "metrics.json").read_text())
    assert again["test"] == metrics["test"] and again["layer_weights"] == metrics["layer_weights"]
