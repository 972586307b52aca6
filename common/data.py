"""Records -> batches: audio decoding, tokenisation, their caches, the dataset, collation and the sampler."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset, Sampler

from common.cache import ArrayStore, SequenceStore, file_digests, fingerprint, open_cached
from common.errors import UserError
from common.kemdy import Utterance
from common.progress import Progress

SAMPLE_RATE = 16000


def load_audio(path, max_seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 at `sample_rate`, cut to the first `max_seconds` (as the original); any rate, any channels."""
    try:
        info = sf.info(str(path))
        frames = min(info.frames, math.ceil(max_seconds * info.samplerate)) if info.frames > 0 else -1
        x, rate = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:  # it was readable when the corpus was read
        raise UserError(f"{path}: cannot decode the audio ({err})") from None
    x = x.mean(axis=1)
    if rate != sample_rate:
        from scipy.signal import resample_poly  # about 0.5 s to import, for files the real corpora do not have

        g = gcd(rate, sample_rate)
        x = resample_poly(x, sample_rate // g, rate // g).astype(np.float32)
    return x[: int(max_seconds * sample_rate)]


@dataclass(frozen=True)
class AudioSpec:
    """How the speech encoder wants its input: from the feature extractor and the model config."""

    normalize: bool  # zero mean, unit variance per clip (wav2vec2's do_normalize)
    padding_value: float
    min_samples: int  # shorter clips are padded up to this (receptive field, SpecAugment span)
    pass_mask: bool  # give the encoder the sample mask (only for models whose padding is exact with it)
    pad_to: int = 0  # pad every batch to this many samples (0: to the longest clip)
    # A Whisper encoder's feature extractor: the padded waveforms become its log-mel features.
    features: object = field(default=None, compare=False, repr=False)


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1) as 16-bit PCM: lossless for 16-bit sources, the cache's compact format."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


class Pcm16Audio:
    """Clip i as 16-bit PCM, 16 kHz mono, cut to max_seconds, divided by its level (`kemdy.audio_level`: 1
    but for float files beyond ±1), decoded from its file on every access."""

    def __init__(self, wavs: Sequence[Path], max_seconds: float, levels: Sequence[float] | None = None):
        self.wavs, self.max_seconds = list(wavs), max_seconds
        self.levels = list(levels) if levels is not None else [1.0] * len(self.wavs)

    def __len__(self) -> int:
        return len(self.wavs)

    def __getitem__(self, i: int) -> np.ndarray:
        return stored_audio(self.wavs[i], self.max_seconds, self.levels[i])


def stored_audio(wav, max_seconds: float, level: float = 1.0) -> np.ndarray:
    """A recording as the audio cache stores it: 16 kHz mono 16-bit PCM, cut to max_seconds, divided by its
    level."""
    x = load_audio(wav, max_seconds)
    return to_pcm16(x / np.float32(level) if level != 1.0 else x)


class TokenIds:
    """Token ids of transcript i (special tokens added, cut to max_len), tokenised on every access."""

    def __init__(self, tokenizer, texts: Sequence[str], max_len: int):
        self.tokenizer, self.texts, self.max_len = tokenizer, list(texts), max_len

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> np.ndarray:
        ids = self.tokenizer(self.texts[i], truncation=True, max_length=self.max_len)["input_ids"]
        return np.asarray(ids, dtype=np.int32)


