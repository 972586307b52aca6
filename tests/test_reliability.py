"""Resume after a kill, determinism, refusing to overwrite runs, and bad input reported, not crashing."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common import rundir
from common.checkpoints import Checkpoints
from common.cli import parse_args
from common.errors import Interrupted, UserError
from common.folds import make_fold
from common.grid import EMOTIONS, Cell
from common.kemdy import read_corpus
from common.rundir import LOCK
from common.train import train

from helpers import ctrl_c_at_first_checkpoint, launch_two_processes, tiny_command, train_in_process

ROOT = Path(__file__).resolve().parents[1]
CELL = Cell("multimodal", "total", "concat")


def command(corpus, tiny_models, out, *flags, epochs=3):
    return tiny_command("multimodal_total_concat", corpus, tiny_models, out, "--num_fold", "3", *flags, epochs=epochs)


ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def run(argv, cwd):
    return subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=cwd)


@pytest.fixture(scope="module")
def killed_and_resumed(corpus20, tiny_models, tmp_path_factory):
    """Two uninterrupted runs of the same command, and one killed after epoch 1 (a process of its own), then
    refused and resumed. But for the killed one, they run in this process, which a run does not depend on."""
    base = tmp_path_factory.mktemp("reliability")
    runs = {name: base / name for name in ("first", "second", "killed")}
    for name in ("first", "second"):
        code, _, error = train_in_process(CELL.name, command(corpus20[0], tiny_models, runs[name])[2:], cwd=base)
        assert code == 0, error

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
    argv = command(corpus20[0], tiny_models, runs["killed"])[2:]
    refused = train_in_process(CELL.name, argv, cwd=base)
    resumed = train_in_process(CELL.name, [*argv, "--resume"], cwd=base)
    return runs, killed_state, refused, resumed


def test_a_run_killed_at_its_first_checkpoint_resumes_to_exactly_the_uninterrupted_metrics(killed_and_resumed):
    runs, killed_state, refused, (code, printed, error) = killed_and_resumed
    assert not killed_state["metrics"] and killed_state["epochs"] and "epoch3" not in killed_state["epochs"]
    assert code == 0, error
    assert "resuming" in printed and "after epoch" in printed
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
    code, printed, error = killed_and_resumed[2]
    assert code == 2 and "epoch 1:" not in printed
    assert error.endswith("holds an unfinished run; add --resume to continue it, or --overwrite to start over")


def args_for(corpus, tiny_models, out, *flags):
    argv = command(corpus, tiny_models, out, *flags, epochs=1)[2:]
    return parse_args(CELL, argv)


def test_a_finished_run_is_refused_reported_with_resume_and_replaced_with_overwrite(
    killed_and_resumed, corpus20, tiny_models
):
    runs = killed_and_resumed[0]
    done = runs["first"]
    with pytest.raises(UserError, match=r"holds a finished run \(metrics.json\); add --overwrite to replace it"):
        train(parse_args(CELL, command(corpus20[0], tiny_models, done)[2:]))
    before = (done / "metrics.json").read_text()
    assert train(parse_args(CELL, command(corpus20[0], tiny_models, done, "--resume")[2:])) == [json.loads(before)]
    assert (done / "metrics.json").read_text() == before


def test_resume_with_other_settings_is_refused(corpus20, tiny_models, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    settings = rundir.settings(args_for(corpus20[0], tiny_models, out).record() | {"text_pooling": "pooler"})
    owner = rundir.Owner(out, "run", CELL.name, settings, {"listing": "corpus"}, False, [], fold=3)
    owner.write()  # an unfinished run of fold 3
    with pytest.raises(
        UserError, match=r"--resume with other settings than the run started with \(--lr 0.001 -> 0.002\)"
    ):
        train(args_for(corpus20[0], tiny_models, out, "--resume", "--lr", "2e-3"))


def test_overwrite_replaces_a_run_and_an_unwritable_output_dir_stops_before_training(corpus20, tiny_models, tmp_path):
    out = tmp_path / "run"
    train(args_for(corpus20[0], tiny_models, out, "--lr", "2e-3"))
    (out / "notes.txt").write_text("the user's own notes")
    (result,) = train(args_for(corpus20[0], tiny_models, out, "--overwrite", "--no-save_model"))
    # --overwrite replaces the run's own files only (earlier it removed the whole folder, notes included)
    assert (out / "notes.txt").read_text() == "the user's own notes"
    assert json.loads((out / "metrics.json").read_text()) == result

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"--output_dir .*a_file/run: cannot write there \(Not a directory\)"):
        train(args_for(corpus20[0], tiny_models, blocker / "run"))


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
    code, printed, error = train_in_process(CELL.name, command(root, tiny_models, tmp_path / "run", epochs=1)[2:])
    assert code == 0, error
    assert "3 rows excluded: {'unreadable_wav': 1, 'missing_transcript': 1, 'undecodable_transcript': 1}" in printed
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert {(e["segment_id"], e["reason"]) for e in config["data"]["exclusions"]} == {
        (wavs[0].stem, "unreadable_wav"),
        (wavs[1].stem, "missing_transcript"),
        (wavs[2].stem, "undecodable_transcript"),
    }
    assert config["data"]["excluded"] == 3 and config["data"]["used"] == 117


def speech_model_with_attention_mask(tiny_models, models: Path) -> None:
    """`models`/text, the tiny BERT, and `models`/speech, a tiny wav2vec2 that takes an attention mask (layer
    norm, as wav2vec2-large: its outputs do not depend on how a batch is padded, so two processes and one
    must agree) with SpecAugment off, as fine-tuned checkpoints often ship: its mask vector then gets no
    gradient, which would stop DDP ("Expected to have finished reduction ...") had the model not frozen it."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from common.encoders import load_speech_encoder
    from common.model import EmotionModel, ModelConfig

    shutil.copytree(tiny_models / "text", models / "text")
    config = Wav2Vec2Config.from_pretrained(tiny_models / "speech")
    config.feat_extract_norm, config.do_stable_layer_norm = "layer", True
    config.apply_spec_augment = False
    torch.manual_seed(0)
    Wav2Vec2Model(config).save_pretrained(models / "speech")
    Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(models / "speech")
    speech_encoder = EmotionModel(
        ModelConfig("speech", "classification", None), None, load_speech_encoder(str(models / "speech"))[1]
    ).speech_encoder
    assert not speech_encoder.masked_spec_embed.requires_grad


