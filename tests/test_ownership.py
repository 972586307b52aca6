"""Ownership without holes, tried as a hostile but plausible user would: a run is never continued or counted as
another fold, a folder without a valid marker is never changed, every file the project reads back is checked
before anything acts on it, nothing is written through a link, odd paths are one line, and a kill leaves
nothing that --resume does not clean."""

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from common import cache, rundir, schema
from common.cli import parse_args
from common.errors import Interrupted, UserError
from common.grid import Cell
from common.predict import Predictor
from common.report import find_fold_sets
from common.rundir import LOCK, MARKER, SET_MARKER
from common.train import train

from helpers import everything, tiny_command, train_in_process

TEXT = Cell("text", "classification")


def args(corpus, tiny_models, out, *flags, epochs=2):
    return parse_args(TEXT, tiny_command("text_classification", corpus, tiny_models, out, *flags, epochs=epochs)[2:])


def dead_pid() -> int:
    """The id of a process that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture(scope="module")
def finished(corpus20, tiny_models, tmp_path_factory):
    """A finished fold-1 run of text_classification with a frozen text encoder and its chosen checkpoint kept."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(args(corpus20[0], tiny_models, out, "--num_fold", "1", "--freeze", "text", "--keep_checkpoint"))
    return out


@pytest.fixture
def run(finished, tmp_path):
    return Path(shutil.copytree(finished, tmp_path / "runs" / "run", symlinks=True))


def unfinish(run: Path) -> None:
    """The run as a kill after its last checkpoint leaves it."""
    for name in ("metrics.json", "predictions.csv", "confusion.csv"):
        (run / name).unlink()
    shutil.rmtree(run / "model")


@pytest.fixture(scope="module")
def fold_set(corpus20, tiny_models, tmp_path_factory):
    """A finished --num_fold all set of text_classification (1 epoch)."""
    out = tmp_path_factory.mktemp("set") / "text"
    train(args(corpus20[0], tiny_models, out, "--num_fold", "all", epochs=1))
    return out


@pytest.fixture
def a_set(fold_set, tmp_path):
    return Path(shutil.copytree(fold_set, tmp_path / "runs" / "text", symlinks=True))


# The fold is part of a run's identity.


@pytest.mark.parametrize("killed", [True, False], ids=["killed after a checkpoint", "finished"])
def test_a_run_is_never_continued_or_counted_as_another_fold(run, corpus20, tiny_models, killed):
    if killed:
        unfinish(run)
    before = everything(run)
    with pytest.raises(
        UserError,
        match=rf"^{run}: holds the run of fold 1, not the run of fold 2 \(a copy or link of another fold's folder\?\); "
        r"--resume continues a run on its own fold",
    ):
        train(args(corpus20[0], tiny_models, run, "--num_fold", "2", "--resume", "--freeze", "text"))
    assert everything(run) == before


def _copy_of_fold1(a_set: Path) -> None:
    shutil.rmtree(a_set / "fold2")
    shutil.copytree(a_set / "fold1", a_set / "fold2")


def _link_to_fold1(a_set: Path) -> None:
    shutil.rmtree(a_set / "fold2")
    (a_set / "fold2").symlink_to(a_set / "fold1")


def _fold3_run_in_fold2(a_set: Path) -> None:
    shutil.rmtree(a_set / "fold2")
    shutil.copytree(a_set / "fold3", a_set / "fold2")


@pytest.mark.parametrize(
    ("damage", "refusal"),
    [
        (_copy_of_fold1, r"fold2: holds the run of fold 1, not the run of fold 2 \(a copy or link"),
        (_link_to_fold1, r"fold2: a link inside the fold set .*; each fold of a set is a folder of its own"),
        (_fold3_run_in_fold2, r"fold2: holds the run of fold 3, not the run of fold 2 \(a copy or link"),
    ],
    ids=["copy of fold1", "link to fold1", "fold 3's run"],
)
def test_a_fold_set_with_another_folds_run_in_a_folds_place_is_refused_and_never_summarised(
    a_set, corpus20, tiny_models, damage, refusal
):
    damage(a_set)
    before = everything(a_set)
    with pytest.raises(UserError, match=refusal):
        train(args(corpus20[0], tiny_models, a_set, "--num_fold", "all", "--resume", epochs=1))
    assert everything(a_set) == before  # the summary of the five folds it was is not rewritten over 1, 1, 3, 4, 5
    skipped = []
    (fs,) = find_fold_sets(a_set.parent, skipped)
    assert fs.folds == [1, 3, 4, 5] and not fs.complete and not fs.duplicates
    if damage is not _link_to_fold1:  # a link is not followed: its fold is missing
        (line,) = skipped
        assert line.startswith(f"{a_set / 'fold2'}: holds the run of fold ") and "in the place of fold 2 in its" in line
        assert line.endswith("a copy of another fold's folder?); not counted")


