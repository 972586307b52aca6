"""The grid's vocabulary: cells, scripts, datasets, classes and the choices of every flag.

Torch-free on purpose: the command line, the readers and the report import it without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass

DATASETS = ("19", "20")
# The class order used everywhere (multi-hot vectors, logits, reports): alphabetical.
EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
DIMENSIONS = ("valence", "arousal")

MODALITIES = ("text", "speech", "multimodal", "bio")
TASKS = ("classification", "regression", "total")


@dataclass(frozen=True)
class FusionInfo:
    """A fusion of the registry: its class in `common.fusion`, what it does, where it comes from, and whether it
    reads each modality's pooled vector ("vectors") or its states of every token and frame ("sequences")."""

    cls: str
    summary: str
    source: str
    reads: str = "vectors"
    params: tuple[str, ...] = ()  # the hyper-parameters it reads: --fusion_<param> (common.settings)


# The fusion registry. Adding a fusion is a class in common/fusion.py and a line here.
FUSIONS = {
    "concat": FusionInfo("Concat", "the two pooled vectors side by side", "the original code"),
    "element_wise_add": FusionInfo(
        "ElementWiseAdd", "the text vector plus a learnt linear map of the speech vector", "the original code"
    ),
    "gated": FusionInfo(
        "Gated",
        "a gated multimodal unit: a learnt gate mixes each vector's tanh projection",
        "Arevalo et al. 2017 (GMU)",
        params=("width",),
    ),
    "low_rank_tensor": FusionInfo(
        "LowRankTensor",
        "the outer product of the two vectors (each with a 1 appended), through low-rank factors",
        "Liu et al. 2018 (LMF), after Zadeh et al. 2017 (TFN)",
        params=("width", "rank"),
    ),
    "cross_attention": FusionInfo(
        "CrossAttention",
        "text tokens attend to speech frames and frames to tokens; each side averaged, then joined",
        "Tsai et al. 2019 (MulT's cross-modal blocks)",
        reads="sequences",
        params=("width", "heads", "layers"),
    ),
}
ORIGINAL_FUSIONS = ("concat", "element_wise_add")  # a script each, as the original had
# The twelve scripts in the README's order; tables list fold sets in this order within a dataset and split.
SCRIPTS = [f"{m}_{t}" for m in ("text", "speech") for t in TASKS] + [
    f"multimodal_{t}_{f}" for f in ORIGINAL_FUSIONS for t in TASKS
]
# The scripts whose --fusion picks the fusion from the registry, one per task.
FUSION_SCRIPTS = [f"multimodal_{t}" for t in TASKS]
# The cells of the wristband's bio-signals alone (common.bio), a script each; text + speech + bio is a multimodal
# cell given --bio.
BIO_SCRIPTS = [f"bio_{t}" for t in TASKS]
# Every cell: the twelve, then each other fusion's three (run with multimodal_<task>.py --fusion <name>), then the
# bio-signals' three.
CELLS = SCRIPTS + [f"multimodal_{t}_{f}" for f in FUSIONS if f not in ORIGINAL_FUSIONS for t in TASKS] + BIO_SCRIPTS
# Parameter-name prefixes of the two encoders inside the model; everything else is trained from scratch.
ENCODER_PREFIXES = ("text_encoder.", "speech_encoder.")

# Choices of the flags that select a computation (README, "Departures from the original code").
LABEL_READINGS = ("checked", "original")
DUPLICATE_ROWS = ("all", "first")
KEMDY19_ROWS = ("all", "speaker")
TEXT_POOLINGS = ("auto", "pooler", "cls", "mean", "last")
SPEECH_POOLINGS = ("mean", "cnn_last")
TEXT_INPUTS = ("masked", "original")
SPEECH_INPUTS = ("extractor", "original")
DROPOUT_ON = ("modalities", "fused")
EMOTION_OUTPUTS = ("sigmoid", "softmax")
VA_TARGETS = ("standardized", "raw")
VA_LOSSES = ("mean", "sum")
CLASS_WEIGHTS = ("none", "balanced")
LAYERS = ("last", "weighted")
FREEZE = ("none", "text", "speech", "both")


def is_cell(modality, task, fusion) -> bool:
    """Whether these name a cell of the grid (a fusion for the multimodal cells only)."""
    return modality in MODALITIES and task in TASKS and (fusion in FUSIONS) == (modality == "multimodal")


@dataclass(frozen=True)
class Cell:
    """One cell of the grid; its name is the script's name."""

    modality: str
    task: str
    fusion: str | None = None

    def __post_init__(self):
        assert is_cell(self.modality, self.task, self.fusion)

    @property
    def name(self) -> str:
        return f"multimodal_{self.task}_{self.fusion}" if self.fusion else f"{self.modality}_{self.task}"

    @property
    def uses_text(self) -> bool:
        return self.modality in ("text", "multimodal")

    @property
    def uses_speech(self) -> bool:
        return self.modality in ("speech", "multimodal")

    @property
    def uses_bio(self) -> bool:
        """Whether the cell is the bio-signals' own (a multimodal cell reads them too with --bio)."""
        return self.modality == "bio"

    @property
    def classifies(self) -> bool:
        return self.task in ("classification", "total")

    @property
    def regresses(self) -> bool:
        return self.task in ("regression", "total")


# The encoders the original used, the default of --text_model and --speech_model.
DEFAULT_MODELS = {"text": "klue/bert-base", "speech": "facebook/wav2vec2-base-960h"}


def encoder_tags(cell: Cell, models: dict) -> list[str]:
    """Names for the encoders of `models` ({"text": name or folder, ...}) that are not the defaults, among
    those `cell` uses, made safe for a folder name: "kresnik/wav2vec2-large-xlsr-korean" -> that last part."""
    import re

    used = [m for m in ("text", "speech") if getattr(cell, f"uses_{m}")]
    names = [
        str(models[m]).rstrip("/\\").replace("\\", "/").split("/")[-1] for m in used if models[m] != DEFAULT_MODELS[m]
    ]
    return [re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model" for name in names]


def command_of(name: str) -> str:
    """How a cell is run: its script, or multimodal_<task>.py with its --fusion."""
    if name in SCRIPTS or name in BIO_SCRIPTS:
        return f"{name}.py"
    cell = cell_of(name)
    return f"multimodal_{cell.task}.py --fusion {cell.fusion}"


def cell_of(script: str) -> Cell:
    """The cell a name stands for ("multimodal_total_concat" -> Cell("multimodal", "total", "concat")); a ValueError
    for a name of no cell."""
    modality, task, *fusion = script.split("_", 2)
    cell = Cell(modality, task, fusion[0] if fusion else None)
    if cell.name != script:
        raise ValueError(f"{script!r} names no cell of the grid")
    return cell
