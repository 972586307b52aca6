"""Speed and memory benchmark: every figure is a ratio of two measurements taken side by side in one run.

    python -m tools.bench [--out bench.json] [--work bench]

On a synthetic KEMDy20 corpus of the real size (13,462 utterances) and "small" random encoders (BERT and
wav2vec2 of a few million weights, common.synthetic.SIZES), it measures:

- loop_overhead: a step of the training loop (data loading from the cache, collation, progress bar,
  loss bookkeeping) over a bare forward+backward+step on the same batches collated beforehand;
- text_padding: text-encoder forward+backward time with the original's static 256-token padding over
  dynamic padding with length grouping, on the corpus's transcripts;
- data_cache: preparing every utterance's inputs with a cold cache (decode, resample, tokenise, write)
  over a warm one (the recordings' digests by file stamp, the key, the caches' checksums wherever a file's
  stamp changed since they were taken, open the arrays); the wav files are in the OS page cache for both, and
  each side starts after a full garbage collection, so that neither pays for the other's garbage;
- frozen_epoch: a fine-tuning epoch over an epoch of heads on cached frozen-encoder vectors;
- audio_padding: the share of padded audio samples in the training batches with --group_by_length;
- data_rss_gib: peak resident memory of a process that reads the corpus, builds the caches and makes
  one pass of collated batches over all of it (imports included);
- cli_help: a script's --help, and a script stopped by a bad argument, over a bare `python -c pass`
  (the command line imports no torch, transformers or accelerate before training starts);
- report_grid_s: common.report over a 60-run grid of KEMDy20 size with 1,000 bootstrap resamples;
- isolated_eval: what batch-independent vectors cost: every layer's pooled states (what evaluation and
  frozen extraction compute) of fold 1's 2,692 test clips, longest first as evaluation orders them, with the
  "small" wav2vec2 (group norm, whose outputs change with padding), each group of equal-length clips run
  unpadded, over the same batches padded as training pads them;
- clip_norm_eval: the same vectors in whole batches, each clip's group norm over its own frames and the
  sample mask to the transformer (what evaluation runs where the probe finds it exact), over padded batches;
- whisper_window: a random encoder of whisper-base's size on 5-s clips, its whole 30-s window over its
  positional table cut to 5 s (beside it, how far the pooled vectors of the two differ);
- fingerprint_warm, fingerprint_cold, cache_checksums: what a run's start-up spends knowing the recordings'
  content (their SHA-256, remembered by file stamp; the first time, every file read) and checking every
  cache file's CRC-32 as it is opened, each over listing the corpus (reading 13,462 wav headers), the start-up's
  own first step;
- layers_cell, layers_rss_gib: a --freeze both --layers weighted cell's five folds (its process from start
  to exit) on the layer cache another cell extracted, over that extraction's time (beside it, the
  extracting cell's five folds again on the warm cache); and how far that cell's peak RSS rises above what
  it holds once the libraries and encoders are loaded and the cache is opened (the data side; the
  whole peak is recorded beside it). Beside them, the cell's compute floor: the same number of training
  steps and evaluation batches on random tensors, model work only. With --base_layers, only these, with
  encoders of klue/bert-base's and wav2vec2-base's sizes (random weights).
- fusion_step_<fusion> (with --fusions, only these two kinds, encoders of the real sizes): each fusion's
  fine-tuned training step over concatenation's, on the same two batches of 8 five-second clips and their
  transcripts;
- batch_predict_rss (with --batch_predict, only this): common.predict's batch mode streaming 10,000 clips of the
  corpus into one CSV with a demo speech run, its peak RSS after all of them over its peak after the first 1,000;
- onnx_batch1, onnx_batch8 (with --onnx, only these): a demo multimodal run with the "small" encoders, exported
  by common.export, predicting 64 of its test utterances with ONNX Runtime over PyTorch, one at a time and in
  batches of 8 (beside them each side's seconds per utterance and the export's parity);
- frozen_sequence_epoch: a fine-tuned cross-attention epoch on those 16 clips over one on the frozen
  encoders' cached states (sequence_cache); beside it the cache's size per clip and for KEMDy20's 13,462 clips
  of 5 s (the last layer; every layer of wav2vec2-base would take 13 times the speech part), and its read time
  per clip.

Timings alternate the two sides and keep each side's fastest repetition, which cancels most of the
noise of a shared machine. The corpus and encoders are built once under --work and reused.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import io
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common.atomic import build_folder, write_text
from common.errors import run_cli
from common.grid import FUSIONS

GOALS = {
    "loop_overhead": ("training-loop step / bare forward+backward+step on pre-collated tensors", "<=", 1.10),
    "text_padding": ("text encoder time: static 256 padding / dynamic padding + length grouping", ">=", 4.0),
    "data_cache": ("data preparation: cold cache / warm cache", ">=", 20.0),
    "frozen_epoch": ("fine-tune epoch / frozen-feature epoch (cached embeddings)", ">=", 30.0),
    "audio_padding": ("share of padded audio frames with --group_by_length", "<=", 0.10),
    "data_rss_gib": ("peak RSS of the data side, 13k-utterance corpus (GiB)", "<", 1.0),
    "cli_help": ("a script's --help (or a bad argument) / `python -c pass`: no torch before training", "<=", 10.0),
    "report_grid_s": ("report of a 60-run KEMDy20-size grid, 1,000 paired bootstrap resamples (seconds)", "<", 60.0),
    "fingerprint_warm": ("recordings' content fingerprint, digests remembered / listing the corpus", "<=", 0.1),
    "fingerprint_cold": (
        "recordings' content fingerprint, every file read (first run) / listing the corpus",
        "<=",
        1.0,
    ),
    "cache_checksums": ("checking the caches' checksums when opened (tokens, audio) / listing the corpus", "<=", 0.25),
    "isolated_eval": (
        "a test fold's speech vectors, clips of unequal length run apart / padded in batches (group-norm wav2vec2)",
        "<=",
        4.0,
    ),
    "clip_norm_eval": (
        "the same vectors in whole batches, each clip's group norm over its own frames / padded in batches",
        "<=",
        1.5,
    ),
    "whisper_window": ("a Whisper-base-sized encoder per 5-s clip: its 30-s window / a 5-s window", ">=", 3.0),
    "demo_s": (
        "the README's demo, `multimodal_total_concat.py --demo`, in a fresh copy of the tree: corpus and tiny "
        "encoders written, fold 1 trained (wall seconds)",
        "<",
        60.0,
    ),
    "batch_predict_rss": (
        "batch prediction of 10,000 clips into one CSV: peak RSS after all / after the first 1,000",
        "<=",
        1.10,
    ),
    **{
        f"onnx_batch{size}": (
            f"a demo multimodal run (small encoders) predicting 64 test utterances in batches of {size}: "
            "ONNX Runtime / PyTorch (CPU)",
            "<=",
            1.0,
        )
        for size in (1, 8)
    },
    "layers_cell": ("a frozen --layers weighted cell's 5 folds / extracting every layer once", "<", 0.01),
    "layers_rss_gib": ("that cell's peak RSS above its libraries and encoders: the data side (GiB)", "<", 1.0),
    **{
        f"fusion_step_{name}": (f"a fine-tuned training step with {name} / with concat (real sizes)", "<=", 1.10)
        for name in FUSIONS
        if name != "concat"
    },
    "frozen_sequence_epoch": (
        "a fine-tuned cross_attention epoch / a frozen one on its cached states (real sizes)",
        ">=",
        10.0,
    ),
}


def _met(value: float, op: str, goal: float) -> bool:
    return {"<=": value <= goal, ">=": value >= goal, "<": value < goal}[op]


def _best_of(repeats: int, *sides):
    """Fastest time of each callable, alternating them `repeats` times."""
    best = [float("inf")] * len(sides)
    for _ in range(repeats):
        for k, side in enumerate(sides):
            start = time.perf_counter()
            side()
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def _train_pass(model, optimizer, collate, dataset, device) -> None:
    """One pass of training steps over `dataset` in batches of 8, as the loop trains (for the fusions' timings)."""
    from common.losses import Objective

    model.train()
    for start in range(0, len(dataset), 8):
        items = [dataset[i] for i in range(start, min(start + 8, len(dataset)))]
        batch = {k: v.to(device) for k, v in collate(items).items()}
        out = model(batch)
        Objective().per_sample(out, batch, model.va_mean, model.va_std).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)