def test_two_processes_train_all_folds_and_gather_each_test_fold_exactly_once(tmp_path, tiny_models):
    """accelerate launch with 2 CPU processes (gloo): the five folds one after the other in one process group,
    with tensorboard, balanced class weights and tuned thresholds; 66 utterances give uneven test folds of 13
    and 14."""
    import torch
    from accelerate import Accelerator

    from common.data import Collator, KemdyDataset, prepare_inputs
    from common.encoders import audio_spec
    from common.losses import Objective
    from common.model import EmotionModel
    from common.synthetic import generate
    from common.train import evaluate, split_metrics

    corpus, models = tmp_path / "KEMDy20", tmp_path / "models"
    generate("20", corpus, sessions=2, utterances_per_session=33, seed=3)
    speech_model_with_attention_mask(tiny_models, models)
    out = tmp_path / "runs"
    flags = ["--num_fold", "all", "--batch_size", "4", "--keep_checkpoint", "--report_to", "tensorboard"]
    flags += ["--class_weight", "balanced", "--threshold", "tuned"]
    flags += ["--max_seq_len", "5"]  # whole clips: batches padded in more ways, which the two processes must not see
    argv = tiny_command(CELL.name, corpus, models, out, *flags, epochs=1)
    proc = run(launch_two_processes() + argv[1:], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test metrics over folds 1, 2, 3, 4, 5" in proc.stdout
    assert proc.stdout.count("test metrics of epoch") == 5  # only the main process reports and writes

    utts = read_corpus("20", corpus).utterances
    sizes = []
    for k in range(1, 6):
        test, run_dir = make_fold([u.session for u in utts], k).test, out / f"fold{k}"
        lines = (run_dir / "predictions.csv").read_text().splitlines()[1:]
        assert [line.split(",")[0] for line in lines] == [utts[i].segment_id for i in test]  # each once
        metrics = json.loads((run_dir / "metrics.json").read_text())
        sizes.append(metrics["test"]["n"])
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
        config = json.loads((run_dir / "config.json").read_text())
        assert config["environment"]["num_processes"] == 2
        assert set(metrics["thresholds"]) == set(EMOTIONS) and set(config["data"]["class_weights"]) == set(EMOTIONS)
        (kept,) = (run_dir / "checkpoints").iterdir()  # --keep_checkpoint (of one epoch): each process's states
        assert kept.name == "epoch1" == f"epoch{metrics['chosen_epoch']}"
        assert sorted(p.name for p in kept.glob("random_states_*")) == ["random_states_0.pkl", "random_states_1.pkl"]
    assert sorted(set(sizes)) == [13, 14] and sum(sizes) == len(utts)

    # the last fold's gathered metrics are what one process computes from its saved model
    model, tokenizer, extractor = EmotionModel.load(run_dir / "model")
    assert model.config.pass_audio_mask
    args = parse_args(CELL, argv[2:]).settings
    spec = audio_spec(extractor, model.speech_encoder)
    inputs = prepare_inputs(utts, tokenizer, args.max_text_len, args.max_seq_len)
    loader = torch.utils.data.DataLoader(
        KemdyDataset(utts, test, inputs, spec), batch_size=4, collate_fn=Collator(tokenizer, args.max_text_len, spec)
    )
    thresholds, weights = (
        [table[e] for e in EMOTIONS] for table in (metrics["thresholds"], config["data"]["class_weights"])
    )
    objective = Objective(pos_weight=tuple(weights))
    single, _ = split_metrics(evaluate(model, loader, Accelerator(cpu=True), objective), thresholds)
    differ = {
        key: (value, single[key])
        for key, value in metrics["test"].items()
        if isinstance(value, float) and single[key] != pytest.approx(value, rel=1e-5, abs=1e-6)
    }
    assert not differ


def test_two_processes_checkpoint_frozen_encoders_out_and_resume_from_it(corpus20, tiny_models, tmp_path):
    """Under DDP the model is wrapped: the frozen encoders' weights are still left out, and a run continued
    from such a checkpoint ends with the uninterrupted run's numbers."""
    from safetensors import safe_open

    out = tmp_path / "run"
    launch = launch_two_processes()
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


TEXT = Cell("text", "classification")
SPEECH = Cell("speech", "classification")


def text_args(corpus, tiny_models, out, *flags, epochs=3, cell=TEXT):
    return parse_args(
        cell, tiny_command(cell.name, corpus, tiny_models, out, "--num_fold", "2", *flags, epochs=epochs)[2:]
    )


@pytest.fixture(scope="module")
def two_checkpoints(corpus20, tiny_models, tmp_path_factory):
    """(what an uninterrupted 3-epoch text run returns, the same run stopped after epoch 2 holding the
    checkpoints of epochs 1 and 2: as when the chosen epoch is the earlier one)."""
    base = tmp_path_factory.mktemp("checkpoints")
    (done,) = train(text_args(corpus20[0], tiny_models, base / "whole"))
    save = Checkpoints.save

    def keep_both_then_stop(self, epoch, state, outputs):
        save(self, epoch, state, outputs)
        if epoch == 1:
            shutil.copytree(self.path(1), base / "epoch1")
        if epoch == 2:
            if not self.path(1).exists():
                shutil.copytree(base / "epoch1", self.path(1))
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Checkpoints, "save", keep_both_then_stop)
        with pytest.raises(Interrupted, match="after epoch 2"):
            train(text_args(corpus20[0], tiny_models, base / "cut"))
    return done, base / "cut"


