"""No run destroys or mixes another's results: what --overwrite may remove, single folds beside fold sets,
settings and corpus checks, the lock, the divergence stop, a full disk, Ctrl-C and the run's footprint."""

import errno
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common import checkpoints, rundir
from common.cli import parse_args
from common.errors import UserError, writing
from common.grid import Cell
from common.model import EmotionModel
from common.report import find_fold_sets, tables
from common.rundir import LOCK, MARKER, RunLock
from common.train import train

from helpers import ctrl_c_at_first_checkpoint, everything, tiny_command, train_in_process

ROOT = Path(__file__).resolve().parents[1]
TEXT = Cell("text", "classification")
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def args(corpus, tiny_models, out, *flags, epochs=1):
    return parse_args(TEXT, tiny_command("text_classification", corpus, tiny_models, out, *flags, epochs=epochs)[2:])


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fold_set(corpus20, tiny_models, tmp_path_factory):
    """A finished --num_fold all set of text_classification (1 epoch)."""
    out = tmp_path_factory.mktemp("set") / "text"
    train(args(corpus20[0], tiny_models, out, "--num_fold", "all"))
    return out


@pytest.fixture
def a_set(fold_set, tmp_path):
    return Path(shutil.copytree(fold_set, tmp_path / "text"))


def test_the_demo_never_empties_a_folder_of_other_files(corpus20, tiny_models, tmp_path):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "a.txt").write_text("mine")
    (out / "sub" / "b.txt").write_text("mine too")
    before = listing(out)
    demo = parse_args(TEXT, ["--demo", "--dataset_dir", str(corpus20[0]), "--output_dir", str(out)])
    assert demo.settings.overwrite  # the demo replaces its own previous run
    demo = demo.but(demo=False, text_model=str(tiny_models / "text"))  # this corpus and encoder, not demo/'s
    with pytest.raises(UserError, match=r"holds files that are not a run's \(a.txt, sub\); give a new or empty"):
        train(demo)
    assert listing(out) == before and sorted(p.name for p in out.iterdir()) == ["a.txt", "sub"]


def test_overwrite_into_the_current_folder_of_a_checkout_is_refused_and_removes_nothing(
    corpus20, tiny_models, tmp_path
):
    checkout = tmp_path / "checkout"
    (checkout / "common").mkdir(parents=True)
    (checkout / "README.md").write_text("# a project")
    (checkout / "common" / "x.py").write_text("x = 1\n")
    before = listing(checkout)
    argv = tiny_command("text_classification", corpus20[0], tiny_models, ".", "--overwrite", "--num_fold", "1")[2:]
    code, _, error = train_in_process("text_classification", argv, cwd=checkout)
    assert code == 2 and error == (
        "error: --output_dir .: holds files that are not a run's (README.md, common); give a new or empty folder"
    )
    assert listing(checkout) == before and sorted(p.name for p in checkout.iterdir()) == ["README.md", "common"]


def test_overwrite_replaces_only_what_the_run_wrote(corpus20, tiny_models, tmp_path):
    out = tmp_path / "run"
    train(args(corpus20[0], tiny_models, out))
    (out / "notes.md").write_text("mine")
    (out / "model" / "extra.txt").write_text("inside a run's own folder: replaced with it")
    train(args(corpus20[0], tiny_models, out, "--overwrite", "--no-save_model"))
    assert (out / "notes.md").read_text() == "mine" and not (out / "model").exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "confusion.csv",
        "kemdy_run.json",
        "metrics.json",
        "notes.md",
        "predictions.csv",
    ]


