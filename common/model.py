"""Batches -> outputs: the encoders, their pooling, the fusion of the two, and the heads; and how the
model of a cell is built from pretrained encoders.

One model class serves all twelve cells; a cell only decides which encoders exist and which heads.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer

from common import schema
from common.data import SAMPLE_RATE, AudioSpec
from common.errors import UserError
from common.grid import EMOTIONS, ENCODER_PREFIXES, Cell, is_cell
from common.runfiles import FROZEN

# transformers 4.12, which the original ran, turned an attention mask of zeros into this bias on every
# attention score: a shift that softmax ignores, so BERT attended to every position, padding included.
# (transformers 5 treats an all-zero mask as masking every position: passing zeros would not reproduce it.)
ORIGINAL_ATTENTION_BIAS = -10000.0
CNN_PARAMETERS = ("feature_extractor.", "feature_projection.layer_norm.")
LAYERS = "layers.safetensors"  # in a saved model: everything but the encoders
REFERENCE = "encoder.json"  # in a saved model's text/ or speech/: where a frozen encoder's weights are
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
        return AutoModel.from_pretrained(name)
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
        return _auto_pooling(AutoModel.from_config(config))


def _auto_pooling(model: nn.Module) -> tuple[str, str]:
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


@dataclass(frozen=True)
class ModelConfig:
    """What the model is, beyond the encoders' own configurations: the cell and every choice that shapes its
    computation. Saved with a trained model as model.json."""

    modality: str
    task: str
    fusion: str | None
    text_pooling: str = "pooler"
    speech_pooling: str = "mean"
    dropout: float = 0.1
    pass_audio_mask: bool = False
    text_inputs: str = "masked"  # "original": BERT's mask and token types exchanged, as the original called it
    speech_inputs: str = "extractor"  # "original": the file's samples, unnormalised, padded to the batch
    emotion_output: str = "sigmoid"  # "softmax": the original's, which can never predict two emotions
    dropout_on: str = "modalities"  # each modality's vector before fusion (the original), or "fused"
    pad_to: int = 0  # samples every batch of audio is padded to (0: its longest clip)
    # In evaluation, run clips of unequal length apart: the speech encoder's outputs change with padding
    # (see `padding_effect`).
    isolate_audio: bool = False
    # ... or, where the probe finds it exact, still in one batch: each group norm of the convolutions over its
    # clip's own frames and the sample mask to the transformer (see `clip_norms`).
    clip_norm: bool = False
    # A Whisper encoder's window in frames of 20 ms: its positional table is cut to this (0: not Whisper).
    audio_frames: int = 0
    layers: str = "last"  # "weighted": a learnt softmax-weighted sum of every hidden layer (SUPERB-style)

    @property
    def cell(self) -> Cell:
        return Cell(self.modality, self.task, self.fusion)


# model.json: a ModelConfig, whose cell must be one of the grid's.
MODEL_JSON = schema.Rule(
    schema.of_dataclass(ModelConfig),
    lambda c: is_cell(c["modality"], c["task"], c["fusion"]),
    "the configuration of a cell of the grid",
)


def audio_spec(extractor, encoder: nn.Module, config: ModelConfig | None = None) -> AudioSpec:
    """What the speech encoder needs from collation: normalisation, padding and a minimum clip length."""
    config = config or ModelConfig("speech", "classification", None, pass_audio_mask=pass_audio_mask(extractor))
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


def _fit_text_encoder(config: ModelConfig, text_encoder: nn.Module) -> int:
    """Check the text encoder against the configuration, drop an unused pooler; its vector's width."""
    if config.text_inputs == "original" and getattr(text_encoder.config, "type_vocab_size", 0) < 2:
        raise UserError(
            "--text_inputs original: the original passed the padding mask as token-type ids, which "
            "needs a text model with two token types (BERT); this one has "
            f"{getattr(text_encoder.config, 'type_vocab_size', 0)}"
        )
    if config.text_inputs == "original":  # transformers 4.12 ran BERT's attention eagerly, not through SDPA
        text_encoder.set_attn_implementation("eager")
    pooler = getattr(text_encoder, "pooler", None)
    if config.text_pooling == "pooler" and pooler is None:
        raise UserError("--text_pooling pooler: this text model has no pooler; use auto, cls, mean or last")
    if config.text_pooling == "pooler" and config.layers == "weighted" and not _split_pooler(pooler):
        raise UserError(
            f"--layers weighted --text_pooling pooler: weighs layers under a BERT-style pooler (a dense layer "
            f"and an activation); this model's is {type(pooler).__name__}: use cls or mean"
        )
    if config.text_pooling != "pooler" and getattr(text_encoder, "pooler", None) is not None:
        text_encoder.pooler = None  # unused parameters would break multi-process training
    return text_encoder.config.hidden_size


