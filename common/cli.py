"""The command line shared by the twelve scripts: the original's flag names and defaults, plus new ones.

Every script accepts every flag, so one shell loop can pass the same flags to all twelve; a flag that
does not apply to a script (say --speech_model for a text script) is accepted and ignored.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from common import paths
from common.errors import UserError, run_cli
from common.folds import NUM_FOLDS, SPLITS
from common.grid import (
    CLASS_WEIGHTS,
    DATASETS,
    DEFAULT_MODELS,
    DROPOUT_ON,
    DUPLICATE_ROWS,
    EMOTION_OUTPUTS,
    EMOTIONS,
    FREEZE,
    FUSION_PARAMS,
    FUSION_SCRIPTS,
    FUSIONS,
    KEMDY19_ROWS,
    LABEL_READINGS,
    LAYERS,
    SPEECH_INPUTS,
    SPEECH_POOLINGS,
    TEXT_INPUTS,
    TEXT_POOLINGS,
    VA_LOSSES,
    VA_TARGETS,
    Cell,
    cell_of,
)

# The demo trains tiny random encoders on a small synthetic corpus: it needs far larger learning rates
# than fine-tuning pretrained ones, and a faster head. Flags given on the command line still win.
DEMO_DEFAULTS = {
    "dataset": "20",  # the README's demo tables are KEMDy20's
    "num_fold": 1,
    "lr": 2e-3,
    "head_lr": 1e-2,
    "batch_size": 16,
    "epochs": 6,
    "max_text_len": 64,
    "group_by_length": True,
    "overwrite": True,  # a demo run replaces the previous demo run of its script (unless --resume)
}
# What the original computed, flag by flag (README, "Departures from the original"). Flags given on the
# command line still win, so that one departure at a time can be put back.
ORIGINAL = {
    "labels": "original",
    "text_inputs": "original",
    "pad_to_max_length": True,
    "speech_inputs": "original",
    "speech_pooling": "cnn_last",
    "emotion_output": "softmax",
    "va_targets": "raw",
    "va_loss": "sum",
    "dropout_on": "modalities",
    "duplicate_rows": "all",
    "valid_ratio": 0.0,
    "group_by_length": False,
    "optimizer": "original",
}


def _threshold(value: str) -> float | str:
    if value == "tuned":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: a probability in (0, 1), or tuned") from None


def _fold(value: str) -> int | str:
    if value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: choose a fold from 1 to {NUM_FOLDS}, or all") from None


# Help sections: the original's own flags, then those that restore what it computed; the other flags by topic.
ORIGINAL_FLAGS = (
    "dataset",
    "num_fold",
    "lr",
    "batch_size",
    "epochs",
    "max_text_len",
    "max_seq_len",
    "seed",
    "gpus",
    "num_labels",
    "regress",
    "ckpt",
)
SECTIONS = {
    "the original's flags (its names and defaults)": ORIGINAL_FLAGS,
    "what the original computed (--original sets each of these to its original value, and --valid_ratio 0 "
    "--no-group_by_length)": ("original", *(k for k in ORIGINAL if k not in ("valid_ratio", "group_by_length"))),
}


class _Sections:
    """An add_argument that files each flag under its help section (SECTIONS, else the current topic)."""

    def __init__(self, p: argparse.ArgumentParser):
        self.groups = {title: p.add_argument_group(title) for title in SECTIONS}
        self.p, self.topic = p, "data"

    def __call__(self, *names, **kwargs):
        dest = names[0].lstrip("-")
        title = next((t for t, dests in SECTIONS.items() if dest in dests), self.topic)
        if title not in self.groups:
            self.groups[title] = self.p.add_argument_group(title)
        return self.groups[title].add_argument(*names, **kwargs)


class HelpFormatter(argparse.HelpFormatter):
    """Each default said once, in every command's --help: where the help does not say it already. A switch
    (--x, --no-x alone) and a flag without a default say none; a default of 0 is said like any other."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        switch = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
        if "default" in text or switch or action.default in (None, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def add_corpus_flags(add) -> None:
    """The flags that say which corpus and which of its rows (`add`: an add_argument): shared by the twelve
    scripts and the audit."""
    add("--dataset", choices=DATASETS, default="19", help="19 = KEMDy19, 20 = KEMDy20")
    add(
        "--dataset_dir",
        help="corpus root holding annotation/ and wav/ (default: ./KEMDy19 or ./KEMDy20, as the original)",
    )
    add(
        "--kemdy19_rows",
        choices=KEMDY19_ROWS,
        default="all",
        help="KEMDy19: every annotation row, as the original, or one row per recording (the speaker's file)",
    )
    add(
        "--labels",
        choices=LABEL_READINGS,
        default="checked",
        help="Emotion cells: checked (both spellings of disgust; a row with an unknown label is excluded), or "
        "original (its dictionary knows only 'disqust': KEMDy19's 'disgust' and any unknown label become all "
        "seven emotions)",
    )
    add(
        "--duplicate_rows",
        choices=DUPLICATE_ROWS,
        default="all",
        help="a segment id listed twice in one annotation file: use every row, as the original (the file order "
        "defines the folds), or only the first",
    )


def resolve_dataset_dir(args: argparse.Namespace) -> None:
    """--dataset_dir, or ./KEMDy19 / ./KEMDy20 as the original read them. A folder given that is not there
    stops the command here, before torch and transformers are loaded (seconds), as a mistaken flag does."""
    args.dataset_dir = args.dataset_dir or _default_root("--dataset_dir", args.dataset, ", or use --demo")
    for flag in ("--dataset_dir", "--test_dataset_dir"):
        folder = getattr(args, flag[2:], None)
        if folder and not Path(folder).is_dir():
            raise UserError(f"{flag} {folder}: no such directory")


def _default_root(flag: str, dataset: str, hint: str = "") -> str:
    """./KEMDy19 or ./KEMDy20, where the original looked for a corpus not given by `flag`."""
    default = Path(f"KEMDy{dataset}")
    if not default.is_dir():
        raise UserError(
            f"{flag} not given and no ./{default} folder here: pass the KEMDy{dataset} root holding annotation/ "
            f"and wav/{hint}"
        )
    return str(default)


def build_parser(cell: Cell, description: str | None = None, chooses_fusion: bool = False) -> argparse.ArgumentParser:
    """The parser of a cell's script; `chooses_fusion`: a multimodal_<task>.py script, whose --fusion picks the
    cell's fusion from the registry (`cell` carries the default)."""
    name = f"multimodal_{cell.task}" if chooses_fusion else cell.name
    p = argparse.ArgumentParser(
        prog=f"python {name}.py",
        description=description or f"Train and evaluate {name} on one KEMDy fold.",
        formatter_class=HelpFormatter,
    )
    add = _Sections(p)
    add_corpus_flags(add)
    add(
        "--num_fold",
        type=_fold,
        default=5,
        help="fold to test on, 1..5 (the original's default: 5), or all: the five folds one after the other, "
        "each into its own run directory",
    )
    add(
        "--test_dataset",
        choices=DATASETS,
        help="cross-corpus: train on all of --dataset (its last --valid_ratio part choosing the epoch) and test on "
        "all of this other corpus; --num_fold does not apply",
    )
    add(
        "--test_dataset_dir",
        help="the test corpus's root (default: ./KEMDy19 or ./KEMDy20; the demo's with --demo)",
    )
    add(
        "--split",
        choices=SPLITS,
        default="contiguous",
        help="contiguous: the original's 20%% blocks of the ordered utterances; session: whole sessions held "
        "out (speaker-independent), sessions in number order cut into five blocks",
    )
    add(
        "--valid_ratio",
        type=float,
        default=0.1,
        help="share of the training fold held out (its last block) to choose the epoch by validation loss; "
        "0 reproduces the original (no validation, last epoch reported)",
    )
    add("--max_text_len", type=int, default=256, help="maximum transcript length in tokens")
    add("--max_seq_len", type=float, default=5, help="seconds of 16 kHz audio kept from each clip")
    add(
        "--group_by_length",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="train on batches of similar length (less padding); evaluation, where the model reads audio, is "
        "ordered by length either way",
    )
    add(
        "--num_workers",
        type=int,
        default=None,
        help="DataLoader worker processes (default: 0 on CPU, where workers would compete with training; "
        "up to 4 per process on GPUs)",
    )
    add(
        "--pad_to_max_length",
        action="store_true",
        help="pad every transcript to --max_text_len tokens, as the original (default: to the longest in the "
        "batch; always on with --text_inputs original)",
    )
    add(
        "--cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep token ids, decoded audio and frozen-encoder vectors in --cache_dir for every later run",
    )
    add("--cache_dir", default="cache", help="folder of the preprocessing caches (safe to delete)")
    add(
        "--demo",
        action="store_true",
        help="run with the tiny encoders on the built-in synthetic corpus (built under demo/ on first use; "
        "--dataset_dir gives another), with settings for tiny models: " + _flags(DEMO_DEFAULTS),
    )
    add(
        "--original",
        action="store_true",
        help="compute what the original code computed: " + _flags(ORIGINAL) + "; flags given still win "
        "(default run directory: runs/<script>/KEMDy<dataset>_original/)",
    )
    add.topic = "fusion"
    _add_fusion_flags(add, cell.fusion if chooses_fusion else None)
    for topic, flags in (("model", _add_model_flags), ("training", _add_training_flags), ("output", _add_output_flags)):
        add.topic = topic
        flags(add)
    return p


def _add_fusion_flags(add, default: str | None) -> None:
    """The fusions' hyper-parameters (every script takes them; a cell whose fusion does not read one ignores it),
    and, for a multimodal_<task>.py script (`default` given), --fusion: its choices and their descriptions from the
    registry."""
    if default is not None:
        described = "; ".join(f"{name}: {info.summary} ({info.source})" for name, info in FUSIONS.items())
        add("--fusion", choices=list(FUSIONS), default=default, help=f"how text and speech are joined: {described}")
    for name, (value, text) in FUSION_PARAMS.items():
        readers = ", ".join(f for f, info in FUSIONS.items() if name in info.params)
        add(f"--fusion_{name}", type=int, default=value, help=f"{text}; read by {readers}")


def _add_model_flags(add) -> None:
    add("--text_model", default=DEFAULT_MODELS["text"], help="text encoder: hub name or local folder")
    add("--speech_model", default=DEFAULT_MODELS["speech"], help="speech encoder: hub name or local folder")
    add(
        "--text_pooling",
        choices=TEXT_POOLINGS,
        default="auto",
        help="text vector: auto (the model's pooler where it has one, as the original's BERT; else the last "
        "token for a decoder-only model; else the first token), pooler, cls (the first token), mean (the masked "
        "mean) or last (the last non-padding token)",
    )
    add(
        "--text_inputs",
        choices=TEXT_INPUTS,
        default="masked",
        help="masked: BERT attends to the transcript's tokens only; original: the original's swapped call "
        "(attention over every position, padding included; token-type ids 1 on tokens, 0 on padding), "
        "padded to --max_text_len",
    )
    add(
        "--speech_pooling",
        choices=SPEECH_POOLINGS,
        default="mean",
        help="speech vector: masked mean of the transformer's states, or the original's last frame of the "
        "layer-normed CNN features (of an input padded to --max_seq_len; to the batch's longest clip with "
        "--speech_inputs original)",
    )
    add(
        "--speech_inputs",
        choices=SPEECH_INPUTS,
        default="extractor",
        help="extractor: the waveform as the model's feature extractor prepares it (wav2vec2-base-960h: zero "
        "mean, unit variance); original: the file's samples as read, zero-padded to the batch's longest clip, "
        "no attention mask",
    )
    add(
        "--whisper_window",
        choices=("clip", "30s"),
        default="clip",
        help="a Whisper encoder reads a fixed window: clip: --max_seq_len seconds, its positional table cut to "
        "that (6 times less compute for 5 s); 30s: its whole 30-s window, each clip padded with silence as in "
        "Whisper's own training",
    )
    add(
        "--layers",
        choices=LAYERS,
        default="last",
        help="last: the encoders' last hidden layer; weighted: a learnt softmax-weighted sum of all their hidden "
        "layers (embedding output included, equal weights at the start), pooled as --text_pooling and "
        "--speech_pooling say; with --freeze every layer's summary is computed once and cached",
    )
    add(
        "--freeze",
        choices=FREEZE,
        default="none",
        help="encoders left untrained: their pooled vectors are computed once, cached, and the heads train on them",
    )
    add("--dropout", type=float, default=0.1, help="dropout probability")
    add(
        "--dropout_on",
        choices=DROPOUT_ON,
        default="modalities",
        help="modalities: on each modality's vector before fusion (the original); fused: once on the fused "
        "vector (the same for concat and the one-modality cells)",
    )
    add(
        "--emotion_output",
        choices=EMOTION_OUTPUTS,
        default="sigmoid",
        help="sigmoid: one probability per emotion, binary cross-entropy; softmax: the original's softmax over "
        "the seven with MultiLabelSoftMarginLoss on it (never predicts two emotions)",
    )
    add(
        "--threshold",
        type=_threshold,
        default=0.5,
        help="an emotion is predicted where its probability exceeds this; tuned: a threshold per emotion, the one "
        "that maximises its F1 on the validation part (recorded in metrics.json, used for the test fold and by "
        "common.predict)",
    )
    add(
        "--class_weight",
        choices=CLASS_WEIGHTS,
        default="none",
        help="none (the original), or balanced: each emotion's positives weighted in the binary cross-entropy by "
        "the training part's negatives over positives (recorded in config.json)",
    )
    add(
        "--va_targets",
        choices=VA_TARGETS,
        default="standardized",
        help="valence/arousal learnt standardised with the training fold's mean and deviation, or on the raw "
        "1-5 scale (the original)",
    )
    add(
        "--va_loss",
        choices=VA_LOSSES,
        default="mean",
        help="mean or sum (the original) of the valence and arousal squared errors",
    )
    add("--cls_weight", type=float, default=1.0, help="weight of the emotion loss (total scripts)")
    add("--reg_weight", type=float, default=1.0, help="weight of the valence/arousal loss (total scripts)")


def _add_training_flags(add) -> None:
    add("--lr", type=float, default=1e-5, help="AdamW learning rate")
    add(
        "--optimizer",
        choices=("adamw", "original"),
        default="adamw",
        help="adamw: torch's AdamW (epsilon added to the bias-corrected root); original: transformers 4.12's, "
        "which the original used (epsilon added to the uncorrected root: about 32 times larger at the first step)",
    )
    add(
        "--head_lr", type=float, default=None, help="learning rate of fusion and heads (default: --lr, as the original)"
    )
    add("--batch_size", type=int, default=32, help="utterances per batch and process")
    add("--epochs", type=int, default=5, help="training epochs")
    add("--weight_decay", type=float, default=0.0, help="AdamW weight decay")
    add(
        "--lr_scheduler",
        choices=("constant", "linear"),
        default="constant",
        help="constant learning rate, or linear decay to 0 after the warm-up",
    )
    add("--warmup_ratio", type=float, default=0.0, help="share of the steps for a linear warm-up")
    add("--max_grad_norm", type=float, default=0.0, help="clip gradients to this norm (0: off)")
    add("--seed", type=int, default=1234, help="seed of weights, order and dropout")
    add("--mixed_precision", choices=("no", "fp16", "bf16"), default="no", help="mixed precision (GPUs)")
    add("--gpus", help="visible GPU ids, e.g. 0 or 0,1 (sets CUDA_VISIBLE_DEVICES)")
    add("--num_labels", type=int, default=len(EMOTIONS), help="emotion classes (the original's flag; only 7)")
    add("--regress", type=int, default=1, help="width of each valence/arousal output (the original's flag; only 1)")
    add("--ckpt", default="0", help="accepted for the original's commands and ignored, as there (see --resume)")


def _add_output_flags(add) -> None:
    add(
        "--output_dir",
        help="run directory, holding fold1/ .. fold5/ with --num_fold all (default: "
        "runs/<script>/KEMDy<dataset>[_session]/fold<k>; runs/demo/... for --demo)",
    )
    add(
        "--resume",
        action="store_true",
        help="continue the unfinished run in the run directory from its last complete epoch",
    )
    add("--overwrite", action="store_true", help="replace a run directory that holds a finished or unfinished run")
    add(
        "--keep_checkpoint",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep the chosen epoch's checkpoint (model, optimizer and RNG states: about 3 times the model) "
        "when the run finishes; the trained model is in model/ either way",
    )
    add(
        "--report_to",
        choices=("none", "tensorboard"),
        default="none",
        help="also log every epoch's losses and metrics to TensorBoard (events in <run directory>/tensorboard/)",
    )
    add("--quiet", action="store_true", help="print only each epoch's line, no progress of its batches")
    add(
        "--save_model",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="save the trained model in the run directory",
    )


def _flags(values: dict) -> str:
    return ", ".join(f"--{k}" if v is True else f"--no-{k}" if v is False else f"--{k} {v}" for k, v in values.items())


def parse_args(
    cell: Cell, argv: list[str] | None = None, description: str | None = None, chooses_fusion: bool = False
) -> argparse.Namespace:
    """Parsed and checked arguments, presets resolved; a bad value raises UserError naming the flag. With
    `chooses_fusion` (a multimodal_<task>.py script) `args.fusion` names the cell's fusion."""
    parser = build_parser(cell, description, chooses_fusion)
    args = parser.parse_args(argv)
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite: choose one (continue the run, or start it over)")
    presets = {**(DEMO_DEFAULTS if args.demo else {}), **(ORIGINAL if args.original else {})}
    if args.resume:  # a resumed demo continues its run instead of replacing it
        presets.pop("overwrite", None)
    if presets:
        parser.set_defaults(**presets)
        args = parser.parse_args(argv)
    if args.text_inputs == "original":  # the original attended to every position: its padding length matters
        args.pad_to_max_length = True
    args.notes = []  # said when the run starts
    if args.test_dataset:
        _cross_corpus(args, argv)
    if args.num_fold != "all" and not 1 <= args.num_fold <= NUM_FOLDS:
        raise UserError(f"--num_fold {args.num_fold}: choose a fold from 1 to {NUM_FOLDS}")
    args.folds = list(range(1, NUM_FOLDS + 1)) if args.num_fold == "all" else [args.num_fold]
    for flag in ("output_dir", "dataset_dir", "test_dataset_dir", "cache_dir", "text_model", "speech_model"):
        paths.check(f"--{flag}", getattr(args, flag))
    _check_values(args)
    if not args.demo:  # after the flags' values: a mistaken flag is said first
        resolve_dataset_dir(args)
    return args


def _cross_corpus(args: argparse.Namespace, argv: list[str] | None) -> None:
    """A cross-corpus run: one run over the whole test corpus, in place of the folds."""
    import sys

    if args.test_dataset == args.dataset:
        raise UserError(
            f"--test_dataset {args.test_dataset}: the corpus it trains on; a cross-corpus run tests on the other "
            "one (19 or 20), a within-corpus run uses --num_fold"
        )
    if not args.test_dataset_dir and not args.demo:
        args.test_dataset_dir = _default_root("--test_dataset_dir", args.test_dataset)
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a.split("=")[0] == "--num_fold"]
    if given:
        args.notes.append(
            f"--num_fold {args.num_fold}: does not apply to a cross-corpus run (it tests on all of "
            f"KEMDy{args.test_dataset}); ignored"
        )
    args.num_fold = 1  # the one run