# No marker, no change.


def _config_beside_own_model(folder: Path, finished: Path) -> None:
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "weights.bin").write_bytes(b"my exported model")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"my checkpoint")
    shutil.copy(finished / "config.json", folder / "config.json")  # kept with the exported model


def _hand_written_config(folder: Path, finished: Path) -> None:
    _config_beside_own_model(folder, finished)
    keys = {"script": "text_classification", "cell": {}, "args": {}, "environment": {}, "data": {"fingerprint": "x"}}
    (folder / "config.json").write_text(json.dumps(keys))
    for name in ("predictions.csv", "metrics.json"):
        (folder / name).write_text("mine")
    (folder / "tensorboard").mkdir()


@pytest.mark.parametrize("flags", [["--resume"], ["--overwrite"], []], ids=["resume", "overwrite", "plain"])
@pytest.mark.parametrize("make", [_config_beside_own_model, _hand_written_config], ids=["copied", "hand-written"])
def test_a_config_json_makes_no_folder_the_projects(finished, corpus20, tiny_models, tmp_path, make, flags):
    mine = tmp_path / "mine"
    make(mine, finished)
    before = everything(mine)
    with pytest.raises(
        UserError,
        match=rf"^--output_dir {mine}: holds files that are not a run's \(checkpoints, config.json, .*; no "
        r"kemdy_run.json, so another tool's, whatever the names\); give a new or empty folder \(a run or fold set of "
        rf"this project from before markers: python -m common.rundir adopt {mine}\)$",
    ):
        train(args(corpus20[0], tiny_models, mine, *flags))
    assert everything(mine) == before


def _edit_marker(run: Path, **fields) -> None:
    marker = json.loads((run / MARKER).read_text())
    (run / MARKER).write_text(json.dumps(marker | fields))


@pytest.mark.parametrize(
    ("fields", "flags", "problem"),
    [
        ({"entries": [None, 1]}, ["--overwrite"], r"entries\[0\]: null, expected one of"),
        ({"entries": "model"}, ["--overwrite"], r'entries: "model", expected a list of one of'),
        ({"demo": "false"}, ["--demo"], r'demo: "false", expected true or false'),
        ({"corpus": {}}, ["--resume"], r"corpus.listing: missing"),
        ({"fold": 7}, ["--resume"], r"fold: 7, expected an integer 1..5 or null"),
        ({"script": "text_regression", "cell": {"modality": "text"}}, ["--resume"], r"cell.task: missing"),
        ({"format": 3}, ["--resume"], r"format: 3, expected a format this version reads \(1..2; a newer"),
    ],
)
def test_an_edited_marker_is_refused_and_aims_nothing_at_the_users_files(
    run, corpus20, tiny_models, monkeypatch, fields, flags, problem
):
    import common.synthetic

    monkeypatch.setattr(common.synthetic, "demo_models", lambda: tiny_models)
    for name in ("None", "1", "m", "o", "d", "e", "l"):  # what the edits above would have aimed at
        (run / name).write_text("the user's")
    _edit_marker(run, **fields)
    before = everything(run)
    if flags == ["--demo"]:  # the demo, on this corpus and encoder (not demo/'s)
        demo = ["--demo", "--dataset_dir", str(corpus20[0]), "--output_dir", str(run), "--num_fold", "1"]
        argv = parse_args(TEXT, demo)
    else:
        argv = args(corpus20[0], tiny_models, run, "--num_fold", "1", "--freeze", "text", *flags)
    with pytest.raises(UserError, match=rf"^{run / MARKER}: damaged \({problem}.*\); nothing in {run} is touched"):
        train(argv)
    assert everything(run) == before


# Every file read back is checked.


def _trainer(run: Path) -> Path:
    (path,) = run.glob("checkpoints/epoch*/trainer.json")
    return path


