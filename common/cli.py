"""The command line shared by the twelve scripts: the original's flag names and defaults, plus new ones."""

from __future__ import annotations

import argparse

from common.errors import UserError
from common.model import Cell

# The demo trains tiny random encoders on a small synthetic corpus: it needs a larger learning rate
# than fine-tuning pretrained ones. Flags given on the command line still win.
DEMO_DEFAULTS = {
    "lr": 2e-3,
    "head_lr": 1e-2,
    "batch_size": 16,
    "epochs": 6,
    "max_text_len": 64,
    "group_by_length": True,
}


def build_parser(cell: Cell, description: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python {cell.name}.py",
        description=description or f"Train and evaluate {cell.name.replace('_', ' ')} on one KEMDy fold.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=("19", "20"), default="19", help="19 = KEMDy19, 20 = KEMDy20")
    data.add_argument("--dataset_dir", help="corpus root holding annotation/ and wav/")
    data.add_argument("--num_fold", type=int, default=1, help="fold to test on, 1..5 (contiguous 20%% blocks)")
    data.add_argument(
        "--valid_ratio",
        type=float,
        default=0.1,
        help="share of the training fold held out (its last block) to choose the epoch by validation "
        "loss; 0 reproduces the original (no validation, last epoch reported)",
    )
    data.add_argument(
        "--kemdy19_rows",
        choices=("all", "speaker"),
        default="all",
        help="KEMDy19: every annotation row as the original, or one row per recording (speaker's file)",
    )
    data.add_argument("--max_text_len", type=int, default=256, help="maximum transcript length in tokens")
    data.add_argument("--max_seq_len", type=float, default=5, help="seconds of 16 kHz audio kept from each clip")
    data.add_argument(
        "--group_by_length",
        action="store_true",
        help="train on batches of similar audio length (less padding); evaluation order is unchanged",
    )
    data.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    data.add_argument(
        "--demo",
        action="store_true",
        help="run on the built-in synthetic corpus and tiny encoders (built under demo/ on first use)",
    )

    model = p.add_argument_group("model")
    if cell.uses_text:
        model.add_argument(
            "--text_model", default="klue/bert-base", help="hub name or local folder of the text encoder"
        )
        model.add_argument(
            "--text_pooling",
            choices=("pooler", "cls", "mean"),
            default="pooler",
            help="text vector: BERT pooler (the original), [CLS] state, or masked mean",
        )
    if cell.uses_speech:
        model.add_argument(
            "--speech_model",
            default="facebook/wav2vec2-base-960h",
            help="hub name or local folder of the speech encoder",
        )
        model.add_argument(
            "--speech_pooling",
            choices=("mean", "cnn_last"),
            default="mean",
            help="speech vector: masked mean of the transformer's states, or the original's last "
            "CNN frame of an input padded to --max_seq_len",
        )
    model.add_argument("--dropout", type=float, default=0.1, help="dropout before the heads")
    if cell.task == "total":
        model.add_argument("--cls_weight", type=float, default=1.0, help="weight of the emotion loss")
        model.add_argument("--reg_weight", type=float, default=1.0, help="weight of the valence/arousal loss")
    if cell.classifies:
        model.add_argument(
            "--threshold", type=float, default=0.5, help="probability above which an emotion is predicted (multi-label)"
        )

    train = p.add_argument_group("training")
    train.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate")
    train.add_argument(
        "--head_lr",
        type=float,
        default=None,
        help="learning rate of the fusion and heads (default: --lr, as the original)",
    )
    train.add_argument("--batch_size", type=int, default=32, help="utterances per batch and process")
    train.add_argument("--epochs", type=int, default=5, help="training epochs")
    train.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay")
    train.add_argument(
        "--lr_scheduler",
        choices=("constant", "linear"),
        default="constant",
        help="constant learning rate, or linear decay to 0 after warm-up",
    )
    train.add_argument("--warmup_ratio", type=float, default=0.0, help="share of steps for linear warm-up")
    train.add_argument("--max_grad_norm", type=float, default=0.0, help="clip gradients to this norm (0: off)")
    train.add_argument("--seed", type=int, default=1234, help="seed for weights, order and dropout")
    train.add_argument(
        "--mixed_precision",
        choices=("no", "fp16", "bf16"),
        default="no",
        help="mixed precision on GPUs (through accelerate)",
    )
    train.add_argument("--gpus", help="visible GPU ids, e.g. 0 or 0,1 (sets CUDA_VISIBLE_DEVICES)")

    out = p.add_argument_group("output")
    out.add_argument(
        "--output_dir", help="run directory (default runs/<script>/KEMDy<dataset>/fold<k>, runs/demo/... with --demo)"
    )
    out.add_argument(
        "--save_model",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="save the trained model in the run directory",
    )
    return p


def parse_args(cell: Cell, argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    parser = build_parser(cell, description)
    args = parser.parse_args(argv)
    if args.demo:
        parser.set_defaults(**DEMO_DEFAULTS)
        args = parser.parse_args(argv)
    elif not args.dataset_dir:
        raise UserError("--dataset_dir is required (the KEMDy root holding annotation/ and wav/), or use --demo")
    for name, ok, rule in [
        ("batch_size", args.batch_size >= 1, "at least 1"),
        ("epochs", args.epochs >= 1, "at least 1"),
        ("lr", args.lr > 0, "positive"),
        ("max_text_len", args.max_text_len >= 2, "at least 2"),
        ("max_seq_len", args.max_seq_len > 0, "positive"),
        ("num_workers", args.num_workers >= 0, "0 or more"),
        ("weight_decay", args.weight_decay >= 0, "0 or more"),
        ("warmup_ratio", 0 <= args.warmup_ratio < 1, "in [0, 1)"),
        ("dropout", 0 <= args.dropout < 1, "in [0, 1)"),
        ("threshold", 0 < getattr(args, "threshold", 0.5) < 1, "in (0, 1)"),
    ]:
        if not ok:
            raise UserError(f"--{name} {getattr(args, name)}: must be {rule}")
    return args
