"""Batches -> hidden states -> pooled vectors: the pretrained encoders loaded, probed and run, and the
pooling of their states.

The encoder step hands over the hidden states of every token or frame with the positions that hold each
utterance (`States`); pooling is a step of its own after it, so that a fusion may read either the pooled
vectors or the sequences.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer

from common.data import SAMPLE_RATE, AudioSpec
from common.errors import UserError
from common.grid import Cell
from common.settings import Settings

# transformers 4.12, which the original ran, turned an attention mask of zeros into this bias on every
# attention score: a shift that softmax ignores, so BERT attended to every position, padding included.
# (transformers 5 treats an all-zero mask as masking every position: passing zeros would not reproduce it.)
ORIGINAL_ATTENTION_BIAS = -10000.0
CNN_PARAMETERS = ("feature_extractor.", "feature_projection.layer_norm.")
PADDING_EXACT = 1e-5  # below this, padding in a batch changes a clip's vector only by float rounding


LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def damaged_weights(folder: Path) -> str | None:
    """What is wrong with a folder's weight files, if anything can be told without loading them."""
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        with path.open("rb") as f:
            head = f.read(len(LFS_POINTER))
        if head == LFS_POINTER:
            return f"{path.name} is a Git LFS pointer, not the weights: run `git lfs pull` there, or download it again"
    return None


def module_fingerprint(module: nn.Module, config: bool = True) -> str:
    """A hash of every weight's bytes, and of the module's configuration unless `config` is false."""
    h = hashlib.blake2b(digest_size=16)
    if config:
        h.update(getattr(getattr(module, "config", None), "to_json_string", lambda: "")().encode())
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _load(flag: str, name: str, loader):
    try:
        return loader(name)
    except (OSError, ValueError, TypeError, SafetensorError) as err:
        first = (str(err).strip().splitlines() or ["unknown error"])[0]
        if Path(name).is_dir():
            problem = damaged_weights(Path(name))
            if problem:
                raise UserError(f"{flag} {name}: {problem}") from None
            if isinstance(err, SafetensorError):
                first = f"damaged or truncated weights: {first}; download the model again"
            raise UserError(f"{flag} {name}: cannot load from this folder ({first})") from None
        raise UserError(
            f"{flag} {name}: not a local folder and not available offline ({first}); "
            "connect once to download it, or pass a local folder"
        ) from None


def _expect(flag: str, name: str, encoder: nn.Module, input_names: tuple, kind: str, example: str) -> None:
    """A text flag given a speech model (or the reverse) stops here, not in the first forward pass."""
    if getattr(encoder, "main_input_name", input_names[0]) not in input_names:
        raise UserError(
            f"{flag} {name}: not a {kind} encoder ({type(encoder).__name__} reads {encoder.main_input_name}); "
            f"give one such as {example}"
        )


def _load_pair(flag: str, name: str, processor_class, input_names, kind: str, example: str, processor, encoder):
    model = _load(flag, name, _encoder_only) if encoder else None
    if model is not None:
        _expect(flag, name, model, input_names, kind, example)
    return _load(flag, name, processor_class.from_pretrained) if processor else None, model


