"""The twelve cells end to end on a tiny synthetic corpus with tiny encoders, each trained as its command line
starts it (in this process: a process of its own would spend most of its time importing); the scripts' own
processes answer --help and bad arguments here, and run as printed in the README's tour (test_docs.py)."""

import argparse
import csv
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from common.cli import build_parser
from common.grid import EMOTIONS, Cell
from common.kemdy import read_corpus
from common.model import EmotionModel
from common.predict import Predictor
from common.synthetic import generate

from helpers import train_in_process

ROOT = Path(__file__).resolve().parents[1]
CLASSIFICATION_KEYS = {
    "loss",
    "n",
    "micro_f1",
    "macro_f1",
    "weighted_f1",
    "top1_weighted_f1",
    "per_class_f1",
    "hamming_accuracy",
    "subset_accuracy",
    "top1_accuracy",
    "uar",
    "per_class_precision",
    "per_class_recall",
}
REGRESSION_KEYS = {"loss", "n", "mean_ccc"} | {
    f"{d}_{m}" for d in ("valence", "arousal") for m in ("ccc", "pearson", "mae", "rmse")
}
# (script, dataset, extra flags): together they cover both datasets, the non-default options and --original
# in every modality and fusion.
RUNS = [
    ("text_classification", "20", ["--text_pooling", "mean", "--original"]),
    ("text_regression", "19", ["--valid_ratio", "0", "--targets", "raters"]),  # ignored: no emotions
    ("text_total", "20", ["--lr_scheduler", "linear", "--warmup_ratio", "0.5"]),
    ("speech_classification", "19", ["--group_by_length", "--original"]),
    ("speech_regression", "20", ["--speech_pooling", "cnn_last", "--max_seq_len", "2"]),
    ("speech_total", "20", ["--max_grad_norm", "1.0", "--class_weight", "balanced", "--threshold", "tuned"]),
    ("multimodal_classification_concat", "20", ["--threshold", "0.3"]),
    ("multimodal_regression_concat", "19", ["--kemdy19_rows", "speaker", "--original"]),
    ("multimodal_total_concat", "20", ["--cls_weight", "2", "--reg_weight", "0.5", "--targets", "raters"]),
    ("multimodal_classification_element_wise_add", "19", ["--text_pooling", "cls", "--original"]),
    ("multimodal_regression_element_wise_add", "20", ["--head_lr", "1e-3"]),
    ("multimodal_total_element_wise_add", "19", ["--class_weight", "balanced", "--threshold", "tuned"]),
]
# Run as the original's README does: from the folder holding ./KEMDy19, without --dataset_dir.
DEFAULT_DATASET_DIR = "multimodal_total_element_wise_add"


def run_script(script, *args, cwd=ROOT):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / f"{script}.py"), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_models):
    base = tmp_path_factory.mktemp("scripts")
    corpora = {"20": base / "KEMDy20", "19": base / "KEMDy19"}
    generate("20", corpora["20"], sessions=2, utterances_per_session=20, seed=5)
    generate("19", corpora["19"], sessions=2, utterances_per_session=12, seed=6, odd_audio=True)

    found = {}
    for script, dataset, extra in RUNS:
        out = base / "runs" / script
        where = [] if script == DEFAULT_DATASET_DIR else ["--dataset_dir", corpora[dataset]]
        argv = ["--dataset", dataset, *where, "--num_fold", "2", "--epochs", "1", "--batch_size", "8"]
        argv += ["--max_text_len", "32", "--lr", "1e-3", "--output_dir", out, *extra]
        argv += ["--text_model", tiny_models / "text", "--speech_model", tiny_models / "speech"]
        code, printed, error = train_in_process(script, argv, cwd=base)
        found[script] = (SimpleNamespace(returncode=code, stdout=printed, stderr=error), out, corpora[dataset], dataset)
    return found


