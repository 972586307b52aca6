"""Emotions and valence/arousal of new utterances from a trained run directory.

    python -m common.predict --run_dir runs/multimodal_total_concat/KEMDy20/fold1 --wav a.wav --text "..."
    python -m common.predict --run_dir DIR --csv utterances.csv      # columns wav and/or text; one JSON line each
    python -m common.predict --run_dir DIR --wav_dir clips/ --out predictions.csv  # a CSV, resumable (common.batch)
    python -m common.predict --run_dir DIR --text "..." --context_text "B: ..." --context_text "A: ..."  # --context
    python -m common.predict --run_dir DIR --backend onnx --wav a.wav --text "..."  # its ONNX export (common.export)
    python -m common.predict --run_dir DIR --bio samples.csv  # a run that reads bio-signals (common.bio)

Inputs are prepared exactly as in training: audio of any sample rate and channel count is mixed to mono,
resampled to 16 kHz and cut to the run's --max_seq_len; text is cut to its --max_text_len tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common import paths
from common.errors import UserError, run_cli
from common.grid import DIMENSIONS, EMOTIONS
from common.kemdy import audio_level
from common.runfiles import read_config, read_metrics

if TYPE_CHECKING:
    import torch
# torch, transformers and the model are imported where a Predictor needs them: --help and a bad argument answer
# at once.


class Predictor:
    """A run's trained model with the preprocessing and threshold it was trained and evaluated with."""

    def __init__(
        self,
        run_dir: str | Path,
        device: str | torch.device = "cpu",
        sources: dict | None = None,
        backend: str = "torch",
        graph: Path | None = None,
    ):
        """`sources`: where a frozen encoder the model refers to is now ({"text": folder}), if it moved. `backend`
        "onnx": the run's exported graph (`common.export`; or the file `graph`) in ONNX Runtime answers instead of
        the model."""
        from safetensors import SafetensorError

        from common.data import Collator
        from common.encoders import audio_spec
        from common.model import EmotionModel, EncoderMoved

        run_dir = Path(run_dir)
        config_path, model_dir = run_dir / "config.json", run_dir / "model"
        if not config_path.is_file() or not (model_dir / "model.json").is_file():
            raise UserError(
                f"--run_dir {run_dir}: not a finished run with a saved model (needs config.json and model/); "
                "train without --no-save_model"
            )
        try:
            self.args = read_config(run_dir)["args"]  # checked: what preparing the inputs needs is there
            self.model, self.tokenizer, extractor = EmotionModel.load(model_dir, sources)
            self.threshold = _threshold(run_dir, self.args["threshold"])
        except EncoderMoved as err:
            raise UserError(f"--run_dir {run_dir}: {err}") from None
        except UserError as err:
            raise UserError(f"--run_dir {run_dir}: damaged run directory ({err}); train the run again") from None
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
            raise UserError(
                f"--run_dir {run_dir}: damaged run directory ({type(err).__name__}: {err}); train the run again"
            ) from None
        self.model.to(device)
        self.device = device
        cell = self.model.config.cell
        self.uses_text, self.uses_speech = cell.uses_text, cell.uses_speech
        self.signals = self.model.config.signals  # the bio-signals it reads, if any
        self.spec, self.onnx = None, None
        if self.uses_speech:
            self.spec = audio_spec(extractor, self.model.speech_encoder, self.model.config)
        if backend == "onnx":
            self._use_onnx(run_dir, graph)
        self.collate = Collator(self.tokenizer, self.args["max_text_len"], self.spec, self.args["pad_to_max_length"])
        self.context = self.args.get("context", 0) if self.uses_text else 0  # turns before an utterance it reads

    def _use_onnx(self, run_dir: Path, graph: Path | None) -> None:
        """Answer with the exported graph, which takes raw samples: items carry them unnormalised, and batches are
        padded to the encoder's shortest clip with only the clips' own samples marked (the graph does the rest)."""
        from dataclasses import replace

        from common import export

        path = graph or run_dir / export.FOLDER / export.FILE
        if not path.is_file():
            raise UserError(f"--run_dir {run_dir}: has no ONNX export; run python -m common.export {run_dir}")
        self.onnx = export.OnnxModel(path)
        if self.spec is not None:
            self.spec = replace(
                self.spec, normalize=False, min_samples=1, pad_to=max(self.spec.pad_to, self.spec.min_samples)
            )

    def items(  # noqa: PLR0913 (one list per input a run may read)
        self,
        wavs: list | None,
        texts: list | None,
        contexts: list | None = None,
        bios: list | None = None,
        context_wavs: list | None = None,
    ) -> list[dict]:
        """Model inputs of each utterance; the one a model does not read may be missing. `contexts`: for a run
        with --context K, each utterance's turns before it (oldest first, each `A: ...` where its speaker is the
        utterance's own, `B: ...` where the other), of which it reads the last K; none: a dialogue's first turn.
        `bios`: for a run that reads bio-signals, each utterance's samples file (`bio.read_samples`).
        `context_wavs`: for a run with --context_speech, each utterance's turns before's recordings, oldest first."""
        n = len(next(x for x in (wavs, texts, bios, []) if x is not None))
        items = [{"index": i} for i in range(n)]
        if self.signals:
            for item, row in zip(items, self._bio_features(bios), strict=True):
                item["bio"] = row
        if self.uses_text:
            for item, ids in zip(items, self._tokens(texts, contexts), strict=True):
                item["input_ids"] = ids
        if self.uses_speech:
            self._speech_items(items, wavs, context_wavs)
        elif context_wavs and any(context_wavs):
            raise UserError("this run reads no recording: give no turns before's recordings")
        return items

    def _speech_items(self, items: list[dict], wavs: list | None, context_wavs: list | None) -> None:
        """Each item's recording, and with --context_speech its turns before's speech."""
        if wavs is None:
            raise UserError("this run reads speech: give --wav (or a wav column in --csv)")
        for i, wav in enumerate(wavs):
            items[i]["audio"] = self._audio(wav, i)
        if self.model.config.context_speech:
            for item, before in zip(items, context_wavs or [[]] * len(items), strict=True):
                item["speech_context"], item["speech_context_mask"] = self.speech_before(before)
        elif context_wavs and any(context_wavs):
            raise UserError("this run reads no turn's recording but the utterance's (trained without --context_speech)")

    def _audio(self, wav, i: int = 0) -> np.ndarray:
        """A recording as the speech encoder reads it, prepared as the training cache stored it."""
        from common.data import model_audio, stored_audio

        if not wav or not Path(wav).is_file():
            raise UserError(f"{wav or 'utterance ' + str(i + 1)}: no such audio file")
        try:
            level = audio_level(wav)
        except (ValueError, RuntimeError, OSError) as err:
            raise UserError(f"{wav}: cannot use the audio ({err})") from None
        return model_audio(stored_audio(wav, self.args["max_seq_len"], level), self.spec, level)

    def speech_before(self, wavs: list) -> tuple[np.ndarray, np.int64]:
        """For a run with --context_speech: the mean of the last K of the turns before's speech vectors (or, with
        --layers weighted, their layers' summaries), each clip alone as the frozen encoder's cache computed it;
        and whether there was one."""
        import torch

        wavs = list(wavs)[max(0, len(wavs) - self.args["context"]) :]
        model = self.model
        encode = model.speech_layers if model.config.layers == "weighted" else model.encode_speech
        vectors = []
        for wav in wavs:
            batch = {k: v.to(self.device) for k, v in self.collate([{"index": 0, "audio": self._audio(wav)}]).items()}
            with torch.no_grad():
                vectors.append(encode(batch)[0].float().cpu().numpy())
        if not vectors:
            width = model.speech_context_absent.shape[0]
            shape = (len(model.speech_layer_weights), width) if model.config.layers == "weighted" else (width,)
            return np.zeros(shape, np.float32), np.int64(0)
        return np.mean(np.stack(vectors), axis=0).astype(np.float32), np.int64(1)

    def _bio_features(self, bios: list | None) -> np.ndarray:
        """Each utterance's bio-signal features from its samples file, NaN for a signal it has no sample of."""
        from common import bio

        if bios is None or not all(bios):
            raise UserError("this run reads bio-signals: give --bio (or a bio column in --csv)")
        samples = [bio.read_samples(Path(path), self.signals) for path in bios]
        return bio.feature_rows(self.signals, samples).astype(np.float32)

    def _tokens(self, texts: list | None, contexts: list | None):
        """The token ids of each transcript, read with its turns before it where the run was trained so."""
        from common.data import PairTokenIds, TokenIds, tokenless

        if texts is None:
            raise UserError("this run reads transcripts: give --text (or a text column in --csv)")
        empty = tokenless(self.tokenizer, texts, self.args["max_text_len"])
        if empty:
            raise UserError(
                f"the transcript {texts[empty[0]]!r}: the run's tokenizer turns it into no tokens at all, and the "
                "model needs at least one; give a transcript it can encode"
            )
        if not self.context:
            if contexts and any(contexts):
                raise UserError(
                    "this run reads each utterance alone (trained without --context): give no turns before it"
                )
            return TokenIds(self.tokenizer, texts, self.args["max_text_len"])
        segments = [context_segment(turns, self.context) for turns in contexts or [[]] * len(texts)]
        return PairTokenIds(self.tokenizer, segments, texts, self.args["max_text_len"])

    def __call__(
        self,
        wavs: list | None = None,
        texts: list | None = None,
        batch_size: int = 1,
        contexts: list | None = None,
        bios: list | None = None,
        context_wavs: list | None = None,
    ) -> list[dict]:
        """One result per utterance: emotion probabilities and labels at the run's threshold, valence/arousal."""
        items = self.items(wavs, texts, contexts, bios, context_wavs)
        probs, va = self.outputs(items, batch_size)
        return [
            self.result(probs[k] if probs is not None else None, va[k] if va is not None else None)
            for k in range(len(items))
        ]

    def result(self, probs, va) -> dict:
        """One utterance's answer: its emotion probabilities, labels at the run's threshold and most probable
        emotion (where the cell classifies), its valence and arousal on 1-5 (where it regresses)."""
        from common.metrics import predicted

        result = {}
        if probs is not None:
            result["probabilities"] = {e: float(x) for e, x in zip(EMOTIONS, probs, strict=True)}
            result["threshold"] = (
                float(self.threshold)
                if np.ndim(self.threshold) == 0
                else dict(zip(EMOTIONS, map(float, self.threshold), strict=True))
            )
            chosen = predicted(probs, self.threshold)
            result["labels"] = [e for e, x in zip(EMOTIONS, chosen, strict=True) if x]
            result["top1"] = EMOTIONS[int(np.argmax(probs))]
        if va is not None:
            result |= {d: float(v) for d, v in zip(DIMENSIONS, va, strict=True)}
        return result

    def outputs(self, items: list[dict], batch_size: int = 1, given: dict | None = None):
        """(emotion probabilities, valence/arousal on 1-5) of model inputs (`items`), each None where the cell
        has no such output. `given`: tensors put in every batch in place of what the model would compute
        (`{"text_vec": the training part's mean vector}`: a modality replaced)."""
        import torch

        from common.losses import emotion_probabilities

        probs, va = [], []
        if self.onnx is not None and given:
            raise UserError("the ONNX backend computes every vector itself; a modality replaced needs the model")
        for start in range(0, len(items), batch_size):
            batch = self.collate(items[start : start + batch_size])
            if self.onnx is not None:
                answer = self.onnx(batch)
                probs += [answer[0]] if answer[0] is not None else []
                va += [answer[1]] if answer[1] is not None else []
                continue
            for key, value in (given or {}).items():
                batch[key] = value.expand(len(batch["index"]), *value.shape[1:])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with torch.no_grad():
                out = self.model(batch)
            if "emotion_logits" in out:
                probs.append(
                    emotion_probabilities(out["emotion_logits"], self.model.config.emotion_output).cpu().numpy()
                )
            if "va_z" in out:
                va.append(self.model.va(out["va_z"].float()).cpu().numpy())
        return (np.concatenate(probs) if probs else None), (np.concatenate(va) if va else None)