def _encoder_only(name: str) -> nn.Module:
    """The model of `name`; of a Whisper model, only its encoder (the decoder's weights are never loaded)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name)
    if config.model_type != "whisper":
        return AutoModel.from_pretrained(name, **({"add_pooling_layer": False} if _saved_without_pooler(name) else {}))
    from transformers import WhisperForAudioClassification
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    from transformers.utils import logging as hf_logging

    if "WhisperEncoder" in (config.architectures or []):  # an encoder saved alone (a trained run's model/)
        return WhisperEncoder.from_pretrained(name)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the decoder's weights are left out on purpose: no report of them
    try:
        return WhisperForAudioClassification.from_pretrained(name).encoder
    finally:
        hf_logging.set_verbosity(verbosity)


def _saved_without_pooler(name: str) -> bool:
    """Whether `name` is a folder whose weights leave out the pooler its model class would build (a trained run's
    text encoder that pooled otherwise dropped it): it is then built without one, not with a random one."""
    from safetensors import safe_open
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    weights = Path(name) / "model.safetensors"
    if not weights.is_file():
        return False
    model_class = MODEL_MAPPING.get(type(AutoConfig.from_pretrained(name)), None)
    if model_class is None or "add_pooling_layer" not in inspect.signature(model_class.__init__).parameters:
        return False
    with safe_open(str(weights), "pt") as f:
        return not any(key.startswith("pooler.") for key in f.keys())


def load_text_encoder(name: str, processor: bool = True, encoder: bool = True) -> tuple[object, nn.Module]:
    """(tokenizer, encoder) from a hub name or a local folder; None for the one not asked for."""
    return _load_pair("--text_model", name, AutoTokenizer, ("input_ids",), "text", "klue/bert-base", processor, encoder)


def auto_text_pooling(name: str) -> tuple[str, str]:
    """What --text_pooling auto is for a text model, and why: its pooler where it has one (BERT's, which the
    original used), else its last token where it is decoder-only (a causal language model with no masked-LM
    form: Qwen2, Llama), else its first token."""
    from transformers import AutoConfig

    config = _load("--text_model", name, AutoConfig.from_pretrained)
    with torch.device("meta"):  # the modules without their weights: whether it builds a pooler
        return default_text_pooling(AutoModel.from_config(config))


def default_text_pooling(model: nn.Module) -> tuple[str, str]:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(model, "pooler", None) is not None:
        return "pooler", "its pooler"
    kind = model.config.model_type
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "last", "a decoder-only model: its last token"
    return "cls", "no pooler: its first token"


def load_speech_encoder(name: str, processor: bool = True, encoder: bool = True) -> tuple[object, nn.Module]:
    """(feature extractor, encoder) from a hub name or a local folder; None for the one not asked for. A
    wav2vec2-style model reads the waveform (input_values), a Whisper encoder log-mel features (input_features)."""
    example = "facebook/wav2vec2-base-960h"
    inputs = ("input_values", "input_features")
    return _load_pair("--speech_model", name, AutoFeatureExtractor, inputs, "speech", example, processor, encoder)


def audio_spec(extractor, encoder: nn.Module, config=None) -> AudioSpec:
    """What the speech encoder needs from collation: normalisation, padding and a minimum clip length, for a
    model's configuration (`common.model.ModelConfig`; without one, the extractor's own defaults)."""
    config = config or _DefaultAudio(pass_audio_mask(extractor))
    if is_whisper(encoder):  # every clip padded to the window, whose log-mel features the encoder reads
        frames = config.audio_frames or encoder.config.max_source_positions
        return AudioSpec(
            False, 0.0, 1, False, pad_to=frames * samples_per_frame(encoder, extractor), features=extractor
        )
    encoder_config = encoder.config
    # Shortest clip that still yields enough frames: one, or a SpecAugment span when that is on.
    frames_needed = 1 + (encoder_config.mask_time_length if encoder_config.mask_time_prob > 0 else 0)
    n = 1
    while int(encoder._get_feat_extract_output_lengths(n)) < frames_needed:
        n += 16
    original = config.speech_inputs == "original"
    return AudioSpec(
        normalize=bool(getattr(extractor, "do_normalize", False)) and not original,
        padding_value=0.0 if original else float(getattr(extractor, "padding_value", 0.0)),
        min_samples=n,
        pass_mask=config.pass_audio_mask,
        pad_to=config.pad_to,
    )


@dataclass(frozen=True)
class _DefaultAudio:
    """The audio fields of a model configuration before there is one: the extractor's inputs, no fixed padding."""

    pass_audio_mask: bool
    speech_inputs: str = "extractor"
    audio_frames: int = 0
    pad_to: int = 0


def is_whisper(encoder: nn.Module) -> bool:
    """Whether a speech encoder reads log-mel features over a fixed window (Whisper's) instead of the waveform."""
    return getattr(encoder, "main_input_name", "") == "input_features"


def samples_per_frame(encoder: nn.Module, extractor) -> int:
    """Waveform samples per output frame of a Whisper encoder: the extractor's hop, times its convolutions'
    strides (160 x 2: 20 ms)."""
    return extractor.hop_length * encoder.conv1.stride[0] * encoder.conv2.stride[0]


