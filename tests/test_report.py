"""Report aggregation against hand computations on fabricated run directories."""

import csv
import json
import math

import pytest

from common.errors import UserError
from common.report import aggregate, find_fold_sets, main, tables

from helpers import mark_run


def write_run(folder, fold, micro, *, script="text_classification", dataset="KEMDy20", split=None, fear=0.5):
    folder.mkdir(parents=True)
    test = {
        "loss": 0.3,
        "n": 10,
        "micro_f1": micro,
        "macro_f1": micro / 2,
        "weighted_f1": micro,
        "top1_accuracy": 0.5,
        "per_class_f1": {"angry": micro, "fear": fear},
    }
    m = {
        "script": script,
        "dataset": dataset,
        "fold": fold,
        "task": "classification",
        "chosen_epoch": 1,
        "test": test,
        "epochs": [{"epoch": 1, "train_loss": 0.4, "test": test}],
    }
    if split:
        m["split"] = split
    (folder / "metrics.json").write_text(json.dumps(m))
    mark_run(folder, script)


def write_config(folder, fold, threshold, script="text_classification"):
    """The fields of a run's config.json the project reads back."""
    args = {"num_fold": fold, "max_text_len": 32, "max_seq_len": 1.0, "threshold": threshold}
    config = {"script": script, "cell": {"modality": "text", "task": "classification", "fusion": None}}
    config |= {"args": args | {"pad_to_max_length": False}, "data": {"fingerprint": "corpus"}, "environment": {}}
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture
def runs(tmp_path):
    for k, micro in zip(range(1, 6), (0.5, 0.6, 0.7, 0.8, 0.9), strict=True):
        write_run(tmp_path / "a" / "KEMDy20" / f"fold{k}", k, micro, fear=None if k == 2 else 0.1 * k)
    for k, micro in ((1, 0.2), (2, 0.4), (4, 0.9)):
        write_run(tmp_path / "b" / "KEMDy19_session" / f"fold{k}", k, micro, dataset="KEMDy19", split="session")
    write_run(tmp_path / "b" / "KEMDy19_session" / "fold2_again", 2, 0.0, dataset="KEMDy19", split="session")
    (tmp_path / "a" / "KEMDy20" / "fold9" / "checkpoints" / "epoch1").mkdir(parents=True)  # no metrics: ignored
    return tmp_path


def test_mean_and_sample_std_over_folds_match_a_hand_computation(runs):
    b, a = find_fold_sets(runs)  # by dataset first: KEMDy19 before KEMDy20
    assert (a.folder.as_posix(), a.split, a.folds, a.complete) == ("a/KEMDy20", "contiguous", [1, 2, 3, 4, 5], True)
    stats = aggregate([a.metrics[k] for k in a.folds])
    # mean 0.7; squared deviations 0.04 + 0.01 + 0 + 0.01 + 0.04 = 0.1; sample variance 0.1 / 4
    assert stats["micro_f1"].mean == pytest.approx(0.7) and stats["micro_f1"].std == pytest.approx(math.sqrt(0.025))
    assert stats["f1_angry"].mean == pytest.approx(0.7)
    # fear undefined in fold 2: the mean of 0.1, 0.3, 0.4, 0.5 over the 4 folds where it is defined
    assert stats["f1_fear"].n == 4 and stats["f1_fear"].mean == pytest.approx(1.3 / 4)
    assert str(stats["macro_f1"]) == f"0.3500 ± {math.sqrt(0.025) / 2:.4f}"


def test_incomplete_and_duplicated_fold_sets_are_marked(runs):
    b, _ = find_fold_sets(runs)
    assert (b.dataset, b.split, b.folds, b.complete) == ("KEMDy19", "session", [1, 2, 4], False)
    assert b.status == "3/5 (missing 3, 5) (1 duplicate runs ignored)"
    assert [p.name for p in b.duplicates] == ["fold2_again"]  # the first of the two in path order counts
    assert aggregate([b.metrics[k] for k in b.folds])["micro_f1"].mean == pytest.approx(0.5)


def test_markdown_and_csv_tables(runs, tmp_path):
    md, table = tables(find_fold_sets(runs))
    assert "| text_classification | KEMDy20 | contiguous | 5/5 | 0.7000 ± 0.1581 | 0.3500 ± 0.0791 |" in md
    assert (
        "| text_classification * | KEMDy19 | session | 3/5 (missing 3, 5) (1 duplicate runs ignored) | 0.5000 ± 0.3606"
        in md
    )
    rows = list(csv.DictReader(table.splitlines()))
    row = next(r for r in rows if r["folder"] == "b/KEMDy19_session" and r["metric"] == "micro_f1")
    # 0.2, 0.4, 0.9: mean 0.5, squared deviations 0.09 + 0.01 + 0.16 = 0.26, sample variance 0.13
    assert float(row["mean"]) == pytest.approx(0.5) and float(row["std"]) == pytest.approx(math.sqrt(0.13))
    assert (row["n_folds"], row["folds"], row["complete"]) == ("3", "1 2 4", "False")


