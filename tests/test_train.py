"""The training loop's choices take effect: the chosen epoch is the one written, frozen encoders stay frozen,
optimizer flags reach the optimizer, workers change nothing, seeds change everything, bf16 runs,
and an all-folds run killed in the middle of a fold resumes to the uninterrupted numbers."""

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import f1_score

from common.cli import parse_args
from common.errors import UserError
from common.grid import EMOTIONS, Cell
from common.kemdy import read_corpus
from common.model import EmotionModel
from common.predict import Predictor
from common.train import train

from helpers import tiny_command, train_in_process

TEXT = Cell("text", "classification")
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def run(cell, corpus, tiny_models, out, *flags, epochs=1):
    argv = tiny_command(cell.name, corpus, tiny_models, out, *flags, epochs=epochs)[2:]
    (result,) = train(parse_args(cell, argv))
    return result


def table(run_dir: Path) -> list[dict]:
    with (run_dir / "predictions.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_chosen_epoch_before_the_last_is_the_one_whose_weights_predictions_and_metrics_are_written(
    corpus20, tiny_models, tmp_path
):
    out = tmp_path / "run"
    result = run(TEXT, corpus20[0], tiny_models, out, "--lr", "3e-3", "--num_fold", "2", epochs=4)
    losses = [e["valid"]["loss"] for e in result["epochs"]]
    chosen = result["chosen_epoch"]
    assert chosen == 1 + int(np.argmin(losses)) == 3  # not the last of the 4
    assert result["test"] == result["epochs"][chosen - 1]["test"] != result["epochs"][-1]["test"]
    rows = table(out)
    # predictions.csv holds the chosen epoch's outputs: its binary cross-entropy is that epoch's test loss
    probs = np.array([[float(r[f"prob_{e}"]) for e in EMOTIONS] for r in rows])
    labels = np.array([[int(r[f"true_{e}"]) for e in EMOTIONS] for r in rows])
    bce = -(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)).mean()
    assert bce == pytest.approx(result["test"]["loss"], abs=2e-5)
    assert bce != pytest.approx(result["epochs"][-1]["test"]["loss"], abs=1e-3)
    # and model/ holds the chosen epoch's weights: they predict predictions.csv again
    by_id = {u.segment_id: u.text for u in read_corpus("20", corpus20[0]).utterances}
    texts = [by_id[r["segment_id"]] for r in rows]
    again = Predictor(out)(None, texts, batch_size=8)
    np.testing.assert_allclose([[p["probabilities"][e] for e in EMOTIONS] for p in again], probs, atol=2e-6)


@pytest.mark.parametrize("freeze", ["speech", "both"])
def test_frozen_encoders_keep_their_pretrained_weights_in_a_training_run(corpus20, tiny_models, tmp_path, freeze):
    cell = Cell("multimodal", "classification", "concat")
    out = tmp_path / "run"
    result = run(cell, corpus20[0], tiny_models, out, "--freeze", freeze, "--lr", "1e-2")
    model, _, _ = EmotionModel.load(out / "model")
    config = json.loads((out / "config.json").read_text())
    for modality in ("text", "speech"):
        frozen = freeze in (modality, "both")
        before = load_file(str(tiny_models / modality / "model.safetensors"))
        after = getattr(model, f"{modality}_encoder").state_dict()
        same = all(torch.equal(before[k], after[k]) for k in after)
        assert same == frozen, modality
        # a frozen encoder is referred to, not stored again: its source and weights' fingerprint
        stored = out / "model" / modality
        assert (stored / "model.safetensors").is_file() != frozen
        if frozen:
            reference = json.loads((stored / "encoder.json").read_text())
            assert reference["source"] == str((tiny_models / modality).resolve())
            assert config["models"][modality]["frozen"] == reference
        else:
            assert "frozen" not in config["models"][modality]
            with pytest.raises(UserError, match=f"--{modality}_model .*: .*model/{modality} stores its own encoder"):
                EmotionModel.load(out / "model", {modality: str(tiny_models / modality)})
    assert np.isfinite(result["test"]["loss"])


