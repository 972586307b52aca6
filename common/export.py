"""A run's model as one ONNX graph, and that graph run with ONNX Runtime.

    python -m common.export RUN_DIR                   # <run>/onnx/model.onnx, checked on the run's test utterances
    python -m common.export RUN_DIR --onnx model.onnx # and a copy there (a new file)
    python -m common.predict --run_dir RUN_DIR --backend onnx --wav a.wav --text "..."

The graph holds the whole computation from token ids and raw 16-kHz samples to what `common.predict` answers:
the speech extractor's per-clip normalisation, both encoders, the fusion, the heads, the emotion probabilities and
valence/arousal on the 1-5 scale. Its axes of utterances, tokens and samples are dynamic. What a program outside
this project needs to feed it (the tokenizer's folder aside) is written into the file's metadata: the inputs'
meaning, the threshold, the shortest clip and the emotions' order.

Where the graph cannot be what the model computes, the export is refused with the reason: a Whisper encoder reads
log-mel features its extractor computes in NumPy, outside the model. A speech encoder whose outputs change with
padding, and for which no exact batched form was found (`ModelConfig.isolate_audio` without `clip_norm`), is
exported as it runs on one clip length; its metadata says so and `OnnxModel` feeds it one length at a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

from common import paths, rundir
from common.bio import FEATURES
from common.errors import UserError, run_cli, writing
from common.grid import DIMENSIONS, EMOTIONS

FOLDER = "onnx"  # in a run directory: model.onnx and export.json
FILE = "model.onnx"
DETAILS = "export.json"
OPSET = 17
TOLERANCE = 1e-4  # largest difference from the PyTorch model allowed on the run's test utterances


def unexportable(model) -> str | None:
    """Why a run's model cannot be one ONNX graph, or None."""
    from common.encoders import is_whisper

    if model.speech_encoder is not None and is_whisper(model.speech_encoder):
        return (
            "its Whisper encoder reads log-mel features that its feature extractor computes in NumPy, outside the "
            "model, so no graph from raw samples holds them"
        )
    if model.config.context_speech:
        return (
            "it reads the turns before's recordings beside the utterance's (--context_speech), one graph's input each"
        )
    return None


def input_names(predictor) -> list[str]:
    """The graph's inputs for a run: token ids and their mask (and token types with --context), raw samples and
    their mask, bio-signal features."""
    names = []
    if predictor.uses_text:
        names += ["input_ids", "attention_mask"]
        if predictor.collate.token_types and predictor.context:
            names.append("token_type_ids")
    if predictor.uses_speech:
        names += ["audio", "audio_mask"]
    if predictor.signals:
        names.append("bio")
    return names


def output_names(cell) -> list[str]:
    return (["probabilities"] if cell.classifies else []) + (["valence_arousal"] if cell.regresses else [])