def test_the_same_cell_in_two_folders_is_told_apart_by_its_folder_and_sets_follow_the_grid(runs):
    write_run(runs / "c" / "KEMDy20" / "fold1", 1, 0.3)
    write_run(runs / "d" / "KEMDy20" / "fold1", 1, 0.3, script="speech_classification")
    write_run(runs / "e" / "KEMDy20" / "fold1", 1, 0.3, script="multimodal_classification_concat")
    sets = find_fold_sets(runs)
    assert [(fs.dataset, fs.script, fs.folder.name) for fs in sets][1:] == [
        ("KEMDy20", "text_classification", "KEMDy20"),
        ("KEMDy20", "text_classification", "KEMDy20"),
        ("KEMDy20", "speech_classification", "KEMDy20"),
        ("KEMDy20", "multimodal_classification_concat", "KEMDy20"),
    ]
    assert [fs.folder.parts[0] for fs in sets] == ["b", "a", "c", "d", "e"]
    md, _ = tables(sets)
    assert "| text_classification (`a/KEMDy20`) | KEMDy20 | contiguous | 5/5 |" in md
    assert "| text_classification * (`c/KEMDy20`) | KEMDy20 | contiguous | 1/5 (missing 2, 3, 4, 5) |" in md


def test_the_command_writes_its_files_and_skips_a_damaged_run_with_one_line(runs, capsys):
    main([str(runs), "--no-figures"])
    assert (runs / "report" / "results.md").read_text().startswith("# Results over folds")
    assert "2 fold sets (1 incomplete)" in capsys.readouterr().out
    (runs / "a" / "KEMDy20" / "fold3" / "metrics.json").write_text("{not json")
    (runs / "a" / "hf").mkdir()  # another tool's metrics.json: not a run, left out without a word
    (runs / "a" / "hf" / "metrics.json").write_text('{"eval_loss": 0.2}')
    skipped = []
    sets = find_fold_sets(runs, skipped)
    assert [fs.folds for fs in sets if fs.dataset == "KEMDy20"] == [[1, 2, 4, 5]]
    path = runs / "a" / "KEMDy20" / "fold3" / "metrics.json"
    assert len(skipped) == 1 and skipped[0].startswith(f"{path}: damaged (not JSON: Expecting property name")
    assert skipped[0].endswith("); train that fold again with --overwrite")
    main([str(runs), "--no-figures"])
    assert capsys.readouterr().err == f"skipped {skipped[0]}\n"
    with pytest.raises(UserError, match="no such folder of run directories"):
        find_fold_sets(runs / "nothing")


def test_emotion_decisions_are_counted_from_predictions_at_each_runs_threshold(tmp_path):
    from common.grid import EMOTIONS

    # a classification run's predictions.csv, as the loop writes it (true valence/arousal last)
    header = ["segment_id", *[f"true_{e}" for e in EMOTIONS], *[f"prob_{e}" for e in EMOTIONS]]
    header += ["true_valence", "true_arousal"]
    tables_by_fold = {
        1: [  # threshold 0.3: 2 predicted / 1 (0.4) / 2 (0.5 and 0.6); true sets of 2, 1, 1
            ("a", [1, 0, 0, 1, 0, 0, 0], [0.9, 0.1, 0.1, 0.7, 0.1, 0.1, 0.1]),
            ("b", [0, 0, 0, 0, 1, 0, 0], [0.1, 0.1, 0.1, 0.1, 0.4, 0.1, 0.1]),
            ("c", [0, 0, 0, 0, 1, 0, 0], [0.1, 0.1, 0.1, 0.1, 0.5, 0.6, 0.1]),
        ],
        2: [  # 2 predicted / none; all seven true in one row
            ("d", [1, 1, 1, 1, 1, 1, 1], [0.4, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1]),
            ("e", [0, 0, 0, 0, 1, 0, 0], [0.1, 0.1, 0.1, 0.1, 0.2, 0.1, 0.1]),
        ],
    }
    for fold, table in tables_by_fold.items():
        folder = tmp_path / "x" / "KEMDy19" / f"fold{fold}"
        write_run(folder, fold, 0.5)
        m = json.loads((folder / "metrics.json").read_text())
        m["test"]["hamming_accuracy"] = 0.8
        m["test"]["n"] = len(table)  # the rows of its predictions.csv
        (folder / "metrics.json").write_text(json.dumps(m))
        write_config(folder, fold, threshold=0.3)  # the runs' own, not 0.5
        lines = [",".join(header)] + [",".join([sid, *map(str, t), *map(str, p), "3.0", "3.0"]) for sid, t, p in table]
        (folder / "predictions.csv").write_text("\n".join(lines) + "\n")
    md, _ = tables(find_fold_sets(tmp_path))
    # predicting nothing: fold 1 gets 17 of 21 bits right, fold 2 6 of 14 -> mean 0.6905, sample std 0.3030
    none = [17 / 21, 6 / 14]
    mean, std = sum(none) / 2, abs(none[0] - none[1]) / math.sqrt(2)
    expected = f"| 0.8000 ± 0.0000 | {mean:.4f} ± {std:.4f} | 3 / 5 | 1 / 5 | 2 / 5 |"
    assert "## Emotion decisions" in md and expected in md, md