def test_a_single_fold_aimed_at_a_fold_set_goes_to_its_fold_and_spares_the_others(a_set, corpus20, tiny_models, capsys):
    others = {k: listing(a_set / f"fold{k}") for k in (1, 2, 4, 5)}
    assert (a_set / "summary.json").is_file()
    with pytest.raises(UserError, match=rf"^{a_set / 'fold3'}: holds a finished run \(metrics.json\)"):
        train(args(corpus20[0], tiny_models, a_set, "--num_fold", "3"))
    assert f"fold 3 goes to {a_set / 'fold3'}" in capsys.readouterr().out
    train(args(corpus20[0], tiny_models, a_set, "--num_fold", "3", "--overwrite"))
    assert {k: listing(a_set / f"fold{k}") for k in (1, 2, 4, 5)} == others
    assert not (a_set / "summary.json").exists()  # no longer the summary of these five folds
    with pytest.raises(UserError, match=r"fold3: holds a single fold's run; give --num_fold all a folder of its own"):
        train(args(corpus20[0], tiny_models, a_set / "fold3", "--num_fold", "all"))
    # A fold with other settings never joins the set.
    before = everything(a_set)
    with pytest.raises(
        UserError,
        match=r"text/kemdy_fold_set.json: the set's other folds \(fold1, fold2, fold4, fold5\) were run with other "
        r"settings \(--lr 0.001 -> 0.002\); a fold joins its set with the same flags",
    ):
        train(args(corpus20[0], tiny_models, a_set, "--num_fold", "3", "--overwrite", "--lr", "2e-3"))
    assert everything(a_set) == before
    # Where an earlier version let one in, the report does not count the five as one set.
    owner = rundir.read_run(a_set / "fold3")
    rundir.replace(owner, settings=owner.settings | {"lr": 2e-3}).write()
    sets = [fs for fs in find_fold_sets(a_set.parent) if fs.script == "text_classification"]
    assert sorted(fs.folds for fs in sets) == [[1, 2, 4, 5], [3]] and not any(fs.complete for fs in sets)
    md, _ = tables(sets)
    assert "4/5 (missing 3) (settings differ in this folder: --lr 0.002 -> 0.001)" in md
    assert "1/5 (missing 1, 2, 4, 5) (settings differ in this folder: --lr 0.001 -> 0.002)" in md


def test_resuming_a_fold_set_with_other_settings_is_refused_before_any_training(a_set, corpus20, tiny_models):
    (a_set / "fold5" / "metrics.json").unlink()  # an unfinished fold
    before = listing(a_set)
    with pytest.raises(
        UserError, match=r"fold1/kemdy_run.json: --resume with other settings .* \(--lr 0.001 -> 0.002\)"
    ):
        train(args(corpus20[0], tiny_models, a_set, "--num_fold", "all", "--resume", "--lr", "2e-3"))
    assert listing(a_set) == before


def test_the_summary_of_a_fold_set_is_the_mean_and_sample_std_of_its_folds(fold_set):
    summary = json.loads((fold_set / "summary.json").read_text())
    folds = [json.loads((fold_set / f"fold{k}" / "metrics.json").read_text())["test"] for k in range(1, 6)]
    micro = [m["micro_f1"] for m in folds]
    assert summary["folds"] == [1, 2, 3, 4, 5] and summary["settings"]["lr"] == 1e-3
    assert summary["test"]["micro_f1"]["mean"] == pytest.approx(statistics.fmean(micro))
    assert summary["test"]["micro_f1"]["std"] == pytest.approx(statistics.stdev(micro))
    assert "micro_f1" in (fold_set / "summary.md").read_text()


def test_resuming_on_a_changed_corpus_is_refused(corpus20, tiny_models, tmp_path):
    corpus = Path(shutil.copytree(corpus20[0], tmp_path / "KEMDy20"))
    out = tmp_path / "run"
    train(args(corpus, tiny_models, out))
    assert len(json.loads((out / "config.json").read_text())["data"]["fingerprint"]) == 20
    txt = next((corpus / "wav").rglob("*.txt"))
    txt.write_text("완전히 다른 문장", encoding="utf-8")
    with pytest.raises(UserError, match=r"kemdy_run.json: the corpus under --dataset_dir .* is not the one this run"):
        train(args(corpus, tiny_models, out, "--resume"))


