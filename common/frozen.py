"""Frozen encoders (`--freeze`): their pooled vectors, computed once per corpus and model and cached.

The heads then train on these vectors instead of running the encoder at every step. Vectors are computed
in evaluation mode (no dropout), where a speech encoder whose outputs change with padding runs clips of
unequal length apart (`EmotionModel.speech_states`), so that a clip's vector never depends on its batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from common.cache import DamagedCache, VectorRows, fingerprint, open_cached
from common.data import Collator, Inputs, KemdyDataset
from common.encoders import module_fingerprint
from common.progress import Progress


def _source_key(source) -> str:
    folder = getattr(source, "path", None)
    return folder.parent.name if folder is not None else ""


def frozen_vectors(  # noqa: PLR0913 (keyword-only after the first five)
    modality: str,
    model,
    utterances: list,
    inputs: Inputs,
    collate: Collator,
    *,
    batch_size: int,
    accelerator,
    cache_dir=None,
    weights: str | None = None,
    log=print,
    show_progress: bool = True,
) -> np.ndarray:
    """(utterances, width) float32 pooled vectors of the `modality` ("text" or "speech") encoder, its inputs
    collated by `collate`; with --layers weighted, (utterances, layers, width) summaries of every hidden
    layer, which the model weighs and pools while it trains (read from the file row by row when cached).
    `weights`: the encoder's weights' fingerprint, if already taken (it is part of the cache key). They stay float32:
    the layer weights' gradients are differences between layers, which float16 rounding of each layer
    moved by 4e-3 after two epochs (float32 rounding: 1e-6)."""
    spec = collate.audio_spec
    layers = model.config.layers == "weighted"
    source = inputs.tokens if modality == "text" else inputs.audio
    # Clips whose vectors would change with padding the model does not isolate (the original's inputs) run alone.
    one_by_one = modality == "speech" and not (spec.pass_mask or spec.pad_to or model.config.isolate_audio)
    size = 1 if one_by_one else batch_size

    def compute() -> np.ndarray:
        restricted = Inputs(tokens=inputs.tokens) if modality == "text" else Inputs(audio=inputs.audio)
        order = _by_length(utterances, source, modality)
        loader = DataLoader(KemdyDataset(utterances, order, restricted, spec), batch_size=size, collate_fn=collate)
        encode = getattr(model, f"{modality}_layers" if layers else f"encode_{modality}")
        out = None
        was_training = model.training
        model.eval()
        # Computing the vectors (a DataLoader draws a seed) must not move the random stream that training
        # then uses: a cold cache and a warm one give the same run.
        devices = [accelerator.device] if accelerator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), accelerator.autocast():
            for batch in Progress(loader, f"{modality} vectors", show=show_progress):
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                vectors = encode(batch).float().cpu().numpy()
                if out is None:
                    out = np.zeros((len(utterances), *vectors.shape[1:]), np.float32)
                out[batch["index"].cpu().numpy()] = vectors
        model.train(was_training)
        return out

    encoder = model.text_encoder if modality == "text" else model.speech_encoder
    if cache_dir is None or not _source_key(source):
        return compute()
    config = model.config
    pooling = config.text_pooling if modality == "text" else config.speech_pooling
    # Only what shapes this encoder's inputs: every script's text vectors are one cache, whatever the audio.
    shaping = (collate.max_text_len, collate.pad_to_max_length) if modality == "text" else (spec,)
    summaries = "every layer" + (" through the pooler's dense layer" if pooling == "pooler" else "")
    key = fingerprint(
        modality,
        encoder.config.to_json_string(),
        weights or module_fingerprint(encoder, config=False),
        pooling,
        config.text_inputs if modality == "text" else config.speech_inputs,
        _source_key(source),
        size,
        *shaping,
        *([summaries] if layers else []),
        *(["clip norms"] if modality == "speech" and config.clip_norm else []),
    )
    start = time.perf_counter()
    kind = f"{modality}_vectors"
    vectors, folder, built = open_cached(
        cache_dir, kind, key, lambda tmp: _save(tmp, compute()), lambda folder: _load(folder, len(utterances)), log
    )
    action = f"computed in {time.perf_counter() - start:.1f} s" if built else "reused"
    log(f"{modality} vectors {folder}: {action} ({' x '.join(map(str, vectors.shape))})")
    return vectors


def _by_length(utterances: list, source: Sequence, modality: str) -> list[int]:
    """Utterance indices from the longest input down, so batches hold similar lengths."""
    lengths = getattr(source, "lengths", None)  # cached: the stored lengths
    if lengths is None and modality == "text":  # token counts, as cached, so batches are the same either way
        lengths = [len(source[i]) for i in range(len(utterances))]
    if lengths is None:
        lengths = [u.duration for u in utterances]
    return sorted(range(len(utterances)), key=lambda i: -lengths[i])


def _load(folder, n: int) -> np.ndarray | VectorRows:
    """The cached vectors: one per utterance in memory; every layer's (3-d) read row by row from the file."""
    try:
        vectors = VectorRows(folder / "vectors.npy")
        if vectors.ndim == 2:  # one vector per utterance: small
            vectors = np.load(folder / "vectors.npy")
    except (OSError, ValueError) as err:
        raise DamagedCache(f"{type(err).__name__}: {err}") from None
    if vectors.ndim not in (2, 3) or len(vectors) != n:
        raise DamagedCache(f"vectors.npy holds {vectors.shape}, expected {n} rows")
    return vectors


def _save(folder, vectors: np.ndarray) -> None:
    folder.mkdir(parents=True)
    np.save(folder / "vectors.npy", vectors)