class PairTokenIds:
    """Each utterance read with its context (`--context`): the text pair (context, transcript) as the tokenizer
    joins two segments, one row per position of (token id, token type). The transcript is cut as alone (from its
    end, to what --max_text_len leaves beside the pair's special tokens); the context takes the room left, cut
    from its oldest side, and is dropped where the transcript fills every position."""

    def __init__(self, tokenizer, contexts: Sequence[str], texts: Sequence[str], max_len: int):
        self.tokenizer, self.contexts, self.texts, self.max_len = tokenizer, list(contexts), list(texts), max_len
        self.specials = tokenizer.num_special_tokens_to_add(pair=True)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> np.ndarray:
        tokenizer, context, text = self.tokenizer, self.contexts[i], self.texts[i]
        own = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        room = self.max_len - self.specials - own
        context, side, cut = (context, "left", "only_first") if room > 0 else ("", "right", "only_second")
        was = tokenizer.truncation_side
        tokenizer.truncation_side = side
        try:
            pair = tokenizer(context, text, truncation=cut, max_length=self.max_len)
        finally:
            tokenizer.truncation_side = was
        ids = pair["input_ids"]
        types = pair.get("token_type_ids") or [0] * len(ids)
        return np.stack([np.asarray(ids, np.int32), np.asarray(types, np.int32)], axis=1)


def tokenless(tokenizer, texts: Sequence[str], max_len: int) -> list[int]:
    """The indices of the transcripts that `tokenizer` turns into no tokens at all (one that adds no begin or end
    token, given an empty transcript or text it cannot encode): no model can read such an utterance."""
    distinct = list(dict.fromkeys(texts))
    ids = tokenizer(distinct, truncation=True, max_length=max_len)["input_ids"] if distinct else []
    empty = {text for text, row in zip(distinct, ids, strict=True) if len(row) == 0}
    return [i for i, text in enumerate(texts) if text in empty]


@dataclass
class Inputs:
    """What the model reads for every utterance of the corpus, indexed like the utterances.

    `tokens` and `audio` are sources (cached arrays or decoded on access); `text_vectors` and
    `speech_vectors`, when an encoder is frozen, replace them with its pooled output, and for a fusion of
    sequences `text_sequences` and `speech_sequences` with its states of every token or frame. `bio`: each
    utterance's bio-signal features (`common.bio.feature_rows`, NaN where a signal is missing), where the model
    reads them; `speech_context`, with --context_speech, the mean speech vector of its turns before.
    """

    tokens: Sequence | None = None
    audio: Sequence | None = None
    text_vectors: np.ndarray | None = None
    speech_vectors: np.ndarray | None = None
    text_sequences: Sequence | None = None
    speech_sequences: Sequence | None = None
    bio: np.ndarray | None = None
    # With --context_speech: the mean of the turns before's speech vectors, and whether there was a turn before.
    speech_context: np.ndarray | None = None
    speech_context_mask: np.ndarray | None = None


def model_audio(pcm16: np.ndarray, spec: AudioSpec, level: float = 1.0) -> np.ndarray:
    """A stored clip as the speech encoder reads it: float at its recording's level, normalised per clip when
    its extractor does."""
    return model_samples(pcm16.astype(np.float32) / 32768.0, spec, level)


def model_samples(x: np.ndarray, spec: AudioSpec, level: float = 1.0) -> np.ndarray:
    """Float samples of a stored clip (its 16-bit values over 32768, perhaps changed: `common.robustness` adds
    noise) as the speech encoder reads them."""
    x = x.astype(np.float32, copy=True)
    if level != 1.0:
        x *= np.float32(level)
    if spec.normalize and len(x):
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    return x


