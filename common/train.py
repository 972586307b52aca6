"""The one training loop: read the fold, build the cell's model, fit, evaluate every epoch, write the run.

    python multimodal_total_concat.py --dataset 20 --dataset_dir /data/KEMDy20 --num_fold 1

A run directory holds config.json (arguments, models, versions, data), metrics.json (every epoch and
the chosen one), predictions.csv (the chosen epoch's test predictions) and model/ (the trained model).
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import os
import platform
import shutil
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from common import atomic, rundir
from common.checkpoints import Checkpoints
from common.cli import parse_args
from common.data import AudioSpec, Collator, EpochBatchSampler, Inputs, KemdyDataset, prepare_inputs
from common.errors import Interrupted, UserError, run_cli, writing
from common.features import frozen_vectors
from common.folds import NUM_FOLDS, Fold, fold_splits, session_order
from common.kemdy import EMOTIONS, Corpus, read_corpus
from common.model import (
    Cell,
    EmotionModel,
    Heads,
    audio_spec,
    load_speech_encoder,
    load_text_encoder,
    pass_audio_mask,
)
from common.report import aggregate, flat_metrics, fold_summary
from common.tasks import DIMENSIONS, Objective, classification_metrics, emotion_probabilities, regression_metrics


def main(modality: str, task: str, fusion: str | None = None, argv: list[str] | None = None) -> None:
    """Entry point of the twelve scripts."""
    cell = Cell(modality, task, fusion)
    run_cli(lambda: train(cell, parse_args(cell, argv, sys.modules["__main__"].__doc__)))


def _default_run_dir(cell: Cell, args, fold: int) -> Path:
    """runs/[demo/]<script>/KEMDy<d>[_session][_original]/fold<k>."""
    protocol = f"KEMDy{args.dataset}" + ("" if args.split == "contiguous" else f"_{args.split}")
    protocol += "_original" if args.original else ""
    return Path("runs", *(["demo"] if args.demo else []), cell.name, protocol, f"fold{fold}")


def _resolve_demo(cell: Cell, args) -> None:
    from common.synthetic import demo_corpus, demo_models

    args.dataset_dir = str(demo_corpus(args.dataset))
    models = demo_models()
    if cell.uses_text and args.text_model == "klue/bert-base":
        args.text_model = str(models / "text")
    if cell.uses_speech and args.speech_model == "facebook/wav2vec2-base-960h":
        args.speech_model = str(models / "speech")


class Trainer:
    """Holds what the epoch functions share: the accelerator, the model, the loaders and the task weights."""

    def __init__(self, cell: Cell, args, accelerator):
        self.cell, self.args, self.accelerator = cell, args, accelerator
        self.objective = Objective(args.emotion_output, args.va_loss, args.cls_weight, args.reg_weight)

    def loss(self, model, outputs, batch) -> torch.Tensor:
        core = self.accelerator.unwrap_model(model)
        return self.objective.per_sample(outputs, batch, core.va_mean, core.va_std)

    def fit_epoch(self, model, loader, optimizer, scheduler, epoch: int) -> float:
        model.train()
        total, count = 0.0, 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{self.args.epochs}",
            leave=False,
            disable=None if self.accelerator.is_local_main_process else True,  # None: off when not a terminal
            dynamic_ncols=True,
        )
        for step, batch in enumerate(bar, 1):
            loss = self.loss(model, model(batch), batch).mean()
            value = loss.item()
            self.stop_if_diverged(value, epoch, step)
            self.accelerator.backward(loss)
            if self.args.max_grad_norm > 0:
                self.accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            total, count = total + value, count + 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        mean = torch.tensor([total / max(count, 1)], device=self.accelerator.device)
        return float(self.accelerator.gather(mean).mean())

    def stop_if_diverged(self, loss: float, epoch: int, step: int, what: str = "the training loss is") -> None:
        """Stop every process at the first non-finite loss, before it reaches the weights or a results file."""
        bad = not math.isfinite(loss)
        if self.accelerator.num_processes > 1:
            flag = torch.tensor([float(bad)], device=self.accelerator.device)
            bad = bool(self.accelerator.reduce(flag, reduction="sum").item())
        if bad:
            hints = f"lower --lr (now {self.args.lr:g}) or set --max_grad_norm"
            if self.args.mixed_precision == "fp16":
                hints += ", or use --mixed_precision bf16 (fp16 overflows)"
            kept = f"keeps the checkpoint of epoch {epoch - 1}" if epoch > 1 else "holds no finished epoch"
            raise UserError(
                f"training diverged: {what} {loss} at epoch {epoch}, step {step}; {hints}. The run directory "
                f"{kept}; start over with --overwrite"
            )

    @torch.no_grad()
    def predict(self, model, loader) -> dict[str, np.ndarray]:
        """Per-utterance outputs over the whole split, gathered from every process without duplicates."""
        model.eval()
        core = self.accelerator.unwrap_model(model)
        parts: dict[str, list] = {}
        for batch in loader:
            outputs = model(batch)
            row = {
                "index": batch["index"],
                "loss": self.loss(model, outputs, batch),
                "labels": batch["labels"],
                "va": batch["va"],
            }
            if "emotion_logits" in outputs:
                row["probs"] = emotion_probabilities(outputs["emotion_logits"], self.args.emotion_output)
            if "va_z" in outputs:
                row["va_pred"] = core.va(outputs["va_z"].float())
            for key, value in self.accelerator.gather_for_metrics(row).items():
                parts.setdefault(key, []).append(value.cpu().numpy())
        return {key: np.concatenate(values) for key, values in parts.items()}

    def metrics(self, out: dict[str, np.ndarray]) -> tuple[dict, list[str]]:
        metrics, notes = {"loss": float(out["loss"].mean()), "n": int(len(out["index"]))}, []
        if "probs" in out:
            m, n = classification_metrics(out["labels"], out["probs"], self.args.threshold)
            metrics, notes = metrics | m, notes + n
        if "va_pred" in out:
            m, n = regression_metrics(out["va"], out["va_pred"])
            metrics, notes = metrics | m, notes + n
        return metrics, notes


def make_loader(dataset, collate, args, pin_memory: bool, batch_sampler=None) -> DataLoader:
    sizes = {"batch_sampler": batch_sampler} if batch_sampler else {"batch_size": args.batch_size, "shuffle": False}
    return DataLoader(
        dataset,
        collate_fn=collate,
        num_workers=args.num_workers,
        persistent_workers=args.num_workers > 0,
        pin_memory=pin_memory,
        **sizes,
    )


def _lengths(inputs: Inputs, utts, indices: list[int], max_seconds: float) -> list[float]:
    """Input length of each training utterance, for --group_by_length: audio if the model reads it."""
    if inputs.audio is not None and inputs.speech_vectors is None:
        stored = getattr(inputs.audio, "lengths", None)
        return [float(stored[i]) if stored is not None else min(utts[i].duration, max_seconds) for i in indices]
    if inputs.tokens is not None and inputs.text_vectors is None:
        return [float(len(inputs.tokens[i])) for i in indices]
    return [0.0] * len(indices)  # only cached vectors: every batch has the same size


class Encoders:
    """The cell's tokenizer, feature extractor and pretrained encoders, loaded once for every fold."""

    def __init__(self, cell: Cell, args):
        self.tokenizer = self.extractor = self.text = self.speech = None
        if cell.uses_text:
            self.tokenizer, self.text = load_text_encoder(args.text_model)
            limit = getattr(self.text.config, "max_position_embeddings", None)
            if limit and args.max_text_len > limit:
                raise UserError(f"--max_text_len {args.max_text_len}: {args.text_model} reads at most {limit} tokens")
        if cell.uses_speech:
            self.extractor, self.speech = load_speech_encoder(args.speech_model)

    def fresh(self, keep: bool) -> tuple[nn.Module | None, nn.Module | None]:
        """(text, speech) encoders with their pretrained weights: copies when `keep`, for later folds."""
        if keep:
            return copy.deepcopy(self.text), copy.deepcopy(self.speech)
        return self.text, self.speech


