"""Cross-corpus runs (--test_dataset): trained on all of one corpus, tested on all of the other."""

import contextlib
import csv
import io
import json
import shutil
from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import f1_score

from common.cli import parse_args
from common.errors import UserError
from common.grid import EMOTIONS, SCRIPTS, cell_of
from common.kemdy import compare_labels, read_corpus
from common.report import main as report
from common.synthetic import generate
from common.train import train

OTHER = {"19": "20", "20": "19"}
# The flags of the KEMDy19 -> KEMDy20 runs, by script: the pipeline's options across corpora (KEMDy20 -> KEMDy19
# runs with the defaults).
FLAGS = {
    "text_classification": ["--original"],
    "speech_classification": ["--split", "session"],
    "multimodal_classification_concat": ["--freeze", "both"],
    "multimodal_regression_concat": ["--freeze", "speech", "--layers", "weighted"],
    "speech_total": ["--original"],
    "multimodal_total_element_wise_add": ["--split", "session", "--kemdy19_rows", "speaker"],
}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    base = tmp_path_factory.mktemp("cross")
    found = {"20": base / "KEMDy20", "19": base / "KEMDy19"}
    generate("20", found["20"], sessions=2, utterances_per_session=16, seed=5)
    generate("19", found["19"], sessions=2, utterances_per_session=10, seed=10, odd_audio=True)  # all seven emotions
    return found


def command(script, dataset, corpora, models, out, *flags, epochs=1):
    return [
        "--dataset", dataset, "--dataset_dir", str(corpora[dataset]),
        "--test_dataset", OTHER[dataset], "--test_dataset_dir", str(corpora[OTHER[dataset]]),
        "--epochs", str(epochs), "--batch_size", "8", "--max_text_len", "32", "--lr", "1e-3",
        "--text_model", str(models / "text"), "--speech_model", str(models / "speech"),
        "--cache_dir", str(out.parent / "cache"), "--output_dir", str(out), *flags,
    ]  # fmt: skip


def run(script, argv):
    """Train in this process; (metrics.json's content, what it printed)."""
    cell = cell_of(script)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        (result,) = train(parse_args(cell, argv))
    return result, printed.getvalue()


@pytest.fixture(scope="module")
def both_directions(corpora, tiny_models, tmp_path_factory):
    """Every script trained in both directions, one epoch: {(script, dataset): (run directory, result, printed)}."""
    base = tmp_path_factory.mktemp("cross_runs")
    found = {}
    for script in SCRIPTS:
        for dataset in ("20", "19"):
            out = base / f"{script}-{dataset}"
            flags = FLAGS.get(script, []) if dataset == "19" else []
            result, printed = run(script, command(script, dataset, corpora, tiny_models, out, *flags))
            found[script, dataset] = (out, result, printed)
    return found