def test_a_run_directory_in_use_is_refused_and_a_dead_runs_lock_taken_over(corpus20, tiny_models, tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from common.rundir import RunLock; RunLock({str(out)!r}).acquire(); "
            "print('locked', flush=True); import time; time.sleep(120)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match=rf"{out}: in use by another run \(process {holder.pid} on .*, started"):
        train(args(corpus20[0], tiny_models, out))
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (out / LOCK).is_file()  # a killed run cannot clean up
    train(args(corpus20[0], tiny_models, out))
    assert f"took over the lock of a run that is no longer running (process {holder.pid}" in capsys.readouterr().out
    assert (out / "metrics.json").is_file() and not (out / LOCK).exists()


def test_a_lock_is_released_by_a_refused_run_and_leaves_no_folder_behind(tmp_path):
    lock = RunLock(tmp_path / "new").acquire()
    with pytest.raises(UserError, match="in use by another run"):
        RunLock(tmp_path / "new").acquire()
    lock.release()
    assert not (tmp_path / "new").exists()


def test_a_diverging_run_stops_at_the_first_non_finite_loss_and_keeps_the_last_good_epoch(
    corpus20, tiny_models, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    forward = EmotionModel.forward

    def overflowing(self, batch):  # from epoch 2 on, as an fp16 overflow would
        outputs = forward(self, batch)
        if (out / "checkpoints" / "epoch1").is_dir():
            outputs = {k: v * float("nan") for k, v in outputs.items()}
        return outputs

    monkeypatch.setattr(EmotionModel, "forward", overflowing)
    with pytest.raises(UserError) as err:
        train(args(corpus20[0], tiny_models, out, epochs=3))
    assert str(err.value) == (
        "training diverged: the training loss is nan at epoch 2, step 1; lower --lr (now 0.001) or set "
        "--max_grad_norm. The run directory keeps the checkpoint of epoch 1; start over with --overwrite"
    )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch1"]
    assert not (out / "metrics.json").exists() and not (out / "predictions.csv").exists()
    assert not (out / LOCK).exists()


def test_a_huge_learning_rate_stops_with_one_line(corpus20, tiny_models, tmp_path):
    argv = tiny_command("text_regression", corpus20[0], tiny_models, tmp_path / "run", "--lr", "1e30")[2:]
    code, _, last = train_in_process("text_regression", argv, cwd=tmp_path)
    assert code == 2
    assert last.startswith("error: training diverged: the training loss is ") and "at epoch 1, step " in last
    assert last.endswith(
        "lower --lr (now 1e+30) or set --max_grad_norm. The run directory holds no finished epoch; "
        "start over with --overwrite"
    )
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(corpus20, tiny_models, tmp_path, monkeypatch):
    out = tmp_path / "run"
    savez = np.savez

    def full_at_epoch_2(path, **arrays):
        if ".epoch2.tmp" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return savez(path, **arrays)

    monkeypatch.setattr(checkpoints.np, "savez", full_at_epoch_2)
    with pytest.raises(UserError) as err:
        train(args(corpus20[0], tiny_models, out, "--valid_ratio", "0", epochs=2))
    assert str(err.value) == (
        f"disk full: cannot write the checkpoint of epoch 2 in {out / 'checkpoints'}; free some space; epoch 1's "
        "checkpoint is kept: then continue with --resume"
    )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch1"]  # no half-written epoch 2
    monkeypatch.undo()
    (result,) = train(args(corpus20[0], tiny_models, out, "--valid_ratio", "0", "--resume", epochs=2))
    assert result["chosen_epoch"] == 2 and (out / "metrics.json").is_file()


def test_an_unwritable_folder_is_one_line():
    with pytest.raises(UserError, match=r"^cannot write the tokens cache in /ro \(Read-only file system\)$"):
        with writing("the tokens cache", "/ro"):
            raise OSError(errno.EROFS, "Read-only file system")


def test_a_cache_folder_under_a_file_is_one_line(corpus20, tiny_models, tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(
        UserError, match=r"^cannot write the recordings' digests in .*afile/cache \(Not a directory\); or give"
    ):
        train(args(corpus20[0], tiny_models, tmp_path / "run", "--cache_dir", str(tmp_path / "afile" / "cache")))


def test_ctrl_c_says_after_which_epoch_and_resume_continues(corpus20, tiny_models, tmp_path):
    out = tmp_path / "run"
    cmd = tiny_command("text_classification", corpus20[0], tiny_models, out, "--valid_ratio", "0", epochs=500)
    code, stderr = ctrl_c_at_first_checkpoint(cmd, out, tmp_path, ENV)
    assert code == 130 and "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted after epoch ") and last.endswith(f"({out}); continue with --resume")
    assert not (out / LOCK).exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "-1"], "--seed -1: must be in 0 .. 2**32 - 1"),
        (["--max_seq_len", "inf"], "--max_seq_len inf: must be a finite number"),
        (["--lr", "inf"], "--lr inf: must be a finite number"),
        (["--dropout", "nan"], "--dropout nan: must be a finite number"),
    ],
)
def test_impossible_numbers_are_refused_before_anything_runs(corpus20, tiny_models, tmp_path, flags, message):
    with pytest.raises(UserError, match=rf"^{message}$".replace("*", r"\*").replace(".", r"\.")):
        args(corpus20[0], tiny_models, tmp_path / "run", *flags)
    assert not (tmp_path / "run").exists()