@pytest.mark.parametrize("script, dataset, extra", RUNS, ids=[r[0] for r in RUNS])
def test_each_script_trains_one_fold_and_writes_its_run_directory(runs, script, dataset, extra):
    proc, out, corpus_dir, dataset = runs[script]
    assert proc.returncode == 0, proc.stderr[-3000:]
    task = script.split("_")[1]
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {
        "classification": CLASSIFICATION_KEYS,
        "regression": REGRESSION_KEYS,
        "total": CLASSIFICATION_KEYS | REGRESSION_KEYS,
    }[task]
    assert set(metrics["test"]) == expected
    assert metrics["script"] == script and metrics["fold"] == 2 and metrics["chosen_epoch"] == 1
    assert metrics["selection"] == ("last_epoch" if {"--valid_ratio", "--original"} & set(extra) else "valid_loss")
    assert len(metrics["epochs"]) == 1 and set(metrics["epochs"][0]["test"]) == expected
    assert ("thresholds" in metrics) == ("tuned" in extra)
    config = json.loads((out / "config.json").read_text())
    assert ("class_weights" in config["data"]) == ("balanced" in extra)

    rows = "speaker" if "speaker" in extra else "all"
    utts = read_corpus(dataset, corpus_dir, rows=rows).utterances
    n = len(utts)
    test_ids = [u.segment_id for u in utts[int(n * 1 / 5) : int(n * 2 / 5)]]
    with (out / "predictions.csv").open(encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["segment_id"] for r in table] == test_ids and metrics["test"]["n"] == len(test_ids)
    columns = set(table[0])
    assert {f"true_{e}" for e in EMOTIONS} <= columns and {"true_valence", "true_arousal"} <= columns
    assert ({f"prob_{e}" for e in EMOTIONS} <= columns) == (task != "regression")
    assert ({"pred_valence", "pred_arousal"} <= columns) == (task != "classification")
    if task != "regression":
        assert all(0.0 <= float(r[f"prob_{e}"]) <= 1.0 for r in table for e in EMOTIONS)
        # confusion.csv: every test utterance counted once per true emotion, at its most probable emotion
        expected = np.zeros((7, 7), dtype=int)
        for r in table:
            top1 = max(range(7), key=lambda i: float(r[f"prob_{EMOTIONS[i]}"]))
            for i, e in enumerate(EMOTIONS):
                expected[i, top1] += r[f"true_{e}"] == "1"
        with (out / "confusion.csv").open(encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["true", *[f"top1_{e}" for e in EMOTIONS]] and [r[0] for r in rows[1:]] == list(EMOTIONS)
        assert np.array_equal(np.array([[int(c) for c in r[1:]] for r in rows[1:]]), expected)
    else:
        assert not (out / "confusion.csv").exists()

    config = json.loads((out / "config.json").read_text())
    assert config["script"] == script and config["args"]["dataset"] == dataset
    assert config["data"]["used"] == n and config["data"]["split"]["test"] == len(test_ids)
    assert config["environment"]["torch"].startswith("2.13")
    for modality in ("text", "speech"):
        if modality in script or script.startswith("multimodal"):
            assert config["models"][modality]["path"].endswith(f"{modality}")
    assert (out / "model" / "model.json").is_file()
    assert f"{script} KEMDy{dataset} fold 2: test metrics of epoch 1" in proc.stdout


def test_a_saved_model_reproduces_its_predictions(runs):
    proc, out, corpus_dir, dataset = runs["multimodal_total_concat"]
    model, tok, fe = EmotionModel.load(out / "model")
    assert model.config.cell.name == "multimodal_total_concat" and tok is not None and fe is not None
    config = json.loads((out / "config.json").read_text())
    assert model.va_mean.tolist() == pytest.approx(config["data"]["va_mean"])
    # The test fold predicted anew by the saved model, in the run's batches, equals predictions.csv.
    with (out / "predictions.csv").open(encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    utts = {u.segment_id: u for u in read_corpus(dataset, corpus_dir).utterances}
    again = Predictor(out)([utts[r["segment_id"]].wav for r in table], [utts[r["segment_id"]].text for r in table], 8)
    for row, result in zip(table, again, strict=True):
        assert [result["probabilities"][e] for e in EMOTIONS] == pytest.approx(
            [float(row[f"prob_{e}"]) for e in EMOTIONS], abs=2e-6
        )
        assert [result["valence"], result["arousal"]] == pytest.approx(
            [float(row["pred_valence"]), float(row["pred_arousal"])], abs=2e-5
        )


def test_help_explains_every_flag_and_the_flags_page_lists_exactly_the_same_flags():
    proc = run_script("multimodal_total", "--help")  # every flag: a twelve's, and --fusion
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    in_help = set(re.findall(r"\[(--[a-z_]+)", text)) - {"--help"}
    page = (ROOT / "docs" / "flags.md").read_text(encoding="utf-8")
    flags = page[page.index("## Flags") : page.index("## Adding a flag")]
    in_page = {re.sub(r"^--no-", "--", f) for f in re.findall(r"`(--[a-z_-]+)", flags)} - {"--help"}
    assert in_help == in_page, (sorted(in_help - in_page), sorted(in_page - in_help))
    assert len(in_help) >= 45
    parser = build_parser(Cell("multimodal", "total", "element_wise_add"), chooses_fusion=True)
    assert all(len(action.help or "") > 10 for action in parser._actions), "a flag without its help text"
    assert "(default: 1e-05)" in text and "(default: klue/bert-base)" in text
    assert "(default: facebook/wav2vec2-base-960h)" in text and "(default: 1234)" in text
    assert "(default: 32)" in text and "(default: 256)" in text and "(default: 19)" in text
    assert "settings for tiny models: --dataset 20, --num_fold 1, --max_text_len 64, --group_by_length, --lr" in text
    assert "compute what the original code computed: --labels original, --duplicate_rows all, --valid_ratio" in text
    assert "--speech_inputs original, --dropout_on modalities" in text and "--optimizer original; flags given" in text


def test_the_flags_page_holds_the_tables_made_from_the_settings():
    """docs/flags.md's tables are what tools.flagsdoc makes of common/settings.py, and the rows of --demo and
    --original name exactly the flags each sets, as --help does."""
    from common.settings import DEMO, ORIGINAL, flags_text
    from tools.flagsdoc import PAGE, page_with_tables

    page = PAGE.read_text(encoding="utf-8")
    assert page == page_with_tables(page), "docs/flags.md: run python -m tools.flagsdoc"
    for flag, presets in (("--demo", DEMO), ("--original", ORIGINAL)):
        row = re.search(rf"^\| `{flag}` \|.*$", page, re.M).group(0)
        assert f"`{flags_text(presets)}`" in row, (flag, row)
    assert subprocess.run([sys.executable, "-m", "tools.flagsdoc", "--check"], cwd=ROOT).returncode == 0


def _parsers(parser):
    """A parser and those of its subcommands."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize(
    "command", ["script", "audit", "bench", "gpucheck", "flagsdoc", "predict", "report", "rundir", "synthetic"]
)
def test_every_commands_help_says_each_default_once(command, monkeypatch):
    """A flag that takes a value and has a default says it once, 0 included (as for --weight_decay and the report's
    --seed); a switch says none; a default resolved later (--dataset_dir) is said at most once, in words."""
    if command == "script":
        parser = build_parser(Cell("multimodal", "total", "concat"), chooses_fusion=True)
    else:
        built = []

        def parse_args(self, *args, **kwargs):
            built.append(self)
            raise StopIteration  # before the command does anything

        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
        with pytest.raises(StopIteration):
            package = "tools" if command in ("bench", "gpucheck", "flagsdoc") else "common"
            importlib.import_module(f"{package}.{command}").main([])
        (parser,) = built
    checked = 0
    for each in _parsers(parser):
        formatter = each._get_formatter()
        for action in each._actions:
            if not action.option_strings or action.help in (None, argparse.SUPPRESS):
                continue
            said = formatter._expand_help(action)
            switch = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
            if switch:  # its help may say in words what happens without it, never "(default: False)"
                assert f"(default: {action.default})" not in said, (command, action.dest, said)
            elif action.default is None:  # resolved later: the help may say how, once
                assert said.count("default") <= 1, (command, action.dest, said)
            else:
                assert said.count("default") == 1, (command, action.dest, said)
                checked += 1
                if "(default: " in said and not isinstance(action, argparse.BooleanOptionalAction):
                    assert f"(default: {action.default})" in said, (command, action.dest, said)
    assert checked >= (40 if command == "script" else 0)


PARTS = (
    "demo/", "-to-", "_session", "_continual_erc", "_original", "_freeze-", "_layers-", "_targets-", "_seed7", "-xlsr-"
)  # fmt: skip


def test_the_default_run_folder_is_the_one_the_flags_page_describes(tmp_path):
    """Each part of the documented pattern, [optional] or repeated (…), is met by a run's default folder, and every
    default folder fits the pattern."""
    from common.cli import parse_script
    from common.grid import encoder_tags
    from common.train import _default_run_dir

    page = (ROOT / "docs" / "flags.md").read_text(encoding="utf-8")
    pattern = re.search(r"^\| `--output_dir` \| `([^`]+)`, without `fold<k>` across corpora", page, re.M).group(1)
    regex = re.escape(pattern).replace(r"\[_<encoder>…\]", r"(_[A-Za-z0-9._-]+)*")
    regex = re.sub(r"\\\[(.*?)\\\]", r"(?:\1)?", regex)
    kinds = {"script": "[a-z_]+", "which": "[a-z]+", "protocol": "[a-z_]+"}  # <dataset>, <test_dataset>, <k>: numbers
    regex = re.sub(r"<(\w+)>", lambda m: kinds.get(m.group(1), r"\d+"), regex)
    runs = [
        ("text_total", ["--protocol", "continual_erc"]),
        ("multimodal_total", ["--fusion", "gated", "--split", "session", "--original", "--freeze", "both"]),
        ("speech_regression", ["--layers", "weighted", "--speech_model", "kresnik/wav2vec2-large-xlsr-korean"]),
        ("multimodal_classification", ["--targets", "raters", "--layers", "weighted", "--seed", "7"]),
        ("text_classification", ["--demo", "--text_model", "models/klue-roberta", "--test_dataset", "19"]),
    ]
    seen = set()
    for script, flags in runs:
        plan = parse_script(script, ["--dataset", "20", "--dataset_dir", str(tmp_path), *flags])
        cell, args = plan.cell, plan.settings
        tags = encoder_tags(cell, {"text": args.text_model, "speech": args.speech_model})
        folder = _default_run_dir(cell, args, 3, tags).as_posix()
        if args.test_dataset:
            assert re.fullmatch(regex.removesuffix(r"/fold\d+"), folder), (folder, regex)
        else:
            assert re.fullmatch(regex, folder) and folder.endswith("/fold3"), (folder, regex)
        seen |= {part for part in PARTS if part in folder}
    assert seen == set(PARTS)


# A script started where there is no fcntl (Windows), as far as Python can pretend to be there.
WINDOWS = """
import runpy, sys
class NoFcntl:
    def find_spec(self, name, path=None, target=None):
        if name == "fcntl":
            raise ModuleNotFoundError("No module named 'fcntl'")
sys.meta_path.insert(0, NoFcntl())
sys.modules.pop("fcntl", None)
sys.platform = "win32"
sys.argv = sys.argv[1:]
sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])  # as `python <script>.py` puts the script's folder first
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_on_windows_a_script_refuses_to_start_in_one_line_saying_to_use_wsl(tmp_path):
    script = str(ROOT / "multimodal_total_concat.py")
    proc = subprocess.run(
        [sys.executable, "-c", WINDOWS, script, "--demo"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: training runs on Linux or macOS; on Windows, run the scripts under WSL\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (
            [],
            "error: --dataset_dir not given and no ./KEMDy19 folder here: pass the KEMDy19 root holding annotation/ "
            "and wav/, or use --demo",
        ),
        (
            ["--dataset_dir", "/nonexistent/KEMDy20", "--dataset", "20"],
            "error: --dataset_dir /nonexistent/KEMDy20: no such directory",
        ),
        (["--dataset_dir", "/nonexistent", "--num_fold", "6"], "error: --num_fold 6: choose a fold from 1 to 5"),
        (
            ["--dataset_dir", "/nonexistent", "--num_fold", "last"],
            "python text_classification.py: error: argument --num_fold: 'last': choose a fold from 1 to 5, or all",
        ),
        (["--dataset_dir", "/nonexistent", "--batch_size", "0"], "error: --batch_size 0: must be at least 1"),
        (["--dataset_dir", "/nonexistent", "--lr", "-0.001"], "error: --lr -0.001: must be positive"),
        (
            ["--dataset_dir", "/nonexistent", "--num_labels", "6"],
            "error: --num_labels 6: KEMDy has 7 emotion classes; only 7 works",
        ),
        (
            ["--dataset_dir", "/nonexistent", "--regress", "2"],
            "error: --regress 2: valence and arousal are one number each; only 1 works",
        ),
    ],
)
def test_bad_arguments_stop_with_one_line(args, message, tmp_path):
    proc = run_script("text_classification", *args, "--output_dir", tmp_path / "run")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == message and "Traceback" not in proc.stderr