def test_the_report_writes_only_into_a_folder_of_its_own(runs, tmp_path):
    mine = tmp_path / "mine"
    (mine / "figures").mkdir(parents=True)
    (mine / "figures" / "a.png").write_bytes(b"my figure")
    (mine / "results.md").write_text("# Results of my own\n", encoding="utf-16")  # a report's names, another encoding
    before = {p: p.read_bytes() if p.is_file() else None for p in mine.rglob("*")}
    with pytest.raises(
        UserError,
        match=rf"^--out {mine}: holds files that are not a report's \(figures, results.md; no kemdy_report.json, so "
        r"not this project's whatever the names\); give a new or empty folder$",
    ):
        main([str(runs), "--out", str(mine), "--no-figures"])
    assert {p: p.read_bytes() if p.is_file() else None for p in mine.rglob("*")} == before
    main([str(runs), "--no-figures"])
    main([str(runs), "--no-figures"])  # its own folder, written again
    report = runs / "report"
    assert json.loads((report / "kemdy_report.json").read_text())["kind"] == "report"
    for marker, problem in (
        ('{"format": 1, "kind": "report", "entries": ["../results.md"]}', r'entries\[0\]: "../results.md", expected'),
        ('{"format": 1, "kind": "run", "entries": []}', r'kind: "run", expected one of "report"'),
        ("[" * 5000 + "]" * 5000, r"nested more than 24 levels deep"),
        ('{"format": 1, "kind": "report"}', r"entries: missing"),
        ('{"format": Infinity, "kind": "report", "entries": []}', r"Infinity is not a number this project writes"),
        ("{" + " " * 70000 + "}", r"70002 bytes, more than the 65536 this file may hold"),
    ):
        (report / "kemdy_report.json").write_text(marker)
        with pytest.raises(
            UserError, match=rf"kemdy_report.json: damaged \({problem}.*; nothing in {report} is touched"
        ):
            main([str(runs), "--no-figures"])
    (report / "kemdy_report.json").unlink()  # a report's files without the marker are no longer the project's
    with pytest.raises(UserError, match=r"holds files that are not a report's \(comparisons.csv, results.csv, results"):
        main([str(runs), "--no-figures"])


def test_the_report_never_writes_through_a_link(runs, tmp_path):
    main([str(runs), "--no-figures"])
    theirs = tmp_path / "theirs.csv"
    theirs.write_text("the user's file")
    (runs / "report" / "results.csv").unlink()
    (runs / "report" / "results.csv").symlink_to(theirs)
    with pytest.raises(UserError, match=r"report/results.csv: a link; the report never writes through links"):
        main([str(runs), "--no-figures"])
    assert theirs.read_text() == "the user's file"


def test_a_full_disk_while_writing_the_report_is_one_line(runs, monkeypatch):
    import errno

    from common import atomic

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "write_text", full)
    with pytest.raises(UserError, match=rf"^disk full: cannot write the report in {runs / 'report'}; free some space$"):
        main([str(runs), "--no-figures"])