def _cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _changed_in_place(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))


DAMAGE = {
    "weights_cut_short": lambda cp: _cut_short(cp / "model.safetensors"),
    "trainer_json_cut_short": lambda cp: _cut_short(cp / "trainer.json"),
    "optimizer_state_emptied": lambda cp: (cp / "optimizer.bin").write_bytes(b""),
    "a_weight_changed_in_place": lambda cp: _changed_in_place(cp / "model.safetensors"),
    "optimizer_emptied_before_checksums": lambda cp: (
        (cp / "checksums.json").unlink(),
        (cp / "optimizer.bin").write_bytes(b""),
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_falls_back_from_a_damaged_checkpoint_to_the_one_before_it(
    two_checkpoints, corpus20, tiny_models, tmp_path, capsys, damage
):
    done, cut = two_checkpoints
    run = Path(shutil.copytree(cut, tmp_path / "run"))
    DAMAGE[damage](run / "checkpoints" / "epoch2")
    (result,) = train(text_args(corpus20[0], tiny_models, run, "--resume"))
    said = capsys.readouterr().out
    assert f"the checkpoint of epoch 2 is damaged ({run / 'checkpoints' / 'epoch2'}: " in said
    assert f"resuming {run} after epoch 1" in said
    assert result == done  # trained again from epoch 1: the uninterrupted run's numbers


def test_a_run_whose_every_checkpoint_is_damaged_must_start_over_in_one_line(
    two_checkpoints, corpus20, tiny_models, tmp_path
):
    run = Path(shutil.copytree(two_checkpoints[1], tmp_path / "run"))
    (run / "checkpoints" / "epoch2" / "trainer.json").write_text("{")
    (run / "checkpoints" / "epoch1" / "optimizer.bin").write_bytes(b"")
    with pytest.raises(UserError) as err:
        train(text_args(corpus20[0], tiny_models, run, "--resume"))
    message = str(err.value)
    assert message.startswith(f"{run / 'checkpoints'}: no whole checkpoint is left (epoch 2: ")
    assert "; epoch 1: " in message and message.endswith("); the run must start over: add --overwrite")
    assert "\n" not in message


def test_a_finished_runs_damaged_files_are_one_line_for_resume_report_and_predict(
    two_checkpoints, corpus20, tiny_models, tmp_path
):
    from common.predict import Predictor
    from common.report import find_fold_sets

    done, cut = two_checkpoints
    run = Path(shutil.copytree(cut.parent / "whole", tmp_path / "runs" / "whole"))
    metrics = run / "metrics.json"
    _cut_short(metrics)
    with pytest.raises(UserError, match=rf"^{metrics}: damaged \(not JSON: .*\); the run's results are lost: tr"):
        train(text_args(corpus20[0], tiny_models, run, "--resume"))
    skipped = []
    assert find_fold_sets(tmp_path / "runs", skipped) == [] and skipped[0].startswith(f"{metrics}: damaged (")
    metrics.write_text(json.dumps(done))
    _cut_short(run / "predictions.csv")
    skipped = []
    assert find_fold_sets(tmp_path / "runs", skipped) == []
    assert len(skipped) == 1 and re.fullmatch(
        rf"{run / 'predictions.csv'}: damaged \((row \d+ of \d+ is cut short|holds \d+ rows, the run tested 24 "
        r"utterances)\); train that fold again with --overwrite",
        skipped[0],
    )
    (run / "model" / "model.json").write_text("{")
    with pytest.raises(UserError, match=rf"^--run_dir {run}: damaged run directory \(.*model.json: damaged \(not JSON"):
        Predictor(run)


def test_a_disk_filling_while_torch_writes_a_checkpoint_is_one_line_and_resume_finishes(
    corpus20, tiny_models, tmp_path, monkeypatch
):
    import torch

    from common import errors

    out = tmp_path / "run"
    real = torch.save

    def onto_a_full_disk(obj, f, *rest, **options):  # /dev/full fails every write with ENOSPC
        target = "/dev/full" if ".epoch2.tmp" in str(f) and str(f).endswith("optimizer.bin") else f
        return real(obj, target, *rest, **options)

    monkeypatch.setattr(torch, "save", onto_a_full_disk)
    monkeypatch.setattr(errors.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**30, 2**30, 0))
    with pytest.raises(UserError) as err:
        train(text_args(corpus20[0], tiny_models, out, "--valid_ratio", "0", epochs=2))
    assert str(err.value) == (
        f"disk full: cannot write the checkpoint of epoch 2 in {out / 'checkpoints'}; free some space; epoch 1's "
        "checkpoint is kept: then continue with --resume"
    )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch1"]  # nothing half-written
    monkeypatch.undo()
    (result,) = train(text_args(corpus20[0], tiny_models, out, "--valid_ratio", "0", "--resume", epochs=2))
    assert result["chosen_epoch"] == 2


def test_a_real_full_disk_during_training_is_one_line_and_resume_finishes(corpus20, tiny_models, tmp_path, monkeypatch):
    """On a 16 MB file system filled up after epoch 1, then again as the model is saved (where this machine lets
    a test mount one)."""
    from common.model import EmotionModel

    small = tmp_path / "small"
    small.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip("this machine does not let a test mount a small file system")
    try:
        out, filler = small / "run", small / "filler"
        flags = ["--valid_ratio", "0"]

        def fill_the_disk():
            filler.write_bytes(b"\0" * (shutil.disk_usage(small).free - 8192))

        save_checkpoint, save_model = Checkpoints.save, EmotionModel.save
        monkeypatch.setattr(
            Checkpoints,
            "save",
            lambda self, epoch, *rest: (save_checkpoint(self, epoch, *rest), epoch == 1 and fill_the_disk()),
        )
        with pytest.raises(UserError, match=rf"^disk full: cannot write .* in {out}.*; free some space"):
            train(text_args(corpus20[0], tiny_models, out, *flags, epochs=2))
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch1"]
        monkeypatch.setattr(Checkpoints, "save", save_checkpoint)
        monkeypatch.setattr(EmotionModel, "save", lambda *a, **k: (fill_the_disk(), save_model(*a, **k)))
        filler.unlink()
        with pytest.raises(UserError) as err:
            train(text_args(corpus20[0], tiny_models, out, *flags, "--resume", epochs=2))
        assert str(err.value) == (
            f"disk full: cannot write the results in {out}; free some space; the checkpoints are kept: then continue "
            "with --resume"
        )
        monkeypatch.undo()
        filler.unlink()
        assert not [p for p in out.rglob("*") if ".tmp" in p.name] and not (out / "model").exists()
        (result,) = train(text_args(corpus20[0], tiny_models, out, *flags, "--resume", epochs=2))
        assert result["chosen_epoch"] == 2 and (out / "model" / "model.json").is_file()
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_a_cache_folder_removed_while_a_run_reads_it_changes_nothing(corpus20, tiny_models, tmp_path, monkeypatch):
    from common import train as training

    flags = ["--num_workers", "2"]  # forked workers read through the same open files
    (expected,) = train(text_args(corpus20[0], tiny_models, tmp_path / "a", *flags, epochs=1, cell=SPEECH))
    cache, prepare = tmp_path / "cache", training._prepare

    def then_removed(*arguments):
        inputs = prepare(*arguments)
        shutil.rmtree(cache)
        return inputs

    monkeypatch.setattr(training, "_prepare", then_removed)
    run = text_args(corpus20[0], tiny_models, tmp_path / "b", *flags, "--cache_dir", str(cache), epochs=1, cell=SPEECH)
    (result,) = train(run)
    assert not cache.exists() and result == expected


def test_an_error_in_a_dataloader_worker_is_its_own_one_line(corpus20, tiny_models, tmp_path, monkeypatch, capsys):
    from common import train as training
    from common.errors import run_cli

    corpus = Path(shutil.copytree(corpus20[0], tmp_path / "KEMDy20"))
    wav = sorted((corpus / "wav").rglob("*.wav"))[50]
    read = training.read_corpus

    def then_emptied(*arguments, **options):  # the file changes after the corpus was listed
        listed = read(*arguments, **options)
        wav.write_bytes(b"")
        return listed

    monkeypatch.setattr(training, "read_corpus", then_emptied)
    run = text_args(corpus, tiny_models, tmp_path / "run", "--no-cache", "--num_workers", "2", epochs=1, cell=SPEECH)
    with pytest.raises(SystemExit) as stop:
        run_cli(lambda: train(run))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {wav}: cannot decode the audio (") and err.count("\n") == 1


def test_ctrl_c_twice_leaves_nothing_half_written_and_says_one_line(corpus20, tiny_models, tmp_path):
    from common.atomic import TEMPORARY

    for gap in (0.0, 0.03):
        out = tmp_path / f"run{gap}"
        cmd = tiny_command("text_classification", corpus20[0], tiny_models, out, "--valid_ratio", "0", epochs=500)
        code, stderr = ctrl_c_at_first_checkpoint(cmd, out, tmp_path, ENV, again_after=[gap])
        assert code == 130 and "Traceback" not in stderr, (gap, stderr[-3000:])
        assert stderr.strip().splitlines()[-1].startswith("interrupted after epoch ")
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or TEMPORARY.match(p.name)]
        assert not (out / LOCK).exists()


def test_ctrl_c_after_the_results_are_complete_lets_the_command_finish(
    corpus20, tiny_models, tmp_path, monkeypatch, capsys
):
    from accelerate import Accelerator

    from common.errors import run_cli

    end = Accelerator.end_training

    def interrupted_there(self):
        signal.raise_signal(signal.SIGINT)  # on this thread: handled before it returns
        end(self)

    monkeypatch.setattr(Accelerator, "end_training", interrupted_there)
    # Ctrl-C as on a terminal: a suite started as a background job (`pytest &`) inherits it ignored
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        (result,) = run_cli(lambda: train(text_args(corpus20[0], tiny_models, tmp_path / "run", epochs=1)))
    finally:
        signal.signal(signal.SIGINT, ignored)
    assert capsys.readouterr().err == "the results are complete; finishing\n"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == result


def test_a_reader_that_goes_away_stops_the_run_without_a_traceback(corpus20, tiny_models, tmp_path):
    """`script.py ... | head -1`: the first write after the reader has gone ends the run quietly."""
    argv = tiny_command("text_classification", corpus20[0], tiny_models, tmp_path / "run", epochs=1)
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait() == 1 and "Traceback" not in err and "BrokenPipe" not in err, err