def context_segment(turns: list[str], count: int) -> str:
    """The context segment a run with --context `count` reads, of turns given as `A: ...` / `B: ...`: the last
    `count`, marked as training marked them (`dialogue.context_text`)."""
    from common.dialogue import OTHER, SAME, context_text

    marked = []
    for turn in turns[len(turns) - count :] if count else []:
        mark, sep, text = turn.partition(": ")
        if mark not in (SAME, OTHER) or not sep:
            raise UserError(
                f"the turn {turn!r}: begin each turn before the utterance with '{SAME}: ' (said by the utterance's "
                f"speaker) or '{OTHER}: ' (said by the other speaker)"
            )
        marked.append((mark == SAME, text))
    return context_text(marked)


def _threshold(run_dir: Path, threshold):
    """The run's threshold, or with --threshold tuned its per-emotion thresholds from metrics.json."""
    if threshold != "tuned":
        return float(threshold)
    tuned = read_metrics(run_dir).get("thresholds")
    if not tuned:
        raise KeyError("metrics.json lacks the tuned thresholds")
    return np.array([tuned[e] for e in EMOTIONS])


def main(argv: list[str] | None = None) -> None:
    from common.cli import HelpFormatter

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="python -m common.predict",
        description="Predict emotions (probabilities, labels at the run's threshold) and valence/arousal with a "
        "trained run; prints JSON.",
    )
    parser.add_argument("--run_dir", required=True, help="a finished run directory (holding config.json and model/)")
    parser.add_argument("--wav", help="audio file of one utterance (any sample rate, any number of channels)")
    parser.add_argument("--text", help="transcript of that utterance")
    parser.add_argument(
        "--bio",
        help="for a run that reads bio-signals: that utterance's samples, a CSV with the header signal,value and one "
        "sample a line in time order (python -m common.bio DATASET_DIR SEGMENT_ID prints a corpus utterance's)",
    )
    parser.add_argument(
        "--csv",
        help="batch: a CSV with a wav column (paths relative to the CSV) and/or a text column (and a bio column of "
        "samples files); other columns are copied to the output (with --out a CSV, else one JSON object per line)",
    )
    parser.add_argument(
        "--wav_dir",
        help="batch: every .wav under this folder, each with the transcript of the .txt of its name beside it",
    )
    parser.add_argument(
        "--out",
        help="with --csv or --wav_dir: write a CSV, one row per utterance, a batch at a time (an unreadable input "
        "gets its reason in the error column; a file this run began is continued where it stopped)",
    )
    parser.add_argument(
        "--context_text",
        action="append",
        metavar="TURN",
        help="for a run trained with --context K: a turn before the utterance, oldest first, one flag each, as "
        "'A: words' (said by the utterance's speaker) or 'B: words' (by the other); the run reads the last K (in "
        "--csv: a context column, one turn per line)",
    )
    parser.add_argument(
        "--context_wav",
        action="append",
        metavar="WAV",
        help="for a run trained with --context_speech: the recording of a turn before the utterance, oldest first, "
        "one flag each; the run reads the last K (in --csv: a context_wav column, one path a line)",
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        default=1,
        help="utterances per forward pass; every answer is the same whatever the batch (clips whose outputs "
        "would change with padding run apart)",
    )
    parser.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="onnx: the run's exported graph in ONNX Runtime answers (python -m common.export RUN_DIR first)",
    )
    for modality in ("text", "speech"):
        parser.add_argument(
            f"--{modality}_model",
            help=f"for a run with a frozen {modality} encoder: the folder (or hub name) it is in now, if not "
            "where it was trained; its weights are checked",
        )
    args = parser.parse_args(argv)
    for flag in ("run_dir", "wav", "bio", "csv", "wav_dir", "out", "text_model", "speech_model"):
        paths.check(f"--{flag}", getattr(args, flag))
    for wav in args.context_wav or []:
        paths.check("--context_wav", wav)
    many = args.csv or args.wav_dir
    one = args.wav or args.text is not None or args.context_text or args.bio or args.context_wav
    if (args.csv and args.wav_dir) or (many and one):
        raise UserError("give one of --csv, --wav_dir or --wav/--text/--bio (and --context_text, --context_wav)")
    if not many and not one:
        raise UserError("give --wav, --text and/or --bio for one utterance, or --csv for a batch")
    if args.out and not many:
        raise UserError("--out: writes a batch's predictions; give --csv or --wav_dir")
    if args.batch_size < 1:
        raise UserError(f"--batch_size {args.batch_size}: must be at least 1")
    from accelerate import PartialState
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    sources = {m: getattr(args, f"{m}_model") for m in ("text", "speech") if getattr(args, f"{m}_model")}
    predictor = Predictor(args.run_dir, PartialState().device, sources, args.backend)
    if many:
        from common import batch

        columns, rows, count = batch.from_csv(Path(args.csv)) if args.csv else batch.from_folder(Path(args.wav_dir))
        out = Path(args.out) if args.out else None
        done = batch.run(predictor, columns, rows, count, out, args.batch_size, str(Path(args.run_dir).resolve()))
        if out is not None:
            print(f"{out}: {done} utterances predicted, {count - done} there already", file=sys.stderr)
    else:
        texts = [args.text] if args.text is not None else None
        bios = [args.bio] if args.bio else None
        before = [args.context_wav or []]
        result = predictor(
            [args.wav] if args.wav else None, texts, contexts=[args.context_text or []], bios=bios, context_wavs=before
        )[0]
        inputs = {"wav": args.wav} if args.wav else {}
        inputs |= {"text": args.text} if args.text is not None else {}
        inputs |= {"bio": args.bio} if args.bio else {}
        json.dump(inputs | result, sys.stdout, ensure_ascii=False, indent=1)
        print()


if __name__ == "__main__":
    run_cli(main)