def whisper_frames(encoder: nn.Module, window: str, max_seq_len: float) -> int:
    """A Whisper encoder's window in output frames: its whole 30-s table, or the frames --max_seq_len fills."""
    table = encoder.config.max_source_positions
    return table if window == "30s" else min(table, math.ceil(max_seq_len * SAMPLE_RATE / 320))


def audio_padding(speech_pooling: str, speech_inputs: str, max_seq_len: float) -> int:
    """Samples every batch is padded to: `cnn_last` reads the last CNN frame, which would describe padding
    for every clip shorter than its batch's longest, so clips are padded to --max_seq_len (not with the
    original's inputs, which padded to the batch)."""
    fixed = speech_pooling == "cnn_last" and speech_inputs != "original"
    return int(max_seq_len * SAMPLE_RATE) if fixed else 0


def pass_audio_mask(extractor, speech_inputs: str = "extractor") -> bool:
    """Whether the speech encoder gets the sample mask: where its extractor returns one (layer-norm models
    such as XLS-R), never with the original's inputs."""
    return bool(getattr(extractor, "return_attention_mask", False)) and speech_inputs != "original"


def fit_text_encoder(config, text_encoder: nn.Module, pooled: bool = True) -> int:
    """Check the text encoder against the model's configuration, drop its pooler unless the model pools with it
    (`pooled`: the model reads pooled vectors, not sequences); its vector's width."""
    if config.text_inputs == "original" and getattr(text_encoder.config, "type_vocab_size", 0) < 2:
        raise UserError(
            "--text_inputs original: the original passed the padding mask as token-type ids, which "
            "needs a text model with two token types (BERT); this one has "
            f"{getattr(text_encoder.config, 'type_vocab_size', 0)}"
        )
    if config.text_inputs == "original":  # transformers 4.12 ran BERT's attention eagerly, not through SDPA
        text_encoder.set_attn_implementation("eager")
    pooler = getattr(text_encoder, "pooler", None)
    uses_pooler = pooled and config.text_pooling == "pooler"
    if uses_pooler and pooler is None:
        raise UserError("--text_pooling pooler: this text model has no pooler; use auto, cls, mean or last")
    if uses_pooler and config.layers == "weighted" and not _split_pooler(pooler):
        raise UserError(
            f"--layers weighted --text_pooling pooler: weighs layers under a BERT-style pooler (a dense layer "
            f"and an activation); this model's is {type(pooler).__name__}: use cls or mean"
        )
    if not uses_pooler and pooler is not None:
        text_encoder.pooler = None  # unused parameters would break multi-process training
    return text_encoder.config.hidden_size


def _split_pooler(pooler) -> bool:
    return isinstance(getattr(pooler, "dense", None), nn.Linear) and callable(getattr(pooler, "activation", None))


def fit_speech_encoder(config, speech_encoder: nn.Module) -> int:
    """Check the speech encoder against the model's configuration, freeze what cnn_last leaves unused; its width."""
    speech = speech_encoder.config
    if is_whisper(speech_encoder):
        return _fit_whisper(config, speech_encoder)
    # LayerDrop skips layers at random, which leaves parameters without gradients across processes.
    speech.layerdrop = 0.0
    # SpecAugment's time-mask vector is used only while time masks are on (a fine-tuned checkpoint often
    # ships them off): a parameter that gets no gradient stops multi-process training, so it is frozen.
    spec_embed = getattr(speech_encoder, "masked_spec_embed", None)
    if spec_embed is not None and not (getattr(speech, "apply_spec_augment", True) and speech.mask_time_prob > 0):
        spec_embed.requires_grad_(False)
    if config.speech_pooling == "cnn_last":  # only the CNN and its layer norm are used: freeze the rest
        if config.layers == "weighted":
            raise UserError("--layers weighted: weighs the transformer's layers; cnn_last reads none of them")
        for name, param in speech_encoder.named_parameters():
            param.requires_grad_(name.startswith(CNN_PARAMETERS))
        return speech.conv_dim[-1]
    return speech.hidden_size