def test_optimizer_flags_reach_the_optimizer_and_the_gradients(corpus20, tiny_models, tmp_path, monkeypatch):
    seen = []
    step = torch.optim.AdamW.step

    def record(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        seen.append(([g["lr"] for g in self.param_groups], [g["weight_decay"] for g in self.param_groups], norm))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    flags = ["--head_lr", "5e-2", "--weight_decay", "0.03", "--max_grad_norm", "0.01", "--warmup_ratio", "0.5"]
    run(TEXT, corpus20[0], tiny_models, tmp_path / "clipped", *flags, "--lr_scheduler", "linear", epochs=2)
    lrs = [s[0] for s in seen]
    steps = len(seen)
    warmup = int(0.5 * steps)
    # linear warm-up from 0 to the full rate, then linear decay; encoders at --lr, new layers at --head_lr
    for k, (encoder_lr, head_lr) in enumerate(lrs):
        factor = k / warmup if k < warmup else (steps - k) / (steps - warmup)
        assert (encoder_lr, head_lr) == pytest.approx((1e-3 * factor, 5e-2 * factor))
    assert all(s[1] == [0.03, 0.03] for s in seen)
    assert max(s[2] for s in seen) <= 0.01 * (1 + 1e-4)  # clipped before every step
    seen.clear()
    run(TEXT, corpus20[0], tiny_models, tmp_path / "plain")
    assert max(s[2] for s in seen) > 0.01  # without --max_grad_norm, gradients far above that bound
    assert all(s[0] == [1e-3, 1e-3] and s[1] == [0.0, 0.0] for s in seen)  # constant --lr for all, no decay


def test_worker_processes_change_no_number(corpus20, tiny_models, tmp_path):
    cell = Cell("multimodal", "total", "concat")
    base = run(cell, corpus20[0], tiny_models, tmp_path / "base")
    workers = run(cell, corpus20[0], tiny_models, tmp_path / "workers", "--num_workers", "2")
    assert workers["epochs"] == base["epochs"]  # the caches read in worker processes


def test_another_seed_gives_other_numbers_and_the_same_seed_the_same(corpus20, tiny_models, tmp_path):
    first = run(TEXT, corpus20[0], tiny_models, tmp_path / "a", "--seed", "1")
    again = run(TEXT, corpus20[0], tiny_models, tmp_path / "b", "--seed", "1")
    other = run(TEXT, corpus20[0], tiny_models, tmp_path / "c", "--seed", "2")
    assert first["epochs"] == again["epochs"]
    assert first["epochs"][0]["train_loss"] != other["epochs"][0]["train_loss"]


def test_bf16_mixed_precision_runs_on_cpu_and_stays_close_to_fp32(corpus20, tiny_models, tmp_path):
    fp32 = run(TEXT, corpus20[0], tiny_models, tmp_path / "fp32")
    cmd = tiny_command("text_classification", corpus20[0], tiny_models, tmp_path / "bf16", "--mixed_precision", "bf16")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=tmp_path)  # a process of its own:
    assert proc.returncode == 0, proc.stderr[-2000:]  # accelerate's state is set once per process
    bf16 = json.loads((tmp_path / "bf16" / "metrics.json").read_text())
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["environment"]["mixed_precision"] == "bf16"
    a, b = fp32["epochs"][0]["train_loss"], bf16["epochs"][0]["train_loss"]
    assert a != b and b == pytest.approx(a, rel=0.05)  # autocast is on, and bf16 keeps the numbers close