def _check_values(args: argparse.Namespace) -> None:
    """Every number in its range, with one line naming the flag otherwise."""
    if args.num_labels != len(EMOTIONS):
        raise UserError(f"--num_labels {args.num_labels}: KEMDy has {len(EMOTIONS)} emotion classes; only 7 works")
    if args.regress != 1:
        raise UserError(f"--regress {args.regress}: valence and arousal are one number each; only 1 works")
    if args.threshold == "tuned" and args.valid_ratio == 0:
        raise UserError("--threshold tuned: needs a validation part to tune on; give --valid_ratio above 0")
    if args.class_weight == "balanced" and args.emotion_output == "softmax":
        raise UserError("--class_weight balanced: weights the binary cross-entropy; not with --emotion_output softmax")
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{name} {value}: must be a finite number")
    for name, ok, rule in [
        ("batch_size", args.batch_size >= 1, "at least 1"),
        ("seed", 0 <= args.seed < 2**32, "in 0 .. 2**32 - 1"),
        ("epochs", args.epochs >= 1, "at least 1"),
        ("lr", args.lr > 0, "positive"),
        ("head_lr", args.head_lr is None or args.head_lr > 0, "positive"),
        ("max_text_len", args.max_text_len >= 2, "at least 2"),
        ("max_seq_len", args.max_seq_len > 0, "positive"),
        ("num_workers", args.num_workers is None or args.num_workers >= 0, "0 or more"),
        ("weight_decay", args.weight_decay >= 0, "0 or more"),
        ("warmup_ratio", 0 <= args.warmup_ratio < 1, "in [0, 1)"),
        ("dropout", 0 <= args.dropout < 1, "in [0, 1)"),
        ("threshold", args.threshold == "tuned" or 0 < args.threshold < 1, "in (0, 1), or tuned"),
        ("cls_weight", args.cls_weight >= 0, "0 or more"),
        ("reg_weight", args.reg_weight >= 0, "0 or more"),
        ("fusion_width", args.fusion_width >= 0, "0 or more"),
        ("fusion_heads", args.fusion_heads >= 1, "at least 1"),
        ("fusion_layers", args.fusion_layers >= 1, "at least 1"),
        ("fusion_rank", args.fusion_rank >= 1, "at least 1"),
    ]:
        if not ok:
            raise UserError(f"--{name} {getattr(args, name)}: must be {rule}")


