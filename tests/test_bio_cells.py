"""The cells that read bio-signals: bio alone (bio_<task>.py) and text + speech + bio (multimodal_<task>.py --bio with
any fusion). They train every task on both layouts, learn the planted signal, answer alike in any batch and as their
run scored (with a samples file, with the ONNX graph), resume exactly, run in two processes and across corpora,
and refuse what they cannot read in one line."""

import csv
import json
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from common import bio
from common.cli import parse_script
from common.grid import EMOTIONS, FUSIONS
from common.kemdy import read_corpus
from common.predict import Predictor
from common.synthetic import generate
from common.train import train

from helpers import interrupted_after_epoch_1, launch_two_processes, tiny_command, train_in_process

TASKS = ("classification", "regression", "total")


def _bio_argv(corpus, out, *flags, dataset="20", epochs=2):
    return ["--dataset", dataset, "--dataset_dir", str(corpus), "--epochs", str(epochs), "--batch_size", "8"] + [
        "--lr",
        "3e-3",
        "--output_dir",
        str(out),
        *map(str, flags),
    ]


def _table(run_dir) -> list[dict]:
    with (run_dir / "predictions.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _columns(task: str) -> list[str]:
    columns = [f"prob_{e}" for e in EMOTIONS] if task != "regression" else []
    return columns + (["pred_valence", "pred_arousal"] if task != "classification" else [])


def _answers(results: list[dict], columns: list[str]) -> np.ndarray:
    return np.array(
        [[r["probabilities"][c[5:]] if c.startswith("prob_") else r[c[5:]] for c in columns] for r in results]
    )


def _samples_files(root, dataset, segment_ids, folder) -> list[str]:
    """Each utterance's samples as `python -m common.bio` prints them, in a file of its own."""
    utts = [u for u in read_corpus(dataset, root).utterances if u.segment_id in set(segment_ids)]
    by_id = {u.segment_id: s for u, s in zip(utts, bio.read_signals(root, dataset, utts).samples, strict=True)}
    folder.mkdir(exist_ok=True)
    files = []
    for k, segment in enumerate(segment_ids):
        path = folder / f"{k}.csv"
        path.write_text(bio.samples_text(by_id[segment]), encoding="utf-8")
        files.append(str(path))
    return files


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("dataset", ["20", "19"])
def test_a_bio_cell_trains_every_task_on_both_layouts_and_predicts_as_its_run_scored(
    corpus20, corpus19, tmp_path, task, dataset
):
    corpus = (corpus20 if dataset == "20" else corpus19)[0]
    out = tmp_path / "run"
    (result,) = train(parse_script(f"bio_{task}", _bio_argv(corpus, out, dataset=dataset)))
    assert result["script"] == f"bio_{task}"
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["bio_signals"] == list(bio.SIGNALS[dataset]) and len(config["data"]["bio"]) == 20
    assert config["models"] == {}  # no pretrained encoder at all
    card = (out / "model" / "README.md").read_text(encoding="utf-8")
    signals = ", ".join(bio.SIGNALS[dataset])
    assert f"from the speaker's bio-signals ({signals})" in card and "--bio samples.csv" in card
    table = _table(out)
    files = _samples_files(corpus, dataset, [r["segment_id"] for r in table], tmp_path / "samples")
    predictor = Predictor(out)
    columns = _columns(task)
    scored = np.array([[float(r[c]) for c in columns] for r in table])
    for size in (1, 8):
        assert _answers(predictor(bios=files, batch_size=size), columns) == pytest.approx(scored, abs=1e-5)


@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_text_speech_and_bio_train_with_every_fusion_and_predict_as_their_run_scored(
    corpus20, tiny_models, tmp_path, fusion
):
    out = tmp_path / "run"
    argv = tiny_command("multimodal_total", corpus20[0], tiny_models, out, "--fusion", fusion, "--bio", epochs=1)[2:]
    (result,) = train(parse_script("multimodal_total", argv))
    assert result["script"] == f"multimodal_total_{fusion}"
    predictor = Predictor(out)
    assert predictor.model.config.signals == bio.SIGNALS["20"] and predictor.model.bio_encoder is not None
    table = _table(out)
    utts = {u.segment_id: u for u in read_corpus("20", corpus20[0]).utterances}
    wavs, texts = [utts[r["segment_id"]].wav for r in table], [utts[r["segment_id"]].text for r in table]
    files = _samples_files(corpus20[0], "20", [r["segment_id"] for r in table], tmp_path / "samples")
    columns = _columns("total")
    scored = np.array([[float(r[c]) for c in columns] for r in table])
    for size in (1, 8):
        answers = _answers(predictor(wavs, texts, batch_size=size, bios=files), columns)
        assert answers == pytest.approx(scored, abs=1e-5)


def test_without_bio_a_multimodal_cell_is_the_model_it_was_and_its_folder_says_bio_where_given(corpus20, tiny_models):
    """--bio adds the bio vector after the fusion: without it the model's weights are drawn as before (the twelve
    cells' numbers stand), with it the run folder gets `_bio`; a bio cell ignores the flag."""
    from common.encoders import Encoders
    from common.model import build_model
    from common.settings import folder_name

    argv = tiny_command("multimodal_total_concat", corpus20[0], tiny_models, "unused")[2:]
    plain, with_bio = (
        parse_script("multimodal_total_concat", argv),
        parse_script("multimodal_total_concat", [*argv, "--bio"]),
    )
    encoders = Encoders(plain.cell, plain.settings)
    before = build_model(plain.cell, plain.settings, encoders).state_dict()
    joined = build_model(with_bio.cell, with_bio.settings, encoders, signals=("EDA", "TEMP", "IBI")).state_dict()
    assert set(joined) - set(before) == {k for k in joined if k.startswith("bio")}
    assert joined["emotion_head.weight"].shape[1] == before["emotion_head.weight"].shape[1] + 32
    assert all(np.array_equal(before[k], joined[k]) for k in before if not k.startswith(("emotion_head", "va_head")))
    assert folder_name(with_bio.settings, with_bio.cell) == "_bio" and folder_name(plain.settings, plain.cell) == ""
    text, alone = parse_script("text_total", [*argv, "--bio"]), parse_script("bio_total", [*argv, "--bio"])
    assert folder_name(text.settings, text.cell) == "_bio" and folder_name(alone.settings, alone.cell) == ""


def test_a_bio_cell_learns_the_planted_arousal_and_loses_it_with_the_signals_shuffled(corpus20, tmp_path, monkeypatch):
    from common import train as training

    def run(out):
        argv = _bio_argv(corpus20[0], out, "--epochs", "15", "--head_lr", "1e-2")
        (result,) = train(parse_script("bio_regression", argv))
        table = _table(out)
        return spearmanr([float(r["true_arousal"]) for r in table], [float(r["pred_arousal"]) for r in table])[0]

    learnt = run(tmp_path / "real")
    read = training.read_bio_features

    def shuffled(*args, **kwargs):
        found = read(*args, **kwargs)
        found.rows = found.rows[np.random.default_rng(0).permutation(len(found.rows))]
        return found

    monkeypatch.setattr(training, "read_bio_features", shuffled)
    chance = run(tmp_path / "shuffled")
    assert learnt > 0.5 and chance < 0.3, (learnt, chance)


def test_a_bio_cell_resumes_to_exactly_the_uninterrupted_run(corpus20, tmp_path):
    def run(out, *more):
        return train(parse_script("bio_total", _bio_argv(corpus20[0], out, *more)))

    (whole,) = run(tmp_path / "whole")
    interrupted_after_epoch_1(lambda: run(tmp_path / "cut"))
    (resumed,) = run(tmp_path / "cut", "--resume")
    assert resumed == whole


def test_a_run_does_not_continue_on_changed_bio_signal_files(corpus20, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus20[0], corpus)
    argv = _bio_argv(corpus, tmp_path / "run")
    interrupted_after_epoch_1(lambda: train(parse_script("bio_total", argv)))
    changed = sorted((corpus / "TEMP").rglob("*.csv"))[0]
    changed.write_text(changed.read_text().replace("33.", "34.", 1))
    code, _, error = train_in_process("bio_total", [*argv, "--resume"])
    assert code == 2 and "is not the one this run started on" in error and "bio-signal files" in error


def test_a_fold_does_not_join_a_set_whose_folds_read_other_bio_signal_files(corpus20, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus20[0], corpus)
    argv = _bio_argv(corpus, "unused", epochs=1)[:-2]  # the default folder: runs/bio_total/KEMDy20/fold<k>
    code, _, error = train_in_process("bio_total", [*argv, "--num_fold", "1"], cwd=tmp_path)
    assert code == 0, error
    changed = sorted((corpus / "EDA").rglob("*.csv"))[1]
    text = changed.read_text()
    changed.write_text(text.replace("\n2.", "\n3.", 1))
    assert changed.read_text() != text
    code, _, error = train_in_process("bio_total", [*argv, "--num_fold", "2"], cwd=tmp_path)
    assert code == 2 and "were run with other settings (other bio-signal files)" in error
    assert not (tmp_path / "runs" / "bio_total" / "KEMDy20" / "fold2").exists()


@pytest.mark.parametrize("folders", ["empty", "none"])
def test_a_corpus_without_bio_signal_files_is_refused_in_one_line(tmp_path, tiny_models, folders):
    generate("20", tmp_path / "corpus", sessions=2, utterances_per_session=10, seed=3)  # the layout's empty folders
    if folders == "none":
        for signal in bio.SIGNALS["20"]:
            (tmp_path / "corpus" / signal).rmdir()
    code, _, error = train_in_process("bio_total", _bio_argv(tmp_path / "corpus", tmp_path / "run"))
    assert code == 2 and error == (
        f"error: --dataset_dir {tmp_path / 'corpus'}: none of its utterances has a bio-signal sample (its EDA/, "
        "TEMP/, IBI/ folders hold no file with their samples), which the bio cells and --bio read (docs/data.md, "
        "Bio-signals)"
    )
    argv = tiny_command("multimodal_total_concat", tmp_path / "corpus", tiny_models, tmp_path / "mm", "--bio")[2:]
    code, _, error = train_in_process("multimodal_total_concat", argv)
    assert code == 2 and "none of its utterances has a bio-signal sample" in error
    assert not (tmp_path / "run").exists() and not (tmp_path / "mm").exists()


def test_a_bio_cell_trains_in_two_processes(corpus20, tmp_path):
    out = tmp_path / "run"
    cmd = ["bio_total.py", *_bio_argv(corpus20[0], out, epochs=1)]
    proc = subprocess.run(
        [*launch_two_processes(), *cmd], capture_output=True, text=True, cwd=Path(__file__).parents[1]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["environment"]["num_processes"] == 2 and len(_table(out)) == config["data"]["split"]["test"]


def test_across_corpora_each_corpus_is_standardised_on_its_own_scale(corpus20, corpus19, tmp_path, monkeypatch):
    """Trained on KEMDy20 and tested on KEMDy19: the model standardises with KEMDy20's training statistics, and
    KEMDy19's features reach it as KEMDy19's own standardised values (IBI, which KEMDy19 lacks, missing)."""
    from common import train as training

    seen = {}
    scaling = training._set_bio_scaling

    def kept(model, features, train_idx):
        rows = scaling(model, features, train_idx)
        seen.update(rows=rows, features=features, mean=model.bio_mean.numpy(), std=model.bio_std.numpy())
        return rows

    monkeypatch.setattr(training, "_set_bio_scaling", kept)
    argv = _bio_argv(corpus20[0], tmp_path / "run", "--test_dataset", "19", "--test_dataset_dir", corpus19[0], epochs=1)
    (result,) = train(parse_script("bio_total", argv))
    assert result["test_dataset"] == "KEMDy19"
    own = seen["features"].corpus_rows
    raw = seen["features"].rows[own:]
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # IBI: no KEMDy19 row has it
        expected = (raw - np.nanmean(raw, axis=0)) / np.nanstd(raw, axis=0)
    model_reads = (seen["rows"][own:] - seen["mean"]) / seen["std"]
    ibi = slice(7, 10)  # EDA's four features, TEMP's three, then IBI's
    assert np.isnan(model_reads[:, ibi]).all() and np.isnan(raw[:, ibi]).all()
    finite = np.isfinite(expected)
    assert np.array_equal(finite[:, :7], np.isfinite(raw[:, :7]))  # every EDA and TEMP value is compared
    # The model keeps its statistics in float32: a skin temperature near 33 °C varying by hundredths loses ~1e-4.
    np.testing.assert_allclose(model_reads[finite], expected[finite], atol=2e-4)


@pytest.fixture(scope="module")
def bio_run(corpus20, tmp_path_factory):
    out = tmp_path_factory.mktemp("bio") / "run"
    train(parse_script("bio_total", _bio_argv(corpus20[0], out)))
    return out


@pytest.mark.parametrize(
    "text, problem",
    [
        ("EDA,1.0\n", "a bio-signal file opens with the header 'signal,value', then one sample a line"),
        ("signal,value\nEDA,2.0\nHR,70\n", "line 3: 'HR' is no signal this run reads (EDA, TEMP, IBI)"),
        ("signal,value\nEDA,high\n", "line 2: 'high' is not a finite number"),
        ("signal,value\nTEMP,nan\n", "line 2: 'nan' is not a finite number"),
    ],
)
def test_a_samples_file_that_is_not_the_format_is_refused_in_one_line_naming_it(bio_run, tmp_path, text, problem):
    from common.errors import UserError

    path = tmp_path / "samples.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        Predictor(bio_run)(bios=[str(path)])
    assert str(caught.value) in (f"{path}: {problem}", f"{path} {problem}")


def test_a_signal_without_samples_reads_as_missing_as_in_training(bio_run, corpus20, tmp_path):
    """The corpus's one utterance without EDA (its wearer's file is missing) is scored with the absence embedding;
    a samples file without EDA lines gives the same answer."""
    utts = read_corpus("20", corpus20[0]).utterances
    found = bio.read_signals(corpus20[0], "20", utts)
    no_eda = [u.segment_id for u, s in zip(utts, found.samples, strict=True) if "EDA" not in s and s]
    row = next(r for r in _table(bio_run) if r["segment_id"] in no_eda)
    (path,) = _samples_files(corpus20[0], "20", [row["segment_id"]], tmp_path / "samples")
    assert "EDA," not in open(path).read()
    (answer,) = Predictor(bio_run)(bios=[path])
    assert _answers([answer], _columns("total"))[0] == pytest.approx(
        [float(row[c]) for c in _columns("total")], abs=1e-5
    )


def test_predict_reads_bio_from_the_command_line_a_csv_column_and_files_beside_the_clips(bio_run, corpus20, tmp_path):
    from common.predict import main

    table = _table(bio_run)[:3]
    files = _samples_files(corpus20[0], "20", [r["segment_id"] for r in table], tmp_path / "samples")
    (tmp_path / "batch.csv").write_text("bio,id\n" + "".join(f"samples/{k}.csv,{k}\n" for k in range(3)))
    main(["--run_dir", str(bio_run), "--csv", str(tmp_path / "batch.csv"), "--out", str(tmp_path / "out.csv")])
    with (tmp_path / "out.csv").open(encoding="utf-8") as f:
        written = list(csv.DictReader(f))
    for row, out in zip(table, written, strict=True):
        assert float(out["arousal"]) == pytest.approx(float(row["pred_arousal"]), abs=1e-5) and out["error"] == ""
    clips = tmp_path / "clips"
    clips.mkdir()
    utts = {u.segment_id: u for u in read_corpus("20", corpus20[0]).utterances}
    for k, row in enumerate(table):
        shutil.copy(utts[row["segment_id"]].wav, clips / f"{k}.wav")
        if k < 2:
            shutil.copy(files[k], clips / f"{k}.bio.csv")
    main(["--run_dir", str(bio_run), "--wav_dir", str(clips), "--out", str(tmp_path / "dir.csv")])
    with (tmp_path / "dir.csv").open(encoding="utf-8") as f:
        written = list(csv.DictReader(f))
    assert [float(r["arousal"]) for r in written[:2]] == pytest.approx([float(r["pred_arousal"]) for r in table[:2]])
    assert written[2]["error"] == "this run reads bio-signals: give --bio (or a bio column in --csv)"


def test_the_onnx_graph_of_a_bio_cell_answers_as_the_model(bio_run):
    from common.export import export

    found = export(bio_run)
    assert found["max_difference"] < 1e-5 and found["utterances"] == len(_table(bio_run))


def test_robustness_scores_a_run_that_reads_bio_signals_without_them(bio_run):
    from common import robustness

    run = robustness.FinishedRun(bio_run, log=lambda _: None)
    rows = robustness.measure(run, resamples=100, log=lambda _: None)
    assert [r["condition"] for r in rows] == ["clean", "no bio-signals"]
    assert rows[1]["mean_ccc_difference"] < 0 and rows[1]["mean_ccc_high"] < 0  # the signal is gone, and it mattered
    assert "no bio-signals" not in [c.name for c in robustness.conditions(run.cell.__class__("text", "total"))]


def test_the_report_compares_a_fold_set_with_bio_against_the_same_without(corpus20, tiny_models, tmp_path):
    """Two complete fold sets of one cell, one given --bio: the report pairs them, and its difference of micro-F1
    is scikit-learn's on the pooled test predictions of each."""
    from sklearn.metrics import f1_score

    from common.report import main as report

    runs = tmp_path / "runs"
    flags = ("--freeze", "both", "--num_fold", "all", "--cache_dir", tmp_path / "cache")
    for name, more in (("plain", ()), ("bio", ("--bio",))):
        argv = tiny_command("multimodal_classification_concat", corpus20[0], tiny_models, runs / name, *flags, *more)
        train(parse_script("multimodal_classification_concat", argv[2:]))
    report([str(runs), "--bootstrap", "200", "--no-figures"])
    with (runs / "report" / "comparisons.csv").open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if "--bio" in r["a"] and r["metric"] == "micro_f1"]
    assert len(rows) == 1 and rows[0]["a"].endswith("[--bio True]") and rows[0]["b"].endswith("[--bio False]")

    def pooled_f1(folder):
        truth, decided = [], []
        for k in range(1, 6):
            for r in _table(folder / f"fold{k}"):
                truth.append([int(r[f"true_{e}"]) for e in EMOTIONS])
                decided.append([float(r[f"prob_{e}"]) > 0.5 for e in EMOTIONS])
        return f1_score(np.array(truth), np.array(decided), average="micro", zero_division=0.0)

    expected = pooled_f1(runs / "bio") - pooled_f1(runs / "plain")
    assert float(rows[0]["difference"]) == pytest.approx(expected, abs=1e-6)


def test_the_bio_features_are_cached_and_a_cached_run_is_the_uncached_one(corpus20, tmp_path):
    argv = ["--cache_dir", tmp_path / "cache", "--epochs", "1"]
    logs, results = [], []
    for k, flags in enumerate((argv, argv, ["--no-cache", "--epochs", "1"])):
        code, printed, error = train_in_process("bio_total", _bio_argv(corpus20[0], tmp_path / f"run{k}", *flags))
        assert code == 0, error
        logs.append(printed)
        results.append(json.loads((tmp_path / f"run{k}" / "metrics.json").read_text())["test"])
    assert "bio cache" in logs[0] and ": built (120 utterances)" in logs[0] and ": reused (120 utterances)" in logs[1]
    assert "bio cache" not in logs[2] and results[0] == results[1] == results[2]


def test_in_a_model_of_text_speech_and_bio_each_input_matters(corpus20, tiny_models, tmp_path):
    """Trained with all three, the model's answers move when any one of them is taken away (robustness's
    conditions: the empty transcript, silence, every bio-signal missing)."""
    from common import robustness

    out = tmp_path / "run"
    argv = tiny_command("multimodal_total", corpus20[0], tiny_models, out, "--fusion", "concat", "--bio", epochs=3)
    train(parse_script("multimodal_total", argv[2:]))
    run = robustness.FinishedRun(out, log=lambda _: None)
    inputs = robustness.Inputs(run, 0)
    by_name = {c.name: c for c in robustness.CONDITIONS}
    probs, va = run.predictor.outputs(inputs.items(by_name["clean"]), 8)
    for name in ("no transcript", "no audio", "no bio-signals"):
        without_probs, without_va = run.predictor.outputs(inputs.items(by_name[name]), 8)
        moved = np.abs(without_probs - probs).mean() + np.abs(without_va - va).mean()
        assert moved > 0.01, (name, moved)


def test_common_bio_prints_an_utterances_samples_as_predict_reads_them(corpus20, capsys, tmp_path):
    from common.errors import UserError

    utts = read_corpus("20", corpus20[0]).utterances
    found = bio.read_signals(corpus20[0], "20", utts)
    k = next(k for k, s in enumerate(found.samples) if len(s) == 3)
    bio.main([str(corpus20[0]), utts[k].segment_id])
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0] == "signal,value" and len(lines) == 1 + sum(len(v) for v in found.samples[k].values())
    path = tmp_path / "printed.csv"
    path.write_text(printed, encoding="utf-8")
    read = bio.read_samples(path, bio.SIGNALS["20"])
    assert all(np.array_equal(read[s], found.samples[k][s]) for s in bio.SIGNALS["20"])
    with pytest.raises(UserError, match=f"^{corpus20[0]}: lists no utterance Sess09_nothing$"):
        bio.main([str(corpus20[0]), "Sess09_nothing"])


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_text_speech_and_bio_train_the_other_tasks(corpus19, tiny_models, tmp_path, task):
    out = tmp_path / "run"
    argv = tiny_command(f"multimodal_{task}", corpus19[0], tiny_models, out, "--bio", dataset="19", epochs=1)[2:]
    (result,) = train(parse_script(f"multimodal_{task}", argv))
    config = json.loads((out / "config.json").read_text())
    assert result["script"] == f"multimodal_{task}_concat" and config["data"]["bio_signals"] == ["EDA", "TEMP", "ECG"]
    card = (out / "model" / "README.md").read_text(encoding="utf-8")
    assert "and the speaker's bio-signals (EDA, TEMP, ECG)" in card