def epochs_only(cell, settings, accelerator, work: Path, model, encoders, optimizer, scheduler, loader):
    """The loop's own FoldRun, holding only what training an epoch reads (the benchmarks time its epochs): no
    corpus, evaluation or checkpoints."""
    from common.train import FoldRun

    return FoldRun(
        cell, settings, accelerator, work, None, [], None, model, encoders, optimizer, scheduler, loader, {}, None
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _write_fake_run(folder: Path, script: str, task: str, fold: int, labels, probs, va, va_pred) -> None:
    """A finished run's metrics.json and predictions.csv, from given outputs (for timing the report)."""
    from common import predictions, runfiles
    from common.metrics import classification_metrics, regression_metrics
    from common.rundir import Owner

    folder.mkdir(parents=True)
    test = classification_metrics(labels, probs, 0.5)[0] if task != "regression" else {}
    test |= regression_metrics(va, va_pred)[0] if task != "classification" else {}
    metrics = {"script": script, "dataset": "KEMDy20", "split": "contiguous", "fold": fold, "task": task}
    result = metrics | {"selection": "last_epoch", "chosen_epoch": 1, "test": test, "epochs": []}
    (folder / "metrics.json").write_text(runfiles.metrics_text(result))
    rows = predictions.Predictions(
        [f"u{fold}_{i}" for i in range(len(labels))],
        labels,
        va,
        probs if task != "regression" else None,
        va_pred if task != "classification" else None,
    )
    (folder / predictions.FILE).write_text(predictions.text(rows))
    entries = ["metrics.json", predictions.FILE]
    Owner(folder, "run", script, {}, {"listing": "synthetic"}, False, entries, fold=fold).write()


def layers_probe(corpus: str, models: str, cache_dir: str, out: str, script: str) -> dict:
    """Run in its own process: one cell with --freeze both --layers weighted over all five folds; its time
    (imports aside), the time spent extracting vectors (0 when the cache held them) and the peak RSS."""
    from common.cli import parse_args
    from common.grid import cell_of
    from common.train import train

    cell = cell_of(script)
    argv = ["--dataset", "20", "--dataset_dir", corpus, "--num_fold", "all", "--freeze", "both"]
    argv += ["--layers", "weighted", "--text_model", f"{models}/text", "--speech_model", f"{models}/speech"]
    argv += ["--cache_dir", cache_dir, "--output_dir", out, "--lr", "1e-3", "--num_workers", "0"]
    printed = _RssAtVectors()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        train(parse_args(cell, argv))
    total = time.perf_counter() - start
    extraction = sum(float(s) for s in re.findall(r"vectors \S+: computed in ([0-9.]+) s", printed.getvalue()))
    steps = eval_batches = 0  # what the five folds computed, for compute_floor
    for config in Path(out).glob("fold*/config.json"):
        config = json.loads(config.read_text())
        split, epochs, size = config["data"]["split"], config["args"]["epochs"], config["args"]["batch_size"]
        steps += epochs * -(-split["train"] // size)
        eval_batches += epochs * (-(-split["valid"] // size) + -(-split["test"] // size))
    return {
        "seconds": total,
        "extraction_s": extraction,
        "peak_rss_bytes": _peak_rss(),
        "ready_rss_bytes": printed.rss,
        "steps": steps,
        "eval_batches": eval_batches,
    }


def compute_floor(corpus: str, models: str, script: str, steps: str, eval_batches: str) -> dict:
    """Run in its own process: the model work alone of a frozen --layers weighted cell's five folds, i.e. as
    many training steps (forward, backward, AdamW) and evaluation batches on random tensors shaped as the
    layer cache's, with no data reading, loop bookkeeping or start-up: what the cell costs at the least as
    its model computes it."""
    from common.cli import parse_args
    from common.encoders import Encoders
    from common.grid import cell_of
    from common.losses import Objective
    from common.model import build_model

    cell = cell_of(script)
    argv = ["--dataset", "20", "--dataset_dir", corpus, "--freeze", "both", "--layers", "weighted"]
    args = parse_args(cell, [*argv, "--text_model", f"{models}/text", "--speech_model", f"{models}/speech"]).settings
    model = build_model(cell, args, Encoders(cell, args), log=lambda message: None)
    model.freeze("both")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, foreach=True)
    objective, g = Objective(), torch.Generator().manual_seed(0)
    shapes = {m: getattr(model, f"{m}_encoder").config for m in ("text", "speech")}
    shapes = {m: (c.num_hidden_layers + 1, c.hidden_size) for m, c in shapes.items()}  # the cache's rows
    size = args.batch_size
    batches = [
        {f"{m}_vec": torch.randn(size, *shape, generator=g) for m, shape in shapes.items()}
        | {"labels": (torch.rand(size, 7, generator=g) > 0.8).float(), "va": 1 + 4 * torch.rand(size, 2, generator=g)}
        for _ in range(8)
    ]
    start = time.perf_counter()
    model.train()
    for i in range(int(steps)):
        batch = batches[i % len(batches)]
        objective.per_sample(model(batch), batch, model.va_mean, model.va_std).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        for i in range(int(eval_batches)):
            model(batches[i % len(batches)])
    return {"seconds": time.perf_counter() - start}


class _RssAtVectors(io.StringIO):
    """Printed output, and the resident memory when the last frozen vectors were ready (libraries, corpus
    listing and encoders loaded, the cache opened, no training yet)."""

    rss = 0

    def write(self, text: str) -> int:
        if re.search(r"vectors \S+: (computed|reused)", text):
            self.rss = _status_bytes("VmRSS")
        return super().write(text)


def data_probe(corpus: str, tokenizer_dir: str, cache_dir: str) -> dict:
    """Run in its own process: cold and warm data preparation, one collated pass, and the peak RSS."""
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer

    from common.data import AudioSpec, Collator, KemdyDataset, prepare_inputs
    from common.kemdy import read_corpus

    utts = read_corpus("20", corpus).utterances
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    shutil.rmtree(cache_dir, ignore_errors=True)
    quiet = lambda message: None  # noqa: E731
    gc.collect()  # each side starts with no garbage of the other's to collect (as a run's first step does)
    start = time.perf_counter()
    prepare_inputs(utts, tokenizer, 256, 5.0, cache_dir, quiet)
    cold = time.perf_counter() - start
    gc.collect()
    start = time.perf_counter()
    inputs = prepare_inputs(utts, tokenizer, 256, 5.0, cache_dir, quiet)
    warm = time.perf_counter() - start
    spec = AudioSpec(normalize=True, padding_value=0.0, min_samples=400, pass_mask=False)
    loader = DataLoader(
        KemdyDataset(utts, range(len(utts)), inputs, spec), batch_size=32, collate_fn=Collator(tokenizer, 256, spec)
    )
    start = time.perf_counter()
    for _ in loader:
        pass
    one_pass = time.perf_counter() - start
    shutil.rmtree(cache_dir, ignore_errors=True)
    return {"cold_s": cold, "warm_s": warm, "pass_s": one_pass, "peak_rss_bytes": _peak_rss(), "utterances": len(utts)}


def batch_probe(run_dir: str, first: str, whole: str, out: str) -> dict:
    """common.predict's batch mode in this process: the first 1,000 rows, then (continuing the same file) all
    10,000; the peak RSS after each, and the seconds per clip of the second part."""
    from common import batch
    from common.predict import Predictor

    predictor = Predictor(run_dir)
    found = {}
    for name, table in (("first", first), ("whole", whole)):
        columns, rows, count = batch.from_csv(Path(table))
        start = time.perf_counter()
        done = batch.run(predictor, columns, rows, count, Path(out), 16, run_dir, show=False)
        found[name] = {"rss": _peak_rss(), "clips": done, "s": time.perf_counter() - start}
    return found


def onnx_probe(run_dir: str) -> dict:
    """The run exported (its parity on the test utterances), then the seconds of PyTorch and of ONNX Runtime on
    the same 64 test utterances at batches of 1 and 8, alternating, each side's fastest of three."""
    from common import export, robustness
    from common.predict import Predictor

    start = time.perf_counter()
    found = {"parity": export.export(Path(run_dir)), "export_s": time.perf_counter() - start}
    run = robustness.FinishedRun(Path(run_dir), log=lambda _: None)
    run.test = run.test[:64]
    sides = {"torch": run.predictor, "onnx": Predictor(run_dir, backend="onnx")}
    items = {k: robustness.Inputs(run, 0, predictor=p).items(robustness.CONDITIONS[0]) for k, p in sides.items()}
    for size in (1, 8):
        seconds = _best_of(3, *(lambda k=k, size=size: sides[k].outputs(items[k], size) for k in sides))
        found[f"batch{size}"] = dict(zip(sides, seconds, strict=True))
    return found


def _peak_rss() -> int:
    """This process's peak resident memory in bytes. On Linux, VmHWM: ru_maxrss survives exec, so a probe
    started by a large process would report its parent's peak."""
    return _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
        1 if sys.platform == "darwin" else 1024
    )


def _status_bytes(field: str) -> int:
    """A memory figure of /proc/self/status in bytes (0 where there is none)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return 0


def _probe(function: str, *args: str) -> dict:
    """tools.bench.<function>(*args) in a process of its own (its own memory high-water mark); what it
    returns, and the process's wall time from start to exit as "process_s"."""
    code = f"import json, sys; from tools.bench import {function}; print(json.dumps({function}(*sys.argv[1:])))"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{function} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]) | {"process_s": time.perf_counter() - start}