def test_models_that_cannot_serve_are_one_line(corpus20, tiny_models, tmp_path):
    speech, text = str(tiny_models / "speech"), str(tiny_models / "text")
    cases = [
        (["--text_model", speech], rf"--text_model {speech}: not a text encoder \(Wav2Vec2Model reads input_values\)"),
        (["--max_text_len", "1000"], rf"--max_text_len 1000: {text} reads at most 512 tokens"),
    ]
    pointer, truncated = tmp_path / "pointer", tmp_path / "truncated"
    shutil.copytree(text, pointer)
    (pointer / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    shutil.copytree(text, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases += [
        (
            ["--text_model", str(pointer)],
            r"model.safetensors is a Git LFS pointer, not the weights: run `git lfs pull`",
        ),
        (["--text_model", str(truncated)], r"cannot load from this folder \(damaged or truncated weights: "),
    ]
    for flags, message in cases:
        with pytest.raises(UserError, match=message):
            train(args(corpus20[0], tiny_models, tmp_path / "run", *flags))
    mm = Cell("multimodal", "classification", "concat")
    argv = tiny_command("multimodal_classification_concat", corpus20[0], tiny_models, tmp_path / "mm")[2:]
    argv[argv.index("--speech_model") + 1] = text
    with pytest.raises(UserError, match=rf"--speech_model {text}: not a speech encoder \(BertModel reads input_ids\)"):
        train(parse_args(mm, argv))


def test_a_corpus_too_small_for_five_folds_is_one_line(tmp_path, tiny_models):
    from common.synthetic import generate

    generate("20", tmp_path / "KEMDy20", sessions=1, utterances_per_session=4, seed=1)
    with pytest.raises(UserError, match=r"has 4 usable utterances: too few for 5 folds \(fold 1 would test on none\)"):
        train(args(tmp_path / "KEMDy20", tiny_models, tmp_path / "run", "--num_fold", "1"))


def test_a_truncated_cache_file_is_detected_and_rebuilt(corpus20, tmp_path):
    from common.data import Pcm16Audio, prepare_inputs
    from common.kemdy import read_corpus

    utts = read_corpus("20", corpus20[0]).utterances
    cache, said = tmp_path / "cache", []
    prepare_inputs(utts, max_seconds=1.0, cache_dir=cache, log=said.append)
    (folder,) = cache.glob("audio-*")
    data = folder / "data.bin"
    data.write_bytes(data.read_bytes()[:1000])
    said.clear()
    inputs = prepare_inputs(utts, max_seconds=1.0, cache_dir=cache, log=said.append)
    assert said[0].startswith(f"{folder}: damaged (data.bin: 1000 bytes, built with ")
    assert said[0].endswith("; building it again") and "built" in said[1]
    for i in (0, len(utts) - 1):
        np.testing.assert_array_equal(inputs.audio[i], Pcm16Audio([utts[i].wav], 1.0)[0])


def test_predict_on_a_damaged_run_directory_is_one_line(corpus20, tiny_models, tmp_path):
    from common.predict import Predictor

    out = tmp_path / "run"
    train(args(corpus20[0], tiny_models, out))
    layers = out / "model" / "layers.safetensors"
    layers.write_bytes(layers.read_bytes()[:20])
    with pytest.raises(UserError, match=rf"^--run_dir {out}: damaged run directory \(.*\); train the run again$"):
        Predictor(out)
    (out / "config.json").write_text("{not json")
    with pytest.raises(UserError, match=r"damaged run directory \(.*config.json: damaged \(not JSON: Expecting"):
        Predictor(out)


def test_report_out_on_a_file_is_one_line(fold_set, tmp_path):
    from common.report import main

    (tmp_path / "afile").write_text("")
    with pytest.raises(UserError, match=rf"^--out {tmp_path / 'afile'}: is a file; give a folder for the report$"):
        main([str(fold_set), "--out", str(tmp_path / "afile"), "--no-figures"])


def test_a_summary_file_the_project_did_not_write_is_kept_when_a_fold_is_retrained(a_set, corpus20, tiny_models):
    for name in ("summary.json", "summary.md"):  # the user's own files, beside the set's folds
        (a_set / name).unlink()
        owner = rundir.read_set(a_set)
        rundir.replace(owner, entries=[n for n in owner.entries if n != name]).write()
    (a_set / "summary.json").write_text('{"my": "own notes"}')
    (a_set / "summary.md").write_text("# my own summary\n")
    train(args(corpus20[0], tiny_models, a_set, "--num_fold", "2", "--overwrite"))
    assert (a_set / "summary.json").read_text() == '{"my": "own notes"}'
    assert (a_set / "summary.md").read_text() == "# my own summary\n"
    before = listing(a_set)
    with pytest.raises(UserError, match=r"text: holds summary.json, summary.md, not written by this project; --num"):
        train(args(corpus20[0], tiny_models, a_set, "--num_fold", "all", "--resume"))
    assert listing(a_set) == before


def _hugging_face_model(folder: Path, tiny_models: Path) -> None:
    shutil.copytree(tiny_models / "text", folder)  # config.json, model.safetensors, the tokenizer's files


def _lightning_output(folder: Path, tiny_models: Path) -> None:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "epoch=0-step=10.ckpt").write_bytes(b"lightning weights")
    (folder / "hparams.yaml").write_text("lr: 0.001\n")
    (folder / "metrics.json").write_text('{"val_loss": 0.3}')


def _own_model_and_predictions(folder: Path, tiny_models: Path) -> None:
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "weights.bin").write_bytes(b"my model")
    (folder / "predictions.csv").write_text("id,prob\n1,0.5\n")