FILES = {  # file -> (where, a field and a wrong value for it, a field to remove, how it is read)
    "run marker": (lambda r: r / MARKER, ("demo",), "false", ("corpus", "listing"), "resume"),
    "config.json": (lambda r: r / "config.json", ("args", "num_fold"), "1", ("data", "fingerprint"), "resume"),
    "metrics.json": (lambda r: r / "metrics.json", ("test", "micro_f1"), "0.5", ("epochs",), "resume"),
    "trainer.json": (_trainer, ("chosen",), [2], ("history",), "resume an unfinished run"),
    "model.json": (lambda r: r / "model" / "model.json", ("dropout",), "0.1", ("modality",), "predict"),
    "encoder.json": (lambda r: r / "model" / "text" / "encoder.json", ("weights",), 5, ("source",), "predict"),
}


def _wrong_type(doc: dict, field: tuple, value) -> str:
    inner = doc
    for key in field[:-1]:
        inner = inner[key]
    inner[field[-1]] = value
    return json.dumps(doc)


def _missing(doc: dict, field: tuple) -> str:
    inner = doc
    for key in field[:-1]:
        inner = inner[key]
    del inner[field[-1]]
    return json.dumps(doc)


DAMAGES = ["wrong type", "missing field", "Infinity", "deep nesting", "huge"]