def _split_pooler(pooler) -> bool:
    return isinstance(getattr(pooler, "dense", None), nn.Linear) and callable(getattr(pooler, "activation", None))


def _fit_speech_encoder(config: ModelConfig, speech_encoder: nn.Module) -> int:
    """Check the speech encoder against the configuration, freeze what cnn_last leaves unused; its width."""
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


def _fit_whisper(config: ModelConfig, encoder: nn.Module) -> int:
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


class EmotionModel(nn.Module):
    """Encoders -> pooled vectors -> fusion -> emotion logits and/or standardised valence/arousal."""

    def __init__(
        self, config: ModelConfig, text_encoder: nn.Module | None = None, speech_encoder: nn.Module | None = None
    ):
        super().__init__()
        self.config, cell = config, config.cell
        self.text_encoder, self.speech_encoder = text_encoder, speech_encoder
        width = 0
        if cell.uses_text:
            width = _fit_text_encoder(config, text_encoder)
            self._token_types = "token_type_ids" in inspect.signature(text_encoder.forward).parameters
            if config.layers == "weighted":  # embedding output and every layer, equal at the start
                self.text_layer_weights = nn.Parameter(torch.zeros(text_encoder.config.num_hidden_layers + 1))
        if cell.uses_speech:
            speech_width = _fit_speech_encoder(config, speech_encoder)
            if config.layers == "weighted":
                layers = speech_encoder.config.num_hidden_layers + 1
                self.speech_layer_weights = nn.Parameter(torch.zeros(layers))
            if config.fusion == "element_wise_add":
                self.speech_projection = nn.Linear(speech_width, width)
            else:
                width += speech_width
        self.dropout = nn.Dropout(config.dropout)
        self.emotion_head = nn.Linear(width, len(EMOTIONS)) if cell.classifies else None
        self.va_head = nn.Linear(width, 2) if cell.regresses else None
        # Valence/arousal are predicted standardised with the training fold's statistics (set by the trainer).
        self.register_buffer("va_mean", torch.full((2,), 3.0))
        self.register_buffer("va_std", torch.ones(2))

    def _run_text(self, batch: dict, **kwargs):
        mask = batch["attention_mask"]
        if self.config.text_inputs == "original":
            # The original's call, BERT(ids, attention_mask=token-type ids, token_type_ids=padding mask):
            # every real token has segment 1, padding segment 0, and attention covers the padding too.
            bias = torch.full((len(mask), 1, 1, mask.shape[1]), ORIGINAL_ATTENTION_BIAS, device=mask.device)
            ids = batch["input_ids"]
            return self.text_encoder(input_ids=ids, attention_mask=bias, token_type_ids=mask, **kwargs)
        if self._token_types and "token_type_ids" in batch:
            kwargs["token_type_ids"] = batch["token_type_ids"]
        return self.text_encoder(input_ids=batch["input_ids"], attention_mask=mask, **kwargs)

    def text_layers(self, batch: dict) -> torch.Tensor:
        """Each hidden layer's summary of each utterance (utterances x layers x width), embedding output first:
        its masked mean with `mean` pooling, its first token ([CLS]) with `cls`, and with `pooler` that token
        through the pooler's dense layer, whose activation `mix` applies to the weighted sum (the dense layer
        is affine and the weights sum to 1, so this is the pooler of the weighted [CLS], and a frozen
        encoder's cache spares the dense layer at every step). A weighted sum of these is what the weighted
        pooling pools, so they can be computed once for a frozen encoder."""
        states = torch.stack(self._run_text(batch, output_hidden_states=True).hidden_states, dim=1)
        mask = batch["attention_mask"]
        if self.config.text_pooling == "mean":
            return masked_mean(states, mask[:, None, :].expand(-1, states.shape[1], -1))
        if self.config.text_pooling == "pooler":
            return self.text_encoder.pooler.dense(states[:, :, 0])
        if self.config.text_pooling == "last":
            return states[torch.arange(len(mask)), :, last_token(mask)]
        return states[:, :, 0]

    def speech_layers(self, batch: dict) -> torch.Tensor:
        """Each hidden layer's masked mean over the frames that hold audio (utterances x layers x width)."""
        return self._speech_means(batch, all_layers=True)

    def _speech_means(self, batch: dict, all_layers: bool) -> torch.Tensor:
        """Masked means over each clip's frames, of the last layer or of every layer. In evaluation, where the
        encoder's outputs change with padding (`config.isolate_audio`), the clips run as one batch with
        `clip_norms` where that is exact (`config.clip_norm`), else each group of clips of one length as a batch
        of its own, unpadded: a clip's vector is then the one it has alone."""
        audio, samples, mask = batch["audio"], batch["audio_mask"], self.config.pass_audio_mask
        if not self.config.isolate_audio or self.training:
            return speech_means(self.speech_encoder, audio, samples, mask, all_layers)
        if self.config.clip_norm:
            return speech_means(self.speech_encoder, audio, samples, True, all_layers, clip_norm=True)
        lengths, out = samples.sum(dim=-1), None
        for n in lengths.unique().tolist():
            rows = (lengths == n).nonzero(as_tuple=True)[0]
            part = speech_means(self.speech_encoder, audio[rows, :n], samples[rows, :n], mask, all_layers)
            out = part.new_empty((len(audio), *part.shape[1:])) if out is None else out
            out[rows] = part
        return out

    def mix(self, modality: str, layers: torch.Tensor) -> torch.Tensor:
        """The softmax-weighted sum of the layers' summaries; with `pooler` pooling, the pooler's activation on
        it (the summaries passed its dense layer already)."""
        weights = torch.softmax(getattr(self, f"{modality}_layer_weights"), dim=0).to(layers.dtype)
        mixed = (layers * weights[None, :, None]).sum(dim=1)
        if modality == "text" and self.config.text_pooling == "pooler":
            return self.text_encoder.pooler.activation(mixed)
        return mixed

    def layer_weights(self) -> dict[str, list[float]]:
        """The learnt weight of each layer (embedding output first), per encoder, with --layers weighted."""
        return {
            modality: torch.softmax(getattr(self, f"{modality}_layer_weights").detach().float(), 0).tolist()
            for modality in ("text", "speech")
            if hasattr(self, f"{modality}_layer_weights")
        }

    def encode_text(self, batch: dict) -> torch.Tensor:
        """The pooled text vector of each utterance."""
        if self.config.layers == "weighted":
            return self.mix("text", self.text_layers(batch))
        mask = batch["attention_mask"]
        out = self._run_text(batch)
        if self.config.text_pooling == "pooler":
            return out.pooler_output
        if self.config.text_pooling == "cls":
            return out.last_hidden_state[:, 0]
        if self.config.text_pooling == "last":
            return out.last_hidden_state[torch.arange(len(mask)), last_token(mask)]
        return masked_mean(out.last_hidden_state, mask)

    def encode_speech(self, batch: dict) -> torch.Tensor:
        """The pooled speech vector of each utterance."""
        if self.config.layers == "weighted":
            return self.mix("speech", self.speech_layers(batch))
        encoder = self.speech_encoder
        if self.config.speech_pooling == "cnn_last":
            # The original's representation: the last frame of the (layer-normed) CNN features of a
            # fixed-length input, i.e. wav2vec2's `extract_features[:, -1]`, without running the transformer.
            features = encoder.feature_extractor(batch["audio"]).transpose(1, 2)
            return encoder.feature_projection.layer_norm(features[:, -1])
        return self._speech_means(batch, all_layers=False)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        parts = []
        # A frozen encoder's vectors may come precomputed in the batch (common.features).
        for modality in ("text", "speech"):
            if getattr(self.config.cell, f"uses_{modality}"):
                given = batch.get(f"{modality}_vec")  # layers' summaries (3-d) with --layers weighted
                if given is None:
                    parts.append(getattr(self, f"encode_{modality}")(batch))
                else:
                    parts.append(self.mix(modality, given) if given.dim() == 3 else given)
        if self.config.fusion == "element_wise_add":
            text, speech = parts
            if self.config.dropout_on == "modalities":  # the original: head(W·dropout(speech) + dropout(text))
                text, speech = self.dropout(text), self.dropout(speech)
            fused = text + self.speech_projection(speech)
            if self.config.dropout_on == "fused":
                fused = self.dropout(fused)
        else:
            # Dropout acts on each element alone: on a concatenation it is dropout on each modality's vector.
            fused = self.dropout(torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0])
        out = {}
        if self.emotion_head is not None:
            out["emotion_logits"] = self.emotion_head(fused)
        if self.va_head is not None:
            out["va_z"] = self.va_head(fused)
        return out

    def freeze(self, which: str) -> None:
        """Stop training the text and/or speech encoder ("none", "text", "speech", "both")."""
        for name in ("text", "speech"):
            encoder = getattr(self, f"{name}_encoder")
            if which in (name, "both") and encoder is not None:
                encoder.requires_grad_(False)

    def va(self, va_z: torch.Tensor) -> torch.Tensor:
        """Standardised outputs back on the 1..5 scale."""
        return va_z * self.va_std + self.va_mean

    def save(self, folder: Path, tokenizer=None, extractor=None, references: dict | None = None) -> None:
        """A folder `load` reads back: the encoders in transformers format (text/, speech/), the layers
        trained from scratch and the valence/arousal scaling (layers.safetensors), and model.json. An encoder
        in `references` (frozen: its pretrained weights) is stored as its source and weights' fingerprint."""
        folder.mkdir(parents=True, exist_ok=True)
        references = references or {}
        for modality, encoder, processor in (
            ("text", self.text_encoder, tokenizer),
            ("speech", self.speech_encoder, extractor),
        ):
            if encoder is None:
                continue
            if modality in references:
                (folder / modality).mkdir()
                (folder / modality / REFERENCE).write_text(json.dumps(references[modality], indent=1))
            else:
                encoder.save_pretrained(folder / modality)
            processor.save_pretrained(folder / modality)
        rest = {k: v.contiguous() for k, v in self.state_dict().items() if not k.startswith(ENCODER_PREFIXES)}
        save_file(rest, str(folder / LAYERS))
        (folder / "model.json").write_text(json.dumps(asdict(self.config), indent=1))

    @classmethod
    def load(cls, folder: Path, sources: dict | None = None) -> tuple[EmotionModel, object, object]:
        """(model, tokenizer or None, feature extractor or None) from a folder written by `save`; `sources`:
        where a frozen encoder it refers to is now ({"text": folder}), if not where it was trained."""
        config = ModelConfig(**schema.load(folder / "model.json", MODEL_JSON))
        tokenizer = text = extractor = speech = None
        sources = sources or {}
        if config.cell.uses_text:
            tokenizer, text = _saved_encoder(folder / "text", load_text_encoder, sources.get("text"))
        if config.cell.uses_speech:
            extractor, speech = _saved_encoder(folder / "speech", load_speech_encoder, sources.get("speech"))
        model = cls(config, text, speech)
        layers = folder / LAYERS if (folder / LAYERS).is_file() else folder / "heads.safetensors"  # earlier name
        result = model.load_state_dict(load_file(str(layers)), strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(ENCODER_PREFIXES)]
        if missing or result.unexpected_keys:
            keys = missing or result.unexpected_keys
            raise UserError(f"{layers}: does not match model.json ({keys[:3]})")
        return model.eval(), tokenizer, extractor