def _another_tools_lock(folder: Path, tiny_models: Path) -> None:
    folder.mkdir(parents=True)
    (folder / ".lock").write_text("held by another tool")
    (folder / "job.log").write_text("step 1\n")


FOREIGN = {
    "hugging_face_model": _hugging_face_model,
    "lightning_output": _lightning_output,
    "own_model_and_predictions": _own_model_and_predictions,
    "another_tools_lock": _another_tools_lock,
}


@pytest.mark.parametrize("flags", [["--overwrite"], ["--resume"], []], ids=["overwrite", "resume", "plain"])
@pytest.mark.parametrize("kind", list(FOREIGN))
def test_a_folder_without_the_marker_is_refused_and_untouched_whatever_its_names_and_flags(
    corpus20, tiny_models, tmp_path, kind, flags
):
    out = tmp_path / "theirs"
    FOREIGN[kind](out, tiny_models)
    before = everything(out)
    with pytest.raises(UserError, match=rf"^--output_dir {out}: holds files that are not a run's \(.*; give a new or"):
        train(args(corpus20[0], tiny_models, out, *flags))
    assert everything(out) == before


def test_all_folds_into_a_folder_with_the_users_own_summary_are_refused_and_untouched(corpus20, tiny_models, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "summary.md").write_text("# what I found\n")
    (out / "summary.json").write_text('{"folds": "mine"}')
    before = everything(out)
    with pytest.raises(
        UserError,
        match=r"holds files that are not a fold set's \(summary.json, summary.md; no kemdy_fold_set.json, so another",
    ):
        train(args(corpus20[0], tiny_models, out, "--num_fold", "all", "--overwrite"))
    assert everything(out) == before


def test_a_lock_file_the_project_did_not_create_is_never_removed(corpus20, tiny_models, tmp_path):
    out = tmp_path / "run"
    train(args(corpus20[0], tiny_models, out))
    (out / ".lock").write_text("another tool's lock")
    train(args(corpus20[0], tiny_models, out, "--overwrite"))
    assert (out / ".lock").read_text() == "another tool's lock" and not (out / LOCK).exists()


def test_the_demo_replaces_its_own_runs_only(corpus20, tiny_models, tmp_path, monkeypatch):
    import common.synthetic

    monkeypatch.setattr(common.synthetic, "demo_models", lambda: tiny_models)
    real = tmp_path / "real"
    train(args(corpus20[0], tiny_models, real))
    before = everything(real)
    demo = ["--demo", "--dataset", "20", "--dataset_dir", str(corpus20[0]), "--epochs", "1", "--output_dir"]
    with pytest.raises(UserError, match=r"real: holds a run that is not a demo's \(text_classification\); --demo"):
        train(parse_args(TEXT, [*demo, str(real)]))
    assert everything(real) == before
    train(parse_args(TEXT, [*demo, str(tmp_path / "demo")]))
    train(parse_args(TEXT, [*demo, str(tmp_path / "demo")]))  # the next demo replaces it
    assert json.loads((tmp_path / "demo" / MARKER).read_text())["demo"] is True