def _damage(path: Path, damage: str, field: tuple, value, gone: tuple) -> str:
    """Damage the file; what the one line must say of it."""
    doc = json.loads(path.read_text())
    dotted = ".".join(field)
    if damage == "wrong type":
        path.write_text(_wrong_type(doc, field, value))
        return f"{dotted}: {json.dumps(value)}, expected"
    if damage == "missing field":
        path.write_text(_missing(doc, gone))
        return f"{'.'.join(gone)}: missing"
    if damage == "Infinity":
        path.write_text(json.dumps(doc)[:-1] + ', "x": Infinity}')
        return "Infinity is not a number this project writes"
    if damage == "deep nesting":
        path.write_text(json.dumps(doc)[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}")
        return "nested more than 24 levels deep"
    os.truncate(path, (64 << 20) + 1)  # a document past every limit (sparse: no disk is used)
    return "bytes, more than the"


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", list(FILES))
def test_every_file_read_back_is_checked_before_anything_acts_on_it(run, corpus20, tiny_models, name, damage):
    where, field, value, gone, reader = FILES[name]
    if reader == "resume an unfinished run":  # its checkpoint from before checksums: trainer.json itself is read
        unfinish(run)
        (where(run).parent / "checksums.json").unlink()
    path = where(run)
    problem = _damage(path, damage, field, value, gone)
    before = everything(run)
    with pytest.raises(UserError) as caught:
        if reader == "predict":
            Predictor(run)
        else:
            train(args(corpus20[0], tiny_models, run, "--num_fold", "1", "--freeze", "text", "--resume"))
    message = str(caught.value)
    assert str(path) in message and problem in message and "\n" not in message, message
    assert everything(run) == before
    if name in ("run marker", "config.json", "metrics.json"):  # the report leaves the run out, in one line
        skipped = []
        assert find_fold_sets(run.parent, skipped) == []
        (line,) = skipped
        assert line.startswith(f"{path}: damaged (") and problem in line and "\n" not in line


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_fold_sets_marker_and_a_cache_marker_are_checked_too(a_set, corpus20, tiny_models, tmp_path, damage):
    problem = _damage(a_set / SET_MARKER, damage, ("demo",), "false", ("entries",))
    before = everything(a_set)
    with pytest.raises(UserError) as caught:
        train(args(corpus20[0], tiny_models, a_set, "--num_fold", "all", "--resume", epochs=1))
    message = str(caught.value)
    assert message.startswith(f"{a_set / SET_MARKER}: damaged (") and problem in message, message
    assert f"; nothing in {a_set} is touched" in message and everything(a_set) == before
    folder = cache.own_folder(tmp_path / "cache")
    problem = _damage(folder / cache.MARKER, damage, ("kind",), 1, ("format",))
    with pytest.raises(UserError) as caught:
        cache.check_folder(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder / cache.MARKER}: damaged (") and problem in message, message


# No writing through links.


def test_the_lock_is_never_written_through_a_link(run, corpus20, tiny_models, tmp_path):
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("the user's file")
    (run / LOCK).symlink_to(theirs)
    with pytest.raises(UserError, match=rf"^{run / LOCK}: a link, not this project's lock file; the project never"):
        train(args(corpus20[0], tiny_models, run, "--num_fold", "1", "--freeze", "text", "--resume"))
    assert theirs.read_text() == "the user's file" and (run / LOCK).is_symlink()


@pytest.mark.parametrize("entry", ["checkpoints", "config.json"])
def test_a_run_whose_entry_is_a_link_is_refused_before_training(run, corpus20, tiny_models, tmp_path, entry):
    unfinish(run)
    elsewhere = tmp_path / "other_disk" / entry
    elsewhere.parent.mkdir()
    shutil.move(run / entry, elsewhere)
    (run / entry).symlink_to(elsewhere)
    before, there = everything(run), everything(elsewhere.parent)
    with pytest.raises(
        UserError,
        match=rf"^{run / entry}: a link where the run wrote its {entry}; the project never writes through links",
    ):
        train(args(corpus20[0], tiny_models, run, "--num_fold", "1", "--freeze", "text", "--resume"))
    assert everything(run) == before and everything(elsewhere.parent) == there


# Odd paths and stray files.

ODD_PATHS = {
    "empty": ("", r": empty; give a path, or leave the flag out for its default$"),
    "newline": ("runs/a\nb", r" 'runs/a\\nb': holds a line break or NUL; give a path on one line$"),
    "long name": ("x" * 300, r": its name x{40}\.\.\. is 300 bytes long, beyond the system's 255 for a name$"),
    "long path": ("x/" * 2500, r" (x/){20}\.\.\.: 5000 bytes long, beyond the system's 4095$"),
}


@pytest.mark.parametrize("kind", list(ODD_PATHS))
def test_a_path_no_file_system_can_hold_is_refused_in_one_line_before_anything_runs(
    corpus20, tiny_models, tmp_path, kind
):
    from common import predict, report

    value, problem = ODD_PATHS[kind]
    argv = tiny_command("text_classification", corpus20[0], tiny_models, value)[2:]
    code, printed, error = train_in_process("text_classification", argv, cwd=tmp_path)
    assert code == 2 and printed == "" and re_match(rf"error: --output_dir{problem}", error), error
    with pytest.raises(UserError, match=rf"^--out{problem}"):
        report.main([str(tmp_path), "--out", value])
    with pytest.raises(UserError, match=rf"^--run_dir{problem}"):
        predict.main(["--run_dir", value, "--text", "x"])
    with pytest.raises(UserError, match=rf"^folder{problem}"):
        rundir.main(["adopt", value])
    assert list(tmp_path.iterdir()) == []  # nothing was created, the default folder least of all


def re_match(pattern: str, text: str) -> bool:
    import re

    return re.fullmatch(pattern, text) is not None


def test_temporaries_are_removed_only_in_the_projects_folders_and_only_its_own_names(
    corpus20, tiny_models, tmp_path, capsys
):
    mine = tmp_path / "mine"
    mine.mkdir()
    stale = [f".name.tmp-{dead_pid()}-0123abcd", ".name.tmp-99999999999999999999-0123abcd"]
    for name in stale:
        (mine / name).write_text("the user's")
    before = everything(mine)
    with pytest.raises(UserError, match=rf"^--cache_dir {mine}: holds files that are not the project's caches"):
        train(args(corpus20[0], tiny_models, tmp_path / "run", "--cache_dir", str(mine)))
    assert everything(mine) == before and not (tmp_path / "run").exists()

    folder = cache.own_folder(tmp_path / "cache")
    key = "0123456789abcdef0123"
    kept = [
        f".notes.txt.tmp-{dead_pid()}-0123abcd",  # not a name the cache writes
        f".audio-{key}.tmp-99999999-0123abcd",  # a process id no system has
        f".audio-{key}.tmp-{os.getpid()}-0123abcd",  # a process that runs
    ]
    removed = f".audio-{key}.tmp-{dead_pid()}-0123abcd"
    for name in [*kept, removed]:
        (folder / name).mkdir()
    cache.cached(folder, "tokens", key, lambda tmp: tmp.mkdir())
    assert sorted(p.name for p in folder.iterdir()) == sorted([*kept, cache.MARKER, f"tokens-{key}"])
    assert (
        capsys.readouterr().out == f"removed {folder / removed}, left half-written by a run that is no longer running\n"
    )


def test_a_tokenizer_that_yields_no_tokens_is_refused_in_one_line_before_anything_is_written(
    corpus20, tiny_models, tmp_path
):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model = Path(shutil.copytree(tiny_models / "text", tmp_path / "model"))
    for path in model.iterdir():
        if "token" in path.name or path.name == "vocab.txt":
            path.unlink()
    bpe = Tokenizer(models.BPE({"[PAD]": 0, "a": 1}, [], unk_token=None))  # Latin only, no begin token
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="[PAD]").save_pretrained(model)
    argv = tiny_command("text_classification", corpus20[0], tiny_models, tmp_path / "run")[2:]
    argv[argv.index("--text_model") + 1] = str(model)
    code, _, error = train_in_process("text_classification", argv)
    assert code == 2 and error.startswith(
        f"error: --text_model {model}: its tokenizer turns 120 of the corpus's 120 transcripts into no tokens at all "
        "(e.g. Sess01_script01_User001F_001: "
    )
    assert error.endswith("use a text model whose tokenizer adds a begin or end token, or that encodes this text")
    assert not (tmp_path / "run").exists()


# No leftovers.


def test_a_kill_while_the_model_is_written_leaves_nothing_after_resume(run, corpus20, tiny_models, capsys):
    unfinish(run)
    (run / "predictions.csv").write_text("written before the kill")
    half = run / f".model.tmp-{dead_pid()}-0123abcd"
    (half / "text").mkdir(parents=True)
    train(args(corpus20[0], tiny_models, run, "--num_fold", "1", "--freeze", "text", "--resume"))
    assert f"removed {half}, left half-written" in capsys.readouterr().out
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [MARKER, "config.json", "confusion.csv", "metrics.json", "model", "predictions.csv"]
    )