class EncoderMoved(UserError):
    """A saved model's frozen encoder is not where it was, or no longer holds the same weights."""


def _saved_encoder(part: Path, loader, source: str | None = None) -> tuple[object, nn.Module]:
    """(processor, encoder) of a saved model's text/ or speech/: stored there, or, for a frozen encoder,
    loaded from the source it names (or `source`) and checked to hold the very weights it was trained on."""
    if not (part / REFERENCE).is_file():
        if source is not None:
            raise UserError(
                f"--{part.name}_model {source}: {part} stores its own encoder; the flag is for a frozen one it "
                "refers to"
            )
        return loader(str(part))
    reference = schema.load(part / REFERENCE, FROZEN)
    source = source or reference["source"]
    try:
        encoder = loader(source, processor=False)[1]
    except UserError as err:
        raise EncoderMoved(f"{part}: the frozen encoder is not stored here but read from {source}: {err}") from None
    if module_fingerprint(encoder, config=False) != reference["weights"]:
        raise EncoderMoved(
            f"{part}: {source} does not hold the frozen encoder this model was trained on (its weights differ); "
            f"give the folder that does (common.predict --{part.name}_model), or train the model again"
        )
    return loader(str(part), encoder=False)[0], encoder


def speech_means(
    encoder: nn.Module, audio, samples, pass_mask: bool, all_layers: bool, clip_norm: bool = False
) -> torch.Tensor:
    """A speech encoder's states averaged over each clip's frames (`samples` marks its audio): the last layer's
    (utterances x width), or every layer's, embedding output first (utterances x layers x width); with
    `clip_norm`, the convolutions' group norms over each clip's own frames (`clip_norms`)."""
    with clip_norms(encoder, samples) if clip_norm else contextlib.nullcontext():
        out = encoder(audio, attention_mask=samples if pass_mask else None, output_hidden_states=all_layers)
    states = torch.stack(out.hidden_states, dim=1) if all_layers else out.last_hidden_state
    frames = frames_holding_audio(encoder, states.shape[-2], samples)
    return masked_mean(states, frames[:, None, :].expand(-1, states.shape[1], -1) if all_layers else frames)