def build_model(
    cell: Cell, args, encoders: Encoders | None = None, keep: bool = False
) -> tuple[EmotionModel, object, object, AudioSpec | None]:
    """(model, tokenizer, feature extractor, audio spec) of the cell, heads seeded by --seed."""
    encoders = encoders or Encoders(cell, args)
    text_encoder, speech_encoder = encoders.fresh(keep)
    heads = Heads(
        modality=cell.modality,
        task=cell.task,
        fusion=cell.fusion,
        text_pooling=args.text_pooling,
        speech_pooling=args.speech_pooling,
        dropout=args.dropout,
        pass_audio_mask=cell.uses_speech and pass_audio_mask(encoders.extractor, args.speech_inputs),
        text_inputs=args.text_inputs,
        speech_inputs=args.speech_inputs,
        emotion_output=args.emotion_output,
        dropout_on=args.dropout_on,
    )
    spec = audio_spec(encoders.extractor, speech_encoder, heads, args.max_seq_len) if cell.uses_speech else None
    seed(args.seed)  # the heads' initialisation does not depend on what was loaded before
    return EmotionModel(heads, text_encoder, speech_encoder), encoders.tokenizer, encoders.extractor, spec


def seed(value: int) -> None:
    """Python, NumPy and torch on every device, and deterministic cuDNN kernels, as the original seeded."""
    from accelerate.utils import set_seed

    set_seed(value)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _launched_without_accelerator() -> bool:
    """Several processes launched on a machine without GPUs: accelerate must be told to use gloo on CPU."""
    gpus = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not gpus


