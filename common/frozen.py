"""Frozen encoders (`--freeze`): their pooled vectors (or, for a fusion of sequences, their states of every token
and frame), computed once per corpus and model and cached.

The heads then train on these instead of running the encoder at every step. Vectors are computed
in evaluation mode (no dropout), where a speech encoder whose outputs change with padding runs clips of
unequal length apart (`EmotionModel.speech_states`), so that a clip's vector never depends on its batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from common.cache import DamagedCache, SequenceStore, VectorRows, fingerprint, open_cached
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
    layers = model.config.layers == "weighted"
    run = _Run(modality, model, utterances, inputs, collate, batch_size, accelerator, show_progress)
    encode = getattr(model, f"{modality}_layers" if layers else f"encode_{modality}")

    def compute() -> np.ndarray:
        out = None
        for batch in run.batches("vectors"):
            vectors = encode(batch).float().cpu().numpy()
            if out is None:
                out = np.zeros((len(utterances), *vectors.shape[1:]), np.float32)
            out[batch["index"].cpu().numpy()] = vectors
        return out

    if cache_dir is None or not _source_key(run.source):
        return compute()
    pooling = model.config.text_pooling if modality == "text" else model.config.speech_pooling
    summaries = "every layer" + (" through the pooler's dense layer" if pooling == "pooler" else "")
    key = run.key(weights, pooling, *([summaries] if layers else []))
    start = time.perf_counter()
    vectors, folder, built = open_cached(
        cache_dir,
        f"{modality}_vectors",
        key,
        lambda tmp: _save(tmp, compute()),
        lambda folder: _load(folder, len(utterances)),
        log,
    )
    action = f"computed in {time.perf_counter() - start:.1f} s" if built else "reused"
    log(f"{modality} vectors {folder}: {action} ({' x '.join(map(str, vectors.shape))})")
    return vectors


def frozen_sequences(  # noqa: PLR0913 (keyword-only after the first five)
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
) -> Sequence[np.ndarray]:
    """Each utterance's last-layer states of the `modality` encoder over its own tokens or frames (positions x
    width, float32), for a fusion of sequences: computed once in evaluation as the vectors are, and with
    `cache_dir` cached (read one utterance at a time), so that training never runs the frozen encoder. They stay
    float32, as the vectors do: the model then reads exactly what the encoder gives `common.predict`."""
    run = _Run(modality, model, utterances, inputs, collate, batch_size, accelerator, show_progress)
    states_of = getattr(model, f"{modality}_states")

    def rows():
        for batch in run.batches("sequences"):
            states, mask = states_of(batch).padded()
            states, mask = states.float().cpu().numpy(), mask.bool().cpu().numpy()
            for row, index in enumerate(batch["index"].tolist()):
                yield index, states[row, mask[row]]

    if cache_dir is None or not _source_key(run.source):
        found = [None] * len(utterances)
        for index, sequence in rows():
            found[index] = sequence
        return found
    start = time.perf_counter()
    store, folder, built = open_cached(
        cache_dir,
        f"{modality}_sequences",
        run.key(weights, "the last layer's states of every position"),
        lambda tmp: SequenceStore.write(tmp, rows(), len(utterances), np.float32),
        SequenceStore,
        log,
    )
    if len(store) != len(utterances):
        raise DamagedCache(f"{folder}: holds {len(store)} sequences, expected {len(utterances)}")
    action = f"computed in {time.perf_counter() - start:.1f} s" if built else "reused"
    log(f"{modality} sequences {folder}: {action} ({len(store)} utterances x {store.width} wide)")
    return store


class _Run:
    """A frozen encoder run once over every utterance, in evaluation and batches of similar length."""

    def __init__(self, modality, model, utterances, inputs, collate, batch_size, accelerator, show_progress):
        self.modality, self.model, self.utterances, self.collate = modality, model, utterances, collate
        self.accelerator, self.show_progress = accelerator, show_progress
        self.inputs = Inputs(tokens=inputs.tokens) if modality == "text" else Inputs(audio=inputs.audio)
        self.source = inputs.tokens if modality == "text" else inputs.audio
        spec = collate.audio_spec
        # Clips whose outputs would change with padding the model does not isolate (the original's inputs) run alone.
        one_by_one = modality == "speech" and not (spec.pass_mask or spec.pad_to or model.config.isolate_audio)
        self.size = 1 if one_by_one else batch_size

    def batches(self, what: str):
        """The batches on the accelerator's device, the model in evaluation without gradients; computing them (a
        DataLoader draws a seed) does not move the random stream that training then uses: a cold cache and a warm
        one give the same run."""
        order = _by_length(self.utterances, self.source, self.modality)
        dataset = KemdyDataset(self.utterances, order, self.inputs, self.collate.audio_spec)
        loader = DataLoader(dataset, batch_size=self.size, collate_fn=self.collate)
        model, accelerator = self.model, self.accelerator
        was_training = model.training
        model.eval()
        devices = [accelerator.device] if accelerator.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad(), accelerator.autocast():
                for batch in Progress(loader, f"{self.modality} {what}", show=self.show_progress):
                    yield {k: v.to(accelerator.device) for k, v in batch.items()}
        finally:
            model.train(was_training)

    def key(self, weights: str | None, *what) -> str:
        """The cache key: the encoder, its weights and inputs, how they are batched, and `what` is computed of
        them (only what shapes this encoder's inputs: every script's text vectors are one cache, whatever the
        audio)."""
        config, modality = self.model.config, self.modality
        encoder = self.model.text_encoder if modality == "text" else self.model.speech_encoder
        spec = self.collate.audio_spec
        shaping = (self.collate.max_text_len, self.collate.pad_to_max_length) if modality == "text" else (spec,)
        return fingerprint(
            modality,
            encoder.config.to_json_string(),
            weights or module_fingerprint(encoder, config=False),
            what[0],
            config.text_inputs if modality == "text" else config.speech_inputs,
            _source_key(self.source),
            self.size,
            *shaping,
            *what[1:],
            *(["clip norms"] if modality == "speech" and config.clip_norm else []),
        )


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


def context_means(vectors, turns: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(each utterance's mean of its `turns`' rows of `vectors` (zeros where it has none), whether it has one): the
    turns before's speech as --context_speech reads it. `vectors`: pooled vectors or layers' summaries (read row
    by row when cached)."""
    first = np.asarray(vectors[0])
    means = np.zeros((len(turns), *first.shape), np.float32)
    for k, rows in enumerate(turns):
        if rows:
            means[k] = np.mean(np.stack([np.asarray(vectors[j], np.float32) for j in rows]), axis=0)
    return means, np.array([bool(rows) for rows in turns])