@pytest.mark.parametrize("dataset", ["20", "19"])
def test_every_script_tests_on_exactly_the_other_corpus_and_trains_on_all_of_its_own(both_directions, corpora, dataset):
    for script in SCRIPTS:
        flags = FLAGS.get(script, []) if dataset == "19" else []
        options = {"rows": "speaker" if "speaker" in flags else "all"}
        options["labels"] = "original" if "--original" in flags else "checked"  # both corpora read alike
        train_utts = read_corpus(dataset, corpora[dataset], **options).utterances
        test_utts = read_corpus(OTHER[dataset], corpora[OTHER[dataset]], **options).utterances
        out, result, printed = both_directions[script, dataset]
        assert (result["dataset"], result["test_dataset"], result["fold"]) == (
            f"KEMDy{dataset}",
            f"KEMDy{OTHER[dataset]}",
            None,
        )
        assert result["test"]["n"] == len(test_utts)
        with (out / "predictions.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["segment_id"] for r in rows] == [u.segment_id for u in test_utts]  # the listing, in its order
        assert [float(r["true_valence"]) for r in rows] == [u.valence for u in test_utts]
        data = json.loads((out / "config.json").read_text())["data"]
        n_valid = int(np.ceil(0.1 * len(train_utts)))  # the last --valid_ratio block of the training corpus
        if "session" in flags:  # its last session (of two: ceil(0.1 x 2))
            n_valid = sum(u.session == max(v.session for v in train_utts) for u in train_utts)
        if "--original" in flags:  # no validation: the last epoch
            n_valid = 0
        assert result["selection"] == ("last_epoch" if n_valid == 0 else "valid_loss")
        assert data["split"] == {"train": len(train_utts) - n_valid, "valid": n_valid, "test": len(test_utts)}
        assert data["used"] == len(train_utts) and data["test_corpus"]["used"] == len(test_utts)
        assert f"KEMDy{dataset} -> KEMDy{OTHER[dataset]} (cross-corpus" in printed
        for name, utts in ((f"KEMDy{dataset}", train_utts), (f"KEMDy{OTHER[dataset]}", test_utts)):
            recorded = data["label_distribution"][name]
            counts = Counter(e for u in utts for e, on in zip(EMOTIONS, u.labels, strict=True) if on)
            assert recorded["emotions"] == {e: counts[e] for e in EMOTIONS}
            assert recorded["valence"]["mean"] == pytest.approx(np.mean([u.valence for u in utts]))


def test_nothing_of_the_test_corpus_reaches_training_or_the_choice_of_epoch(corpora, tiny_models, tmp_path):
    """Two different KEMDy19 corpora as the test side: training, validation and the chosen epoch are identical
    to the last digit; only the test differs."""
    other19 = tmp_path / "other19"
    generate("19", other19, sessions=2, utterances_per_session=14, seed=1)
    results = []
    for name, test_dir in (("a", corpora["19"]), ("b", other19)):
        argv = command("multimodal_total_concat", "20", corpora, tiny_models, tmp_path / name, epochs=3)
        argv[argv.index("--test_dataset_dir") + 1] = str(test_dir)
        argv += ["--class_weight", "balanced", "--group_by_length"]
        results.append(run("multimodal_total_concat", argv)[0])
    a, b = results
    assert a["chosen_epoch"] == b["chosen_epoch"]
    for x, y in zip(a["epochs"], b["epochs"], strict=True):
        assert x["train_loss"] == y["train_loss"] and x["valid"] == y["valid"]
        assert x["test"]["n"] != y["test"]["n"]


def test_the_labels_of_both_corpora_are_compared_and_a_differing_emotion_set_is_refused(corpora, tmp_path):
    train20, test19 = (read_corpus(d, corpora[d]) for d in ("20", "19"))
    emotion_cells = "".join(
        row[4] for p in (corpora["20"] / "annotation").iterdir() for row in csv.reader(p.open(encoding="utf-8"))
    )
    written = {e for e in ("disqust", "disgust") if e in emotion_cells}
    assert written == {"disqust"}  # KEMDy20's total evaluation spells it so; KEMDy19 writes disgust: one emotion
    found, table = compare_labels(train20, test19)
    assert found["KEMDy19"]["emotions"]["disgust"] > 0 and found["KEMDy20"]["emotions"]["disgust"] > 0
    assert table.splitlines()[1].split() == ["KEMDy20", "(train)", "KEMDy19", "(test)"]
    # A KEMDy19 copy whose fear rows read neutral: KEMDy20 has an emotion the test side lacks.
    no_fear = tmp_path / "KEMDy19"
    shutil.copytree(corpora["19"], no_fear, symlinks=True)
    for path in (no_fear / "annotation").iterdir():
        path.write_text(path.read_text().replace("fear", "neutral"))
    with pytest.raises(UserError, match=r"emotion sets differ \(only KEMDy20 \(train\) has fear\)"):
        compare_labels(train20, read_corpus("19", no_fear))
    # A KEMDy19 copy scored on 1..7: the rows off 1..5 are excluded by its reader; more than 1 % is refused.
    seven, changed = tmp_path / "seven", 0
    shutil.copytree(corpora["19"], seven, symlinks=True)
    for path in (seven / "annotation").iterdir():
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
        for row in rows[2::2]:  # every other data row: valence 6.5 (KEMDy19's Valence is column 12)
            if len(row) > 11 and any(cell.strip() for cell in row):
                row[11], changed = "6.5", changed + 1
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        path.write_text(out.getvalue(), encoding="utf-8")
    off = read_corpus("19", seven)
    assert sum(e.reason == "invalid_valence_arousal" for e in off.excluded) == changed > 0
    with pytest.raises(UserError, match=rf"seven: {changed} of its {off.rows} rows have valence or arousal off"):
        compare_labels(train20, off)


def test_cross_corpus_flags_are_checked_in_one_line(corpora, tmp_path, monkeypatch):
    cell = cell_of("text_classification")
    base = ["--dataset", "20", "--dataset_dir", str(corpora["20"])]
    with pytest.raises(UserError, match=r"--test_dataset 20: the corpus it trains on"):
        parse_args(cell, [*base, "--test_dataset", "20"])
    monkeypatch.chdir(tmp_path)  # no ./KEMDy19 here
    with pytest.raises(UserError, match=r"^--test_dataset_dir not given and no ./KEMDy19 folder here: pass the "):
        parse_args(cell, [*base, "--test_dataset", "19"])
    with pytest.raises(UserError, match=r"^--test_dataset_dir x: no such directory$"):  # before torch is loaded
        parse_args(cell, [*base, "--test_dataset", "19", "--test_dataset_dir", "x"])
    (tmp_path / "x").mkdir()
    args = parse_args(cell, [*base, "--test_dataset", "19", "--test_dataset_dir", "x", "--num_fold", "all"])
    with pytest.raises(UserError, match=r"^--test_dataset_dir x: not a KEMDy19 root \(no annotation/ folder\)$"):
        train(args)
    assert args.folds == (1,) and args.notes == (
        "--num_fold all: does not apply to a cross-corpus run (it tests on all of KEMDy19); ignored",
    )
    assert parse_args(cell, [*base, "--test_dataset", "19", "--test_dataset_dir", "x"]).notes == ()


def test_the_report_sets_cross_beside_within_with_a_paired_interval(corpora, tiny_models, tmp_path, capsys):
    script = "text_classification"
    within = tmp_path / "runs" / script / "KEMDy19"
    argv = command(script, "20", corpora, tiny_models, tmp_path / "runs" / script / "KEMDy20-to-KEMDy19", epochs=2)
    run(script, argv)
    within_argv = ["--dataset", "19", "--dataset_dir", str(corpora["19"]), "--num_fold", "all"]
    within_argv += argv[argv.index("--epochs") : argv.index("--output_dir")] + ["--output_dir", str(within)]
    cell = cell_of(script)
    with contextlib.redirect_stdout(io.StringIO()):
        train(parse_args(cell, within_argv))
    report([str(tmp_path / "runs"), "--no-figures", "--bootstrap", "200"])
    md = (tmp_path / "runs" / "report" / "results.md").read_text()
    with (tmp_path / "runs" / "report" / "cross_corpus.csv").open(newline="") as f:
        rows = {r["metric"]: r for r in csv.DictReader(f)}

    def micro(folders):
        truth, decided = [], []
        for folder in folders:
            with (folder / "predictions.csv").open(newline="") as f:
                for r in csv.DictReader(f):
                    truth.append([int(r[f"true_{e}"]) for e in EMOTIONS])
                    decided.append([float(r[f"prob_{e}"]) > 0.5 for e in EMOTIONS])
        return f1_score(np.array(truth), np.array(decided), average="micro", zero_division=0)

    crossed = micro([tmp_path / "runs" / script / "KEMDy20-to-KEMDy19"])
    pooled = micro([within / f"fold{k}" for k in range(1, 6)])
    row = rows["micro_f1"]
    assert float(row["cross"]) == pytest.approx(crossed, abs=1e-4)
    assert float(row["cross_minus_within"]) == pytest.approx(crossed - pooled, abs=1e-9)
    assert float(row["ci_low"]) <= float(row["cross_minus_within"]) <= float(row["ci_high"])
    line = next(x for x in md.splitlines() if x.startswith(f"| {script} | KEMDy20 | KEMDy19 | micro_f1 |"))
    assert "none" in line.split("|")[5] and "(5 folds)" in line.split("|")[6]  # no KEMDy20 set; KEMDy19's


def test_a_cross_corpus_run_predicts_resumes_and_names_its_default_folder(both_directions, corpora, tiny_models):
    from pathlib import Path

    from common.predict import Predictor
    from common.train import _default_run_dir

    script = "multimodal_total_concat"
    out, result, _ = both_directions[script, "20"]
    with (out / "predictions.csv").open(newline="") as f:
        first = next(csv.DictReader(f))
    utterance = read_corpus("19", corpora["19"]).utterances[0]
    (answer,) = Predictor(out)([str(utterance.wav)], [utterance.text])
    assert max(abs(answer["probabilities"][e] - float(first[f"prob_{e}"])) for e in EMOTIONS) < 1e-5
    argv = command(script, "20", corpora, tiny_models, out)
    with pytest.raises(UserError, match="holds a finished run"):
        run(script, argv)
    again, printed = run(script, [*argv, "--resume"])
    assert again == result and "already finished" in printed
    cell = cell_of(script)
    args = parse_args(cell, [*argv[:-2], "--split", "session", "--original"]).settings
    assert _default_run_dir(cell, args, 1) == Path("runs", script, "KEMDy20-to-KEMDy19_session_original")


def test_two_processes_test_on_the_whole_other_corpus_once(corpora, tiny_models, tmp_path):
    import subprocess

    from helpers import ROOT, launch_two_processes

    out = tmp_path / "two"
    argv = command("text_classification", "20", corpora, tiny_models, out)
    proc = subprocess.run(
        [*launch_two_processes(), str(ROOT / "text_classification.py"), *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (out / "predictions.csv").open(newline="") as f:
        ids = [r["segment_id"] for r in csv.DictReader(f)]
    assert ids == [u.segment_id for u in read_corpus("19", corpora["19"]).utterances]
    assert proc.stdout.count("labels of the two corpora") == 1  # the main process reads and prints them