class _ClipGroupNorm(nn.Module):
    """A per-channel group norm (wav2vec2-base's first convolution's) whose statistics come from each clip's own
    `frames` only."""

    def __init__(self, norm: nn.GroupNorm, frames: torch.Tensor):
        super().__init__()
        self.norm, self.frames = norm, frames.tolist()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.norm
        pairs = [torch.var_mean(x[i, :, :n], dim=-1, correction=0) for i, n in enumerate(self.frames)]
        var, mean = zip(*pairs, strict=True)
        scale = torch.rsqrt(torch.stack(var) + norm.eps)
        scale = scale * norm.weight if norm.affine else scale
        shift = -torch.stack(mean) * scale + (norm.bias if norm.affine else 0)
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

    def __init__(self, cell: Cell, args):
        self.tokenizer = self.extractor = self.text = self.speech = None
        if cell.uses_text:
            self.tokenizer, self.text = load_text_encoder(args.text_model)
            limit = getattr(self.text.config, "max_position_embeddings", None)
            if limit and args.max_text_len > limit:
                raise UserError(f"--max_text_len {args.max_text_len}: {args.text_model} reads at most {limit} tokens")
        self.padding_effect = self.clip_norm_effect = 0.0
        if cell.uses_speech:
            self.extractor, self.speech = load_speech_encoder(args.speech_model)
            self.padding_effect = padding_effect(self.speech, self.extractor)
            if self.padding_effect > PADDING_EXACT:
                self.clip_norm_effect = padding_effect(self.speech, self.extractor, clip_norm=True)
        self.references = {}  # of the frozen encoders, taken before a model adapts them (e.g. drops a pooler)
        for modality, name in (("text", args.text_model), ("speech", args.speech_model)):
            encoder = getattr(self, modality)
            if encoder is not None and args.freeze in (modality, "both"):
                source = str(Path(name).resolve()) if Path(name).is_dir() else name
                self.references[modality] = {"source": source, "weights": module_fingerprint(encoder, config=False)}

    def for_fold(self, last: bool) -> tuple[nn.Module | None, nn.Module | None]:
        """(text, speech) encoders with their pretrained weights: the loaded ones for the last fold of a run
        and wherever frozen, copies for the folds before it (training changes them)."""
        return tuple(
            encoder if last or encoder is None or modality in self.references else copy.deepcopy(encoder)
            for modality, encoder in (("text", self.text), ("speech", self.speech))
        )


