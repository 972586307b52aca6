"""What a run's config.json and metrics.json hold, their text as written and reading them back: every field the
project uses is checked for its type (`common.schema`) before a resumed run, the report or `common.predict` acts
on it, and what is written is checked the same way first, so that it reads back."""

from __future__ import annotations

from pathlib import Path

from common import atomic, schema
from common.errors import UserError
from common.folds import NUM_FOLDS
from common.grid import CELLS, EMOTIONS, TASKS, Cell, is_cell
from common.protocols import PROTOCOLS
from common.schema import ANY, Choice, Fields, Map, Rule, count

FOLD = (count(1, NUM_FOLDS), None)  # a fold of the five, or none (a cross-corpus run)
CELL = Rule(
    Fields({"modality": str, "task": str, "fusion": (str, None)}, closed=True),
    lambda c: is_cell(c["modality"], c["task"], c["fusion"]),
    "a cell of the grid (a fusion for multimodal cells only)",
)
THRESHOLDS = Fields({e: float for e in EMOTIONS})
# A split's numbers: loss, n, each metric (null where undefined), per-class metrics by emotion.
SPLIT = Rule(
    Map((float, None, Map((float, None), keys=EMOTIONS))),
    lambda m: "n" not in m or (type(m["n"]) is int and m["n"] >= 0),
    "a split's metrics (n, where given, its count of utterances)",
)
EPOCH = Fields(
    {"epoch": count(1), "train_loss": float},
    {"valid": SPLIT, "test": SPLIT, "thresholds": THRESHOLDS, "notes": [str]},
)
METRICS = Rule(
    Fields(
        {
            "script": Choice(*CELLS),
            "dataset": Choice("KEMDy19", "KEMDy20"),
            "fold": FOLD,
            "test": SPLIT,
            "epochs": [EPOCH],
        },
        {
            "split": str,
            "protocol": Choice(*PROTOCOLS),
            "test_dataset": Choice("KEMDy19", "KEMDy20"),
            "task": Choice(*TASKS),
            "selection": str,
            "chosen_epoch": count(1),
            "thresholds": THRESHOLDS,
            "layer_weights": Map([float], keys=("text", "speech")),
            "test_by_agreement": Fields({"high": SPLIT, "rest": SPLIT}),
            "human_reference": SPLIT,
        },
    ),
    lambda m: (m["fold"] is None) == ("test_dataset" in m),
    "a fold 1..5, or a test corpus with fold null",
)
# The arguments read back: the fold, and what prediction needs to prepare inputs as the run did.
ARGS = Fields(
    {
        "num_fold": count(1, NUM_FOLDS),
        "max_text_len": count(1),
        "max_seq_len": float,
        "threshold": (float, Choice("tuned")),
        "pad_to_max_length": bool,
    },
    {"test_dataset": (Choice("19", "20"), None), "demo": bool, "encoder_tags": [str], "context": count(0)},
)
FROZEN = Fields({"source": str, "weights": str})  # where a frozen encoder is, and its weights' fingerprint
CONFIG = Fields(
    {
        "script": Choice(*CELLS),
        "cell": CELL,
        "args": ARGS,
        "data": Fields({"fingerprint": str}, {"recordings": str, "bio": str}),
        "environment": Map(ANY),
    },
    {"disk_bytes": count(0), "models": Map(Fields({}, {"frozen": FROZEN}), keys=("text", "speech"))},
)
CONFIG_BYTES = 64 << 20  # a corpus's excluded rows are listed in it


def config_text(config: dict) -> str:
    """config.json's text (a value the reader would refuse is a bug here, never written)."""
    schema.check(config, CONFIG)
    return atomic.json_text(config)


def metrics_text(result: dict) -> str:
    """metrics.json's text, ASCII only (a value the reader would refuse is a bug here, never written)."""
    schema.check(result, METRICS)
    return atomic.json_text(result, ensure_ascii=True)


def read_config(run_dir: Path) -> dict:
    """A run's config.json, checked; DamagedFile (one line) if it cannot be used."""
    config = schema.load(Path(run_dir) / "config.json", CONFIG, CONFIG_BYTES)
    if Cell(**config["cell"]).name != config["script"]:
        raise schema.DamagedFile(Path(run_dir) / "config.json", f"cell {config['cell']} is not {config['script']}'s")
    return config


def read_metrics(run_dir: Path) -> dict:
    """A finished run's metrics.json, checked; a damaged one is one line (its results are lost)."""
    try:
        return schema.load(Path(run_dir) / "metrics.json", METRICS)
    except schema.DamagedFile as err:
        raise UserError(f"{err}; the run's results are lost: train it again with --overwrite") from None