def test_a_bio_cell_holds_out_whole_sessions_with_the_session_split(tmp_path):
    from common.synthetic import write_bio

    generate("20", tmp_path / "corpus", sessions=5, utterances_per_session=12, seed=4)
    write_bio(tmp_path / "corpus", "20", seed=4)
    out = tmp_path / "run"
    (result,) = train(parse_script("bio_total", _bio_argv(tmp_path / "corpus", out, "--split", "session", epochs=1)))
    config = json.loads((out / "config.json").read_text())
    tested = [r["segment_id"][:6] for r in _table(out)]
    (session,) = config["data"]["test_sessions"]
    whole = [u for u in read_corpus("20", tmp_path / "corpus").utterances if u.session == session]
    assert result["split"] == "session" and set(tested) == {session} and len(tested) == len(whole)


@pytest.mark.parametrize("script", ["speech_total", "text_regression"])
def test_speech_or_text_with_bio_trains_and_predicts_as_its_run_scored(corpus20, tiny_models, tmp_path, script):
    out = tmp_path / "run"
    (result,) = train(parse_script(script, tiny_command(script, corpus20[0], tiny_models, out, "--bio", epochs=1)[2:]))
    predictor = Predictor(out)
    assert result["script"] == script and predictor.model.bio_encoder is not None
    table = _table(out)
    utts = {u.segment_id: u for u in read_corpus("20", corpus20[0]).utterances}
    wavs = [utts[r["segment_id"]].wav for r in table] if predictor.uses_speech else None
    texts = [utts[r["segment_id"]].text for r in table] if predictor.uses_text else None
    files = _samples_files(corpus20[0], "20", [r["segment_id"] for r in table], tmp_path / "samples")
    columns = _columns(script.split("_")[1])
    scored = np.array([[float(r[c]) for c in columns] for r in table])
    assert _answers(predictor(wavs, texts, batch_size=8, bios=files), columns) == pytest.approx(scored, abs=1e-5)