def test_resume_with_another_script_is_refused_naming_both(a_set, corpus20, tiny_models):
    regression = Cell("text", "regression")
    (a_set / "fold5" / "metrics.json").unlink()  # one unfinished fold among finished ones
    before = everything(a_set)
    for target, fold in ((a_set / "fold1", "1"), (a_set / "fold5", "5"), (a_set, "all")):
        argv = tiny_command("text_regression", corpus20[0], tiny_models, target, "--resume", "--num_fold", fold)
        with pytest.raises(
            UserError,
            match=r"fold\d: holds a run of text_classification.py; --resume continues a run with the cell that "
            r"started it: run text_classification.py, or give text_regression.py another --output_dir$",
        ):
            train(parse_args(regression, argv[2:]))
    assert everything(a_set) == before


def test_the_marker_comes_first_and_lists_every_entry_before_it_is_written(
    corpus20, tiny_models, tmp_path, monkeypatch
):
    from common import atomic

    out = tmp_path / "run"
    first, written = [], []
    write_marker, write_bytes, build = rundir.Owner.write, atomic.write_bytes, atomic.build_folder

    def marker(self):
        if self.kind == "run" and not self.marker.exists():
            first.append(sorted(p.name for p in self.folder.iterdir()))
        write_marker(self)

    def listed(path):
        path = Path(path)
        if path.parent == out and path.name != MARKER:
            written.append((path.name, path.name in json.loads((out / MARKER).read_text())["entries"]))

    monkeypatch.setattr(rundir.Owner, "write", marker)
    monkeypatch.setattr(atomic, "write_bytes", lambda path, data: (listed(path), write_bytes(path, data))[1])
    monkeypatch.setattr(atomic, "build_folder", lambda path, b: (listed(path), build(path, b))[1])
    train(args(corpus20[0], tiny_models, out, "--keep_checkpoint", "--report_to", "tensorboard", epochs=2))
    assert first == [[LOCK]]  # nothing but the lock is there when the marker is written
    names = {"config.json", "checkpoints", "tensorboard", "predictions.csv", "confusion.csv", "model", "metrics.json"}
    assert {name for name, _ in written} == names - {"checkpoints", "tensorboard"}
    assert all(was_listed for _, was_listed in written)
    marker = json.loads((out / MARKER).read_text())
    assert set(marker["entries"]) == names == {p.name for p in out.iterdir()} - {MARKER}
    assert (marker["kind"], marker["script"], marker["demo"], marker["settings"]["lr"]) == (
        "run",
        "text_classification",
        False,
        1e-3,
    )
    assert marker["cell"] == {"modality": "text", "task": "classification", "fusion": None}
    config = json.loads((out / "config.json").read_text())
    assert marker["corpus"] == {"listing": config["data"]["fingerprint"], "recordings": config["data"]["recordings"]}


def test_a_damaged_or_edited_marker_is_refused_and_nothing_is_removed(corpus20, tiny_models, tmp_path):
    out = tmp_path / "run"
    train(args(corpus20[0], tiny_models, out))
    (tmp_path / "outside.txt").write_text("not the run's")
    marker = json.loads((out / MARKER).read_text())
    for text, problem in (
        ("{not json", r"not JSON: Expecting property name"),
        (json.dumps(marker | {"entries": [*marker["entries"], "../outside.txt"]}), r'entries\[6\]: "../outside.txt", '),
    ):
        (out / MARKER).write_text(text)
        before = everything(tmp_path)
        with pytest.raises(UserError, match=rf"kemdy_run.json: damaged \(.*{problem}.*\); nothing in .* is touched"):
            train(args(corpus20[0], tiny_models, out, "--overwrite"))
        assert everything(tmp_path) == before


def legacy(run: Path) -> None:
    """`run` as main wrote run directories before markers existed: no marker, no recordings fingerprint in
    config.json, no checksums in its checkpoints."""
    (run / MARKER).unlink()
    config = json.loads((run / "config.json").read_text())
    config["data"].pop("recordings", None)
    (run / "config.json").write_text(json.dumps(config))
    for sums in run.glob("checkpoints/*/checksums.json"):
        sums.unlink()