def test_an_all_folds_run_killed_inside_a_fold_resumes_to_the_uninterrupted_numbers(corpus20, tiny_models, tmp_path):
    def command(out, *flags):
        return tiny_command("text_total", corpus20[0], tiny_models, out, "--num_fold", "all", *flags, epochs=3)

    code, _, error = train_in_process("text_total", command(tmp_path / "whole")[2:], cwd=tmp_path)
    assert code == 0, error
    out = tmp_path / "killed"
    victim = subprocess.Popen(command(out), cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not any((out / "fold3" / "checkpoints").glob("epoch*")) and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert (out / "fold2" / "metrics.json").is_file() and not (out / "fold3" / "metrics.json").exists()
    code, printed, error = train_in_process("text_total", command(out, "--resume")[2:], cwd=tmp_path)
    assert code == 0, error
    assert "resuming" in printed and f"{out / 'fold1'}: already finished" in printed
    for k in range(1, 6):
        for name in ("metrics.json", "predictions.csv"):
            assert (out / f"fold{k}" / name).read_bytes() == (tmp_path / "whole" / f"fold{k}" / name).read_bytes()


def test_balanced_class_weights_and_tuned_thresholds_reach_the_loss_the_metrics_and_predict(
    corpus20, tiny_models, tmp_path
):
    out = tmp_path / "run"
    result = run(TEXT, corpus20[0], tiny_models, out, "--class_weight", "balanced", "--threshold", "tuned", epochs=2)
    config = json.loads((out / "config.json").read_text())
    # negatives over positives of each emotion, counted by hand over the training part (fold 5's train rows)
    utts = read_corpus("20", corpus20[0]).utterances
    n = len(utts)
    train_part = utts[: int(n * 4 / 5)][: config["data"]["split"]["train"]]
    for i, e in enumerate(EMOTIONS):
        positives = sum(u.labels[i] for u in train_part)
        expected = (len(train_part) - positives) / positives if positives else 1.0
        assert config["data"]["class_weights"][e] == pytest.approx(expected)
    thresholds = result["thresholds"]
    assert thresholds == result["epochs"][result["chosen_epoch"] - 1]["thresholds"]
    rows = table(out)
    probs = np.array([[float(r[f"prob_{e}"]) for e in EMOTIONS] for r in rows])
    labels = np.array([[int(r[f"true_{e}"]) for e in EMOTIONS] for r in rows])
    pred = (probs > np.array([thresholds[e] for e in EMOTIONS])).astype(int)
    assert result["test"]["micro_f1"] == pytest.approx(f1_score(labels, pred, average="micro", zero_division=0))
    again = Predictor(out)(None, [u.text for u in utts if u.segment_id in {r["segment_id"] for r in rows}][:5])
    for p in again:
        assert p["threshold"] == thresholds
        assert p["labels"] == [e for e in EMOTIONS if p["probabilities"][e] > thresholds[e]]


def test_tuned_thresholds_need_a_validation_part(corpus20, tiny_models, tmp_path):
    with pytest.raises(UserError, match=r"^--threshold tuned: needs a validation part to tune on; give --valid_ratio"):
        run(TEXT, corpus20[0], tiny_models, tmp_path / "run", "--threshold", "tuned", "--valid_ratio", "0")
    with pytest.raises(UserError, match=r"^--class_weight balanced: weights the binary cross-entropy; not with"):
        run(TEXT, corpus20[0], tiny_models, tmp_path / "run", "--class_weight", "balanced", "--original")


def _perturbed(folder: Path, modality: str) -> None:
    """The encoder saved in folder/<modality> with one weight changed by 1e-3."""
    from safetensors.torch import save_file

    path = folder / modality / "model.safetensors"
    weights = load_file(str(path))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3
    save_file(weights, str(path), metadata={"format": "pt"})


FROZEN = Cell("multimodal", "total", "concat")


@pytest.fixture
def frozen_interrupted(corpus20, tiny_models, tmp_path, monkeypatch):
    """A frozen, layer-weighted run of 3 epochs on a copy of the tiny encoders, and the same run stopped after
    its epoch 2: (encoders' folder, flags, uninterrupted result, stopped run's directory)."""
    from common.checkpoints import Checkpoints
    from common.errors import Interrupted

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    flags = ["--freeze", "both", "--layers", "weighted", "--lr", "1e-2", "--cache_dir", str(tmp_path / "cache")]
    whole = run(FROZEN, corpus20[0], models, tmp_path / "whole", *flags, epochs=3)
    save = Checkpoints.save

    def stop_after_epoch_2(self, epoch, state, outputs):
        save(self, epoch, state, outputs)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoints, "save", stop_after_epoch_2)
    cut = tmp_path / "cut"
    with pytest.raises(Interrupted, match="after epoch 2"):
        run(FROZEN, corpus20[0], models, cut, *flags, epochs=3)
    monkeypatch.undo()
    return models, flags, whole, cut


