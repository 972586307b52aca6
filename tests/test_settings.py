"""The settings schema: each flag declared once in common/settings.py, and everything that derives from it (the
parser, the presets, the comparison of runs, the flags page) agreeing with a hand-written account of what the
project promised before the schema existed."""

import argparse
import ast
import dataclasses
import re
import shutil
import subprocess
import sys

import pytest

from common import rundir, settings
from common.cli import build_parser, parse_args, parse_script
from common.errors import UserError
from common.grid import Cell

from helpers import ROOT

TEXT = Cell("text", "classification")
BOTH = Cell("multimodal", "total", "gated")

# What the project promised before the schema, written out by hand: the flags that never change a run's
# numbers, the value of each flag added after runs existed, and the flags of one encoder.
NOT_RESULTS = {
    "resume", "overwrite", "num_workers", "gpus", "output_dir", "dataset_dir", "test_dataset_dir", "save_model",
    "cache", "cache_dir", "keep_checkpoint", "report_to", "quiet", "ckpt", "demo", "original", "num_fold", "seeds",
}  # fmt: skip
EARLIER = {
    "labels": "checked", "duplicate_rows": "all", "text_inputs": "masked", "speech_inputs": "extractor",
    "emotion_output": "sigmoid", "va_targets": "standardized", "va_loss": "mean", "dropout_on": "fused",
    "num_labels": 7, "regress": 1, "class_weight": "none", "layers": "last", "whisper_window": "clip",
    "optimizer": "adamw", "test_dataset": None, "targets": "total", "protocol": None, "context": 0,
    "modality_dropout": 0.0, "score_on": "test", "bio": False, "context_speech": False,
}  # fmt: skip
TEXT_ONLY = {"text_model", "text_pooling", "text_inputs", "max_text_len", "pad_to_max_length", "context"}
SPEECH_ONLY = {"speech_model", "speech_pooling", "speech_inputs", "max_seq_len", "whisper_window", "context_speech"}


def test_the_parser_holds_exactly_the_declared_flags_with_their_defaults_and_choices():
    parser = build_parser(BOTH, chooses_fusion=True)
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    assert set(actions) == set(settings.FLAGS) | {"fusion"}
    for name, meta in settings.FLAGS.items():
        action = actions[name]
        assert action.default == settings.DEFAULTS[name], name
        assert tuple(action.choices or ()) == tuple(meta["choices"] or ()), name
        toggle = isinstance(action, argparse.BooleanOptionalAction)
        assert toggle == (meta["kind"] == "toggle"), name
        assert (action.nargs == 0 and not toggle) == (meta["kind"] == "switch"), name
    plain = build_parser(TEXT)
    assert "fusion" not in {a.dest for a in plain._actions}  # the cell's fusion: multimodal_<task>.py's only


def test_what_changes_results_the_earlier_values_and_each_encoders_flags_are_those_promised():
    assert settings.NOT_RESULTS == NOT_RESULTS | set(settings.PLAN_FIELDS)
    assert settings.EARLIER == EARLIER
    assert (set(settings.TEXT_ONLY), set(settings.SPEECH_ONLY)) == (TEXT_ONLY, SPEECH_ONLY)
    assert settings.FUSION_PARAMS == {"width": 256, "heads": 4, "layers": 1, "rank": 4}


def _changed(plan, name):
    """The plan with `name` set to another valid value."""
    meta, value = settings.FLAGS[name], settings.DEFAULTS[name]
    if meta["choices"]:
        other = next(c for c in meta["choices"] if c != value)
    elif meta["kind"] != "value":
        other = not value
    elif isinstance(value, str) or value is None:
        other = "elsewhere"
    else:
        other = value + 1 if name != "threshold" else 0.25
    return plan.but(**{name: other})


@pytest.mark.parametrize(
    "cell", [TEXT, Cell("speech", "regression"), BOTH, Cell("multimodal", "total", "concat"), Cell("bio", "total")]
)
def test_a_run_differs_from_another_by_exactly_the_settings_its_cell_reads_that_change_results(cell):
    """Each flag changed alone: the ownership comparison sees it exactly where the hand-written account says it
    changes this cell's numbers (a flag of an encoder the cell lacks, or of a fusion it does not read, is not)."""
    plan = parse_args(cell, ["--dataset_dir", str(ROOT)])
    unread = (set() if cell.uses_text else TEXT_ONLY) | (set() if cell.uses_speech else SPEECH_ONLY)
    unread |= set() if cell.classifies else {"targets"}  # what the emotion head learns
    unread |= set() if cell.fusion else {"modality_dropout"}  # a modality lost in training
    unread |= {"bio"} if cell.uses_bio else set()  # the bio-signals added to a cell that has encoders
    reads = {"width"} if cell.fusion == "gated" else set()
    unread |= {f"fusion_{p}" for p in ("width", "heads", "layers", "rank") if p not in reads}
    for name in settings.FLAGS:
        changed = rundir.differences(plan.record(), _changed(plan, name).record(), cell)
        expected = name not in NOT_RESULTS and name not in unread
        assert bool(changed) == expected and all(c.startswith(f"--{name} ") for c in changed), (name, changed)


def test_a_run_written_before_a_flag_existed_compares_as_its_earlier_value():
    plan = parse_args(TEXT, ["--dataset_dir", str(ROOT)])
    before = {k: v for k, v in plan.record().items() if k not in EARLIER}
    assert rundir.differences(before, plan.record(), TEXT) == ["--dropout_on fused -> modalities"]
    assert rundir.differences(before, plan.but(dropout_on="fused").record(), TEXT) == []


