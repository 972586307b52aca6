"""The GPU check: one command that says whether this code trains correctly and how fast on a CUDA machine.

    python -m tools.gpucheck --out gpucheck            # on a machine with one CUDA GPU: under 8 minutes
    python -m tools.gpucheck --out gpucheck --tiny     # the same, end to end on tiny sizes (the suite runs it on CPU)

It runs a demo cell in fp32 and in bf16 (their metrics within a stated tolerance of each other, no NaN), the
same fp32 command twice (identical metrics: determinism on this device), and the device benchmark
(`device_benchmark`), and writes gpucheck.json and gpucheck.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from common.atomic import build_folder, write_text
from common.errors import UserError, run_cli

BF16_TOLERANCE = 0.05  # largest difference of a headline test metric between a bf16 and an fp32 run
CELL = "multimodal_total_concat"
ANCHOR = "wav2vec2-base fine-tuning in bf16 on an A100: about 166 five-second clips per second (NVIDIA)"


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(device, clips: int, seconds: float, tokens: int, vocab: int) -> dict:
    """A training batch of random 5-s clips and transcripts, on the device (model work only)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    samples = int(seconds * 16000)
    batch = {
        "audio": torch.randn(clips, samples, generator=generator),
        "audio_mask": torch.ones(clips, samples, dtype=torch.long),
        "input_ids": torch.randint(5, vocab, (clips, tokens), generator=generator),
        "attention_mask": torch.ones(clips, tokens, dtype=torch.long),
        "token_type_ids": torch.zeros(clips, tokens, dtype=torch.long),
        "labels": (torch.rand(clips, 7, generator=generator) < 0.2).float(),
        "va": 1 + 4 * torch.rand(clips, 2, generator=generator),
        "index": torch.arange(clips),
    }
    return {k: v.to(device) for k, v in batch.items()}


def _in_a_process(*calls: tuple) -> list:
    """What each (function of this module, *args) of `calls` returns, called in turn in one process of its
    own: accelerate fixes the precision once per process."""
    code = "import json, sys; from tools.gpucheck import _calls; print(json.dumps(_calls(sys.argv[1])))"
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps([[str(a) for a in call] for call in calls])],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    if proc.returncode != 0:
        raise UserError(f"{', '.join(call[0] for call in calls)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _calls(calls: str) -> list:
    """_in_a_process's side in the process: each measurement gets its own peak memory, what the one before it
    allocated being freed first."""
    import gc

    import torch

    out = []
    for name, *args in json.loads(calls):
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        out.append(globals()[name](*args))
    return out


def throughput(cell_name: str, models: str, precision: str, batch_size: str, steps: str) -> dict:
    """Clips per second of forward + backward + AdamW for one cell at one precision, and the peak memory."""
    import torch
    from accelerate import Accelerator

    from common.cli import parse_args
    from common.encoders import Encoders
    from common.grid import cell_of
    from common.losses import Objective
    from common.model import build_model

    cell, models, batch_size, steps = cell_of(cell_name), Path(models), int(batch_size), int(steps)
    argv = ["--dataset", "20", "--dataset_dir", ".", "--text_model", str(models / "text")]
    argv += ["--speech_model", str(models / "speech"), "--text_pooling", "pooler"]
    args = parse_args(cell, argv).settings
    accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())
    model = build_model(cell, args, Encoders(cell, args), log=lambda message: None).to(accelerator.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, eps=1e-8)
    model, optimizer = accelerator.prepare(model, optimizer)
    vocab = model.text_encoder.config.vocab_size if cell.uses_text else 100
    batch = _batch(accelerator.device, batch_size, 5.0, 64, vocab)
    objective = Objective()

    def step():
        loss = objective.per_sample(model(batch), batch, model.va_mean, model.va_std).mean()
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    step()  # warm-up: kernels chosen, memory allocated
    _synchronize(accelerator.device)
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator.device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(accelerator.device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(accelerator.device) if accelerator.device.type == "cuda" else 0
    with torch.no_grad(), accelerator.autocast():  # frozen extraction: every layer's summaries, no gradients
        model.eval()
        model.speech_layers(batch)
        _synchronize(accelerator.device)
        start = time.perf_counter()
        for _ in range(steps):
            model.speech_layers(batch)
        _synchronize(accelerator.device)
        extraction = time.perf_counter() - start
    return {
        "clips_per_s": steps * batch_size / seconds,
        "peak_memory_gib": peak / 2**30,
        "extraction_clips_per_s": steps * batch_size / extraction,
    }


def device_benchmark(work: Path, size: str = "base", steps: int = 10, batch_size: int = 32) -> dict:
    """On this machine's accelerator (a CUDA GPU where there is one): training clips per second of the
    multimodal cell in fp32 and bf16 and of the speech cell (beside the published wav2vec2-base figure),
    peak memory, frozen-extraction clips per second, and the training loop against the bare model's steps
    with the data loaded by 0 and by the recommended number of DataLoader workers (the share of a step
    spent waiting for data). Encoders of the real sizes (`size` "base", random weights) unless told."""
    import torch

    from common.synthetic import write_tiny_models

    models = build_folder(work / f"{size}_models", lambda tmp: write_tiny_models(tmp, size=size))
    cuda = torch.cuda.is_available()
    out = {
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})",
        "size": size,
        "batch_size": batch_size,
        "clip_seconds": 5.0,
        "torch": torch.__version__,
    }
    fp32, wait = _in_a_process(
        ("throughput", CELL, models, "no", batch_size, steps), ("data_wait", work, models, batch_size, steps)
    )
    bf16, speech = _in_a_process(
        ("throughput", CELL, models, "bf16", batch_size, steps),
        ("throughput", "speech_classification", models, "bf16", batch_size, steps),
    )
    out |= {f"{CELL}_fp32": fp32, f"{CELL}_bf16": bf16, "bf16_over_fp32": bf16["clips_per_s"] / fp32["clips_per_s"]}
    out |= {"speech_classification_bf16": speech, "anchor": ANCHOR, "data_wait": wait}
    return out