class KemdyDataset(Dataset):
    """The utterances of one split: targets, and the inputs of utterance `indices[i]`."""

    def __init__(
        self,
        utterances: list[Utterance],
        indices: Sequence[int],
        inputs: Inputs,
        audio_spec: AudioSpec | None = None,
        targets: dict[int, Sequence[float]] | None = None,
    ):
        self.utterances, self.indices, self.inputs = utterances, list(indices), inputs
        self.audio_spec = audio_spec
        self.targets = targets  # what the emotion head learns, by utterance, where not its labels (--targets)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, positions: list[int]) -> list[dict]:
        """The items of a batch (a DataLoader asks for a batch at once): cached vectors are read in one call."""
        keys, inputs = [self.indices[i] for i in positions], self.inputs
        text = inputs.text_vectors[keys] if inputs.text_vectors is not None else None
        speech = inputs.speech_vectors[keys] if inputs.speech_vectors is not None else None
        items = []
        for n, k in enumerate(keys):
            u = self.utterances[k]
            item = {
                "index": k,
                "labels": np.asarray(u.labels, dtype=np.float32),
                "va": np.asarray([u.valence, u.arousal], dtype=np.float32),
            }
            item |= _beside(inputs, k)
            if self.targets is not None:
                item["targets"] = np.asarray(self.targets[k], dtype=np.float32)
            if text is not None:
                item["text_vec"] = text[n]
            elif inputs.text_sequences is not None:
                item["text_seq"] = inputs.text_sequences[k]
            elif inputs.tokens is not None:
                item["input_ids"] = inputs.tokens[k]
            if speech is not None:
                item["speech_vec"] = speech[n]
            elif inputs.speech_sequences is not None:
                item["speech_seq"] = inputs.speech_sequences[k]
            elif inputs.audio is not None:
                item["audio"] = model_audio(inputs.audio[k], self.audio_spec, u.level)
            items.append(item)
        return items


def _beside(inputs: Inputs, k: int) -> dict:
    """What an item carries beside the transcript and the recording: the bio-signal features, the turns before's
    speech."""
    out = {}
    if inputs.bio is not None:
        out["bio"] = inputs.bio[k].astype(np.float32)
    if inputs.speech_context is not None:
        out["speech_context"] = inputs.speech_context[k]
        out["speech_context_mask"] = np.int64(inputs.speech_context_mask[k])
    return out


