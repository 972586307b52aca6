"""Every flag of the training scripts, declared once: its default, help, choices, range, whether it changes a run's
numbers, its value for runs written before it existed, which cells it concerns, and its value under --original and
--demo. The parser (`common.cli`), the ownership comparison (`common.rundir`), the presets, `--help` and the table of
docs/flags.md all derive from these declarations.

A flag is one field of `Settings` made with `flag(...)`, plus its use where it acts. The cell (the script, or
--fusion of a multimodal_<task>.py script) is not a setting: it names what is trained, not how.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.errors import UserError
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
)
from common.protocols import PROTOCOLS

# The help sections, in --help's order; docs/flags.md's table keeps the same groups.
ORIGINALS = "the original's flags (its names and defaults)"
COMPUTED = (
    "what the original computed (--original sets each of these to its original value, and --valid_ratio 0 "
    "--no-group_by_length)"
)
TOPICS = (ORIGINALS, COMPUTED, "data", "fusion", "model", "training", "output")

NEVER = object()  # a flag that every run has recorded: no value stands for its absence


def flag(  # noqa: PLR0913 (one keyword per property of a setting)
    default: Any,
    topic: str,
    help: str,
    *,
    choices: tuple | None = None,
    parse: Callable[[str], Any] | None = None,
    kind: str = "value",
    results: bool = True,
    earlier: Any = NEVER,
    concerns: str | None = None,
    original: Any = NEVER,
    demo: Any = NEVER,
    rule: tuple[Callable[[Any], bool], str] | None = None,
    path: bool = False,
    doc: str | None = None,
    shown: str | None = None,
    folder: str | None = None,
):
    """One setting, declared once.

    kind: "value" (--x V), "switch" (--x, off by default) or "toggle" (--x / --no-x). results: whether it changes
    the numbers a run produces (else it may differ on --resume, and runs differing only in it share a fold set).
    earlier: the value that computes what the code computed before the flag existed (a run written then is
    compared as if it had this value). concerns: "text" or "speech" (a cell without that encoder ignores it),
    "emotions" (a cell without emotions ignores it), "multimodal" (a cell of one modality ignores it), "encoders" (a
    bio cell, which has none, ignores it) or "fusion"
    (read by the fusions whose registry line names it). original, demo: the value under --original and --demo
    (flags given still win). rule: (test, the refusal's words after the value: "must be positive"). path: checked
    as a path.
    doc, shown: the meaning and the default as docs/flags.md's table says them (default: help and the value).
    folder: what a value other than the default adds to the default run folder's name ("_freeze-{}").
    """
    meta = dict(topic=topic, help=help, choices=choices, parse=parse, kind=kind, results=results, earlier=earlier)
    meta |= dict(concerns=concerns, original=original, demo=demo, rule=rule, path=path, doc=doc, shown=shown)
    meta |= dict(folder=folder)
    return field(default=default, metadata=meta)


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


def _seed_list(value: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: seeds separated by commas, e.g. 1,2,3") from None
    if len(set(seeds)) != len(seeds) or len(seeds) < 2 or not all(0 <= v < 2**32 for v in seeds):
        raise argparse.ArgumentTypeError(f"{value!r}: two or more different seeds in 0 .. 2**32 - 1, e.g. 1,2,3")
    return seeds


def _positive(v) -> bool:
    return v > 0


def _at_least(low) -> tuple[Callable, str]:
    return (lambda v: v is None or v >= low, "must be 0 or more" if low == 0 else f"must be at least {low}")


def _below_one(v) -> bool:
    return 0 <= v < 1


@dataclass(frozen=True)
class Settings:
    """The value of every flag for one command: as given, presets applied, and what is resolved after parsing
    (the corpus folders, --text_pooling auto, the demo's encoders) filled in. It travels below the command line
    in place of the parsed arguments; `dataclasses.replace` makes a changed copy."""

    # the corpus and its rows (shared with common.audit)
    dataset: str = flag(
        "19", ORIGINALS, "19 = KEMDy19, 20 = KEMDy20", choices=DATASETS, demo="20", doc="`19` = KEMDy19, `20` = KEMDy20"
    )
    dataset_dir: str | None = flag(
        None,
        "data",
        "corpus root holding annotation/ and wav/ (default: ./KEMDy19 or ./KEMDy20, as the original)",
        results=False,  # the corpus itself is compared by its fingerprint
        path=True,
        doc="corpus root holding `annotation/` and `wav/`",
        shown="`./KEMDy19` / `./KEMDy20`",
    )
    kemdy19_rows: str = flag(
        "all",
        "data",
        "KEMDy19: every annotation row, as the original, or one row per recording (the speaker's file)",
        choices=KEMDY19_ROWS,
        doc="KEMDy19: every annotation row (as the original) or one per recording (`speaker`)",
    )
    labels: str = flag(
        "checked",
        COMPUTED,
        "Emotion cells: checked (both spellings of disgust; a row with an unknown label is excluded), or original "
        "(its dictionary knows only 'disqust': KEMDy19's 'disgust' and any unknown label become all seven emotions)",
        choices=LABEL_READINGS,
        earlier="checked",
        original="original",
        doc="`original`: the original's label dictionary (KEMDy19's `disgust` becomes all seven emotions)",
    )
    duplicate_rows: str = flag(
        "all",
        COMPUTED,
        "a segment id listed twice in one annotation file: use every row, as the original (the file order defines "
        "the folds), or only the first",
        choices=DUPLICATE_ROWS,
        earlier="all",
        original="all",
        doc="a segment id listed twice in one annotation file: use every row (the original) or `first`",
    )
    # which utterances train, choose the epoch and test
    num_fold: int | str = flag(
        5,
        ORIGINALS,
        "fold to test on, 1..5 (the original's default: 5), or all: the five folds one after the other, each into its "
        "own run directory",
        parse=_fold,
        results=False,  # which fold a run tests: each run directory records its own
        demo=1,
        rule=(lambda v: v == "all" or 1 <= v <= NUM_FOLDS, f"choose a fold from 1 to {NUM_FOLDS}"),
        doc="test fold, 1–5, or `all`: the five folds in one process (see [Folds](data.md#folds))",
    )
    test_dataset: str | None = flag(
        None,
        "data",
        "cross-corpus: train on all of --dataset (its last --valid_ratio part choosing the epoch) and test on all of "
        "this other corpus; --num_fold does not apply",
        choices=DATASETS,
        earlier=None,
        doc="`19` or `20`: a cross-corpus run, trained on all of `--dataset` and tested on all of this other corpus; "
        "`--num_fold` does not apply (see [Across corpora](cross_corpus.md))",
        shown="none",
        folder="-to-KEMDy{}",
    )
    test_dataset_dir: str | None = flag(
        None,
        "data",
        "the test corpus's root (default: ./KEMDy19 or ./KEMDy20; the demo's with --demo)",
        results=False,  # compared by its fingerprint, as --dataset_dir
        path=True,
        doc="the test corpus's root",
        shown="`./KEMDy19` or `./KEMDy20` (the demo's with `--demo`)",
    )
    split: str = flag(
        "contiguous",
        "data",
        "contiguous: the original's 20%% blocks of the ordered utterances; session: whole sessions held out "
        "(speaker-independent), sessions in number order cut into five blocks",
        choices=SPLITS,
        doc="`contiguous`: the original's 20 % blocks; `session`: whole sessions held out (see [Folds](data.md#folds))",
        folder="_{}",
    )
    protocol: str | None = flag(
        None,
        "data",
        "a published protocol reproduced exactly, its rows and folds in place of --split and --valid_ratio: "
        "continual_erc (WoongheeLee/continual_erc_etri: KEMDy19's speaker rows, one emotion per row, five folds of "
        "whole sessions drawn with its seed, two training sessions for validation); the report sets its published "
        "figure beside the run's",
        choices=tuple(PROTOCOLS),
        earlier=None,
        folder="_{}",
        doc="`continual_erc`: a published protocol reproduced exactly, its rows and folds in place of `--split` and "
        "`--valid_ratio`; the report sets its published figure beside the run's (see [Published "
        "protocols](data.md#published-protocols))",
        shown="none",
    )
    score_on: str = flag(
        "test",
        "data",
        "test: the fold's test part, as always; valid: its validation part instead (which then never trains the model; "
        "the epoch is chosen on a further part held out of the training part as --valid_ratio says): what "
        "common.tune's trials do, so that no trial reads a test utterance",
        choices=("test", "valid"),
        earlier="test",
        folder="_scored-on-{}",
        doc="`valid`: score the run on its fold's validation part instead of the test part, the epoch chosen on a "
        "further part held out of the training part (the trials of [tuning](results.md#tuning-on-validation-only))",
    )
    valid_ratio: float = flag(
        0.1,
        "data",
        "share of the training fold held out (its last block) to choose the epoch by validation loss; 0 reproduces "
        "the original (no validation, last epoch reported)",
        original=0.0,
        rule=(_below_one, "choose a value in [0, 1)"),
        doc="last part of the training fold held out to choose the epoch by validation loss; `0` = the original "
        "(report the last epoch)",
    )
    max_text_len: int = flag(
        256,
        ORIGINALS,
        "maximum transcript length in tokens",
        concerns="text",
        demo=64,
        rule=_at_least(2),
        doc="transcript tokens kept",
    )
    context: int = flag(
        0,
        "data",
        "read each utterance with the K turns before it in its dialogue (both speakers, oldest first, marked A: its "
        "own speaker, B: the other) as the first segment of a text pair, cut from the oldest side to fit "
        "--max_text_len; never a later turn, never a label; 0: the utterance alone, as the original",
        earlier=0,
        concerns="text",
        rule=_at_least(0),
        folder="_context{}",
        doc="the K turns before each utterance in its dialogue read with it, as the first segment of a text pair "
        "(see [Dialogues](data.md#dialogues))",
        shown="`0`",
    )
    context_speech: bool = flag(
        False,
        "data",
        "with --context K and a frozen speech encoder (--freeze speech or both), the speech side also reads the "
        "mean of the K turns before's pooled speech vectors (a dialogue's first turn: a learnt vector), beside the "
        "utterance's own; off: the utterance's recording alone",
        kind="switch",
        earlier=False,
        concerns="speech",
        folder="_context-speech",
        doc="the speech side also reads the turns before's pooled speech vectors (with `--context K` and a frozen "
        "speech encoder; see [Dialogues](data.md#dialogues))",
    )
    bio: bool = flag(
        False,
        "data",
        "a text, speech or multimodal cell also reads the speaker's wristband signals during the utterance (EDA, skin "
        "temperature, heartbeat: the bio_<task>.py cells' encoder), their vector beside the cell's own (its text or "
        "speech vector, or the fused one with any --fusion); off: text and speech only, as the original",
        kind="switch",
        earlier=False,
        concerns="encoders",
        folder="_bio",
        doc="a text, speech or multimodal cell also reads the speaker's bio-signals, their vector beside the cell's "
        "own (see [Bio-signals](data.md#bio-signals))",
    )
    max_seq_len: float = flag(
        5,
        ORIGINALS,
        "seconds of 16 kHz audio kept from each clip",
        parse=float,
        concerns="speech",
        rule=(_positive, "must be positive"),
        doc="seconds of 16 kHz audio kept from the start of each clip",
    )
    group_by_length: bool = flag(
        False,
        "data",
        "train on batches of similar length (less padding); evaluation, where the model reads audio, is ordered by "
        "length either way",
        kind="toggle",
        original=False,
        demo=True,
        doc="train on batches of similar length (less padding); evaluation, where the model reads audio, runs its "
        "clips longest first either way (see [Encoders](encoders.md#encoders))",
    )
    num_workers: int | None = flag(
        None,
        "data",
        "DataLoader worker processes (default: 0 on CPU, where workers would compete with training; up to 4 per "
        "process on GPUs)",
        parse=int,
        results=False,
        rule=_at_least(0),
        doc="DataLoader worker processes",
        shown="0 on CPU, up to 4 on GPUs",
    )
    pad_to_max_length: bool = flag(
        False,
        COMPUTED,
        "pad every transcript to --max_text_len tokens, as the original (default: to the longest in the batch; always "
        "on with --text_inputs original)",
        kind="switch",
        concerns="text",
        original=True,
        doc="pad every transcript to `--max_text_len`, as the original (default: to the longest in the batch)",
    )
    cache: bool = flag(
        True,
        "data",
        "keep token ids, decoded audio and frozen-encoder vectors in --cache_dir for every later run",
        kind="toggle",
        results=False,
        doc="`--no-cache` prepares inputs on the fly instead of keeping them in `--cache_dir`",
        shown="on",
    )
    cache_dir: str = flag(
        "cache",
        "data",
        "folder of the preprocessing caches (safe to delete)",
        results=False,
        path=True,
        doc="where token ids, decoded audio and frozen vectors are kept for every later run (safe to delete)",
    )
    demo: bool = flag(
        False,
        "data",
        "run with the tiny encoders on the built-in synthetic corpus (built under demo/ on first use; --dataset_dir "
        "gives another), with settings for tiny models: {demo}",
        kind="switch",
        results=False,
        doc="run on the built-in synthetic corpus (about 800 utterances; `--dataset_dir` gives another) and tiny "
        "encoders, with settings for tiny models: `{demo}` (a demo run replaces the previous demo run of its "
        "script, unless `--resume`); flags given still win; runs go under `runs/demo/`",
    )
    original: bool = flag(
        False,
        COMPUTED,
        "compute what the original code computed: {original}; flags given still win (default run directory: "
        "runs/<script>/KEMDy<dataset>_original/)",
        kind="switch",
        results=False,  # a preset: the flags it sets are compared one by one
        doc="compute what the original computed: `{original}`; flags given still win; its default run folder ends "
        "in `_original` (see [Reproducing the original](original.md#reproducing-the-original))",
        folder="_original",
    )
    # the fusions' hyper-parameters: each fusion reads those its registry line names (grid.FUSIONS)
    fusion_width: int = flag(
        256,
        "fusion",
        "width of the fusion's output and inner layers, never wider than the text encoder (0: the text encoder's)",
        concerns="fusion",
        rule=_at_least(0),
        shown="`256` (never wider than the text encoder; `0`: its width)",
    )
    fusion_heads: int = flag(
        4, "fusion", "attention heads of a fusion that attends", concerns="fusion", rule=_at_least(1)
    )
    fusion_layers: int = flag(
        1, "fusion", "cross-modal blocks of a fusion that attends", concerns="fusion", rule=_at_least(1)
    )
    fusion_rank: int = flag(
        4, "fusion", "rank of a low-rank tensor fusion's factors", concerns="fusion", rule=_at_least(1)
    )
    # the model
    text_model: str = flag(
        DEFAULT_MODELS["text"], "model", "text encoder: hub name or local folder", concerns="text", path=True
    )
    speech_model: str = flag(
        DEFAULT_MODELS["speech"], "model", "speech encoder: hub name or local folder", concerns="speech", path=True
    )
    text_pooling: str = flag(
        "auto",
        "model",
        "text vector: auto (the model's pooler where it has one, as the original's BERT; else the last token for a "
        "decoder-only model; else the first token), pooler, cls (the first token), mean (the masked mean) or last (the "
        "last non-padding token)",
        choices=TEXT_POOLINGS,
        concerns="text",
        doc="`auto` (the pooler where the model has one, else the last token of a decoder-only model, else the first "
        "token), `pooler`, `cls`, `mean` or `last`; a run records its choice",
    )
    text_inputs: str = flag(
        "masked",
        COMPUTED,
        "masked: BERT attends to the transcript's tokens only; original: the original's swapped call (attention over "
        "every position, padding included; token-type ids 1 on tokens, 0 on padding), padded to --max_text_len",
        choices=TEXT_INPUTS,
        earlier="masked",
        concerns="text",
        original="original",
        doc="`original`: BERT called as the original called it (attention over the padding too, token types = "
        "padding mask), padded to `--max_text_len`",
    )
    speech_pooling: str = flag(
        "mean",
        COMPUTED,
        "speech vector: masked mean of the transformer's states, or the original's last frame of the layer-normed CNN "
        "features (of an input padded to --max_seq_len; to the batch's longest clip with --speech_inputs original)",
        choices=SPEECH_POOLINGS,
        concerns="speech",
        original="cnn_last",
        doc="`mean` or `cnn_last` (the original's)",
    )
    speech_inputs: str = flag(
        "extractor",
        COMPUTED,
        "extractor: the waveform as the model's feature extractor prepares it (wav2vec2-base-960h: zero mean, unit "
        "variance); original: the file's samples as read, zero-padded to the batch's longest clip, no attention mask",
        choices=SPEECH_INPUTS,
        earlier="extractor",
        concerns="speech",
        original="original",
        doc="`original`: the file's samples unnormalised, padded to the batch's longest clip, no attention mask",
    )
    whisper_window: str = flag(
        "clip",
        "model",
        "a Whisper encoder reads a fixed window: clip: --max_seq_len seconds, its positional table cut to that (6 "
        "times less compute for 5 s); 30s: its whole 30-s window, each clip padded with silence as in Whisper's own "
        "training",
        choices=("clip", "30s"),
        earlier="clip",
        concerns="speech",
        doc="a Whisper encoder's window: `--max_seq_len` seconds (its positional table cut to them), or `30s` (see "
        "[Encoders](encoders.md#encoders))",
    )
    freeze: str = flag(
        "none",
        "model",
        "encoders left untrained: their pooled vectors are computed once, cached, and the heads train on them",
        choices=FREEZE,
        doc="`text`, `speech` or `both`: leave those encoders untrained; their pooled vectors are computed once, "
        "cached, and the heads train on them (for a fusion of sequences, their last-layer states of every token and "
        "frame; see [Fusions](fusions.md))",
        folder="_freeze-{}",
    )
    layers: str = flag(
        "last",
        "model",
        "last: the encoders' last hidden layer; weighted: a learnt softmax-weighted sum of all their hidden layers "
        "(embedding output included, equal weights at the start), pooled as --text_pooling and --speech_pooling say; "
        "with --freeze every layer's summary is computed once and cached",
        choices=LAYERS,
        earlier="last",
        doc="`weighted`: a learnt softmax-weighted sum of all the encoders' hidden layers instead of the last (see "
        "[Frozen encoders and the fast grid](frozen.md))",
        folder="_layers-{}",
    )
    dropout: float = flag(0.1, "model", "dropout probability", rule=(_below_one, "must be in [0, 1)"))
    dropout_on: str = flag(
        "modalities",
        COMPUTED,
        "modalities: on each modality's vector before fusion (the original); fused: once on the fused vector (the "
        "same for concat and the one-modality cells)",
        choices=DROPOUT_ON,
        earlier="fused",
        original="modalities",
        doc="`fused`: one dropout on the fused vector instead of one per modality (the same for concatenation and "
        "the one-modality cells)",
    )
    modality_dropout: float = flag(
        0.0,
        "model",
        "in training, each utterance of a multimodal cell loses its transcript or its audio (one of the two, alike "
        "likely) with this probability: an encoder that reads its input gets the empty transcript or silence of the "
        "clip's length, a frozen one's cached vectors or states give way to their training mean; so that a model "
        "learns to answer with one modality missing (0: never, as the original)",
        earlier=0.0,
        concerns="multimodal",
        rule=(_below_one, "choose a probability in [0, 1)"),
        folder="_modality-dropout{}",
        doc="in training, each multimodal utterance loses its transcript or its audio with this probability (see "
        "[Results](results.md#training-for-a-missing-modality))",
    )
    emotion_output: str = flag(
        "sigmoid",
        COMPUTED,
        "sigmoid: one probability per emotion, binary cross-entropy; softmax: the original's softmax over the seven "
        "with MultiLabelSoftMarginLoss on it (never predicts two emotions)",
        choices=EMOTION_OUTPUTS,
        earlier="sigmoid",
        original="softmax",
        doc="`softmax`: the original's softmax with `MultiLabelSoftMarginLoss` on it",
    )
    threshold: float | str = flag(
        0.5,
        "model",
        "an emotion is predicted where its probability exceeds this; tuned: a threshold per emotion, the one that "
        "maximises its F1 on the validation part (recorded in metrics.json, used for the test fold and by "
        "common.predict)",
        parse=_threshold,
        rule=(lambda v: v == "tuned" or 0 < v < 1, "must be in (0, 1), or tuned"),
        doc="an emotion is predicted where its probability exceeds this; `tuned`: per emotion, the threshold that "
        "maximises its F1 on the validation part (see [Imbalance](results.md#imbalance))",
    )
    class_weight: str = flag(
        "none",
        "model",
        "none (the original), or balanced: each emotion's positives weighted in the binary cross-entropy by the "
        "training part's negatives over positives (recorded in config.json)",
        choices=CLASS_WEIGHTS,
        earlier="none",
        doc="`balanced`: each emotion's positives weighted in the binary cross-entropy by the training part's "
        "negatives over positives",
    )
    targets: str = flag(
        "total",
        "model",
        "what the emotion head learns: total (the total evaluation's emotion set, as the original) or raters (the "
        "share of the ten evaluators who chose each emotion); evaluation is on the total evaluation either way",
        choices=("total", "raters"),
        earlier="total",
        concerns="emotions",
        folder="_targets-{}",
        doc="`raters`: the emotion head learns the share of the ten evaluators who chose each emotion instead of "
        "the total evaluation's set; evaluation stays on the total evaluation (see "
        "[Results](results.md#training-on-the-evaluators-distribution))",
    )
    va_targets: str = flag(
        "standardized",
        COMPUTED,
        "valence/arousal learnt standardised with the training fold's mean and deviation, or on the raw 1-5 scale "
        "(the original)",
        choices=VA_TARGETS,
        earlier="standardized",
        original="raw",
        doc="`raw`: the original's raw 1–5 targets",
    )
    va_loss: str = flag(
        "mean",
        COMPUTED,
        "mean or sum (the original) of the valence and arousal squared errors",
        choices=VA_LOSSES,
        earlier="mean",
        original="sum",
        doc="`sum`: the original's sum of the two squared errors",
    )
    cls_weight: float = flag(1.0, "model", "weight of the emotion loss (total scripts)", rule=_at_least(0))
    reg_weight: float = flag(1.0, "model", "weight of the valence/arousal loss (total scripts)", rule=_at_least(0))
    # training
    lr: float = flag(
        1e-5,
        ORIGINALS,
        "AdamW learning rate",
        demo=2e-3,
        rule=(_positive, "must be positive"),
        doc="AdamW learning rate (eps 1e-8)",
    )
    optimizer: str = flag(
        "adamw",
        COMPUTED,
        "adamw: torch's AdamW (epsilon added to the bias-corrected root); original: transformers 4.12's, which the "
        "original used (epsilon added to the uncorrected root: about 32 times larger at the first step)",
        choices=("adamw", "original"),
        earlier="adamw",
        original="original",
        doc="`original`: transformers 4.12's AdamW, which the original used (see "
        "[Departures](original.md#departures-from-the-original-code))",
    )
    head_lr: float | None = flag(
        None,
        "training",
        "learning rate of fusion and heads (default: --lr, as the original)",
        parse=float,
        demo=1e-2,
        rule=(lambda v: v is None or v > 0, "must be positive"),
        doc="learning rate of the fusion layer and heads",
        shown="`--lr`",
    )
    batch_size: int = flag(32, ORIGINALS, "utterances per batch and process", demo=16, rule=_at_least(1))
    epochs: int = flag(5, ORIGINALS, "training epochs", demo=6, rule=_at_least(1))
    weight_decay: float = flag(0.0, "training", "AdamW weight decay", rule=_at_least(0))
    lr_scheduler: str = flag(
        "constant",
        "training",
        "constant learning rate, or linear decay to 0 after the warm-up",
        choices=("constant", "linear"),
    )
    warmup_ratio: float = flag(
        0.0, "training", "share of the steps for a linear warm-up", rule=(_below_one, "must be in [0, 1)")
    )
    max_grad_norm: float = flag(0.0, "training", "clip gradients to this norm (0: off)")
    seed: int = flag(
        1234,
        ORIGINALS,
        "seed of weights, order and dropout",
        rule=(lambda v: 0 <= v < 2**32, "must be in 0 .. 2**32 - 1"),
        folder="_seed{}",
        doc="seed of initialisation, batch order and dropout; another than the default names the default run "
        "folder (`_seed7`)",
    )
    seeds: tuple[int, ...] | None = flag(
        None,
        "training",
        "several seeds, one after the other, each a run (or with --num_fold all a fold set) of its own, e.g. 1,2,3: "
        "default folders end in _seed<seed>, and with --output_dir DIR the runs go to DIR_seed<seed>; the report "
        "gathers them (mean and std over seeds, paired comparisons over every seed)",
        parse=_seed_list,
        results=False,  # each run records the one seed it ran with
        doc="several seeds, each a run or fold set of its own (`1,2,3`); see [Results](results.md#seeds)",
        shown="none",
    )
    mixed_precision: str = flag("no", "training", "mixed precision (GPUs)", choices=("no", "fp16", "bf16"))
    gpus: str | None = flag(
        None,
        ORIGINALS,
        "visible GPU ids, e.g. 0 or 0,1 (sets CUDA_VISIBLE_DEVICES)",
        results=False,
        doc="visible GPU ids, e.g. `0` or `0,1`",
        shown="all visible",
    )
    num_labels: int = flag(
        len(EMOTIONS),
        ORIGINALS,
        "emotion classes (the original's flag; only 7)",
        earlier=7,
        rule=(lambda v: v == len(EMOTIONS), f"KEMDy has {len(EMOTIONS)} emotion classes; only 7 works"),
        doc="emotion classes; other values are refused (the grid has 7 emotions)",
    )
    regress: int = flag(
        1,
        ORIGINALS,
        "width of each valence/arousal output (the original's flag; only 1)",
        earlier=1,
        rule=(lambda v: v == 1, "valence and arousal are one number each; only 1 works"),
        doc="width of each valence/arousal output; other values are refused (one number per dimension)",
    )
    ckpt: str = flag(
        "0",
        ORIGINALS,
        "accepted for the original's commands and ignored, as there (see --resume)",
        results=False,
        doc="accepted and ignored, as in the original (which never read it)",
    )
    # what the run writes and says
    output_dir: str | None = flag(
        None,
        "output",
        "run directory, holding fold1/ .. fold5/ with --num_fold all (default: "
        "runs/<script>/KEMDy<dataset>[_session]/fold<k>; runs/demo/... for --demo)",
        results=False,
        path=True,
        doc="run directory; with `--num_fold all`, the folder of `fold1/` … `fold5/`; `_<encoder>` names each encoder "
        "other than the default (see [Encoders](encoders.md#encoders))",
        shown="`runs/[demo/]<script>/KEMDy<dataset>[-to-KEMDy<test_dataset>][_session][_<protocol>][_scored-on-valid][_context<K>][_context-speech][_bio]"
        "[_original][_freeze-<which>][_layers-weighted][_modality-dropout<P>][_targets-raters][_seed<seed>]"
        "[_<encoder>…]/fold<k>`, without `fold<k>` across corpora",
    )
    resume: bool = flag(
        False,
        "output",
        "continue the unfinished run in the run directory from its last complete epoch",
        kind="switch",
        results=False,
        doc="continue an unfinished run from its last complete epoch (see [Reliability](reliability.md#reliability))",
    )
    overwrite: bool = flag(
        False,
        "output",
        "replace a run directory that holds a finished or unfinished run",
        kind="switch",
        results=False,
        demo=True,  # a demo run replaces the previous demo run of its script (unless --resume)
    )
    keep_checkpoint: bool = flag(
        False,
        "output",
        "keep the chosen epoch's checkpoint (model, optimizer and RNG states: about 3 times the model) when the run "
        "finishes; the trained model is in model/ either way",
        kind="toggle",
        results=False,
    )
    report_to: str = flag(
        "none",
        "output",
        "also log every epoch's losses and metrics to TensorBoard (events in <run directory>/tensorboard/)",
        choices=("none", "tensorboard"),
        results=False,
        doc="`tensorboard`: also log every epoch's losses and metrics to `<run directory>/tensorboard/` "
        "(`tensorboard --logdir runs`)",
    )
    quiet: bool = flag(
        False,
        "output",
        "print only each epoch's line, no progress of its batches",
        kind="switch",
        results=False,
        doc="print only each epoch's line: no progress of its batches (on a terminal a live bar; in a log file a line "
        "about every 10 % of a loop that runs over 5 s: batches done, rate, time left, loss so far)",
    )
    save_model: bool = flag(
        True,
        "output",
        "save the trained model in the run directory",
        kind="toggle",
        results=False,
        doc="`--no-save_model` skips writing `model/`",
        shown="on",
    )


FLAGS = {f.name: f.metadata for f in dataclasses.fields(Settings)}
DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings)}
# The presets, in declaration order.
ORIGINAL = {name: m["original"] for name, m in FLAGS.items() if m["original"] is not NEVER}
DEMO = {name: m["demo"] for name, m in FLAGS.items() if m["demo"] is not NEVER}
EARLIER = {name: m["earlier"] for name, m in FLAGS.items() if m["earlier"] is not NEVER}
# Recorded beside the settings (config.json's "args", a marker's settings) without changing a run's numbers:
# which folds a command ran, what its command line said, the names of non-default encoders for folders, and
# the fusion a multimodal_<task>.py script was given (the cell records it).
PLAN_FIELDS = ("folds", "notes", "encoder_tags", "fusion")
NOT_RESULTS = {name for name, m in FLAGS.items() if not m["results"]} | set(PLAN_FIELDS)
TEXT_ONLY = tuple(name for name, m in FLAGS.items() if m["concerns"] == "text")
SPEECH_ONLY = tuple(name for name, m in FLAGS.items() if m["concerns"] == "speech")
FUSION_PARAMS = {name.removeprefix("fusion_"): DEFAULTS[name] for name, m in FLAGS.items() if m["concerns"] == "fusion"}


def of_record(recorded: dict) -> Settings:
    """The settings a run recorded (config.json's "args", read back and checked), a flag it predates at its
    earlier value."""
    return Settings(**{name: recorded.get(name, EARLIER.get(name, DEFAULTS[name])) for name in FLAGS})


def flags_text(values: dict) -> str:
    """A preset as a command line says it: `--dataset 20, --group_by_length, --no-cache`."""
    return ", ".join(f"--{k}" if v is True else f"--no-{k}" if v is False else f"--{k} {v}" for k, v in values.items())


def help_of(name: str) -> str:
    """A flag's help, its presets spelt out, and for a fusion's hyper-parameter the fusions that read it."""
    text = FLAGS[name]["help"].format(demo=flags_text(DEMO), original=flags_text(ORIGINAL))
    if FLAGS[name]["concerns"] == "fusion":
        text += "; read by " + ", ".join(
            f for f, info in FUSIONS.items() if name.removeprefix("fusion_") in info.params
        )
    return text


def folder_name(settings: Settings, cell: Cell | None = None) -> str:
    """The part of a default run folder's name the settings make, after KEMDy<dataset>: each flag declared with
    a `folder` part adds it where its value is not the default, in declaration order (with `cell`, only the flags
    that cell reads: a speech cell given --context runs, and is filed, as without it)."""
    reads = concerned(cell, settings.context_speech) if cell is not None else FLAGS
    return "".join(
        m["folder"].format(getattr(settings, name))
        for name, m in FLAGS.items()
        if m["folder"] and name in reads and getattr(settings, name) != DEFAULTS[name]
    )


def folder_flags(settings: Settings) -> list[str]:
    """The command line of the settings that name the default run folder (but the corpora), where not their
    defaults: what a later command repeats to continue the same fold set."""
    flags = []
    for name, m in FLAGS.items():
        value = getattr(settings, name)
        if m["folder"] and name != "test_dataset" and value != DEFAULTS[name]:
            flags += [f"--{name}"] if value is True else [f"--{name}", str(value)]
    return flags


def concerned(cell: Cell, context_speech: bool = False) -> set[str]:
    """The settings a cell reads: not those of an encoder it does not have, nor a fusion's it does not read.
    `context_speech`: the run reads the turns before's speech, so --context concerns its speech side too."""
    reads = FUSIONS[cell.fusion].params if cell.fusion else ()
    dialogue = {"context"} if context_speech and cell.uses_speech else set()
    return {
        name
        for name, m in FLAGS.items()
        if not (m["concerns"] == "text" and not cell.uses_text and name not in dialogue)
        and not (m["concerns"] == "speech" and not cell.uses_speech)
        and not (m["concerns"] == "emotions" and not cell.classifies)
        and not (m["concerns"] == "multimodal" and cell.fusion is None)
        and not (m["concerns"] == "encoders" and cell.uses_bio)
        and not (m["concerns"] == "fusion" and name.removeprefix("fusion_") not in reads)
    }


def check(settings: Settings) -> None:
    """Every value in its range, and the combinations that cannot work, each refused in one line naming the flag."""
    if settings.resume and settings.overwrite:
        raise UserError("--resume and --overwrite: choose one (continue the run, or start it over)")
    for name in ("num_labels", "regress"):  # the original's flags first: their lines say why only one value works
        _check_rule(settings, name)
    if settings.protocol:
        _check_protocol(settings)
    for refused, why in _COMBINATIONS:
        if refused(settings):
            raise UserError(why.format(settings=settings))
    for name, value in dataclasses.asdict(settings).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{name} {value}: must be a finite number")
    for name in FLAGS:
        _check_rule(settings, name)


# Combinations of values that cannot work: (test, the one line that refuses them).
_COMBINATIONS = (
    (
        lambda s: s.threshold == "tuned" and s.valid_ratio == 0,
        "--threshold tuned: needs a validation part to tune on; give --valid_ratio above 0",
    ),
    (
        lambda s: s.seeds and s.seed != DEFAULTS["seed"],
        "--seeds and --seed {settings.seed}: choose one (--seeds runs each of its seeds)",
    ),
    (
        lambda s: s.score_on == "valid" and s.valid_ratio == 0 and not s.protocol,
        "--score_on valid: scores the run on its validation part; give --valid_ratio above 0",
    ),
    (
        lambda s: s.context and s.text_inputs == "original",
        "--context: the original's text inputs pass token types as the attention mask, which a text pair's second "
        "segment would change; not with --text_inputs original",
    ),
    (
        lambda s: s.class_weight == "balanced" and s.emotion_output == "softmax",
        "--class_weight balanced: weights the binary cross-entropy; not with --emotion_output softmax",
    ),
)


def _check_protocol(settings: Settings) -> None:
    """A protocol decides the rows and the folds: the flags that would decide them otherwise keep their defaults."""
    for name, value in (("split", "contiguous"), ("labels", "checked"), ("duplicate_rows", "all")):
        if getattr(settings, name) != value:
            raise UserError(
                f"--protocol {settings.protocol}: reads the corpus and cuts its folds its own way; not with "
                f"--{name} {getattr(settings, name)}"
            )
    if settings.test_dataset:
        raise UserError(f"--protocol {settings.protocol}: a protocol within one corpus; not with --test_dataset")


def _check_rule(settings: Settings, name: str) -> None:
    rule, value = FLAGS[name]["rule"], getattr(settings, name)
    if rule is not None and not rule[0](value):
        raise UserError(f"--{name} {value}: {rule[1]}")