def test_a_kill_after_metrics_json_is_finished_by_resume(corpus20, tiny_models, tmp_path, monkeypatch):
    from common.checkpoints import Checkpoints

    out = tmp_path / "run"

    def killed(self):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Checkpoints, "remove", killed)  # between metrics.json and the checkpoints' removal
        with pytest.raises(Interrupted):
            train(args(corpus20[0], tiny_models, out, "--num_fold", "1"))
    assert (out / "metrics.json").is_file() and (out / "checkpoints").is_dir()
    assert "disk_bytes" not in json.loads((out / "config.json").read_text())
    (result,) = train(args(corpus20[0], tiny_models, out, "--num_fold", "1", "--resume"))
    assert result == json.loads((out / "metrics.json").read_text())
    assert not (out / "checkpoints").exists()
    recorded = json.loads((out / "config.json").read_text())["disk_bytes"]
    assert 0 < rundir.size(out) - recorded < 100  # all but the few digits written into config.json


def test_a_damaged_config_json_stops_resume_before_any_training(run, corpus20, tiny_models, capsys):
    unfinish(run)
    (run / "config.json").write_text('{"script": ')
    before = everything(run)
    with pytest.raises(UserError, match=rf"^{run / 'config.json'}: damaged \(not JSON: .*\); the run cannot continue"):
        train(args(corpus20[0], tiny_models, run, "--num_fold", "1", "--freeze", "text", "--resume"))
    assert everything(run) == before and "epoch" not in capsys.readouterr().out


def test_the_lock_message_says_whether_the_process_it_names_still_runs(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        for pid, said in (
            (alive.pid, "that process still runs, but does not hold this folder (the folder is a copy, or was moved"),
            (dead_pid(), "took over the lock of a run that is no longer running (process"),
        ):
            holder = {"pid": pid, "host": socket.gethostname(), "started": "2026-12-01 10:00:00"}
            (folder / LOCK).write_text(json.dumps(holder))
            lines = []
            rundir.RunLock(folder).acquire(lines.append).release()
            (line,) = lines
            assert line.startswith(f"{folder}: ") and said in line and f"process {pid} on " in line, line
    finally:
        alive.kill()
        alive.wait()
    for raw in ('{"pid": 1e999}', '{"pid": "x", "host": 1}', "\udcff"):
        (folder / LOCK).write_text(raw, errors="surrogateescape")
        lines = []
        rundir.RunLock(folder).acquire(lines.append).release()
        assert lines == [f"{folder}: took over a lock file whose holder cannot be told (damaged)"]


def test_our_own_files_are_written_as_new_files_never_through_what_is_there(tmp_path):
    from common import atomic

    theirs = tmp_path / "theirs.txt"
    theirs.write_text("the user's file")
    (tmp_path / "out.json").symlink_to(theirs)
    atomic.write_json(tmp_path / "out.json", {"a": 1})  # replaces the link itself
    assert theirs.read_text() == "the user's file" and not (tmp_path / "out.json").is_symlink()
    assert schema.load(tmp_path / "out.json") == {"a": 1}