def test_a_run_written_before_markers_is_refused_until_adopted_then_continued_and_replaced(
    corpus20, tiny_models, tmp_path, capsys
):
    from common.report import find_fold_sets

    out = tmp_path / "runs" / "old"
    (done,) = train(args(corpus20[0], tiny_models, out, "--keep_checkpoint", epochs=2))
    legacy(out)
    for name in ("metrics.json", "predictions.csv", "confusion.csv"):  # killed after its last checkpoint
        (out / name).unlink()
    shutil.rmtree(out / "model")
    (out / "notes.md").write_text("mine")
    (out / ".lock").write_text("left by a killed run of an earlier version")
    before = everything(out)
    for flags in ([], ["--resume"], ["--overwrite"]):  # its config.json's keys make no folder the project's
        with pytest.raises(
            UserError,
            match=r"old: holds files that are not a run's \(\.lock, checkpoints, config.json, notes.md; no kemdy_run"
            rf".json, so another tool's, whatever the names\); give a new or empty folder \(a run or fold set of "
            rf"this project from before markers: python -m common.rundir adopt {out}\)$",
        ):
            train(args(corpus20[0], tiny_models, out, *flags, epochs=2))
        assert everything(out) == before
    rundir.main(["adopt", str(out), "--dry_run"])
    assert everything(out) == before
    rundir.main(["adopt", str(out)])
    shown = "as a run, config.json, checkpoints; leaves alone .lock, notes.md"
    assert capsys.readouterr().out.splitlines()[-2:] == [f"{out}: would own, {shown}", f"{out}: owns, {shown}"]
    marker = json.loads((out / MARKER).read_text())
    assert (marker["format"], marker["fold"], marker["entries"]) == (2, 5, ["config.json", "checkpoints"])
    assert marker["corpus"]["recordings"] is None and marker["settings"]["lr"] == 1e-3
    assert {n: b for n, b in everything(out).items() if n != MARKER} == before  # the marker is all it wrote
    with pytest.raises(UserError, match=rf"^{out}: already holds kemdy_run.json; nothing to adopt$"):
        rundir.main(["adopt", str(out)])
    (resumed,) = train(args(corpus20[0], tiny_models, out, "--resume", epochs=2))
    assert resumed == done  # from the checkpoint it left
    (fs,) = find_fold_sets(tmp_path / "runs")
    assert fs.folds == [5] and fs.settings["lr"] == 1e-3
    train(args(corpus20[0], tiny_models, out, "--overwrite", "--no-save_model", epochs=1))
    assert (out / "notes.md").read_text() == "mine" and (out / ".lock").is_file() and not (out / "model").exists()


