"""A modality made missing in training (`--modality_dropout P`), so that a multimodal model learns to answer without
its transcript or its audio, as `common.robustness` then measures.

Each training utterance of a batch loses, with probability P, one of its two inputs, the transcript or the audio
alike likely, never both. What takes its place is what `common.robustness` gives a missing modality:
- an encoder that reads its input: the empty transcript through the tokenizer (with --context, the empty pair), or
  silence of the clip's length (its samples zero, its mask kept; a Whisper encoder's log-mel features of it);
- a frozen encoder whose vectors (or states) are cached: their mean over the training part (a sequence of one
  position holding the mean state of every position).
The draws depend only on (--seed, the epoch, the step, the process): a resumed run draws what the uninterrupted
one drew, and the random stream that dropout and the batch order use is not touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class ModalityDropout:
    def __init__(  # noqa: PLR0913 (what it replaces comes from four places)
        self,
        p: float,
        seed: int,
        process: int,
        empty_tokens: np.ndarray | None,
        inputs,
        train: Sequence[int],
        spec=None,
        pad_id: int = 0,
    ):
        """`empty_tokens`: the empty transcript as the model reads it (a text pair's rows: id and token type);
        `inputs`: the run's `data.Inputs` (for frozen encoders' cached vectors or states); `train`: the training
        part's indices; `spec`: the speech encoder's `AudioSpec` (its Whisper features, if any)."""
        self.p, self.seed, self.process, self.spec, self.pad_id = p, seed, process, spec, pad_id
        self.empty = None
        if empty_tokens is not None:
            pair = empty_tokens.ndim == 2
            self.empty = (
                torch.from_numpy(np.asarray(empty_tokens[:, 0] if pair else empty_tokens, np.int64)),
                torch.from_numpy(np.asarray(empty_tokens[:, 1], np.int64)) if pair else None,
            )
        self.means = {}
        for modality in ("text", "speech"):
            vectors = getattr(inputs, f"{modality}_vectors")
            sequences = getattr(inputs, f"{modality}_sequences")
            if vectors is not None:
                self.means[f"{modality}_vec"] = torch.from_numpy(np.mean([vectors[k] for k in train], axis=0))
            elif sequences is not None:
                total = sum(sequences[k].astype(np.float64).sum(axis=0) for k in train)
                count = sum(len(sequences[k]) for k in train)
                self.means[f"{modality}_seq"] = torch.from_numpy((total / count).astype(np.float32))

    def draws(self, n: int, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(which utterances lose their transcript, which their audio): seeded by (seed, epoch, step, process)."""
        g = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_003 + step) * 101 + self.process)
        lose = torch.rand(n, generator=g) < self.p
        text = torch.rand(n, generator=g) < 0.5
        return lose & text, lose & ~text

    def __call__(self, batch: dict, epoch: int, step: int) -> dict:
        no_text, no_speech = self.draws(len(batch["index"]), epoch, step)
        if no_text.any():
            self._without("text", batch, no_text.to(batch["index"].device))
        if no_speech.any():
            self._without("speech", batch, no_speech.to(batch["index"].device))
        return batch

    def _without(self, modality: str, batch: dict, rows: torch.Tensor) -> None:
        rows = rows.nonzero().flatten()
        if f"{modality}_vec" in batch:
            batch[f"{modality}_vec"][rows] = self.means[f"{modality}_vec"].to(batch[f"{modality}_vec"])
        elif f"{modality}_seq" in batch:
            states, mask = batch[f"{modality}_seq"], batch[f"{modality}_seq_mask"]
            states[rows], mask[rows] = 0, 0
            states[rows, 0], mask[rows, 0] = self.means[f"{modality}_seq"].to(states), 1
        elif modality == "text":
            self._empty_transcripts(batch, rows)
        else:
            self._silence(batch, rows)

    def _empty_transcripts(self, batch: dict, rows: torch.Tensor) -> None:
        ids, types = self.empty
        width = batch["input_ids"].shape[1]
        if len(ids) > width:  # a batch of one-token transcripts: room for the empty one's special tokens
            for key in ("input_ids", "attention_mask", "token_type_ids"):
                if key in batch:
                    fill = self.pad_id if key == "input_ids" else 0
                    grown = torch.full(
                        (len(batch[key]), len(ids)), fill, dtype=batch[key].dtype, device=batch[key].device
                    )
                    grown[:, :width] = batch[key]
                    batch[key] = grown
        batch["input_ids"][rows], batch["attention_mask"][rows] = self.pad_id, 0
        batch["input_ids"][rows, : len(ids)] = ids.to(batch["input_ids"].device)
        batch["attention_mask"][rows, : len(ids)] = 1
        if "token_type_ids" in batch:
            batch["token_type_ids"][rows] = 0
            if types is not None:
                batch["token_type_ids"][rows, : len(types)] = types.to(batch["token_type_ids"].device)

    def _silence(self, batch: dict, rows: torch.Tensor) -> None:
        audio = batch["audio"]
        if self.spec is None or self.spec.features is None:
            audio[rows] = 0
            return
        from common.data import SAMPLE_RATE

        width = batch["audio_mask"].shape[1]
        silent = self.spec.features(
            [np.zeros(width, np.float32)], sampling_rate=SAMPLE_RATE, padding=False, return_tensors="np"
        )
        audio[rows] = torch.from_numpy(silent["input_features"].astype(np.float32)).to(audio)