def data_wait(work: str, models: str, batch_size: str, steps: str) -> dict:
    """The training loop (real batches from the cache through DataLoader workers) against the bare model's
    steps on the same batches already on the device: the share of a step spent on anything but the model."""
    import torch
    from accelerate import Accelerator

    from common.cli import parse_args
    from common.data import Collator, EpochBatchSampler, KemdyDataset, prepare_inputs
    from common.encoders import Encoders, audio_spec
    from common.grid import cell_of
    from common.kemdy import read_corpus
    from common.model import build_model
    from common.synthetic import generate
    from common.train import make_loader
    from tools.bench import epochs_only

    work, models, batch_size, steps = Path(work), Path(models), int(batch_size), int(steps)
    corpus = build_folder(work / "KEMDy20-device", lambda tmp: generate("20", tmp, 2, 4 * batch_size))
    utterances = read_corpus("20", corpus).utterances[: steps * batch_size]
    cell = cell_of(CELL)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    recommended = min(4, os.cpu_count() or 1) if accelerator.device.type == "cuda" else 2
    out = {}
    for workers in (0, recommended):
        argv = ["--dataset", "20", "--dataset_dir", str(corpus), "--text_model", str(models / "text")]
        argv += ["--speech_model", str(models / "speech"), "--num_workers", str(workers), "--text_pooling", "pooler"]
        args = parse_args(cell, argv).settings
        encoders = Encoders(cell, args)
        model = build_model(cell, args, encoders, log=lambda message: None)
        spec = audio_spec(encoders.extractor, model.speech_encoder, model.config)
        inputs = prepare_inputs(utterances, encoders.tokenizer, 256, 5.0, work / "cache", lambda message: None)
        collate = Collator(encoders.tokenizer, 256, spec)
        sampler = EpochBatchSampler(len(utterances), batch_size, 1234)
        dataset = KemdyDataset(utterances, range(len(utterances)), inputs, spec)
        loader = make_loader(dataset, collate, workers, accelerator.device.type == "cuda", batch_sampler=sampler)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, eps=1e-8)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
        run = epochs_only(cell, args, accelerator, work, model, encoders, optimizer, scheduler, loader)
        run.train_epoch(1)  # warm-up: workers started, kernels chosen
        _synchronize(accelerator.device)
        start = time.perf_counter()
        run.train_epoch(1)
        _synchronize(accelerator.device)
        loop = time.perf_counter() - start
        batches = [{k: v.to(accelerator.device) for k, v in b.items()} for b in loader]
        start = time.perf_counter()
        for batch in batches:
            loss = run.loss(model(batch), batch).mean()
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        _synchronize(accelerator.device)
        bare = time.perf_counter() - start
        out[f"workers_{workers}"] = {"loop_s": loop, "bare_s": bare, "waiting_share": max(0.0, 1 - bare / loop)}
    return out