def parse_script(script: str, argv: list[str] | None = None) -> tuple[Cell, argparse.Namespace]:
    """(cell, arguments) of a script's command line: one of the twelve, or multimodal_<task> with its --fusion."""
    if script in FUSION_SCRIPTS:
        args = parse_args(Cell("multimodal", script.split("_")[1], "concat"), argv, chooses_fusion=True)
        return Cell("multimodal", script.split("_")[1], args.fusion), args
    cell = cell_of(script)
    return cell, parse_args(cell, argv)


def main(modality: str, task: str, fusion: str | None = None, argv: list[str] | None = None) -> None:
    """Entry point of the scripts: arguments first (fast, for --help and mistakes), then training. A multimodal
    script without a fusion (multimodal_<task>.py) takes it from --fusion (default: concatenation)."""
    import sys

    chooses = modality == "multimodal" and fusion is None
    cell = Cell(modality, task, "concat" if chooses else fusion)

    def run():
        if sys.platform == "win32":  # the run folders' locks are POSIX file locks (fcntl)
            raise UserError("training runs on Linux or macOS; on Windows, run the scripts under WSL")
        args = parse_args(cell, argv, sys.modules["__main__"].__doc__, chooses_fusion=chooses)
        from common.train import train  # torch, transformers and accelerate: only once there is work

        train(Cell(modality, task, args.fusion) if chooses else cell, args)

    run_cli(run, whole_process=True)
