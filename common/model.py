"""Pooled vectors or sequences -> fusion -> heads: the model of a cell on its pretrained encoders, and its
saved form.

One model class serves every cell; a cell only decides which encoders exist, how they are joined (the fusion,
`common.fusion`) and which heads.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from common import fusion, schema
from common.bio import FEATURES
from common.bioencoder import BioEncoder
from common.encoders import (
    ORIGINAL_ATTENTION_BIAS,
    PADDING_EXACT,
    Encoders,
    States,
    audio_padding,
    default_text_pooling,
    fit_speech_encoder,
    fit_text_encoder,
    is_whisper,
    load_speech_encoder,
    load_text_encoder,
    mean_over_positions,
    module_fingerprint,
    pass_audio_mask,
    pool_text,
    run_speech,
    whisper_frames,
)
from common.errors import UserError
from common.grid import EMOTIONS, ENCODER_PREFIXES, FUSIONS, Cell, is_cell
from common.runfiles import FROZEN
from common.settings import FUSION_PARAMS, Settings

LAYERS = "layers.safetensors"  # in a saved model: everything but the encoders
REFERENCE = "encoder.json"  # in a saved model's text/ or speech/: where a frozen encoder's weights are


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
    # The fusion's hyper-parameters (`settings.FUSION_PARAMS`; a fusion reads those its registry line names).
    fusion_width: int = FUSION_PARAMS["width"]
    fusion_heads: int = FUSION_PARAMS["heads"]
    fusion_layers: int = FUSION_PARAMS["layers"]
    fusion_rank: int = FUSION_PARAMS["rank"]
    # The bio-signals the model reads (`common.bio`: "EDA,TEMP,IBI"), a bio cell's or a multimodal one's with --bio;
    # "": none. Their features come raw; the model standardises them with the training part's statistics.
    bio_signals: str = ""
    bio_width: int = 32
    # The speech side also reads the mean pooled speech vector of the turns before (--context_speech).
    context_speech: bool = False

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(self.bio_signals.split(",")) if self.bio_signals else ()

    @property
    def cell(self) -> Cell:
        return Cell(self.modality, self.task, self.fusion)


def _valid(c: dict) -> bool:
    """A cell of the grid; the bio-signals named once each, known, and named by a bio cell."""
    signals = c.get("bio_signals", "").split(",") if c.get("bio_signals") else []
    bio = (c["modality"] != "bio" or bool(signals)) and all(s in FEATURES for s in signals)
    unique = len(set(signals)) == len(signals) and c.get("bio_width", 32) >= 1
    return is_cell(c["modality"], c["task"], c["fusion"]) and bio and unique


# model.json: a ModelConfig, whose cell must be one of the grid's.
MODEL_JSON = schema.Rule(
    schema.of_dataclass(ModelConfig), _valid, "the configuration of a cell of the grid (a bio cell naming its signals)"
)


class EmotionModel(nn.Module):
    """Encoders -> states -> pooled vectors (or sequences) -> fusion -> emotion logits and/or standardised
    valence/arousal."""

    def __init__(
        self, config: ModelConfig, text_encoder: nn.Module | None = None, speech_encoder: nn.Module | None = None
    ):
        super().__init__()
        self.config, cell = config, config.cell
        self.text_encoder, self.speech_encoder = text_encoder, speech_encoder
        reads = FUSIONS[cell.fusion].reads if cell.fusion else "vectors"
        text_width = speech_width = 0
        if cell.uses_text:
            text_width = fit_text_encoder(config, text_encoder, pooled=reads == "vectors")
            self._token_types = "token_type_ids" in inspect.signature(text_encoder.forward).parameters
            if config.layers == "weighted":  # embedding output and every layer, equal at the start
                self.text_layer_weights = nn.Parameter(torch.zeros(text_encoder.config.num_hidden_layers + 1))
        if cell.uses_speech:
            speech_width = self._speech_side(config, speech_encoder, reads)
        self.fusion = None
        if cell.fusion:  # created here, between the encoders' layer weights and the heads: the order of the seeds
            settings = fusion.FusionSettings(
                config.dropout,
                config.dropout_on,
                config.fusion_width,
                config.fusion_heads,
                config.fusion_layers,
                config.fusion_rank,
            )
            self.fusion = fusion.build(cell.fusion, text_width, speech_width, settings)
        width = self.fusion.width if self.fusion is not None else text_width + speech_width
        self.bio_encoder = None
        if config.signals:  # after the fusion: a model without bio-signals initialises its heads as before
            self.bio_encoder = BioEncoder(config.signals, config.bio_width, config.dropout)
            width += config.bio_width
            # Features are standardised with the training part's statistics (set by the trainer).
            features = self.bio_encoder.features
            self.register_buffer("bio_mean", torch.zeros(features))
            self.register_buffer("bio_std", torch.ones(features))
        if config.context_speech:  # what a dialogue's first turn reads in place of the turns before's vector
            self.speech_context_absent = nn.Parameter(torch.zeros(speech_width // 2))
            nn.init.normal_(self.speech_context_absent, std=0.02)
        self.dropout = nn.Dropout(config.dropout)
        self.emotion_head = nn.Linear(width, len(EMOTIONS)) if cell.classifies else None
        self.va_head = nn.Linear(width, 2) if cell.regresses else None
        # Valence/arousal are predicted standardised with the training fold's statistics (set by the trainer).
        self.register_buffer("va_mean", torch.full((2,), 3.0))
        self.register_buffer("va_std", torch.ones(2))
        self.register_load_state_dict_pre_hook(_renamed)

    def _speech_side(self, config: ModelConfig, speech_encoder: nn.Module, reads: str) -> int:
        """The speech encoder fitted to the cell, its layer weights; the width of what the speech side gives (with
        --context_speech, its own vector and the turns before's side by side)."""
        width = fit_speech_encoder(config, speech_encoder)
        if reads == "sequences" and config.speech_pooling == "cnn_last":
            raise UserError(f"--speech_pooling cnn_last: pools the CNN's last frame; {config.fusion} reads every frame")
        if reads == "sequences" and config.context_speech:
            raise UserError(
                f"--context_speech: the turns before are read as pooled vectors; {config.fusion} reads every frame"
            )
        if config.layers == "weighted":
            layers = speech_encoder.config.num_hidden_layers + 1
            self.speech_layer_weights = nn.Parameter(torch.zeros(layers))
        return 2 * width if config.context_speech else width

    def _run_text(self, batch: dict, **kwargs):
        mask = batch["attention_mask"]
        if self.config.text_inputs == "original":
            # The original's call, BERT(ids, attention_mask=token-type ids, token_type_ids=padding mask):
            # every real token has segment 1, padding segment 0, and attention covers the padding too.
            bias = torch.full_like(mask[:, None, None, :], ORIGINAL_ATTENTION_BIAS, dtype=torch.float32)
            ids = batch["input_ids"]
            return self.text_encoder(input_ids=ids, attention_mask=bias, token_type_ids=mask, **kwargs)
        if self._token_types and "token_type_ids" in batch:
            kwargs["token_type_ids"] = batch["token_type_ids"]
        return self.text_encoder(input_ids=batch["input_ids"], attention_mask=mask, **kwargs)

    def text_states(self, batch: dict, all_layers: bool = False) -> States:
        """The text encoder's states of every token, of the last layer (with its pooler's output, where it has
        one) or of every layer, and the token mask."""
        mask = batch["attention_mask"]
        if all_layers:
            return States.whole(torch.stack(self._run_text(batch, output_hidden_states=True).hidden_states, 1), mask)
        out = self._run_text(batch)
        return States.whole(out.last_hidden_state, mask, getattr(out, "pooler_output", None))

    def speech_states(self, batch: dict, all_layers: bool = False) -> States:
        """The speech encoder's states of every frame, of the last layer or of every layer, and the frames that
        hold each clip's audio. In evaluation, where the encoder's outputs change with padding
        (`config.isolate_audio`), the clips run as one batch with `clip_norms` where that is exact
        (`config.clip_norm`), else each group of clips of one length as a batch of its own, unpadded: a clip's
        states are then the ones it has alone."""
        audio, samples, mask, encoder = (
            batch["audio"],
            batch["audio_mask"],
            self.config.pass_audio_mask,
            self.speech_encoder,
        )
        if not self.config.isolate_audio or encoder.training:
            return States.whole(*run_speech(encoder, audio, samples, mask, all_layers))
        if self.config.clip_norm:
            return States.whole(*run_speech(encoder, audio, samples, True, all_layers, clip_norm=True))
        if torch.onnx.is_in_onnx_export():  # a graph holds no loop over lengths: it is given one length at a time
            return States.whole(*run_speech(encoder, audio, samples, mask, all_layers))
        lengths, parts = samples.sum(dim=-1), []
        for n in lengths.unique().tolist():
            rows = (lengths == n).nonzero(as_tuple=True)[0]
            parts.append((rows, *run_speech(encoder, audio[rows, :n], samples[rows, :n], mask, all_layers)))
        return States(parts, len(audio))

    def text_layers(self, batch: dict) -> torch.Tensor:
        """Each hidden layer's summary of each utterance (utterances x layers x width), embedding output first,
        by --text_pooling (`pool_text`). A weighted sum of these is what the weighted pooling pools, so they can be
        computed once for a frozen encoder."""
        return pool_text(self.text_encoder, self.config.text_pooling, self.text_states(batch, all_layers=True))

    def speech_layers(self, batch: dict) -> torch.Tensor:
        """Each hidden layer's masked mean over the frames that hold audio (utterances x layers x width)."""
        return self.speech_states(batch, all_layers=True).pooled(mean_over_positions)

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
        return pool_text(self.text_encoder, self.config.text_pooling, self.text_states(batch))

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
        return self.speech_states(batch).pooled(mean_over_positions)

    def sequence(self, modality: str, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(states, mask) of every token or frame of the batch, as a fusion that reads sequences gets them: the
        last layer's, or with --layers weighted the learnt softmax-weighted sum of every layer's. A frozen
        encoder's may come precomputed in the batch; one that does not runs as it would to compute them: in
        evaluation, without gradients."""
        if f"{modality}_seq" in batch:
            return batch[f"{modality}_seq"], batch[f"{modality}_seq_mask"]
        weighted = self.config.layers == "weighted"
        encoder = getattr(self, f"{modality}_encoder")
        frozen = not any(p.requires_grad for p in encoder.parameters())
        with _evaluating(encoder) if frozen else contextlib.nullcontext():
            states = getattr(self, f"{modality}_states")(batch, all_layers=weighted)
        hidden, mask = states.padded()
        if weighted:
            weights = torch.softmax(getattr(self, f"{modality}_layer_weights"), dim=0).to(hidden.dtype)
            hidden = (hidden * weights[None, :, None, None]).sum(dim=1)
        return hidden, mask

    def own_vector(self, modality: str, batch: dict) -> torch.Tensor:
        """The pooled vector of `modality` of the utterance itself; a frozen encoder's may come precomputed in the
        batch (its pooled vector, or with --layers weighted its layers' summaries, which are weighed here)."""
        given = batch.get(f"{modality}_vec")
        if given is None:
            return getattr(self, f"encode_{modality}")(batch)
        return self.mix(modality, given) if given.dim() == 3 else given

    def vector(self, modality: str, batch: dict) -> torch.Tensor:
        """What the model reads of `modality`: its own vector, and with --context_speech the speech side's turns
        before's beside it."""
        own = self.own_vector(modality, batch)
        if modality != "speech" or not self.config.context_speech:
            return own
        before = batch["speech_context"]  # the mean of the turns before's vectors (or layers' summaries)
        before = self.mix("speech", before) if before.dim() == 3 else before
        has = batch["speech_context_mask"].bool()[:, None]
        return torch.cat([own, torch.where(has, before.to(own.dtype), self.speech_context_absent.to(own.dtype))], -1)

    def encode_bio(self, batch: dict) -> torch.Tensor:
        """The bio vector of each utterance, from its raw features (NaN where a signal is missing) standardised with
        the training part's statistics."""
        features = batch["bio"].to(self.bio_mean.dtype)
        return self.bio_encoder((features - self.bio_mean) / self.bio_std)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        cell = self.config.cell
        if cell.uses_bio:
            fused = self.dropout(self.encode_bio(batch))
        elif self.fusion is None:  # one modality
            fused = self.dropout(self.vector(cell.modality, batch))
        elif self.fusion.reads == "sequences":
            fused = self.fusion(self.sequence("text", batch), self.sequence("speech", batch))
        else:
            fused = self.fusion(self.vector("text", batch), self.vector("speech", batch))
        if self.bio_encoder is not None and not cell.uses_bio:  # --bio: the bio vector beside the cell's own
            fused = torch.cat([fused, self.dropout(self.encode_bio(batch))], dim=-1)
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


def build_model(
    cell: Cell, settings: Settings, encoders: Encoders, last: bool = True, log=print, signals: tuple[str, ...] = ()
) -> EmotionModel:
    """The cell's model on pretrained encoders, its new layers initialised from --seed; `signals`: the bio-signals it
    reads (a bio cell's, or a multimodal cell's with --bio)."""
    text_encoder, speech_encoder = encoders.for_fold(last)
    s = settings
    config = ModelConfig(
        modality=cell.modality,
        task=cell.task,
        fusion=cell.fusion,
        text_pooling=default_text_pooling(text_encoder)[0]
        if s.text_pooling == "auto" and text_encoder
        else s.text_pooling,
        speech_pooling=s.speech_pooling,
        dropout=s.dropout,
        pass_audio_mask=cell.uses_speech and pass_audio_mask(encoders.extractor, s.speech_inputs),
        text_inputs=s.text_inputs,
        speech_inputs=s.speech_inputs,
        emotion_output=s.emotion_output,
        dropout_on=s.dropout_on,
        layers=s.layers,
        **{f"fusion_{name}": getattr(s, f"fusion_{name}") for name in FUSION_PARAMS},
        context_speech=cell.uses_speech and s.context_speech,
        pad_to=audio_padding(s.speech_pooling, s.speech_inputs, s.max_seq_len) if cell.uses_speech else 0,
        bio_signals=",".join(signals),
    )
    whisper = cell.uses_speech and is_whisper(encoders.speech)
    # The original's inputs keep the original's batch padding; clips padded to one length see no other padding.
    isolate = encoders.padding_effect > PADDING_EXACT and s.speech_inputs != "original" and not config.pad_to
    frames = whisper_frames(encoders.speech, s.whisper_window, s.max_seq_len) if whisper else 0
    clip_norm = isolate and encoders.clip_norm_effect <= PADDING_EXACT
    config = replace(config, isolate_audio=isolate, clip_norm=clip_norm, audio_frames=frames)
    if cell.uses_speech and s.speech_pooling == "cnn_last":
        log("--speech_pooling cnn_last: only the speech encoder's CNN and its layer norm are trained")
    seed(s.seed)  # the new layers' initialisation does not depend on what was loaded before
    return EmotionModel(config, text_encoder, speech_encoder)


@contextlib.contextmanager
def _evaluating(encoder: nn.Module):
    """A frozen encoder run as in evaluation (no dropout) and without gradients, whatever the model's mode."""
    training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        encoder.train(training)


def present_name(key: str) -> str:
    """A weight's name as the model has it now, for one saved before fusions were modules of their own (a model/
    or a checkpoint of an earlier version): `speech_projection.` was element-wise addition's."""
    return "fusion." + key if key.startswith("speech_projection.") else key


def _renamed(module, state_dict, prefix, *_) -> None:
    """Weights saved under earlier names load under their present ones (`present_name`)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        name = present_name(key.removeprefix(prefix))
        if prefix + name != key:
            state_dict[prefix + name] = state_dict.pop(key)


def seed(value: int) -> None:
    """Python, NumPy and torch on every device, and deterministic cuDNN kernels, as the original seeded."""
    from accelerate.utils import set_seed

    set_seed(value)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