def _demo(python: str, out: Path, name: str, tiny: bool, *flags: str) -> dict:
    """One demo run of the check (its own output folder); metrics.json's test metrics."""
    folder = out / "runs" / name
    argv = [python, f"{CELL}.py", "--demo", "--output_dir", str(folder), "--overwrite", "--quiet", *flags]
    if tiny:
        argv += ["--epochs", "1", "--dataset_dir", str(_tiny_corpus(out))]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0:
        raise UserError(f"the {name} demo run failed:\n{proc.stderr[-2000:]}")
    return json.loads((folder / "metrics.json").read_text())["test"]


def _tiny_corpus(out: Path) -> Path:
    from common.synthetic import generate

    return build_folder(out / "KEMDy20-tiny", lambda tmp: generate("20", tmp, 2, 30, seed=3))


def check(out: Path, tiny: bool = False) -> dict:
    """Every part of the check; writes gpucheck.json and gpucheck.md in `out` and returns what they hold."""
    import torch
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runs = {
        name: _demo(sys.executable, out, name, tiny, *flags)
        for name, flags in (
            ("fp32", []),
            ("fp32_again", []),
            ("bf16", ["--mixed_precision", "bf16"]),
        )
    }
    headline = ("micro_f1", "mean_ccc")
    bf16_gap = max(abs(runs["bf16"][k] - runs["fp32"][k]) for k in headline)
    finite = all(math.isfinite(v) for r in runs.values() for v in r.values() if isinstance(v, float))
    result = {
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "cuda": torch.cuda.is_available(),
        "demo": {name: {k: runs[name][k] for k in headline} for name in runs},
        "deterministic": runs["fp32"] == runs["fp32_again"],
        "bf16_gap": bf16_gap,
        "bf16_within_tolerance": bf16_gap <= BF16_TOLERANCE,
        "finite": finite,
        "benchmark": device_benchmark(
            out / "bench", size="tiny" if tiny else "base", steps=2 if tiny else 10, batch_size=4 if tiny else 32
        ),
    }
    result["seconds"] = time.perf_counter() - start
    result["passed"] = result["deterministic"] and result["bf16_within_tolerance"] and finite
    write_text(out / "gpucheck.json", json.dumps(result, indent=1) + "\n")
    write_text(out / "gpucheck.md", summary(result))
    return result


def summary(result: dict) -> str:
    bench = result["benchmark"]
    fp32, bf16 = bench[f"{CELL}_fp32"], bench[f"{CELL}_bf16"]
    speech, versions = bench["speech_classification_bf16"], result["versions"]
    waits = ", ".join(f"{k.split('_')[1]} workers {v['waiting_share']:.0%}" for k, v in bench["data_wait"].items())
    lines = [
        f"# GPU check: {'passed' if result['passed'] else 'FAILED'} ({result['seconds']:.0f} s)",
        "",
        f"- device: {bench['device']}; torch {versions['torch']}, transformers {versions['transformers']}",
        f"- demo {CELL}: the same fp32 command twice gives "
        f"{'identical' if result['deterministic'] else 'DIFFERENT'} metrics; bf16 against fp32: largest "
        f"headline difference {result['bf16_gap']:.4f} (tolerance {BF16_TOLERANCE}); no NaN: {result['finite']}",
        f"- training ({bench['size']} encoders, batch {bench['batch_size']}, 5-s clips): {fp32['clips_per_s']:.1f} "
        f"clips/s fp32, {bf16['clips_per_s']:.1f} bf16 ({bench['bf16_over_fp32']:.2f}x); peak memory "
        f"{fp32['peak_memory_gib']:.1f} / {bf16['peak_memory_gib']:.1f} GiB",
        f"- speech cell alone, bf16: {speech['clips_per_s']:.1f} clips/s (anchor: {bench['anchor']})",
        f"- frozen extraction, bf16: {bf16['extraction_clips_per_s']:.1f} clips/s",
        f"- share of a training step waiting for data: {waits}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from common.cli import HelpFormatter

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter, prog="python -m tools.gpucheck", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", default="gpucheck", help="folder for gpucheck.json, gpucheck.md and its runs")
    parser.add_argument("--tiny", action="store_true", help="tiny encoders, one epoch on a tiny corpus: a dry run")
    args = parser.parse_args(argv)
    result = check(Path(args.out), args.tiny)
    print(summary(result))
    if not result["passed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    run_cli(main)