def test_resuming_after_a_recording_changed_in_place_is_refused(corpus20, tiny_models, tmp_path):
    corpus = Path(shutil.copytree(corpus20[0], tmp_path / "KEMDy20"))
    out = tmp_path / "run"
    train(args(corpus, tiny_models, out, "--keep_checkpoint"))
    (out / "metrics.json").unlink()
    wav = sorted((corpus / "wav").rglob("*.wav"))[7]
    stat, data = wav.stat(), bytearray(wav.read_bytes())
    data[-2] ^= 0x40  # one sample: same name, same size
    wav.write_bytes(bytes(data))
    os.utime(wav, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the time it had
    with pytest.raises(UserError, match=r"the corpus under --dataset_dir .* is not the one this run started on \(its"):
        train(args(corpus, tiny_models, out, "--resume"))


def test_a_fold_set_written_before_markers_is_adopted_and_reported_again_with_resume(a_set, corpus20, tiny_models):
    for k in range(1, 6):
        legacy(a_set / f"fold{k}")
    (a_set / "kemdy_fold_set.json").unlink()
    summary = json.loads((a_set / "summary.json").read_text())
    before = everything(a_set)
    with pytest.raises(UserError, match=rf"not a fold set's \(fold1, .*python -m common.rundir adopt {a_set}\)$"):
        train(args(corpus20[0], tiny_models, a_set, "--num_fold", "all", "--resume"))
    assert everything(a_set) == before
    rundir.main(["adopt", str(a_set)])
    folds = [json.loads((a_set / f"fold{k}" / MARKER).read_text()) for k in range(1, 6)]
    assert [m["fold"] for m in folds] == [1, 2, 3, 4, 5]
    results = train(args(corpus20[0], tiny_models, a_set, "--num_fold", "all", "--resume"))
    assert [r["fold"] for r in results] == [1, 2, 3, 4, 5]
    assert json.loads((a_set / "summary.json").read_text()) == summary  # the same five folds
    marker = json.loads((a_set / "kemdy_fold_set.json").read_text())
    assert set(marker["entries"]) == {"fold1", "fold2", "fold3", "fold4", "fold5", "summary.json", "summary.md"}
    assert [json.loads((a_set / f"fold{k}" / MARKER).read_text()) for k in range(1, 6)] == folds  # only read


def test_adopt_refuses_what_is_not_a_runs_and_a_fold_in_another_folds_place(a_set, tmp_path):
    for k in range(1, 6):
        legacy(a_set / f"fold{k}")
    (a_set / "kemdy_fold_set.json").unlink()
    shutil.rmtree(a_set / "fold2")
    shutil.copytree(a_set / "fold1", a_set / "fold2")
    before = everything(a_set)
    with pytest.raises(UserError, match=rf"^{a_set / 'fold2'}: holds the run of fold 1; {a_set} is not adopted$"):
        rundir.main(["adopt", str(a_set)])
    assert everything(a_set) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("mine")
    with pytest.raises(UserError, match=r"mine: neither a run \(config.json\), a fold set \(fold1/ .. fold5/\) nor a"):
        rundir.main(["adopt", str(tmp_path / "mine")])
    (tmp_path / "mine" / "config.json").write_text('{"script": "mine"}')
    with pytest.raises(UserError, match=r'config.json: damaged \(script: "mine", expected one of .*; .* not adopted$'):
        rundir.main(["adopt", str(tmp_path / "mine")])
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["config.json", "notes.md"]


def test_single_folds_of_a_version_without_folds_in_markers_are_continued_and_adopted_as_a_set(
    corpus20, tiny_models, tmp_path, monkeypatch, capsys
):
    """Runs whose markers predate folds in markers (format 1) take their fold from config.json; the folder of
    single folds that version left side by side, without a set marker, is a fold set once adopted."""
    monkeypatch.chdir(tmp_path)
    argv = ["--dataset", "20", "--dataset_dir", str(corpus20[0]), "--epochs", "1", "--batch_size", "8"]
    argv += ["--max_text_len", "32", "--text_model", str(tiny_models / "text")]
    for k in (1, 2):
        train(parse_args(TEXT, [*argv, "--num_fold", str(k)]))
    folder = tmp_path / "runs" / "text_classification" / "KEMDy20_text"  # named by its encoder, not the default
    (folder / rundir.SET_MARKER).unlink()
    for k in (1, 2):
        marker = json.loads((folder / f"fold{k}" / MARKER).read_text())
        del marker["fold"]
        (folder / f"fold{k}" / MARKER).write_text(json.dumps(marker | {"format": 1}))
    assert [rundir.read_run(folder / f"fold{k}").fold for k in (1, 2)] == [1, 2]
    before = everything(folder)
    relative = "runs/text_classification/KEMDy20_text"
    with pytest.raises(
        UserError, match=rf"^{relative}: holds files that are not a fold set's \(fold1, fold2; .* adopt {relative}\)$"
    ):
        train(parse_args(TEXT, [*argv, "--num_fold", "3"]))
    with pytest.raises(UserError, match=r"fold1: holds the run of fold 1, not the run of fold 2"):
        train(parse_args(TEXT, [*argv, "--num_fold", "2", "--resume", "--output_dir", str(folder / "fold1")]))
    assert everything(folder) == before
    rundir.main(["adopt", str(folder)])
    assert capsys.readouterr().out.splitlines()[-1] == f"{folder}: owns, as a fold set, fold1, fold2"
    assert [json.loads((folder / f"fold{k}" / MARKER).read_text())["format"] for k in (1, 2)] == [1, 1]  # only read
    train(parse_args(TEXT, [*argv, "--num_fold", "3"]))
    results = train(parse_args(TEXT, [*argv, "--num_fold", "all", "--resume"]))
    assert [r["fold"] for r in results] == [1, 2, 3, 4, 5]
    assert json.loads((folder / rundir.SET_MARKER).read_text())["entries"][:3] == ["fold1", "fold2", "fold3"]


def test_without_posix_locks_a_folder_is_refused_in_one_line_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir, "fcntl", None)
    with pytest.raises(UserError, match=r"^\S+/run: locking a folder needs Linux or macOS; on Windows, run under WSL$"):
        rundir.RunLock(tmp_path / "run").acquire()
    assert list(tmp_path.iterdir()) == []