def _padded(sequences: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(utterances x positions x width) float32 of sequences of rows, zeros past each one's end, and the mask of the
    positions each holds."""
    longest = max(len(rows) for rows in sequences)
    out = np.zeros((len(sequences), longest, sequences[0].shape[-1]), np.float32)
    mask = np.zeros((len(sequences), longest), np.int64)
    for k, rows in enumerate(sequences):
        out[k, : len(rows)], mask[k, : len(rows)] = rows, 1
    return torch.from_numpy(out), torch.from_numpy(mask)


class Collator:
    """Pads a list of items into tensors: text to the longest in the batch (or to max_text_len), audio to
    the longest clip (or to the spec's pad_to)."""

    def __init__(
        self,
        tokenizer=None,
        max_text_len: int = 256,
        audio_spec: AudioSpec | None = None,
        pad_to_max_length: bool = False,
    ):
        self.max_text_len, self.audio_spec, self.pad_to_max_length = max_text_len, audio_spec, pad_to_max_length
        if tokenizer is not None:
            # Padding is masked out; a tokenizer without a pad token (Llama's) pads with any id.
            self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            self.token_types = "token_type_ids" in tokenizer.model_input_names

    def __call__(self, items: list[dict]) -> dict:
        batch = {"index": torch.tensor([it["index"] for it in items])}
        for key in ("labels", "targets", "va"):  # labels and va absent when predicting; targets only in training
            if key in items[0]:
                batch[key] = torch.from_numpy(np.stack([it[key] for it in items]))
        if "speech_context_mask" in items[0]:
            batch["speech_context_mask"] = torch.tensor([int(it["speech_context_mask"]) for it in items])
        for key in ("text_vec", "speech_vec", "bio", "speech_context"):
            if key in items[0]:
                batch[key] = torch.from_numpy(np.stack([it[key] for it in items]).astype(np.float32, copy=False))
        for key in ("text_seq", "speech_seq"):  # a frozen encoder's states: padded with zeros, their mask beside
            if key in items[0]:
                batch[key], batch[f"{key}_mask"] = _padded([it[key] for it in items])
        if "input_ids" in items[0]:
            batch |= self._text([it["input_ids"] for it in items])
        if "audio" in items[0]:
            batch |= self._audio([it["audio"] for it in items])
        return batch

    def _text(self, rows: list[np.ndarray]) -> dict:
        """Token ids (a text pair's rows: id and token type per position) padded into a batch."""
        width = self.max_text_len if self.pad_to_max_length else max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        # On the right, whatever the tokenizer's side: positions start at each transcript's first token, and a
        # decoder-only model's tokens never attend to padding.
        for k, r in enumerate(rows):
            if r.ndim == 2:
                types[k, : len(r)] = r[:, 1]
                r = r[:, 0]
            ids[k, : len(r)], mask[k, : len(r)] = r, 1
        out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if self.token_types:
            out["token_type_ids"] = torch.from_numpy(types)
        return out

    def _audio(self, clips: list[np.ndarray]) -> dict:
        spec = self.audio_spec
        lengths = [max(len(x), spec.min_samples) for x in clips]
        width = max(max(lengths), spec.pad_to)
        audio = np.full((len(clips), width), spec.padding_value, dtype=np.float32)
        mask = np.zeros((len(clips), width), dtype=np.int64)
        for row, (x, n) in enumerate(zip(clips, lengths, strict=True)):
            audio[row, : len(x)] = x
            mask[row, :n] = 1  # a clip padded up to min_samples counts its padding as signal
        if spec.features is not None:  # log-mel features of the padded waveforms (mask: the samples that hold audio)
            mel = spec.features(list(audio), sampling_rate=SAMPLE_RATE, padding=False, return_tensors="np")
            audio = mel["input_features"].astype(np.float32, copy=False)
        return {"audio": torch.from_numpy(audio), "audio_mask": torch.from_numpy(mask)}


class EpochBatchSampler(Sampler[list[int]]):
    """Training batches in an order that depends only on (seed, epoch), so a resumed run sees the same.

    With `lengths`, batches hold utterances of similar length (little compute spent on padding): the
    shuffled order is cut into buckets of 50 batches, each bucket is sorted by length and cut into
    batches, and all batches are shuffled.
    """

    BUCKET_BATCHES = 50

    def __init__(self, n: int, batch_size: int, seed: int, lengths: list[float] | None = None):
        self.n, self.batch_size, self.seed, self.lengths, self.epoch = n, batch_size, seed, lengths, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order, size = torch.randperm(self.n, generator=g).tolist(), self.batch_size
        if self.lengths is None:
            return [order[k : k + size] for k in range(0, self.n, size)]
        batches, bucket = [], size * self.BUCKET_BATCHES
        for start in range(0, self.n, bucket):
            chunk = sorted(order[start : start + bucket], key=lambda i: -self.lengths[i])
            batches += [chunk[k : k + size] for k in range(0, len(chunk), size)]
        return [batches[b] for b in torch.randperm(len(batches), generator=g).tolist()]

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)


def tokenizer_fingerprint(tokenizer) -> str:
    """What determines the token ids: the tokenizer's class, its full serialised state, special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # its truncation and padding settings change with every call: not part of it
        state = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    else:
        state = sorted(tokenizer.get_vocab().items())
    return fingerprint(type(tokenizer).__name__, state, tokenizer.special_tokens_map, tokenizer.padding_side)


def corpus_fingerprint(corpus, cache_dir=None) -> tuple[dict[str, str], dict[str, str]]:
    """({"listing", "recordings"}, digests): what identifies a corpus for runs that continue or are compared
    (its listing: utterances in order, files, labels, scores and transcripts; its recordings' content), and
    each recording's content digest (remembered under cache_dir by file stamp: a file is read once)."""
    digests = file_digests([u.wav for u in corpus.utterances], cache_dir)
    recordings = fingerprint([digests[str(u.wav)] for u in corpus.utterances])  # files named by the listing
    return {"listing": corpus.fingerprint(), "recordings": recordings}, digests


def prepare_inputs(
    utterances: list[Utterance],
    tokenizer=None,
    max_text_len: int = 256,
    max_seconds: float | None = None,
    cache_dir: str | Path | None = None,
    log=print,
    digests: dict[str, str] | None = None,
    show_progress: bool = True,
    contexts: Sequence[str] | None = None,
) -> Inputs:
    """Token ids (with a tokenizer) and audio (with max_seconds) of every utterance: read from the cache
    under cache_dir, built there on first use, or, without cache_dir, prepared anew on every access.
    `digests`: the recordings' content digests, if already taken (the audio cache is keyed by them).
    `contexts`: each utterance's context segment (`--context`): its tokens are then a text pair's."""
    inputs = Inputs()
    texts = [u.text for u in utterances]
    if tokenizer is not None and contexts is not None:
        inputs.tokens = PairTokenIds(tokenizer, contexts, texts, max_text_len)
    elif tokenizer is not None:
        inputs.tokens = TokenIds(tokenizer, texts, max_text_len)
    if max_seconds is not None:
        inputs.audio = Pcm16Audio([u.wav for u in utterances], max_seconds, [u.level for u in utterances])
    if cache_dir is None:
        return inputs
    if isinstance(inputs.tokens, PairTokenIds):
        key = fingerprint(tokenizer_fingerprint(tokenizer), max_text_len, texts, "in context", contexts)
        inputs.tokens = _cached_store(cache_dir, "pair_tokens", key, inputs.tokens, np.int32, None, log, show_progress)
    elif inputs.tokens is not None:
        key = fingerprint(tokenizer_fingerprint(tokenizer), max_text_len, texts)
        inputs.tokens = _cached_store(cache_dir, "tokens", key, inputs.tokens, np.int32, None, log, show_progress)
    if inputs.audio is not None:
        digests = digests or file_digests([u.wav for u in utterances], cache_dir)
        key = fingerprint(SAMPLE_RATE, max_seconds, [digests[str(u.wav)] for u in utterances])
        wavs = [str(u.wav) for u in utterances]  # KEMDy19 lists every recording twice: decode it once
        inputs.audio = _cached_store(cache_dir, "audio", key, inputs.audio, np.int16, wavs, log, show_progress)
    return inputs


def bio_feature_rows(
    root: Path, dataset: str, utterances: list[Utterance], signals: tuple, files: str, cache_dir=None, log=print
) -> np.ndarray:
    """Every utterance's bio-signal features (`bio.feature_rows` of `signals`; NaN where one is missing), read from
    the corpus's files (`files`: their fingerprint) or from the cache under cache_dir, built there on first use."""
    from common import bio

    def compute():
        return bio.feature_rows(signals, bio.read_signals(root, dataset, utterances).samples)

    if cache_dir is None or not signals:
        return compute()
    found = [(u.segment_id, u.annotation_id, u.session, u.speaker, u.wav.parent.name) for u in utterances]
    definition = (bio.FEATURES, bio.PEAK_PROMINENCE, bio.RATE)
    key = fingerprint(dataset, files, found, signals, definition)
    rows: list = []

    def build(tmp):
        rows.append(compute())
        ArrayStore.write(tmp, rows[0], np.float64)

    store, folder, built = open_cached(cache_dir, "bio", key, build, ArrayStore, log)
    log(f"bio cache {folder}: {'built' if built else 'reused'} ({len(store)} utterances)")
    return rows[0] if rows else np.stack([store[i] for i in range(len(store))])


def _cached_store(cache_dir, kind: str, key: str, rows: Sequence, dtype, keys, log, show: bool) -> ArrayStore:
    start = time.perf_counter()

    def progress(it):
        return Progress(it, f"{kind} cache", show=show)

    # A text pair's rows are (token id, token type) per position: a store of sequences two wide.
    pairs = isinstance(rows, PairTokenIds)

    def build(tmp):
        if pairs:
            SequenceStore.write(tmp, ((i, rows[i]) for i in progress(range(len(rows)))), len(rows), dtype)
        else:
            ArrayStore.write(tmp, rows, dtype, keys, progress)

    store, folder, built = open_cached(cache_dir, kind, key, build, SequenceStore if pairs else ArrayStore, log)
    action = f"built in {time.perf_counter() - start:.1f} s" if built else "reused"
    log(f"{kind} cache {folder}: {action} ({len(store)} utterances)")
    return store