def build_model(cell: Cell, args, encoders: Encoders, last: bool = True, log=print) -> EmotionModel:
    """The cell's model on pretrained encoders, its new layers initialised from --seed."""
    text_encoder, speech_encoder = encoders.for_fold(last)
    config = ModelConfig(
        modality=cell.modality,
        task=cell.task,
        fusion=cell.fusion,
        text_pooling=_auto_pooling(text_encoder)[0]
        if args.text_pooling == "auto" and text_encoder
        else args.text_pooling,
        speech_pooling=args.speech_pooling,
        dropout=args.dropout,
        pass_audio_mask=cell.uses_speech and pass_audio_mask(encoders.extractor, args.speech_inputs),
        text_inputs=args.text_inputs,
        speech_inputs=args.speech_inputs,
        emotion_output=args.emotion_output,
        dropout_on=args.dropout_on,
        layers=args.layers,
        pad_to=audio_padding(args.speech_pooling, args.speech_inputs, args.max_seq_len) if cell.uses_speech else 0,
    )
    whisper = cell.uses_speech and is_whisper(encoders.speech)
    # The original's inputs keep the original's batch padding; clips padded to one length see no other padding.
    isolate = encoders.padding_effect > PADDING_EXACT and args.speech_inputs != "original" and not config.pad_to
    frames = whisper_frames(encoders.speech, args.whisper_window, args.max_seq_len) if whisper else 0
    clip_norm = isolate and encoders.clip_norm_effect <= PADDING_EXACT
    config = replace(config, isolate_audio=isolate, clip_norm=clip_norm, audio_frames=frames)
    if cell.uses_speech and args.speech_pooling == "cnn_last":
        log("--speech_pooling cnn_last: only the speech encoder's CNN and its layer norm are trained")
    seed(args.seed)  # the new layers' initialisation does not depend on what was loaded before
    return EmotionModel(config, text_encoder, speech_encoder)


def seed(value: int) -> None:
    """Python, NumPy and torch on every device, and deterministic cuDNN kernels, as the original seeded."""
    from accelerate.utils import set_seed

    set_seed(value)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