@dataclass
class Shared:
    """What every fold of a run reads: the corpus, the pretrained encoders, and inputs once prepared."""

    corpus: Corpus
    fingerprint: str  # of the corpus listing, recorded in config.json and checked on --resume
    encoders: Encoders
    inputs: Inputs | None = None


def train(cell: Cell, args) -> dict | list[dict]:
    """Train and evaluate one fold, or the five of --num_fold all; returns what metrics.json holds (a list
    for all folds). The corpus, tokenizer, encoders' weights and prepared inputs are read once."""
    if args.gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpus
    from accelerate import Accelerator
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()  # loading and saving bars would drown the per-epoch progress
    hf_logging.disable_progress_bar()
    if args.demo:
        _resolve_demo(cell, args)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        cpu=_launched_without_accelerator(),
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir="runs",  # replaced by each fold's run directory before its trackers start
    )
    log = accelerator.print
    if args.num_workers is None:
        on_gpu = accelerator.device.type == "cuda"
        args.num_workers = min(4, (os.cpu_count() or 1) // accelerator.num_processes) if on_gpu else 0
    folds = list(range(1, NUM_FOLDS + 1)) if args.num_fold == "all" else [args.num_fold]
    dirs = rundir.run_dirs(lambda k: _default_run_dir(cell, args, k), args.output_dir, folds, log)
    fold_args = {k: argparse.Namespace(**{**vars(args), "num_fold": k}) for k in folds}
    with rundir.locked(dirs.values(), accelerator, log):
        modes = {k: rundir.decide(dirs[k], args) for k in folds}  # refuse before training any fold
        corpus = read_corpus(
            args.dataset, args.dataset_dir, rows=args.kemdy19_rows, labels=args.labels, duplicates=args.duplicate_rows
        )
        shared = Shared(corpus, corpus.fingerprint(), None)
        for k in folds:  # a fold continued, or counted again, must be the same run on the same corpus
            if modes[k] != "fresh" and (dirs[k] / "config.json").is_file():
                rundir.check_same_run(dirs[k] / "config.json", fold_args[k], shared.fingerprint)
        todo = [k for k in folds if modes[k] != "finished"]
        if todo:
            shared.encoders = Encoders(cell, args)
        if accelerator.is_main_process:  # a fold set's summary no longer holds once one of its folds changes
            for folder in {dirs[k].parent for k in todo if dirs[k].name == f"fold{k}"}:
                rundir.remove_set_summary(folder, log)
        results = []
        for k in folds:
            if modes[k] == "finished":
                result = json.loads((dirs[k] / "metrics.json").read_text())
                log(f"{dirs[k]}: already finished\n" + _summary(result, dirs[k]))
            else:
                result = _train_fold(cell, fold_args[k], accelerator, dirs[k], modes[k], shared, keep=k != todo[-1])
            results.append(result)
        if len(results) > 1:
            log(fold_summary(results))
            if accelerator.is_main_process:
                _write_set_summary(dirs[folds[0]].parent, results, args)
    accelerator.end_training()
    return results if args.num_fold == "all" else results[0]


def _write_set_summary(folder: Path, results: list[dict], args) -> None:
    """summary.json and summary.md of a --num_fold all run: mean ± std over its folds, with its settings."""
    stats = aggregate(results)
    first = results[0]
    summary = {
        "script": first["script"],
        "dataset": first["dataset"],
        "split": first.get("split", "contiguous"),
        "folds": [r["fold"] for r in results],
        "settings": rundir.settings(vars(args)),
        "test": {k: {"mean": st.mean, "std": st.std, "n_folds": st.n} for k, st in stats.items()},
    }
    atomic.write_text(folder / "summary.json", json.dumps(summary, indent=1, allow_nan=False))
    atomic.write_text(folder / "summary.md", fold_summary(results) + "\n")


def _train_fold(cell: Cell, args, accelerator, run_dir: Path, mode: str, shared: Shared, keep: bool) -> dict:
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    log = accelerator.print
    seed(args.seed)
    if args.overwrite and accelerator.is_main_process:  # only what a run writes: other files stay
        rundir.clear_run(run_dir)
    accelerator.wait_for_everyone()
    rundir.check_writable(run_dir)
    corpus = shared.corpus
    utts = corpus.utterances
    fold, train_idx, valid_idx = fold_splits([u.session for u in utts], args.num_fold, args.split, args.valid_ratio)
    log(
        f"KEMDy{args.dataset} fold {args.num_fold} ({args.split} split"
        + (f", test sessions {', '.join(fold.test_sessions)}" if fold.test_sessions else "")
        + f"): {len(train_idx)} train, {len(valid_idx)} valid, {len(fold.test)} test utterances "
        f"({len(corpus.excluded)} rows excluded"
        + (f": {dict(Counter(e.reason for e in corpus.excluded))}" if corpus.excluded else "")
        + ")"
    )

    model, tokenizer, extractor, spec = build_model(cell, args, shared.encoders, keep)
    if args.va_targets == "standardized":
        va_train = np.array([[utts[i].valence, utts[i].arousal] for i in train_idx])
        model.va_mean.copy_(torch.from_numpy(va_train.mean(axis=0)))
        model.va_std.copy_(torch.from_numpy(va_train.std(axis=0).clip(min=1e-3)))
    else:  # the original's raw 1-5 targets: the heads predict the scale itself
        model.va_mean.zero_()
        model.va_std.fill_(1.0)
    model.freeze(args.freeze)
    model.to(accelerator.device)

    collate = Collator(tokenizer, args.max_text_len, spec, args.pad_to_max_length)
    cache_dir = args.cache_dir if args.cache else None
    if shared.inputs is None:  # the same for every fold: the first fold prepares them
        with accelerator.main_process_first():  # the first process builds the caches, the others read them
            inputs = prepare_inputs(
                utts, tokenizer, args.max_text_len, args.max_seq_len if cell.uses_speech else None, cache_dir, log
            )
            for modality, encoder in (("text", model.text_encoder), ("speech", model.speech_encoder)):
                if encoder is not None and args.freeze in (modality, "both"):
                    vectors = frozen_vectors(
                        modality, model, utts, inputs, collate, spec, args.batch_size, accelerator, cache_dir, log
                    )
                    setattr(inputs, f"{modality}_vectors", vectors)
        shared.inputs = inputs
    inputs = shared.inputs
    datasets = {
        name: KemdyDataset(utts, idx, inputs, spec)
        for name, idx in (("train", train_idx), ("valid", valid_idx), ("test", fold.test))
    }
    lengths = _lengths(inputs, utts, train_idx, args.max_seq_len) if args.group_by_length else None
    sampler = EpochBatchSampler(len(train_idx), args.batch_size, args.seed, lengths)
    loader = partial(make_loader, collate=collate, args=args, pin_memory=accelerator.device.type == "cuda")
    train_loader = loader(datasets["train"], batch_sampler=sampler)
    eval_loaders = {name: loader(datasets[name]) for name in ("valid", "test") if datasets[name].indices}
    steps = len(train_loader) * args.epochs
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    encoder_params = [p for n, p in trainable if n.startswith(("text_encoder.", "speech_encoder."))]
    head_params = [p for n, p in trainable if not n.startswith(("text_encoder.", "speech_encoder."))]
    groups = [{"params": encoder_params, "lr": args.lr}, {"params": head_params, "lr": args.head_lr or args.lr}]
    groups = [g for g in groups if g["params"]]  # frozen encoders leave the first group empty
    optimizer = torch.optim.AdamW(groups, lr=args.lr, eps=1e-8, weight_decay=args.weight_decay)
    warmup = int(args.warmup_ratio * steps)
    scheduler = (
        get_linear_schedule_with_warmup(optimizer, warmup, steps)
        if args.lr_scheduler == "linear"
        else get_constant_schedule_with_warmup(optimizer, warmup)
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    eval_loaders = {name: accelerator.prepare(loader) for name, loader in eval_loaders.items()}

    core = accelerator.unwrap_model(model)
    if accelerator.is_main_process and mode == "fresh":
        config = _config(cell, args, corpus, accelerator, fold, len(train_idx), len(valid_idx), model=core)
        config["data"]["fingerprint"] = shared.fingerprint
        with writing("config.json", run_dir):
            atomic.write_text(run_dir / "config.json", json.dumps(config, indent=1, ensure_ascii=False))
    if args.report_to != "none":  # events in <run_dir>/tensorboard/
        accelerator.project_configuration.logging_dir = str(run_dir)
        accelerator.init_trackers("tensorboard", config=_tracked_config(args))

    trainer = Trainer(cell, args, accelerator)
    checkpoints = Checkpoints(run_dir, accelerator)
    history, best, chosen, start = [], None, None, 1
    if mode == "resume" and checkpoints.epochs():
        last = checkpoints.epochs()[-1]
        state = checkpoints.load(last)
        history, best, chosen, start = state["history"], state["best"], state["chosen"], last + 1
        log(f"resuming {run_dir} after epoch {last}")
    in_model = start - 1  # the epoch whose weights the model holds
    try:
        for epoch in range(start, args.epochs + 1):
            train_loader.set_epoch(epoch)  # accelerate passes it on to the batch sampler at every iteration
            record = {"epoch": epoch, "train_loss": trainer.fit_epoch(model, train_loader, optimizer, scheduler, epoch)}
            outputs = {name: trainer.predict(model, loader) for name, loader in eval_loaders.items()}
            for name, out in outputs.items():  # fp16 overflow can leave the training loss finite and these not
                worst = next((float(v[~np.isfinite(v)][0]) for v in out.values() if not np.isfinite(v).all()), 0.0)
                trainer.stop_if_diverged(worst, epoch, len(train_loader), what=f"a {name} output is")
            notes = []
            for name, out in outputs.items():
                record[name], split_notes = trainer.metrics(out)
                notes += [f"{name}: {n}" for n in split_notes]
            record["notes"] = notes
            history.append(record)
            log(_epoch_line(record))
            if args.report_to != "none":
                accelerator.log(_scalars(record), step=epoch)
            score = record["valid"]["loss"] if "valid" in record else -epoch  # without validation: the last epoch
            improved = best is None or score < best
            if improved:
                best, chosen = score, epoch
            state = {"epoch": epoch, "history": history, "best": best, "chosen": chosen}
            checkpoints.save(epoch, state, outputs["test"] if improved else None)
            in_model = epoch
    except KeyboardInterrupt:
        done = checkpoints.epochs()
        where = f"after epoch {done[-1]}" if done else "before the first epoch ended"
        raise Interrupted(f"interrupted {where} ({run_dir}); continue with --resume") from None

    if chosen != in_model:
        checkpoints.load(chosen)
    best_test = checkpoints.test_outputs(chosen)
    result = {
        "script": cell.name,
        "dataset": f"KEMDy{args.dataset}",
        "split": args.split,
        "fold": args.num_fold,
        "task": cell.task,
        "selection": "valid_loss" if valid_idx else "last_epoch",
        "chosen_epoch": chosen,
        "test": history[chosen - 1]["test"],
        "epochs": history,
    }
    if accelerator.is_main_process:  # metrics.json last: its presence marks a finished run
        with writing("the results", run_dir, "; the checkpoints are kept: then continue with --resume"):
            _write_predictions(run_dir / "predictions.csv", utts, best_test)
            if args.save_model:
                shutil.rmtree(run_dir / "model", ignore_errors=True)
                atomic.build_folder(run_dir / "model", lambda tmp: core.save(tmp, tokenizer, extractor))
            atomic.write_text(run_dir / "metrics.json", json.dumps(result, indent=1, allow_nan=False))
    accelerator.wait_for_everyone()
    if args.keep_checkpoint:
        checkpoints.prune(keep=chosen)
    else:
        checkpoints.remove()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _record_size(run_dir)
        log(_summary(result, run_dir))
    for tracker in accelerator.trackers:  # end_training() would also end the processes' group
        tracker.finish()
    accelerator.trackers = []
    accelerator.free_memory()  # the next fold's model, optimizer and loaders replace these
    return result


def _record_size(run_dir: Path) -> None:
    """The finished run directory's size, in config.json (its `disk_bytes`)."""
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    config["disk_bytes"] = rundir.size(run_dir)
    atomic.write_text(run_dir / "config.json", json.dumps(config, indent=1, ensure_ascii=False))


def _tracked_config(args) -> dict:
    """The arguments as TensorBoard's hyper-parameter table accepts them (numbers, strings, booleans)."""
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in vars(args).items()}


def _scalars(record: dict) -> dict[str, float]:
    """An epoch's numbers for the trackers: train/loss, valid/loss, test/micro_f1, test/f1_angry ..."""
    out = {"train/loss": record["train_loss"]}
    for split in ("valid", "test"):
        out |= {f"{split}/{k}": v for k, v in flat_metrics(record.get(split, {})).items() if v is not None}
    return out


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _headline(m: dict) -> str:
    keys = [k for k in ("micro_f1", "macro_f1", "top1_accuracy", "valence_ccc", "arousal_ccc") if k in m]
    return "  ".join(f"{k} {_fmt(m[k])}" for k in ["loss", *keys])


def _epoch_line(record: dict) -> str:
    parts = [f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}"]
    parts += [f"{name}: {_headline(record[name])}" for name in ("valid", "test") if name in record]
    return " | ".join(parts)


def _summary(result: dict, run_dir: Path) -> str:
    m = result["test"]
    lines = [
        f"{result['script']} {result['dataset']} fold {result['fold']}: test metrics of epoch "
        f"{result['chosen_epoch']} (chosen by {result['selection'].replace('_', ' ')})"
    ]
    for key, value in m.items():
        if key == "per_class_f1":
            lines.append("  per-class F1: " + "  ".join(f"{k} {_fmt(v)}" for k, v in value.items()))
        elif key != "n":
            lines.append(f"  {key:<18}{_fmt(value)}")
    lines.append(f"run directory: {run_dir} ({rundir.human(rundir.size(run_dir))})")
    return "\n".join(lines)


def _write_predictions(path: Path, utts, out: dict[str, np.ndarray]) -> None:
    order = np.argsort(out["index"], kind="stable")
    header = ["segment_id", *[f"true_{e}" for e in EMOTIONS]]
    if "probs" in out:
        header += [f"prob_{e}" for e in EMOTIONS]
    header += [f"true_{d}" for d in DIMENSIONS]
    if "va_pred" in out:
        header += [f"pred_{d}" for d in DIMENSIONS]
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(header)
    for k in order:
        u = utts[int(out["index"][k])]
        row = [u.segment_id, *u.labels]
        if "probs" in out:
            row += [f"{p:.6f}" for p in out["probs"][k]]
        row += [u.valence, u.arousal]
        if "va_pred" in out:
            row += [f"{v:.6f}" for v in out["va_pred"][k]]
        writer.writerow(row)
    atomic.write_text(path, f.getvalue())


def _describe_model(name: str, encoder) -> dict:
    return {
        "name": name,
        "path": str(Path(name).resolve()) if Path(name).is_dir() else None,
        "model_type": encoder.config.model_type,
        "class": type(encoder).__name__,
        "hidden_size": encoder.config.hidden_size,
        "parameters": sum(p.numel() for p in encoder.parameters()),
    }


def _config(cell: Cell, args, corpus: Corpus, accelerator, fold: Fold, n_train, n_valid, model) -> dict:
    import accelerate
    import transformers

    return {
        "script": cell.name,
        "cell": asdict(cell),
        "args": vars(args),
        "command": " ".join(sys.argv),
        "models": {
            **({"text": _describe_model(args.text_model, model.text_encoder)} if cell.uses_text else {}),
            **({"speech": _describe_model(args.speech_model, model.speech_encoder)} if cell.uses_speech else {}),
        },
        "data": {
            "dataset_dir": str(Path(args.dataset_dir).resolve()),
            "annotation_files": len(corpus.annotation_files),
            "rows": corpus.rows,
            "used": len(corpus.utterances),
            "excluded": len(corpus.excluded),
            "exclusions": [asdict(e) for e in corpus.excluded],
            "split": {"train": n_train, "valid": n_valid, "test": len(fold.test)},
            "test_sessions": session_order([corpus.utterances[i].session for i in fold.test]),
            "va_mean": model.va_mean.tolist(),
            "va_std": model.va_std.tolist(),
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
            "numpy": np.__version__,
            "device": str(accelerator.device),
            "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision,
        },
    }