def _graph(predictor):
    """The model as a module of positional tensors, raw samples prepared in it as collation prepares them."""
    import torch
    from torch import nn

    from common.losses import emotion_probabilities

    model, spec, names = predictor.model, predictor.spec, input_names(predictor)

    class Graph(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            batch = dict(zip(names, tensors, strict=True))
            if "audio" in batch:
                batch["audio"], batch["audio_mask"] = self.prepared(batch["audio"], batch["audio_mask"])
            out = self.model(batch)
            results = []
            if "emotion_logits" in out:
                results.append(emotion_probabilities(out["emotion_logits"], model.config.emotion_output))
            if "va_z" in out:
                results.append(model.va(out["va_z"].float()))
            return tuple(results)

        @staticmethod
        def prepared(audio, mask):
            """`data.model_samples` and `Collator` in the graph: each clip normalised over its own samples where
            the extractor normalises, padding set to the extractor's value, a clip shorter than the encoder's
            shortest counting its padding up to that length."""
            inside = mask > 0
            if spec.normalize:
                count = mask.sum(dim=-1, keepdim=True).to(audio.dtype)
                mean = torch.where(inside, audio, 0.0).sum(dim=-1, keepdim=True) / count
                var = torch.where(inside, (audio - mean) ** 2, 0.0).sum(dim=-1, keepdim=True) / count
                audio = (audio - mean) / torch.sqrt(var + 1e-7)
            audio = torch.where(inside, audio, spec.padding_value)
            if spec.min_samples > 1:
                shortest = torch.arange(audio.shape[-1], device=audio.device)[None, :] < spec.min_samples
                mask = (inside | shortest).to(mask.dtype)
            return audio, mask

    return Graph().eval()


def metadata(predictor) -> dict[str, str]:
    """What a program needs to feed the graph and read its answer, as the file's metadata (strings)."""
    model, spec = predictor.model, predictor.spec
    threshold = predictor.threshold
    fields = {
        "cell": model.config.cell.name,
        "inputs": input_names(predictor),
        "outputs": output_names(model.config.cell),
        "emotions": list(EMOTIONS),
        "dimensions": list(DIMENSIONS),
        "threshold": float(threshold) if np.ndim(threshold) == 0 else [float(t) for t in threshold],
        "max_text_len": predictor.args["max_text_len"],
        "context": predictor.context,
        "sampling_rate": 16000,
        "max_seconds": predictor.args["max_seq_len"],
        "min_samples": spec.min_samples if spec else 0,
        "pad_to": spec.pad_to if spec else 0,
        "one_length_per_run": bool(model.config.isolate_audio and not model.config.clip_norm),
        "audio": "mono float samples in [-1, 1] at 16 kHz, as the file holds them (no normalisation); "
        "audio_mask 1 on each clip's samples; pad each batch to at least min_samples and pad_to",
        "text": "the tokenizer's ids of the transcript (with --context: of the pair (context, transcript)); "
        "attention_mask 1 on each utterance's tokens",
        "bio_features": [f"{s}_{f}" for s in predictor.signals for f in FEATURES[s]],
        "bio": "each utterance's bio-signal features in bio_features' order (common.bio.signal_features of the "
        "signal's samples during the utterance), unstandardised; NaN for each feature of a signal it has no sample of",
    }
    return {key: json.dumps(value, ensure_ascii=False) for key, value in fields.items()}


def _example(predictor) -> list:
    """Two utterances of unequal lengths, in the graph's inputs, to trace it."""
    import torch

    rng = np.random.default_rng(0)
    tensors = []
    for name in input_names(predictor):
        if name == "input_ids":
            high = len(predictor.tokenizer)
            tensors.append(torch.from_numpy(rng.integers(5, high, (2, 9))))
        elif name in ("attention_mask", "token_type_ids"):
            ones = torch.ones(2, 9, dtype=torch.long)
            ones[1, 6:] = 0
            tensors.append(ones if name == "attention_mask" else ones - ones.tril(-4 - 9).roll(4, 1))
        elif name == "bio":
            rows = torch.from_numpy(rng.standard_normal((2, predictor.model.bio_encoder.features)).astype(np.float32))
            rows[1, : predictor.model.bio_encoder.sizes[0]] = float("nan")  # a signal missing
            tensors.append(rows)
        elif name == "audio":
            width = max(16000, predictor.spec.min_samples, predictor.spec.pad_to)
            tensors.append(torch.from_numpy(rng.standard_normal((2, width)).astype(np.float32) * 0.1))
        else:
            mask = torch.ones(2, tensors[-1].shape[1], dtype=torch.long)
            mask[1, tensors[-1].shape[1] * 3 // 4 :] = 0
            tensors.append(mask)
    return tensors


def write_graph(predictor, path: Path) -> None:
    """The run's model as an ONNX file at `path`, its metadata in it."""
    import onnx
    import torch

    reason = unexportable(predictor.model)
    if reason:
        raise UserError(f"this run cannot be exported to ONNX: {reason}")
    names, outputs = input_names(predictor), output_names(predictor.model.config.cell)
    axes = {"input_ids": "tokens", "attention_mask": "tokens", "token_type_ids": "tokens"}
    axes |= {"audio": "samples", "audio_mask": "samples"}
    dynamic = {n: {0: "utterances", 1: axes[n]} if n in axes else {0: "utterances"} for n in names}
    dynamic |= {n: {0: "utterances"} for n in outputs}
    predictor.model.to("cpu")
    # The tracer warns of every Python value it fixes; the parity check on the test utterances is what tells.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _graph(predictor),
            tuple(_example(predictor)),
            str(path),
            input_names=names,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, metadata(predictor))
    onnx.save(graph, str(path))


class OnnxModel:
    """An exported run's graph in ONNX Runtime, answering batches as `Predictor.outputs` does."""

    def __init__(self, path: str | Path):
        import onnxruntime
        from onnxruntime.capi import onnxruntime_pybind11_state as runtime

        # ONNX Runtime's errors share no base class of their own: the ones a file that is not a graph raises.
        unreadable = (runtime.InvalidProtobuf, runtime.InvalidGraph, runtime.NoSuchFile, runtime.Fail)
        path = Path(path)
        try:
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3  # warnings about unused initialisers are not the user's
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            meta = {k: json.loads(v) for k, v in self.session.get_modelmeta().custom_metadata_map.items()}
            for key, kind in (("inputs", list), ("outputs", list), ("min_samples", int), ("one_length_per_run", bool)):
                if not isinstance(meta[key], kind) or isinstance(meta[key], bool) != (kind is bool):
                    raise ValueError(f"its metadata's {key} is not {kind.__name__}")
            if not all(isinstance(name, str) for name in meta["inputs"] + meta["outputs"]):
                raise ValueError("its metadata names an input or output that is not a string")
            self.inputs, self.outputs = meta["inputs"], meta["outputs"]
            self.one_length = meta["one_length_per_run"]
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, *unreadable) as err:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"{path}: not an ONNX model exported by common.export ({message})") from None
        self.meta = meta

    def __call__(self, batch: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(probabilities, valence/arousal) of a collated batch of raw samples (`Predictor` with this backend)."""
        feeds = {name: batch[name].numpy() for name in self.inputs}
        if self.one_length and "audio" in feeds:
            return self._by_length(feeds)
        answers = dict(zip(self.outputs, self.session.run(self.outputs, feeds), strict=True))
        return answers.get("probabilities"), answers.get("valence_arousal")

    def _by_length(self, feeds: dict):
        """Clips of each length run apart, unpadded, as the PyTorch model runs them in evaluation."""
        lengths = feeds["audio_mask"].sum(axis=-1)
        shape = {name: None for name in self.outputs}
        for n in np.unique(lengths):
            rows = np.flatnonzero(lengths == n)
            part = {k: v[rows] for k, v in feeds.items()}
            width = max(int(n), self.meta["min_samples"])  # a clip shorter than the encoder's shortest is padded to it
            part["audio"], part["audio_mask"] = part["audio"][:, :width], part["audio_mask"][:, :width]
            for name, values in zip(self.outputs, self.session.run(self.outputs, part), strict=True):
                if shape[name] is None:
                    shape[name] = np.zeros((len(lengths), values.shape[1]), dtype=values.dtype)
                shape[name][rows] = values
        return shape.get("probabilities"), shape.get("valence_arousal")


def parity(run, graph: Path, batch_size: int = 8) -> dict:
    """The largest difference between the exported graph's answers and the PyTorch model's on the run's test
    utterances (`robustness.FinishedRun`), each batched as `batch_size` (padding included)."""
    from common import robustness
    from common.predict import Predictor

    exported = Predictor(run.run_dir, backend="onnx", graph=graph)
    clean = robustness.CONDITIONS[0]
    answers = [
        p.outputs(robustness.Inputs(run, 0, predictor=p).items(clean), batch_size) for p in (run.predictor, exported)
    ]
    gaps = [float(np.abs(a - b).max()) for a, b in zip(*answers, strict=True) if a is not None]
    return {"utterances": len(run.test), "batch_size": batch_size, "max_difference": max(gaps)}


def export(run_dir: Path, copy_to: Path | None = None, batch_size: int = 8, dataset_dir: str | None = None) -> dict:
    """<run>/onnx/ (model.onnx, export.json with the parity measured) and a copy at `copy_to`; refused where the
    graph differs from the model by more than TOLERANCE on any test utterance."""
    from common import robustness

    if copy_to is not None and (copy_to.exists() or copy_to.is_symlink()):
        raise UserError(f"--onnx {copy_to}: exists; give a new file's name (nothing is written over)")
    run = robustness.FinishedRun(run_dir, dataset_dir, log=lambda _: None)
    reason = unexportable(run.predictor.model)
    if reason:
        raise UserError(f"{run_dir}: cannot be exported to ONNX: {reason}")
    found = {}

    def build(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        write_graph(run.predictor, folder / FILE)
        found.update(parity(run, folder / FILE, batch_size))
        if not found["max_difference"] <= TOLERANCE:
            raise UserError(
                f"{run_dir}: the ONNX graph differs from the model by {found['max_difference']:.2e} on its test "
                f"utterances (allowed {TOLERANCE:g}); nothing was written"
            )
        details = {"file": FILE, "opset": OPSET, "parity": dict(found)}
        (folder / DETAILS).write_text(json.dumps(details, indent=1) + "\n", encoding="utf-8")

    rundir.add_to_finished_run(run.run_dir, FOLDER, build, "the ONNX export")
    if copy_to is not None:
        with writing("the ONNX copy", copy_to.parent):
            shutil.copyfile(run.run_dir / FOLDER / FILE, copy_to)
    return found


def main(argv: list[str] | None = None) -> None:
    from common.cli import HelpFormatter

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="python -m common.export",
        description="Export a finished run's model to ONNX (<run>/onnx/model.onnx), checked against the model on "
        "the run's test utterances.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory (a fold, with its model/)")
    parser.add_argument("--onnx", metavar="OUT", help="also write the graph to this new file")
    parser.add_argument("--batch_size", type=int, default=8, help="utterances per batch of the parity check")
    parser.add_argument("--dataset_dir", help="where the run's corpus is now, if it moved since the run")
    args = parser.parse_args(argv)
    for flag in ("run_dir", "onnx", "dataset_dir"):
        paths.check(f"--{flag}", getattr(args, flag))
    if args.batch_size < 1:
        raise UserError(f"--batch_size {args.batch_size}: must be at least 1")
    copy_to = Path(args.onnx) if args.onnx else None
    found = export(Path(args.run_dir), copy_to, args.batch_size, args.dataset_dir)
    where = Path(args.run_dir) / FOLDER / FILE
    print(
        f"wrote {where}{f' and {copy_to}' if copy_to else ''}: the graph answers the {found['utterances']} test "
        f"utterances within {found['max_difference']:.1e} of the model (batches of {found['batch_size']})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run_cli(main)