def _fit_whisper(config, encoder: nn.Module) -> int:
    """A Whisper encoder with its positional table cut to the configured window; its width."""
    for flag, value, why in (
        ("--speech_pooling", config.speech_pooling, "cnn_last reads wav2vec2's convolution features"),
        ("--speech_inputs", config.speech_inputs, "original feeds the original's waveform"),
    ):
        if value in ("cnn_last", "original"):
            raise UserError(f"{flag} {value}: {why}; this speech model is a Whisper encoder (log-mel features)")
    encoder.config.encoder_layerdrop, encoder.layerdrop = 0.0, 0.0  # a skipped layer has no gradient
    frames = config.audio_frames
    if frames and frames < encoder.embed_positions.num_embeddings:  # its first rows: the window's positions
        table = encoder.embed_positions.weight[:frames].detach().clone()
        encoder.embed_positions = nn.Embedding.from_pretrained(table, freeze=True)
        encoder.config.max_source_positions = encoder.max_source_positions = frames
    return encoder.config.d_model


@dataclass
class States:
    """An encoder's hidden states for a batch: of every token or frame, of the last layer (utterances x positions x
    width) or of every layer, embedding output first (utterances x layers x positions x width), with the
    positions that hold each utterance (utterances x positions).

    Clips that ran apart (`ModelConfig.isolate_audio`) stay in parts of their own, each with the rows of the
    batch it holds, so that pooling computes for each clip exactly what it computes for the clip alone.
    `pooler`: a text encoder's own pooled output of the last layer, where it has a pooler (BERT's)."""

    parts: list[tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]]  # (rows, or None for all; states; mask)
    size: int
    pooler: torch.Tensor | None = None

    @classmethod
    def whole(cls, states: torch.Tensor, mask: torch.Tensor, pooler: torch.Tensor | None = None) -> States:
        return cls([(None, states, mask)], len(states), pooler)

    def pooled(self, pool: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """pool(states, mask) of every part, its rows in their places in the batch."""
        if len(self.parts) == 1 and self.parts[0][0] is None:
            return pool(*self.parts[0][1:])
        out = None
        for rows, states, mask in self.parts:
            part = pool(states, mask)
            out = part.new_empty((self.size, *part.shape[1:])) if out is None else out
            out[rows] = part
        return out

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(states, mask) of the whole batch, the parts padded with zeros to the longest."""
        if len(self.parts) == 1 and self.parts[0][0] is None:
            return self.parts[0][1:]
        longest = max(states.shape[-2] for _, states, _ in self.parts)
        first = self.parts[0][1]
        states = first.new_zeros((self.size, *first.shape[1:-2], longest, first.shape[-1]))
        mask = torch.zeros((self.size, longest), dtype=self.parts[0][2].dtype, device=first.device)
        for rows, part, part_mask in self.parts:
            states[rows, ..., : part.shape[-2], :] = part
            mask[rows, : part_mask.shape[-1]] = part_mask
        return states, mask


def run_speech(
    encoder: nn.Module, audio, samples, pass_mask: bool, all_layers: bool, clip_norm: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """A speech encoder's states of every frame, of the last layer or of every layer, and the frames that hold
    each clip's audio (`samples` marks its samples); with `clip_norm`, the convolutions' group norms over each
    clip's own frames (`clip_norms`)."""
    with clip_norms(encoder, samples) if clip_norm else contextlib.nullcontext():
        out = encoder(audio, attention_mask=samples if pass_mask else None, output_hidden_states=all_layers)
    states = torch.stack(out.hidden_states, dim=1) if all_layers else out.last_hidden_state
    return states, frames_holding_audio(encoder, states.shape[-2], samples)


def mean_over_positions(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The masked mean over the positions of the last layer's states, or of every layer's (4-d states)."""
    return masked_mean(states, mask[:, None, :].expand(-1, states.shape[1], -1) if states.dim() == 4 else mask)


def speech_means(
    encoder: nn.Module, audio, samples, pass_mask: bool, all_layers: bool, clip_norm: bool = False
) -> torch.Tensor:
    """A speech encoder's states averaged over each clip's frames: the last layer's (utterances x width), or every
    layer's, embedding output first (utterances x layers x width)."""
    return mean_over_positions(*run_speech(encoder, audio, samples, pass_mask, all_layers, clip_norm))


def pool_text(encoder: nn.Module, pooling: str, states: States) -> torch.Tensor:
    """Each utterance's text vector by --text_pooling: the encoder's pooler output, its first token ([CLS]), its
    last token, or the mean over its tokens. For states of every layer, each layer's summary (utterances x layers
    x width), with `pooler` its first token through the pooler's dense layer (whose activation follows the layers'
    weighted sum: the dense layer is affine and the weights sum to 1, so this is the pooler of the weighted
    [CLS], and a frozen encoder's cache spares the dense layer at every step)."""

    def pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        layers = (slice(None),) if hidden.dim() == 4 else ()
        if pooling == "mean":
            return mean_over_positions(hidden, mask)
        if pooling == "last":
            return hidden[(torch.arange(mask.shape[0], device=mask.device), *layers, last_token(mask))]
        if pooling == "pooler" and layers:
            return encoder.pooler.dense(hidden[:, :, 0])
        return hidden[(slice(None), *layers, 0)]

    if pooling == "pooler" and states.pooler is not None:
        return states.pooler
    return states.pooled(pool)


class _ClipGroupNorm(nn.Module):
    """A per-channel group norm (wav2vec2-base's first convolution's) whose statistics come from each clip's own
    `frames` only."""

    def __init__(self, norm: nn.GroupNorm, frames: torch.Tensor):
        super().__init__()
        self.norm, self.frames = norm, frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.norm
        if torch.onnx.is_in_onnx_export():  # a graph holds no loop over clips: the same statistics, masked
            inside = (torch.arange(x.shape[-1], device=x.device)[None, :] < self.frames[:, None])[:, None, :]
            count = self.frames[:, None].to(x.dtype)
            mean = torch.where(inside, x, 0.0).sum(dim=-1) / count
            var = torch.where(inside, (x - mean[:, :, None]) ** 2, 0.0).sum(dim=-1) / count
        else:
            pairs = [torch.var_mean(x[i, :, :n], dim=-1, correction=0) for i, n in enumerate(self.frames.tolist())]
            var, mean = (torch.stack(v) for v in zip(*pairs, strict=True))
        scale = torch.rsqrt(var + norm.eps)
        scale = scale * norm.weight if norm.affine else scale
        shift = -mean * scale + (norm.bias if norm.affine else 0)
        return torch.addcmul(shift[:, :, None], x, scale[:, :, None])  # one pass over the frames


@contextlib.contextmanager
def clip_norms(encoder: nn.Module, samples: torch.Tensor):
    """Within the block, each per-channel group norm of the encoder's convolutions (wav2vec2-base's first one,
    over time) takes its statistics from each clip's own frames, not from the padding after them: the frames
    that hold a clip's audio then come out as they do for the clip alone (a convolution's leading frames see
    only the clip's samples). Other norms are left as they are (`padding_effect` finds out whether that is exact)."""
    convs = getattr(getattr(encoder, "feature_extractor", None), "conv_layers", [])
    lengths, swapped = samples.sum(dim=-1), []
    try:
        for layer in convs:
            conv = layer.conv
            lengths = torch.div(lengths - conv.kernel_size[0], conv.stride[0], rounding_mode="floor") + 1
            norm = getattr(layer, "layer_norm", None)
            if isinstance(norm, nn.GroupNorm) and norm.num_groups == norm.num_channels:
                layer.layer_norm = _ClipGroupNorm(norm, lengths.clamp(min=1))
                swapped.append((layer, norm))
        yield
    finally:
        for layer, norm in swapped:
            layer.layer_norm = norm


def frames_holding_audio(encoder: nn.Module, n_frames: int, samples: torch.Tensor) -> torch.Tensor:
    """The output frames that hold a clip's audio (`samples` marks its samples), as a mask."""
    if not is_whisper(encoder):
        return encoder._get_feature_vector_attention_mask(n_frames, samples)
    per_frame = samples.shape[-1] // n_frames  # the window's samples over its frames: 320, 20 ms
    lengths = (samples.sum(dim=-1) + per_frame - 1) // per_frame
    return torch.arange(n_frames, device=samples.device)[None, :] < lengths[:, None]


def padding_effect(encoder: nn.Module, extractor, clip_norm: bool = False) -> float:
    """How far a clip's pooled states (every layer's) move when it is padded in a batch beside a longer clip,
    in evaluation and with the attention mask where its extractor gives one: float rounding (1e-7) where the
    mask makes padding exact, far more where the model normalises over time (wav2vec2-base's group norm) or
    its masked computation still sees the padding. With `clip_norm`, the same with `clip_norms` and the mask
    (exact for wav2vec2-base). Decided by this probe, not by the model's name; a Whisper encoder's clips are all
    padded to its window, so no clip sees another's padding."""
    from common.data import Collator, model_audio, to_pcm16

    if is_whisper(encoder):
        return 0.0
    spec = audio_spec(extractor, encoder)
    generator = torch.Generator().manual_seed(0)
    clips = [0.1 * torch.randn(n, generator=generator).numpy() for n in (SAMPLE_RATE // 2, SAMPLE_RATE)]
    items = [{"index": i, "audio": model_audio(to_pcm16(x), spec)} for i, x in enumerate(clips)]
    collate, training = Collator(audio_spec=spec), encoder.training
    encoder.eval()
    with torch.no_grad():
        together, alone = (
            speech_means(encoder, batch["audio"], batch["audio_mask"], spec.pass_mask or clip_norm, True, clip_norm)[0]
            for batch in (collate(items), collate(items[:1]))
        )
    encoder.train(training)
    return float((together - alone).abs().max())


def last_token(mask: torch.Tensor) -> torch.Tensor:
    """Each row's last position where the mask is set (its last token, whichever side it was padded on)."""
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return (mask.to(positions.dtype) * (positions + 1)).argmax(dim=-1)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions (the next-to-last dimension) where mask is set; a row with none set averages
    nothing to zeros."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=-2) / weights.sum(dim=-2).clamp(min=1.0)


class Encoders:
    """The cell's tokenizer, feature extractor and pretrained encoders, loaded once for every fold; for a
    frozen encoder, also where it came from and its weights' fingerprint (a saved model refers to it)."""

    def __init__(self, cell: Cell, settings: Settings):
        self.tokenizer = self.extractor = self.text = self.speech = None
        if cell.uses_text:
            self.tokenizer, self.text = load_text_encoder(settings.text_model)
            limit = getattr(self.text.config, "max_position_embeddings", None)
            if limit and settings.max_text_len > limit:
                raise UserError(
                    f"--max_text_len {settings.max_text_len}: {settings.text_model} reads at most {limit} tokens"
                )
        self.padding_effect = self.clip_norm_effect = 0.0
        if cell.uses_speech:
            self.extractor, self.speech = load_speech_encoder(settings.speech_model)
            self.padding_effect = padding_effect(self.speech, self.extractor)
            if self.padding_effect > PADDING_EXACT:
                self.clip_norm_effect = padding_effect(self.speech, self.extractor, clip_norm=True)
        self.references = {}  # of the frozen encoders, taken before a model adapts them (e.g. drops a pooler)
        for modality, name in (("text", settings.text_model), ("speech", settings.speech_model)):
            encoder = getattr(self, modality)
            if encoder is not None and settings.freeze in (modality, "both"):
                source = str(Path(name).resolve()) if Path(name).is_dir() else name
                self.references[modality] = {"source": source, "weights": module_fingerprint(encoder, config=False)}

    def for_fold(self, last: bool) -> tuple[nn.Module | None, nn.Module | None]:
        """(text, speech) encoders with their pretrained weights: the loaded ones for the last fold of a run
        and wherever frozen, copies for the folds before it (training changes them)."""
        return tuple(
            encoder if last or encoder is None or modality in self.references else copy.deepcopy(encoder)
            for modality, encoder in (("text", self.text), ("speech", self.speech))
        )
