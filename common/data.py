"""Records -> batches: audio decoding, the dataset, collation and the training sampler."""

from __future__ import annotations

import math
from dataclasses import dataclass
from math import gcd

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly
from torch.utils.data import Dataset, Sampler

from common.kemdy import Utterance

SAMPLE_RATE = 16000


def load_audio(path, max_seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 at `sample_rate`, cut to the first `max_seconds` (as the original); any rate, any channels."""
    info = sf.info(str(path))
    frames = min(info.frames, math.ceil(max_seconds * info.samplerate)) if info.frames > 0 else -1
    x, rate = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if rate != sample_rate:
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


class KemdyDataset(Dataset):
    """The utterances of one split; returns text, audio and targets for index i of `indices`."""

    def __init__(self, utterances: list[Utterance], indices: list[int], max_seconds: float, audio: AudioSpec | None):
        self.utterances, self.indices = utterances, list(indices)
        self.max_seconds, self.audio = max_seconds, audio

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        u = self.utterances[self.indices[i]]
        item = {
            "index": self.indices[i],
            "text": u.text,
            "labels": np.asarray(u.labels, dtype=np.float32),
            "va": np.asarray([u.valence, u.arousal], dtype=np.float32),
        }
        if self.audio is not None:
            x = load_audio(u.wav, self.max_seconds)
            if self.audio.normalize and len(x):
                x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
            item["audio"] = x
        return item


class Collator:
    """Pads a list of items into tensors; text is tokenised here so padding follows the batch."""

    def __init__(self, tokenizer=None, max_text_len: int = 256, audio: AudioSpec | None = None):
        self.tokenizer, self.max_text_len, self.audio = tokenizer, max_text_len, audio

    def __call__(self, items: list[dict]) -> dict:
        batch = {
            "index": torch.tensor([it["index"] for it in items]),
            "labels": torch.from_numpy(np.stack([it["labels"] for it in items])),
            "va": torch.from_numpy(np.stack([it["va"] for it in items])),
        }
        if self.tokenizer is not None:
            enc = self.tokenizer(
                [it["text"] for it in items],
                padding="longest",
                truncation=True,
                max_length=self.max_text_len,
                return_tensors="pt",
            )
            batch["input_ids"], batch["attention_mask"] = enc["input_ids"], enc["attention_mask"]
            if "token_type_ids" in enc:
                batch["token_type_ids"] = enc["token_type_ids"]
        if self.audio is not None:
            spec = self.audio
            lengths = [max(len(it["audio"]), spec.min_samples) for it in items]
            width = max(max(lengths), spec.pad_to)
            audio = np.full((len(items), width), spec.padding_value, dtype=np.float32)
            mask = np.zeros((len(items), width), dtype=np.int64)
            for row, (it, n) in enumerate(zip(items, lengths, strict=True)):
                audio[row, : len(it["audio"])] = it["audio"]
                mask[row, :n] = 1  # a clip padded up to min_samples counts its padding as signal
            batch["audio"], batch["audio_mask"] = torch.from_numpy(audio), torch.from_numpy(mask)
        return batch


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