def test_figures_say_how_many_folds_are_behind_them(runs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.report import _per_class_f1_figure, over

    assert over([3]) == "fold 3" and over([1, 2, 3, 4, 5]) == "mean ± std over 5 folds"
    b, a = find_fold_sets(runs)
    for fs, expected in ((a, "F1 (mean ± std over 5 folds)"), (b, "F1 (mean ± std over 3 folds)")):
        fig = _per_class_f1_figure(plt, aggregate([fs.metrics[k] for k in fs.folds]), "label", fs.folds)
        assert fig.axes[0].get_ylabel() == expected
        plt.close(fig)
    one = _per_class_f1_figure(plt, aggregate([a.metrics[3]]), "label", [3])
    assert one.axes[0].get_ylabel() == "F1 (fold 3)"
    plt.close(one)


def test_the_benchmarks_report_grid_is_a_grid_the_report_reads(tmp_path):
    """The benchmark times the report on runs it writes itself: each one a finished run of its fold that the
    report counts, with the metrics those outputs give."""
    import numpy as np

    from tools.bench import _write_fake_run

    rng = np.random.default_rng(0)
    labels = (rng.random((40, 7)) < 0.3).astype(int)
    probs, va = rng.random((40, 7)), rng.uniform(1, 5, (40, 2))
    for k in range(1, 6):
        _write_fake_run(
            tmp_path / "text_total" / "KEMDy20" / f"fold{k}", "text_total", "total", k, labels, probs, va, va
        )
    main([str(tmp_path), "--no-figures", "--bootstrap", "100", "--out", str(tmp_path / "report")])
    rows = list(csv.DictReader((tmp_path / "report" / "results.csv").open()))
    (micro,) = [r for r in rows if r["metric"] == "micro_f1"]
    assert micro["folds"] == "1 2 3 4 5" and micro["complete"] == "True" and micro["n_folds"] == "5", micro


def test_folds_written_before_a_setting_existed_join_the_folds_written_since(tmp_path):
    """A run's marker records the settings of its day: a fold from before --targets and --protocol existed and
    folds run since at their earlier values make one complete set, while a fold at another value stays apart."""
    for k in range(1, 6):
        write_run(tmp_path / "a" / f"fold{k}", k, 0.5)
        now = {"lr": 1e-5} | ({} if k == 1 else {"targets": "total", "protocol": None})
        mark_run(tmp_path / "a" / f"fold{k}", "text_classification", now)
    (one,) = find_fold_sets(tmp_path)
    assert one.complete and one.folds == [1, 2, 3, 4, 5]
    mark_run(tmp_path / "a" / "fold5", "text_classification", {"lr": 1e-5, "targets": "raters"})
    sets = find_fold_sets(tmp_path)
    assert sorted(len(s.folds) for s in sets) == [1, 4] and all(s.mixed for s in sets)


def test_fold_sets_that_differ_only_by_their_seed_are_gathered_with_the_seeds_and_the_folds_parts(tmp_path):
    import numpy as np

    micro = {1: [0.5, 0.6, 0.55, 0.7, 0.65], 7: [0.52, 0.58, 0.6, 0.66, 0.7], 9: [0.48, 0.61, 0.5, 0.72, 0.6]}
    for seed, values in micro.items():
        for k, value in enumerate(values, start=1):
            write_run(tmp_path / f"KEMDy20_seed{seed}" / f"fold{k}", k, value)
            mark_run(tmp_path / f"KEMDy20_seed{seed}" / f"fold{k}", "text_classification", {"seed": seed, "lr": 1e-5})
    for k in range(1, 6):  # another learning rate: not one of the seeds' group
        write_run(tmp_path / "KEMDy20_lr" / f"fold{k}", k, 0.9)
        mark_run(tmp_path / "KEMDy20_lr" / f"fold{k}", "text_classification", {"seed": 3, "lr": 2e-5})
    md, _ = tables(find_fold_sets(tmp_path))
    section = md[md.index("## Seeds") :].splitlines()
    (row,) = [line for line in section if line.startswith("| text_classification")]
    x = np.array(list(micro.values()))
    means = x.mean(axis=1)
    expected = f"{means.mean():.4f} ± {means.std(ddof=1):.4f} (folds ± {x.std(axis=1, ddof=1).mean():.4f})"
    assert row.startswith("| text_classification | KEMDy20 | contiguous | 1, 7, 9 | " + expected + " | ")
    x = x / 2  # write_run's macro-F1
    means = x.mean(axis=1)
    assert f"| {means.mean():.4f} ± {means.std(ddof=1):.4f} (folds ± {x.std(axis=1, ddof=1).mean():.4f}) |" in row


def test_a_speech_cell_is_compared_with_and_without_the_turns_before_speech(tmp_path):
    """A speech cell records --context only where it reads the turns before's speech: the two fold sets still pair
    on the one setting that differs."""
    import numpy as np

    from common.report import setting_pairs
    from common.rundir import Owner
    from tools.bench import _write_fake_run

    rng = np.random.default_rng(0)
    labels = (rng.random((20, 7)) < 0.3).astype(int)
    for name, recorded in (("plain", {"lr": 1e-5, "context_speech": False}), ("turns", {"lr": 1e-5, "context": 2})):
        recorded = recorded | ({"context_speech": True} if name == "turns" else {})
        for k in range(1, 6):
            folder = tmp_path / name / f"fold{k}"
            va = rng.uniform(1, 5, (20, 2))
            _write_fake_run(folder, "speech_classification", "classification", k, labels, rng.random((20, 7)), va, va)
            entries = ["metrics.json", "predictions.csv"]
            Owner(folder, "run", "speech_classification", recorded, {"listing": "c"}, False, entries, fold=k).write()
    (pair,) = setting_pairs(find_fold_sets(tmp_path))
    labels_of = [label for label, _ in pair]
    assert labels_of == [
        "speech_classification [--context_speech True]",
        "speech_classification [--context_speech False]",
    ]