def test_a_frozen_runs_checkpoint_holds_only_what_trains_and_a_damaged_one_is_refused(
    frozen_interrupted, corpus20, tmp_path
):
    from safetensors import safe_open
    from safetensors.torch import save_file

    models, flags, _, cut = frozen_interrupted
    with safe_open(str(cut / "checkpoints" / "epoch2" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    heads = {f"{h}.{p}" for h in ("emotion_head", "va_head") for p in ("weight", "bias")}
    assert keys == heads | {"text_layer_weights", "speech_layer_weights", "va_mean", "va_std"}
    # a checkpoint missing a weight that trains is refused, not loaded in part
    damaged = tmp_path / "damaged"
    shutil.copytree(cut, damaged)
    weights = load_file(str(damaged / "checkpoints" / "epoch2" / "model.safetensors"))
    del weights["va_head.bias"]
    save_file(weights, str(damaged / "checkpoints" / "epoch2" / "model.safetensors"))
    ends = r"\); the run must start over: add --overwrite$"
    with pytest.raises(UserError, match=r"no whole checkpoint is left \(epoch 2: .*epoch2: model\.safetensors: \d+ "):
        run(FROZEN, corpus20[0], models, damaged, *flags, "--resume", epochs=3)  # its checksum first
    (damaged / "checkpoints" / "epoch2" / "checksums.json").unlink()  # as one from before checksums were kept
    with pytest.raises(UserError, match=r"\(epoch 2: .*model\.safetensors: lacks va_head\.bias" + ends):
        run(FROZEN, corpus20[0], models, damaged, *flags, "--resume", epochs=3)
    (damaged / "checkpoints" / "epoch2" / "model.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(UserError, match=r"\(epoch 2: .*model\.safetensors: unreadable \(.*\)" + ends):
        run(FROZEN, corpus20[0], models, damaged, *flags, "--resume", epochs=3)


def test_a_frozen_run_resumes_exactly_on_the_same_encoders_and_its_model_refers_to_them(
    frozen_interrupted, corpus20, tiny_models, tmp_path, capsys
):
    from common.predict import main as predict

    models, flags, whole, cut = frozen_interrupted
    # resuming takes the frozen encoders from their source again: only if it holds the same weights
    _perturbed(models, "speech")
    with pytest.raises(UserError, match="the frozen speech encoder .* holds other weights than when this run started"):
        run(FROZEN, corpus20[0], models, cut, *flags, "--resume", epochs=3)
    shutil.copy(tiny_models / "speech" / "model.safetensors", models / "speech" / "model.safetensors")
    resumed = run(FROZEN, corpus20[0], models, cut, *flags, "--resume", epochs=3)
    assert resumed["epochs"] == whole["epochs"] and resumed["layer_weights"] == whole["layer_weights"]

    # model/ stores the trained layers and refers to the encoders: it predicts predictions.csv again
    assert not list((cut / "model").rglob("model.safetensors"))
    rows = table(cut)
    by_id = {u.segment_id: u for u in read_corpus("20", corpus20[0]).utterances}
    wavs, texts = [str(by_id[r["segment_id"]].wav) for r in rows], [by_id[r["segment_id"]].text for r in rows]
    again = Predictor(cut)(wavs, texts)
    probs = [[float(r[f"prob_{e}"]) for e in EMOTIONS] for r in rows]
    np.testing.assert_allclose([[p["probabilities"][e] for e in EMOTIONS] for p in again], probs, atol=1e-5)
    shutil.copytree(models / "text", tmp_path / "elsewhere")
    _perturbed(models, "text")
    with pytest.raises(UserError, match=r"model/text: .*models/text does not hold the frozen encoder this model"):
        Predictor(cut)
    shutil.rmtree(models / "text")
    with pytest.raises(UserError, match="model/text: the frozen encoder is not stored here but read from .*/text"):
        Predictor(cut)
    # an encoder that moved is given to common.predict, which checks its weights
    capsys.readouterr()  # what training printed
    predict(["--run_dir", str(cut), "--wav", wavs[0], "--text", texts[0], "--text_model", str(tmp_path / "elsewhere")])
    printed = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose([printed["probabilities"][e] for e in EMOTIONS], probs[0], atol=1e-5)


def test_seeds_run_one_after_the_other_each_into_its_own_folder(corpus20, tiny_models, tmp_path):
    out = tmp_path / "runs" / "KEMDy20"
    flags = ("--seeds", "3,1", "--num_fold", "2")
    cmd = tiny_command("text_classification", corpus20[0], tiny_models, out, *flags, epochs=1)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = {}
    for seed in (3, 1):
        run_dir = tmp_path / "runs" / f"KEMDy20_seed{seed}"
        config = json.loads((run_dir / "config.json").read_text())
        found[seed] = json.loads((run_dir / "metrics.json").read_text())["epochs"][0]["train_loss"]
        assert (config["args"]["seed"], config["args"]["seeds"], config["args"]["num_fold"]) == (seed, None, 2)
    assert found[3] != found[1] and not out.exists()
    single = run(TEXT, corpus20[0], tiny_models, tmp_path / "single", "--seed", "1", "--num_fold", "2")
    assert single["epochs"][0]["train_loss"] == found[1]  # a seed of --seeds is that seed's run