def test_each_preset_value_is_one_its_flag_accepts():
    for preset in (settings.ORIGINAL, settings.DEMO):
        for name, value in preset.items():
            meta = settings.FLAGS[name]
            assert meta["choices"] is None or value in meta["choices"], name
            assert meta["rule"] is None or meta["rule"][0](value), name
            assert type(value) is type(settings.DEFAULTS[name]) or settings.DEFAULTS[name] is None, name


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch_size", "0"], r"^--batch_size 0: must be at least 1$"),
        (["--dropout", "1"], r"^--dropout 1.0: must be in \[0, 1\)$"),
        (["--lr", "nan"], r"^--lr nan: must be a finite number$"),
        (["--num_fold", "6"], r"^--num_fold 6: choose a fold from 1 to 5$"),
        (["--seed", "-1"], r"^--seed -1: must be in 0 \.\. 2\*\*32 - 1$"),
        (["--fusion_rank", "0"], r"^--fusion_rank 0: must be at least 1$"),
        (["--threshold", "tuned", "--valid_ratio", "0"], r"^--threshold tuned: needs a validation part to tune on"),
        (["--output_dir", ""], r"^--output_dir: empty; give a path"),
    ],
)
def test_a_value_out_of_its_range_is_refused_in_one_line_naming_the_flag(flags, message):
    with pytest.raises(UserError, match=message):
        parse_script("multimodal_total", ["--dataset_dir", str(ROOT), *flags])


def test_the_settings_are_frozen_and_the_plan_records_them_with_the_folds_and_notes():
    plan = parse_args(TEXT, ["--dataset_dir", str(ROOT), "--num_fold", "all", "--lr", "3e-5"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.settings.lr = 1.0
    assert plan.folds == (1, 2, 3, 4, 5) and plan.but(lr=1.0).settings.lr == 1.0 and plan.settings.lr == 3e-5
    record = plan.record()
    assert record["lr"] == 3e-5 and record["folds"] == [1, 2, 3, 4, 5] and record["num_fold"] == "all"
    assert set(record) == set(settings.FLAGS) | {"folds", "notes", "encoder_tags"}


def test_no_module_below_the_command_line_takes_the_parsed_arguments():
    """Modules receive the plan, its settings or the model's configuration: no function of the package takes an
    `args` parameter or a namespace, except the commands' own main()."""
    found = []
    for path in sorted((ROOT / "common").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name != "main":
                params = node.args.args + node.args.kwonlyargs
                notes = [ast.unparse(p.annotation) for p in params if p.annotation is not None]
                if any(p.arg == "args" for p in params) or any("Namespace" in n for n in notes):
                    found.append(f"{path.name}:{node.name}")
    assert found == []


def _adding_a_flag_example() -> str:
    page = (ROOT / "docs" / "flags.md").read_text(encoding="utf-8")
    section = page[page.index("## Adding a flag") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_a_flag_added_as_the_docs_show_is_one_declaration(tmp_path):
    """docs/flags.md's example declaration, added to a copy of the repository and nothing else: every script
    takes the flag and lists it, its range is checked, a run records it, a changed value refuses --resume while
    a run from before the flag compares as its earlier value, and the flags page is made again with its row."""
    copy = tmp_path / "repo"
    for part in ("common", "tools", "docs"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "text_classification.py", copy)
    source = (copy / "common" / "settings.py").read_text(encoding="utf-8")
    end_of_class = source.index("\n\n\nFLAGS = ")
    (copy / "common" / "settings.py").write_text(
        source[:end_of_class] + "\n" + _adding_a_flag_example().rstrip("\n") + source[end_of_class:], encoding="utf-8"
    )

    def run(*argv):
        return subprocess.run([sys.executable, *argv], cwd=copy, capture_output=True, text=True)

    helped = run("text_classification.py", "--help")
    assert re.search(
        r"--label_smoothing LABEL_SMOOTHING\s+move each emotion's target .*\(default: 0\.0\)", helped.stdout, re.S
    )
    refused = run("text_classification.py", "--dataset_dir", ".", "--label_smoothing", "0.7")
    assert refused.returncode == 2 and refused.stderr.strip() == "error: --label_smoothing 0.7: must be in [0, 0.5)"
    compared = run(
        "-c",
        "from common.cli import parse_args; from common.grid import Cell; from common import rundir\n"
        "plan = parse_args(Cell('text', 'classification'), ['--dataset_dir', '.', '--label_smoothing', '0.1'])\n"
        "before = {k: v for k, v in plan.record().items() if k != 'label_smoothing'}\n"
        "print(plan.record()['label_smoothing'], rundir.differences(before, plan.record()),"
        " rundir.differences(before, plan.but(label_smoothing=0.0).record()))",
    )
    assert compared.stdout.strip() == "0.1 ['--label_smoothing 0.0 -> 0.1'] []", compared.stderr
    assert run("-m", "tools.flagsdoc", "--check").returncode == 1
    assert run("-m", "tools.flagsdoc").returncode == 0 and run("-m", "tools.flagsdoc", "--check").returncode == 0
    page = (copy / "docs" / "flags.md").read_text(encoding="utf-8")
    assert "| `--label_smoothing` | `0.0` | move each emotion's target this far towards 0.5" in page