def test_help_and_bad_arguments_answer_without_loading_torch_or_transformers():
    script = [str(ROOT / "multimodal_total_concat.py")]
    predict, report = ["-m", "common.predict"], ["-m", "common.report"]
    for command, args, heavy in (
        (script, ["--help"], {"numpy"}),
        (script, ["--num_fold", "6", "--dataset_dir", "/nonexistent"], {"numpy"}),
        (script, ["--dataset_dir", "/nonexistent/KEMDy20"], {"numpy"}),
        (predict, ["--help"], {"sklearn"}),
        (predict, ["--run_dir", "x", "--batch_size", "0", "--text", "a"], {"sklearn"}),
        (report, ["--help"], {"sklearn"}),
        (report, ["/nonexistent"], {"sklearn"}),
    ):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", *command, *args], capture_output=True, text=True, cwd=ROOT
        )
        imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
        assert "common" in imported and not imported & {"torch", "transformers", "accelerate", *heavy}, args
        assert proc.returncode == (0 if args == ["--help"] else 2), proc.stderr[-500:]


def test_help_groups_the_originals_flags_apart_and_says_each_default_once():
    text = run_script("text_classification", "--help").stdout
    sections = re.split(r"\n(?=\S[^\n]*:\n)", text)
    original = next(s for s in sections if s.startswith("the original's flags"))
    restore = next(s for s in sections if s.startswith("what the original computed"))
    assert {"--lr", "--batch_size", "--num_fold", "--max_seq_len", "--ckpt"} <= set(re.findall(r"  (--\w+)", original))
    assert {"--original", "--emotion_output", "--va_loss", "--speech_pooling"} <= set(re.findall(r"  (--\w+)", restore))
    assert "--freeze" not in original + restore
    for entry in re.split(r"\n  (?=--)", text):
        assert entry.count("default") <= 1, entry


@pytest.mark.parametrize(
    "script, suggested",
    [
        ("multimodal_total_concat", "text_total.py --demo --num_fold all"),
        ("speech_regression", "text_regression.py --demo --num_fold all"),
        ("text_classification", "text_classification.py --demo --num_fold all --resume"),
    ],
)
def test_the_demo_suggests_all_folds_of_the_text_cell_of_its_task(corpus20, script, suggested):
    """A speech cell's five folds take minutes on a CPU, the text cell's seconds; a text cell keeps its fold."""
    from common.cli import parse_args
    from common.grid import cell_of
    from common.train import _next_steps

    cell = cell_of(script)
    args = parse_args(cell, ["--demo"]).settings
    run_dir = Path("runs/demo") / script / "KEMDy20" / "fold1"
    lines = _next_steps(cell, args, run_dir, read_corpus("20", corpus20[0])).splitlines()
    python = os.path.relpath(sys.executable)
    python = python if not python.startswith("..") else sys.executable
    assert lines[1:3] == [f"  {python} -m common.report runs/demo", f"  {python} {suggested}"]
    assert lines[3].startswith(f"  {python} -m common.predict --run_dir {run_dir} ")