class Bench:
    def __init__(self, work: Path, size: str = "small"):
        from common.synthetic import generate, write_tiny_models

        self.work = work
        self.corpus = build_folder(work / "KEMDy20-full", lambda tmp: generate("20", tmp, full_size=True))
        self.models = build_folder(work / f"{size}_models", lambda tmp: write_tiny_models(tmp, size=size))
        self.results: dict[str, dict] = {}
        from common.folds import make_fold
        from common.kemdy import read_corpus

        self.utts = read_corpus("20", self.corpus).utterances
        self.train_idx = make_fold([u.session for u in self.utts], 1).train

    def subset(self, n: int) -> list:
        """n utterances spread evenly over fold 1's training part."""
        return [self.utts[i] for i in self.train_idx[:: len(self.train_idx) // n][:n]]

    def record(self, key: str, value: float, **detail) -> None:
        description, op, goal = GOALS[key]
        self.results[key] = {
            "description": description,
            "value": round(float(value), 4),
            "goal": goal,
            "goal_op": op,
            "met": _met(value, op, goal),
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in detail.items()},
        }

    def data_side(self) -> None:
        probe = _probe("data_probe", str(self.corpus), str(self.models / "text"), str(self.work / "probe_cache"))
        self.record("data_cache", probe["cold_s"] / probe["warm_s"], cold_s=probe["cold_s"], warm_s=probe["warm_s"])
        self.record(
            "data_rss_gib",
            probe["peak_rss_bytes"] / 2**30,
            utterances=probe["utterances"],
            collated_pass_s=probe["pass_s"],
        )

    def audio_padding(self) -> None:
        """Padded share of the audio in the training fold's batches, with and without length grouping."""
        from common.data import EpochBatchSampler, prepare_inputs

        train_idx = self.train_idx
        inputs = prepare_inputs(self.utts, None, 256, 5.0, self.work / "cache", lambda message: None)
        lengths = [float(inputs.audio.lengths[i]) for i in train_idx]

        def padded_share(sampler) -> float:
            batches = sampler.batches()
            padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
            return 1 - sum(lengths) / padded

        grouped = padded_share(EpochBatchSampler(len(train_idx), 32, 1234, lengths))
        shuffled = padded_share(EpochBatchSampler(len(train_idx), 32, 1234))
        self.record("audio_padding", grouped, without_grouping=shuffled, batch_size=32)

    def training(self) -> None:
        from accelerate import Accelerator

        from common.cli import parse_args
        from common.data import Collator, EpochBatchSampler, KemdyDataset, prepare_inputs
        from common.encoders import Encoders, audio_spec
        from common.grid import Cell
        from common.losses import Objective
        from common.model import build_model
        from common.train import make_loader

        cell = Cell("multimodal", "total", "concat")
        argv = ["--dataset", "20", "--dataset_dir", str(self.corpus), "--num_fold", "1", "--batch_size", "8"]
        argv += ["--text_model", str(self.models / "text"), "--speech_model", str(self.models / "speech")]
        argv += ["--lr", "1e-4", "--num_workers", "0"]
        args = parse_args(cell, argv).settings
        accelerator = Accelerator(cpu=not torch.cuda.is_available())
        quiet = lambda message: None  # noqa: E731

        # A subset of the training fold for the timings.
        subset = self.subset(128)
        encoders = Encoders(cell, args)
        model, tokenizer = build_model(cell, args, encoders, log=quiet), encoders.tokenizer
        spec = audio_spec(encoders.extractor, model.speech_encoder, model.config)
        model.to(accelerator.device)
        inputs = prepare_inputs(subset, tokenizer, 256, 5.0, self.work / "cache", quiet)
        collate = Collator(tokenizer, 256, spec)
        sub_lengths = [float(inputs.audio.lengths[i]) for i in range(len(subset))]
        sampler = EpochBatchSampler(len(subset), 8, 1234, sub_lengths)
        loader = make_loader(
            KemdyDataset(subset, range(len(subset)), inputs, spec), collate, 0, False, batch_sampler=sampler
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-8)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
        run = epochs_only(cell, args, accelerator, self.work, model, encoders, optimizer, scheduler, loader)
        device = accelerator.device
        pre_collated = [{k: v.to(device) for k, v in b.items()} for b in loader]

        def loop():
            run.train_epoch(1)
            _sync(device)

        core = accelerator.unwrap_model(model)

        def bare():
            model.train()
            for batch in pre_collated:
                out = model(batch)
                loss = Objective().per_sample(out, batch, core.va_mean, core.va_std).mean()
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            _sync(device)

        loop_s, bare_s = _best_of(5, loop, bare)
        steps = len(pre_collated)
        self.record("loop_overhead", loop_s / bare_s, loop_step_s=loop_s / steps, bare_step_s=bare_s / steps)

        self.frozen_epoch(run, subset, sampler, loop_s)

    def frozen_epoch(self, run, subset: list, sampler, fine_tune_s: float) -> None:
        """The same epoch with both encoders frozen: the heads train on cached vectors."""
        from common.data import KemdyDataset, prepare_inputs
        from common.frozen import frozen_vectors
        from common.train import make_loader

        accelerator, collate = run.accelerator, run.train_loader.collate_fn
        core = accelerator.unwrap_model(run.model)
        core.freeze("both")
        inputs = prepare_inputs(subset, run.encoders.tokenizer, 256, 5.0, self.work / "cache", lambda message: None)
        for modality in ("text", "speech"):
            vectors = frozen_vectors(
                modality,
                core,
                subset,
                inputs,
                collate,
                batch_size=8,
                accelerator=accelerator,
                cache_dir=self.work / "cache",
                log=lambda message: None,
            )
            setattr(inputs, f"{modality}_vectors", vectors)
        optimizer = torch.optim.AdamW([p for p in core.parameters() if p.requires_grad], lr=1e-4, eps=1e-8)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        dataset = KemdyDataset(subset, range(len(subset)), inputs, collate.audio_spec)
        loader = accelerator.prepare(make_loader(dataset, collate, 0, False, batch_sampler=sampler))
        run = dataclasses.replace(run, optimizer=optimizer, scheduler=scheduler, train_loader=loader)

        def frozen_epoch():
            run.train_epoch(1)
            _sync(accelerator.device)

        (frozen_s,) = _best_of(3, frozen_epoch)
        self.record("frozen_epoch", fine_tune_s / frozen_s, fine_tune_epoch_s=fine_tune_s, frozen_epoch_s=frozen_s)

    def text_padding(self) -> None:
        from common.data import Collator, EpochBatchSampler, KemdyDataset, prepare_inputs
        from common.encoders import load_text_encoder
        from common.model import EmotionModel, ModelConfig

        subset = self.subset(128)
        tokenizer, encoder = load_text_encoder(str(self.models / "text"))
        model = EmotionModel(ModelConfig("text", "classification", None), encoder)
        inputs = prepare_inputs(subset, tokenizer, 256, None, self.work / "cache", lambda m: None)
        dataset = KemdyDataset(subset, range(len(subset)), inputs)
        token_lengths = [len(inputs.tokens[i]) for i in range(len(subset))]
        static = Collator(tokenizer, 256, pad_to_max_length=True)
        dynamic = Collator(tokenizer, 256)
        plain = EpochBatchSampler(len(subset), 32, 1234)
        grouped = EpochBatchSampler(len(subset), 32, 1234, [float(n) for n in token_lengths])
        static_batches = [static([dataset[i] for i in b]) for b in plain.batches()]
        dynamic_batches = [dynamic([dataset[i] for i in b]) for b in grouped.batches()]

        def run(batches):
            def side():
                for batch in batches:
                    model.encode_text(batch).sum().backward()
                model.zero_grad(set_to_none=True)

            return side

        static_s, dynamic_s = _best_of(2, run(static_batches), run(dynamic_batches))
        self.record(
            "text_padding",
            static_s / dynamic_s,
            mean_tokens=float(np.mean(token_lengths)),
            max_tokens=int(max(token_lengths)),
            static_s=static_s,
            dynamic_s=dynamic_s,
        )

    def cli(self) -> None:
        """--help and an argument error answer before any heavy import: timed against a bare interpreter."""
        script = str(Path(__file__).resolve().parents[1] / "text_classification.py")

        def python(*argv):
            return lambda: subprocess.run([sys.executable, *argv], capture_output=True, check=False)

        bad = python(script, "--num_fold", "6", "--dataset_dir", str(self.corpus))
        help_s, error_s, pass_s = _best_of(5, python(script, "--help"), bad, python("-c", "pass"))
        self.record("cli_help", max(help_s, error_s) / pass_s, help_s=help_s, error_s=error_s, pass_s=pass_s)

    def demo(self) -> None:
        """The set-up's first command after the install, as a newcomer runs it: wall and CPU seconds the first
        time (corpus and encoders written) and again (both there)."""
        root = Path(__file__).resolve().parents[1]
        self.work.mkdir(parents=True, exist_ok=True)
        tree = Path(tempfile.mkdtemp(prefix="demo_tree-", dir=self.work))  # removed below: only what it made
        shutil.copytree(root / "common", tree / "common", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(root / "multimodal_total_concat.py", tree)
        times = []
        try:
            for _ in range(2):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                command = [sys.executable, "multimodal_total_concat.py", "--demo"]
                subprocess.run(command, cwd=tree, check=True, capture_output=True)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                times.append((time.perf_counter() - start, cpu))
        finally:
            shutil.rmtree(tree)
        (first, first_cpu), (again, again_cpu) = times
        self.record("demo_s", first, cpu_s=first_cpu, again_s=again, again_cpu_s=again_cpu)

    def batch_predict(self) -> None:
        """Batch prediction's memory: a speech run of the demo streams 10,000 clips of the full-size corpus into
        one CSV; the peak RSS after all of them over the peak after the first 1,000 (flat: only a batch is held)."""
        import csv as csv_module

        runs = self.work / "batch_runs"
        shutil.rmtree(runs, ignore_errors=True)
        command = [sys.executable, "speech_classification.py", "--demo", "--epochs", "1", "--quiet"]
        command += ["--output_dir", str(runs / "speech")]
        subprocess.run(command, cwd=Path(__file__).resolve().parents[1], check=True, capture_output=True)
        tables = {}
        for n in (1000, 10000):
            tables[n] = runs / f"clips{n}.csv"
            with tables[n].open("w", encoding="utf-8", newline="") as f:
                writer = csv_module.writer(f)
                writer.writerow(["wav"])
                writer.writerows([[str(u.wav.resolve())] for u in self.utts[:n]])
        found = _probe(
            "batch_probe", str(runs / "speech"), str(tables[1000]), str(tables[10000]), str(runs / "out.csv")
        )
        first, whole = found["first"], found["whole"]
        self.record(
            "batch_predict_rss",
            whole["rss"] / first["rss"],
            rss_after_1000_gib=first["rss"] / 2**30,
            rss_after_10000_gib=whole["rss"] / 2**30,
            s_per_clip=whole["s"] / max(whole["clips"], 1),
        )

    def onnx(self) -> None:
        """A demo multimodal run with the "small" encoders, exported: ONNX Runtime's time over PyTorch's on the same
        test utterances, one at a time and in batches of 8 (CPU, the process's threads for both)."""
        runs = self.work / "onnx_runs"
        shutil.rmtree(runs, ignore_errors=True)
        command = [sys.executable, "multimodal_total_concat.py", "--demo", "--epochs", "1", "--quiet"]
        command += ["--text_model", str(self.models / "text"), "--speech_model", str(self.models / "speech")]
        command += ["--output_dir", str(runs / "multimodal")]
        subprocess.run(command, cwd=Path(__file__).resolve().parents[1], check=True, capture_output=True)
        found = _probe("onnx_probe", str(runs / "multimodal"))
        for size in (1, 8):
            times = found[f"batch{size}"]
            self.record(
                f"onnx_batch{size}",
                times["onnx"] / times["torch"],
                onnx_s_per_utterance=times["onnx"] / 64,
                torch_s_per_utterance=times["torch"] / 64,
                max_difference=f"{found['parity']['max_difference']:.1e}",
                export_s=found["export_s"],
            )

    def layers(self) -> None:
        """One cell extracts every layer once; the five folds of another cell (the slowest kind: element-wise
        addition, with its 768 x 768 projection) and of the first cell again then run on that cache alone."""
        cache, runs = self.work / f"layers_cache_{self.models.name}", self.work / "layers_runs"
        for folder in (cache, runs):
            shutil.rmtree(folder, ignore_errors=True)
        common = (str(self.corpus), str(self.models), str(cache))
        first = _probe("layers_probe", *common, str(runs / "a"), "multimodal_total_concat")
        second_script = "multimodal_classification_element_wise_add"
        second = _probe("layers_probe", *common, str(runs / "b"), second_script)
        again = _probe("layers_probe", *common, str(runs / "c"), "multimodal_total_concat")
        stored = sum(p.stat().st_size for p in cache.glob("*_vectors-*/vectors.npy"))
        steps = (str(second["steps"]), str(second["eval_batches"]))
        floor = _probe("compute_floor", str(self.corpus), str(self.models), second_script, *steps)
        self.record(
            "layers_cell",
            second["process_s"] / first["extraction_s"],
            extraction_s=first["extraction_s"],
            cell_s=second["process_s"],
            cell_in_process_s=second["seconds"],
            concat_cell_s=again["process_s"],
            concat_cell_ratio=again["process_s"] / first["extraction_s"],
            compute_floor_s=floor["seconds"],
            compute_floor_ratio=floor["seconds"] / first["extraction_s"],
            steps=second["steps"],
            eval_batches=second["eval_batches"],
            second_cell_extraction_s=second["extraction_s"],
            cache_bytes_per_utterance=stored / len(self.utts),
        )
        data_side = (second["peak_rss_bytes"] - second["ready_rss_bytes"]) / 2**30
        self.record("layers_rss_gib", data_side, peak_gib=second["peak_rss_bytes"] / 2**30)

    def report_grid(self) -> None:
        """common.report over the twelve scripts x five folds, each fold set predicting 13,462 utterances."""
        from common.grid import SCRIPTS
        from common.report import main as report

        root = self.work / "report_grid"
        shutil.rmtree(root, ignore_errors=True)
        rng = np.random.default_rng(0)
        bounds = [int(13462 * k / 5) for k in range(6)]
        for script in SCRIPTS:
            task = script.split("_")[1]
            for k in range(1, 6):
                n = bounds[k] - bounds[k - 1]
                labels = (rng.random((n, 7)) < 0.2).astype(int)
                probs = np.clip(labels * 0.4 + rng.random((n, 7)) * 0.6, 0, 1)
                va = rng.uniform(1, 5, (n, 2))
                va_pred = va + rng.normal(0, 0.6, (n, 2))
                _write_fake_run(root / script / "KEMDy20" / f"fold{k}", script, task, k, labels, probs, va, va_pred)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # its tables would bury the benchmark's
            report([str(root), "--no-figures", "--bootstrap", "1000"])
        self.record("report_grid_s", time.perf_counter() - start, fold_sets=len(SCRIPTS), utterances=13462)

    def isolation(self) -> None:
        """A test fold's speech vectors, batch-independent: equal-length groups unpadded, and whole batches with
        `clip_norms`, each against padded batches."""
        from dataclasses import replace

        from common.data import Collator, KemdyDataset, prepare_inputs
        from common.encoders import audio_spec, load_speech_encoder, padding_effect
        from common.folds import make_fold
        from common.model import EmotionModel, ModelConfig

        extractor, encoder = load_speech_encoder(str(self.models / "speech"))
        effect = padding_effect(encoder, extractor)
        config = ModelConfig("speech", "classification", None)
        isolated = EmotionModel(replace(config, isolate_audio=True), None, encoder).eval()
        clip_norm = EmotionModel(replace(config, isolate_audio=True, clip_norm=True), None, encoder).eval()
        padded = EmotionModel(config, None, encoder).eval()
        spec = audio_spec(extractor, encoder, config)
        test = make_fold([u.session for u in self.utts], 1).test
        test = sorted(test, key=lambda i: -min(self.utts[i].duration, 5.0))  # longest first, as evaluation runs
        inputs = prepare_inputs(self.utts, max_seconds=5.0, cache_dir=self.work / "cache", log=lambda m: None)
        dataset = KemdyDataset(self.utts, test, inputs, spec)
        loader = torch.utils.data.DataLoader(dataset, batch_size=32, collate_fn=Collator(audio_spec=spec))
        batches = list(loader)

        def vectors(model):
            def run():
                with torch.no_grad():
                    for batch in batches:
                        model.encode_speech(batch)

            return run

        isolated_s, clip_norm_s, padded_s = _best_of(1, vectors(isolated), vectors(clip_norm), vectors(padded))
        self.record(
            "isolated_eval", isolated_s / padded_s, isolated_s=isolated_s, padded_s=padded_s, padding_effect=effect
        )
        self.record(
            "clip_norm_eval",
            clip_norm_s / padded_s,
            clip_norm_s=clip_norm_s,
            padded_s=padded_s,
            clip_norm_effect=padding_effect(encoder, extractor, clip_norm=True),
        )

    def whisper_window(self) -> None:
        """Whisper's 30-s window against one cut to 5 s: time per clip, and how far their vectors differ."""
        import transformers as hf
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        from common.data import Collator, model_audio, stored_audio
        from common.encoders import audio_spec, whisper_frames
        from common.model import EmotionModel, ModelConfig

        torch.manual_seed(0)
        base = {"d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8, "encoder_ffn_dim": 2048}
        config = hf.WhisperConfig(**base)
        extractor = hf.WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        audio = [stored_audio(u.wav, 5.0) for u in self.utts[:16]]
        sides, vectors = [], {}
        for window in ("30s", "clip"):
            encoder = WhisperEncoder(config) if not sides else copy.deepcopy(sides[0][0])
            frames = whisper_frames(encoder, window, 5.0)
            model_config = ModelConfig("speech", "classification", None, audio_frames=frames)
            model = EmotionModel(model_config, None, encoder).eval()
            spec = audio_spec(extractor, encoder, model_config)
            batch = Collator(audio_spec=spec)(
                [{"index": i, "audio": model_audio(x, spec)} for i, x in enumerate(audio)]
            )
            sides.append((encoder, model, batch, window))

        def run(model, batch, window):
            def side():
                with torch.no_grad():
                    vectors[window] = model.encode_speech(batch)

            return side

        long_s, short_s = _best_of(2, *(run(m, b, w) for _, m, b, w in sides))
        a, b = vectors["30s"], vectors["clip"]
        relative = float(((a - b).norm(dim=1) / a.norm(dim=1)).max())
        self.record(
            "whisper_window",
            long_s / short_s,
            window_30s_ms_per_clip=1000 * long_s / len(audio),
            window_5s_ms_per_clip=1000 * short_s / len(audio),
            largest_relative_difference=relative,
        )

    def integrity(self) -> None:
        """The recordings' digests, cold and remembered, and the caches' checksums, against the corpus listing."""
        from transformers import AutoTokenizer

        from common.cache import file_digests, verify
        from common.data import prepare_inputs
        from common.kemdy import read_corpus

        wavs = [u.wav for u in self.utts]
        index, cache = self.work / "integrity_index", self.work / "integrity_cache"
        shutil.rmtree(index, ignore_errors=True)
        file_digests(wavs, index)  # remembered
        listing, warm, cold = _best_of(
            3, lambda: read_corpus("20", self.corpus), lambda: file_digests(wavs, index), lambda: file_digests(wavs)
        )
        tokenizer = AutoTokenizer.from_pretrained(self.models / "text")
        shutil.rmtree(cache, ignore_errors=True)
        prepare_inputs(self.utts, tokenizer, 256, 5.0, cache, lambda message: None)
        folders = [p for p in cache.iterdir() if p.is_dir()]
        (checks,) = _best_of(3, lambda: [verify(folder) for folder in folders])
        cache_bytes = sum(f.stat().st_size for folder in folders for f in folder.iterdir())
        recordings = sum(w.stat().st_size for w in set(wavs))
        self.record("fingerprint_warm", warm / listing, digests_s=warm, listing_s=listing)
        self.record("fingerprint_cold", cold / listing, digests_s=cold, recordings_gb=recordings / 1e9)
        self.record("cache_checksums", checks / listing, checks_s=checks, cache_gb=cache_bytes / 1e9)
        shutil.rmtree(cache, ignore_errors=True)

    def fusions(self) -> None:
        """Each fusion's fine-tuned training step against concatenation's, on the same two batches of 8 five-second
        clips and their transcripts; then a frozen cross-attention epoch on cached states against a fine-tuned one,
        and the size and read time of those states."""
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
        subset = [self.utts[i] for i in self.train_idx if self.utts[i].duration >= 5.0][:16]  # whole 5-s clips
        runs = {name: self._fusion_run(name, subset, accelerator) for name in FUSIONS}
        best = dict(zip(runs, _best_of(3, *(run["step"] for run in runs.values())), strict=True))
        for name in list(runs)[1:]:
            self.record(f"fusion_step_{name}", best[name] / best["concat"], step_s=best[name] / 2)
        self._frozen_sequence_epoch(runs["cross_attention"], best["cross_attention"], subset, accelerator)

    def _fusion_run(self, name: str, subset: list, accelerator) -> dict:
        """A fine-tuned multimodal_total model with fusion `name`, its inputs, and a timed pass over the subset."""
        from common.cli import parse_script
        from common.data import Collator, KemdyDataset, prepare_inputs
        from common.encoders import Encoders, audio_spec
        from common.model import build_model

        quiet = lambda message: None  # noqa: E731
        argv = ["--dataset", "20", "--dataset_dir", str(self.corpus), "--num_workers", "0", "--batch_size", "8"]
        argv += ["--text_model", str(self.models / "text"), "--speech_model", str(self.models / "speech")]
        plan = parse_script("multimodal_total", [*argv, "--fusion", name])
        cell, args = plan.cell, plan.settings
        encoders = Encoders(cell, args)
        model = build_model(cell, args, encoders, log=quiet).to(accelerator.device)
        spec = audio_spec(encoders.extractor, model.speech_encoder, model.config)
        inputs = prepare_inputs(subset, encoders.tokenizer, 256, 5.0, self.work / "cache", quiet)
        collate = Collator(encoders.tokenizer, 256, spec)
        dataset = KemdyDataset(subset, range(len(subset)), inputs, spec)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step():
            _train_pass(model, optimizer, collate, dataset, accelerator.device)

        return {"model": model, "encoders": encoders, "inputs": inputs, "collate": collate, "step": step}

    def _frozen_sequence_epoch(self, run: dict, fine_tune_s: float, subset: list, accelerator) -> None:
        from common.cache import SequenceStore
        from common.data import KemdyDataset
        from common.frozen import frozen_sequences

        model, inputs, collate = run["model"], run["inputs"], run["collate"]
        model.freeze("both")
        cache = self.work / "sequence_cache"
        shutil.rmtree(cache, ignore_errors=True)
        start = time.perf_counter()
        for modality in ("text", "speech"):
            store = frozen_sequences(
                modality, model, subset, inputs, collate, batch_size=8, accelerator=accelerator, cache_dir=cache
            )
            setattr(inputs, f"{modality}_sequences", store)
        extraction_s = time.perf_counter() - start
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        dataset = KemdyDataset(subset, range(len(subset)), inputs, collate.audio_spec)

        def frozen_epoch():
            _train_pass(model, optimizer, collate, dataset, accelerator.device)

        def read_all():
            for i in range(len(dataset)):
                dataset[i]

        frozen_s, read_s = _best_of(3, frozen_epoch, read_all)
        folders = {m: next(cache.glob(f"{m}_sequences-*")) for m in ("text", "speech")}
        per_clip = {m: sum(f.stat().st_size for f in folders[m].iterdir()) / len(subset) for m in folders}
        assert len(SequenceStore(folders["speech"])) == len(subset)
        speech_gb = len(self.utts) * per_clip["speech"] / 1e9  # KEMDy20's clips, each 5 s
        self.record(
            "frozen_sequence_epoch",
            fine_tune_s / frozen_s,
            fine_tune_epoch_s=fine_tune_s,
            frozen_epoch_s=frozen_s,
            extraction_s=extraction_s,
            read_s_per_clip=read_s / len(subset),
            text_kb_per_clip=per_clip["text"] / 1e3,
            speech_kb_per_5s_clip=per_clip["speech"] / 1e3,
            kemdy20_text_gb_last_layer=len(self.utts) * per_clip["text"] / 1e9,
            kemdy20_speech_gb_last_layer=speech_gb,
            kemdy20_speech_gb_every_layer=speech_gb * (run["encoders"].speech.config.num_hidden_layers + 1),
        )

    def table(self) -> str:
        lines = ["| ratio | measured | goal | met |", "|---|---|---|---|"]
        for key, (description, op, goal) in GOALS.items():
            if key not in self.results:
                continue
            r = self.results[key]
            lines.append(f"| {description} | {r['value']:.3g} | {op} {goal:g} | {'yes' if r['met'] else 'NO'} |")
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from common.cli import HelpFormatter

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter, prog="python -m tools.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", help="write the ratios to this JSON file")
    parser.add_argument("--work", default="bench", help="folder for the corpus, encoders and caches")
    parser.add_argument(
        "--base_layers",
        action="store_true",
        help="only the layer cache's two figures, with encoders of the real sizes (random weights): about an "
        "hour on 2 CPU cores, most of it the extraction",
    )
    parser.add_argument(
        "--fusions",
        action="store_true",
        help="only the fusions' figures, with encoders of the real sizes (random weights): each fusion's training "
        "step against concatenation's, a frozen cross-attention epoch against a fine-tuned one, and the size and "
        "read time of the cached states",
    )
    parser.add_argument(
        "--batch_predict",
        action="store_true",
        help="only batch prediction's memory: 10,000 clips streamed into one CSV (about 3 minutes on 2 CPU cores)",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="only the ONNX figures: a demo run with the small encoders exported, ONNX Runtime against PyTorch",
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="only the device benchmark (tools.gpucheck.device_benchmark): training clips/s in fp32 and bf16, "
        "peak memory, extraction clips/s and the share of a step waiting for data, with encoders of the real sizes",
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    start = time.perf_counter()
    if args.gpu:
        from tools.gpucheck import device_benchmark

        results = device_benchmark(Path(args.work))
        print(json.dumps(results, indent=1))
        if args.out:
            write_text(args.out, json.dumps(results, indent=1) + "\n")
        return
    bench = Bench(Path(args.work), size="base" if args.base_layers or args.fusions else "small")
    if args.batch_predict or args.onnx:
        bench.batch_predict() if args.batch_predict else bench.onnx()
        print(bench.table())
        if args.out:
            write_text(args.out, json.dumps(bench.results, indent=1) + "\n")
        return
    if args.fusions:
        bench.fusions()
    elif not args.base_layers:
        bench.data_side()
        bench.audio_padding()
        bench.training()
        bench.text_padding()
        bench.cli()
        bench.report_grid()
        bench.integrity()
        bench.isolation()
        bench.whisper_window()
        bench.demo()
    if not args.fusions:
        bench.layers()
    print(bench.table())
    print(f"({time.perf_counter() - start:.0f} s, torch {torch.__version__}, {torch.get_num_threads()} threads)")
    if args.out:
        write_text(args.out, json.dumps(bench.results, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
