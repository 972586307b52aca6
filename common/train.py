"""The one training loop: each fold is set up, fitted epoch by epoch, and finished into its run directory.

    python multimodal_total_concat.py --dataset 20 --dataset_dir /data/KEMDy20 --num_fold 1

A run directory holds config.json (arguments, models, versions, data), metrics.json (every epoch and
the chosen one), predictions.csv (the chosen epoch's test predictions) and model/ (the trained model).
"""

from __future__ import annotations

import dataclasses
import gc
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from common import dialogue, modelcard, predictions, protocols, raters, rundir, runfiles
from common.cache import check_folder as check_cache_folder
from common.cache import file_digests, fingerprint
from common.checkpoints import Checkpoints, DamagedCheckpoint
from common.data import (
    Collator,
    EpochBatchSampler,
    Inputs,
    KemdyDataset,
    PairTokenIds,
    TokenIds,
    bio_feature_rows,
    corpus_fingerprint,
    prepare_inputs,
    tokenless,
)
from common.dialogue import turns_before
from common.encoders import Encoders, audio_spec, auto_text_pooling
from common.errors import Interrupted, UserError, results_complete, writing
from common.folds import Fold, cross_corpus_splits, fold_splits, hold_out_validation
from common.frozen import context_means, frozen_sequences, frozen_vectors
from common.grid import DEFAULT_MODELS, EMOTIONS, ENCODER_PREFIXES, FUSIONS, Cell, command_of, encoder_tags
from common.kemdy import Corpus, Utterance, check_root, compare_labels, read_corpus
from common.losses import Objective, balanced_weights, emotion_probabilities
from common.metrics import classification_metrics, regression_metrics, tune_thresholds
from common.missing import ModalityDropout
from common.model import EmotionModel, build_model, seed
from common.optim import adamw
from common.plan import RunPlan
from common.progress import Progress
from common.report import epoch_line, flat_metrics, fold_summary, run_summary, set_summary
from common.runfiles import read_config, read_metrics
from common.settings import Settings, folder_flags, folder_name


@dataclass
class Shared:
    """What every fold of a run reads: the corpus, the pretrained encoders, and inputs once prepared."""

    corpus: Corpus | None = None
    fingerprint: dict | None = None  # the corpus's listing and recordings, recorded with each run, checked on --resume
    digests: dict | None = None  # each recording's content digest (the audio cache's key)
    encoders: Encoders | None = None
    inputs: Inputs | None = None
    test_corpus: Corpus | None = None  # a cross-corpus run's (--test_dataset)
    labels: dict | None = None  # a cross-corpus run's label distributions of both corpora
    bio: BioFeatures | None = None  # a run that reads bio-signals: every utterance's features

    def read(self, settings: Settings, log=print, bio: bool = False) -> dict:
        """The corpus and its fingerprints (the first process to read it remembers every recording's digest by
        file stamp under --cache_dir; the others, and later runs, find them there); returns the fingerprints. A
        cross-corpus run reads the test corpus too, compares the two corpora's labels, and fingerprints both.
        `bio`: the run reads the bio-signals: their features too, and their files' fingerprint."""
        if self.corpus is None:
            cache_dir = settings.cache_dir if settings.cache else None
            self.corpus, self.test_corpus = read_corpora(settings, log)
            self.fingerprint, self.digests = corpus_fingerprint(self.corpus, cache_dir)
            if settings.test_dataset:
                self.labels, table = compare_labels(self.corpus, self.test_corpus)
                log(table)
                tested, digests = corpus_fingerprint(self.test_corpus, cache_dir)
                self.fingerprint = {k: fingerprint(v, tested[k]) for k, v in self.fingerprint.items()}
                self.digests |= digests
            if bio:
                self.bio = read_bio_features(settings, self.corpus, self.test_corpus, log)
                self.fingerprint["bio"] = self.bio.fingerprint
        return self.fingerprint

    def load_encoders(self, cell: Cell, settings: Settings) -> None:
        """The pretrained encoders, once; a tokenizer that leaves a transcript of the corpus without a single
        token is refused here, before anything is written (the model would fail on it mid-training)."""
        if self.encoders is not None:
            return
        encoders = Encoders(cell, settings)
        if encoders.tokenizer is not None:
            texts = [u.text for u in self.utterances]
            empty = tokenless(encoders.tokenizer, texts, settings.max_text_len)
            if empty:
                first = self.utterances[empty[0]]
                raise UserError(
                    f"--text_model {settings.text_model}: its tokenizer turns {len(empty)} of the corpus's "
                    f"{len(texts)} transcripts into no tokens at all (e.g. {first.segment_id}: {first.text!r}); the "
                    "model needs at least one token per utterance: use a text model whose tokenizer adds a begin or "
                    "end token, or that encodes this text"
                )
        self.encoders = encoders

    @property
    def utterances(self) -> list[Utterance]:
        """What a run's indices refer to: the corpus's utterances, then a cross-corpus run's test corpus's."""
        return self.corpus.utterances + (self.test_corpus.utterances if self.test_corpus else [])


def read_corpora(settings: Settings, log=print) -> tuple[Corpus, Corpus | None]:
    """The corpus a run reads (its rows and a protocol's selection as the settings say) and a cross-corpus run's
    test corpus."""
    read = partial(read_corpus, rows=settings.kemdy19_rows, labels=settings.labels, duplicates=settings.duplicate_rows)
    corpus = read(settings.dataset, settings.dataset_dir)
    if settings.protocol:
        corpus = protocols.select(settings.protocol, corpus)
        dropped = Counter(e.reason for e in corpus.excluded if e.reason.startswith("--protocol"))
        log(f"{len(corpus.utterances)} utterances kept; dropped: {dict(dropped)}")
    return corpus, read(settings.test_dataset, settings.test_dataset_dir) if settings.test_dataset else None


def reads_bio(cell: Cell, settings: Settings) -> bool:
    """Whether the cell's model reads bio-signals: a bio cell's, or another given --bio."""
    return cell.uses_bio or settings.bio


@dataclass
class BioFeatures:
    """A run's bio-signal features: each utterance's (those of the corpus, then a cross-corpus run's test corpus's),
    raw, NaN where a signal is missing; the signals they are of (the training corpus's), and their files'
    fingerprint."""

    signals: tuple[str, ...]
    rows: np.ndarray
    corpus_rows: int  # the rows of the training corpus (the rest: the test corpus's)
    fingerprint: str


def read_bio_features(settings: Settings, corpus: Corpus, test_corpus: Corpus | None, log) -> BioFeatures:
    """The features of the signals the training corpus records, for every utterance (a test corpus's signal that
    the training corpus does not record is left out, one it lacks is missing), cached under --cache_dir; a corpus
    whose utterances have no sample at all is refused in one line."""
    from common import bio

    cache_dir = settings.cache_dir if settings.cache else None
    corpora = [(settings.dataset, settings.dataset_dir, corpus)]
    corpora += [(settings.test_dataset, settings.test_dataset_dir, test_corpus)] if test_corpus else []
    own = Path(settings.dataset_dir)
    signals = tuple(s for s in bio.SIGNALS[settings.dataset] if (own / s).is_dir())  # the training corpus's
    parts, files = [], []
    for dataset, root, each in corpora:
        paths = bio.signal_files(Path(root), dataset)
        digests = file_digests(paths, cache_dir)
        files.append([(str(f.relative_to(root)), digests[str(f)]) for f in paths])
        rows = bio_feature_rows(Path(root), dataset, each.utterances, signals, fingerprint(files[-1]), cache_dir, log)
        if not parts and not np.isfinite(rows).any():
            folders = ", ".join(f"{s}/" for s in bio.SIGNALS[dataset])
            raise UserError(
                f"--dataset_dir {root}: none of its utterances has a bio-signal sample (its {folders} folders hold "
                "no file with their samples), which the bio cells and --bio read (docs/data.md, Bio-signals)"
            )
        parts.append(rows)
        have = bio.present(signals, rows)
        log(
            f"bio-signals of KEMDy{dataset}: of {len(rows)} utterances, "
            + ", ".join(f"{n} have {s}" for s, n in have.items())
            + "; where one is missing, the model reads a learnt embedding of its absence"
        )
    return BioFeatures(signals, np.concatenate(parts), len(corpus.utterances), fingerprint(files))


def train(plan: RunPlan, on_epoch=None) -> list[dict]:
    """Train and evaluate the folds of `plan.folds`; returns what each one's metrics.json holds. The
    corpus, tokenizer, encoders' weights and prepared inputs are read once for all of them. `on_epoch`: called
    with each finished epoch's record (common.tune reports it to its study, which may stop the trial there)."""
    accelerator = _accelerator(plan.settings)
    log = accelerator.print
    plan = _resolve(plan, accelerator, log)
    cell, settings = plan.cell, plan.settings
    shared = Shared()

    def frozen() -> dict:  # the frozen encoders' references: recorded with a run, compared when it continues
        shared.load_encoders(cell, settings)
        return shared.encoders.references

    default = partial(_default_run_dir, cell, settings, tags=plan.encoder_tags)
    read = partial(shared.read, settings, bio=reads_bio(cell, settings))
    with rundir.claim(plan, default, partial(read, log=log), frozen, accelerator, log) as claimed:
        read(log=lambda _: None)  # the main process has read it (and the digests): the others now
        if claimed.todo:
            shared.load_encoders(cell, settings)
        results = []
        # What is loaded by now (libraries, the encoders) lives as long as the run: the collection after
        # each fold skips it (0.6 s a fold, which would dominate a frozen cell's folds).
        gc.freeze()
        try:
            for k in plan.folds:
                run_dir = claimed.dirs[k]
                if claimed.modes[k] == "finished":
                    result = read_metrics(run_dir)
                    finish_again(run_dir, result, settings, accelerator)
                    log(f"{run_dir}: already finished\n" + run_summary(result, run_dir))
                else:
                    last = k == claimed.todo[-1]
                    run = set_up(plan.but(num_fold=k), accelerator, run_dir, claimed.modes[k], shared, last)
                    run.on_epoch = on_epoch
                    result = finish(run, fit(run))
                results.append(result)
            if len(results) > 1:
                log(fold_summary(results))
                if accelerator.is_main_process:
                    recorded = rundir.settings(plan.record(), cell)
                    rundir.write_set_summary(claimed.set_folder, *set_summary(results, recorded))
        except KeyboardInterrupt:
            done = ", ".join(str(r["fold"]) for r in results) or "none"
            raise Interrupted(f"interrupted (folds finished: {done}); continue with --resume") from None
        finally:
            gc.unfreeze()
    results_complete()
    if settings.demo and len(results) == 1 and settings.score_on == "test" and accelerator.is_main_process:
        log(_next_steps(cell, settings, claimed.dirs[plan.folds[0]], shared.corpus))
    accelerator.end_training()
    return results


def _resolve(plan: RunPlan, accelerator, log) -> RunPlan:
    """What the settings leave to the run: the DataLoader workers, the demo's corpus and encoders, the encoders'
    names for the default run folder, and --text_pooling auto."""
    cell, settings = plan.cell, plan.settings
    # Encoders other than the defaults name the default run folder (the demo's tiny ones are its defaults).
    tags = encoder_tags(cell, {"text": settings.text_model, "speech": settings.speech_model})
    plan = dataclasses.replace(plan, encoder_tags=tuple(tags))
    if settings.num_workers is None:
        on_gpu = accelerator.device.type == "cuda"
        plan = plan.but(num_workers=min(4, (os.cpu_count() or 1) // accelerator.num_processes) if on_gpu else 0)
    if settings.demo:
        plan = _resolve_demo(plan)
    settings = plan.settings
    for note in plan.notes:
        log(note)
    if settings.cache:
        check_cache_folder(settings.cache_dir)
    check_root(settings.dataset, Path(settings.dataset_dir))  # the corpus folders first, then the models
    if settings.test_dataset:
        check_root(settings.test_dataset, Path(settings.test_dataset_dir), "--test_dataset_dir")
    if settings.context_speech and cell.uses_speech:
        _check_context_speech(cell, settings)
    if cell.uses_text and settings.text_pooling == "auto":
        pooling, why = auto_text_pooling(settings.text_model)
        log(f"--text_pooling auto: {pooling} ({why})")
        plan = plan.but(text_pooling=pooling)
    return plan


def _check_context_speech(cell: Cell, settings: Settings) -> None:
    """--context_speech reads the turns before's speech vectors from a frozen encoder's cache."""
    if settings.context < 1:
        raise UserError("--context_speech: reads the speech of the turns --context K names; give --context 1 or more")
    if settings.freeze not in ("speech", "both"):
        raise UserError(
            "--context_speech: the turns before's speech vectors come from a frozen speech encoder (a fine-tuned one "
            "would run K more clips at every step); add --freeze speech (or --freeze both)"
        )
    if not _reads_vectors(cell):
        raise UserError(
            f"--context_speech: the turns before are read as pooled vectors; --fusion {cell.fusion} reads every frame"
        )


def _next_steps(cell: Cell, settings: Settings, run_dir: Path, corpus: Corpus) -> str:
    """What a newcomer can run next after the demo, each line runnable as printed."""
    import shlex
    import sys

    python = os.path.relpath(sys.executable)
    python = python if not python.startswith("..") else sys.executable
    dataset = [] if settings.dataset == "20" else ["--dataset", settings.dataset]
    first = corpus.utterances[0]  # a demo recording and its transcript
    inputs = []
    if cell.uses_speech:
        inputs += ["--wav", os.path.relpath(first.wav)]
    if cell.uses_text:
        inputs += ["--text", first.text]
    if settings.output_dir:  # the folder beside the run (or beside its fold set)
        runs = run_dir.parent
    else:  # runs/demo, above <script>/<protocol>[/fold<k>]
        runs = run_dir.parent.parent if settings.test_dataset else run_dir.parent.parent.parent
    if settings.test_dataset:  # the other direction
        other = [python, *command_of(cell.name).split(), "--demo", "--dataset", settings.test_dataset]
        other += ["--test_dataset", settings.dataset]
    elif cell.uses_speech:  # the task's text cell: its five folds take seconds on a CPU, a speech cell's minutes
        other = [python, f"text_{cell.task}.py", "--demo", *dataset, "--num_fold", "all"]
    else:
        # the same fold set (--context 2, --seed 7 ...), keeping this fold
        other = [
            python,
            f"{cell.name}.py",
            "--demo",
            *dataset,
            *folder_flags(settings),
            "--num_fold",
            "all",
            "--resume",
        ]
    steps = [[python, "-m", "common.report", str(runs)], other]
    samples = "bio_samples.csv"
    if reads_bio(cell, settings):  # a demo utterance's samples, as common.predict --bio reads them
        inputs += ["--bio", samples]
        steps.append([python, "-m", "common.bio", os.path.relpath(settings.dataset_dir), first.segment_id, *dataset])
    steps.append([python, "-m", "common.predict", "--run_dir", str(run_dir), *inputs])
    lines = [f"the run's results are in {run_dir}/; next, try:"]
    lines += ["  " + " ".join(shlex.quote(part) for part in step) for step in steps]
    if reads_bio(cell, settings):
        lines[-2] += f" > {samples}"
    return "\n".join(lines)


@dataclass
class FoldRun:
    """One fold being trained: its data, model, optimizer, loaders and run directory, and the steps of an
    epoch (training, evaluation, metrics)."""

    cell: Cell
    settings: Settings
    accelerator: object
    run_dir: Path
    corpus: Corpus  # the one it trains on
    utterances: list  # what the indices refer to: the corpus's, then a cross-corpus run's test corpus's
    split: tuple  # (Fold, train indices, valid indices)
    model: torch.nn.Module  # prepared by the accelerator (wrapped when distributed)
    encoders: Encoders  # the pretrained ones (tokenizer, feature extractor, frozen encoders' sources)
    optimizer: torch.optim.Optimizer
    scheduler: object
    train_loader: DataLoader
    eval_loaders: dict[str, DataLoader]  # "valid" (when there is a validation part) and "test"
    checkpoints: Checkpoints
    pos_weight: tuple[float, ...] | None = None  # per emotion, with --class_weight balanced
    missing: ModalityDropout | None = None  # with --modality_dropout, what makes a modality missing in training
    on_epoch: Callable | None = None  # called with each finished epoch's record
    history: list[dict] = field(default_factory=list)  # one record per finished epoch

    @cached_property
    def core(self) -> EmotionModel:
        """The model itself (unwrapping walks every module: once per fold, not once per step)."""
        return self.accelerator.unwrap_model(self.model)

    @cached_property
    def objective(self) -> Objective:
        settings = self.settings
        return Objective(
            settings.emotion_output, settings.va_loss, settings.cls_weight, settings.reg_weight, self.pos_weight
        )

    def loss(self, outputs: dict, batch: dict) -> torch.Tensor:
        """Per-utterance loss (so that evaluation averages exactly over a split, whatever its batches)."""
        core = self.core
        return self.objective.per_sample(outputs, batch, core.va_mean, core.va_std)

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training part; the mean training loss over every process."""
        model, accelerator, settings = self.model, self.accelerator, self.settings
        model.train()
        total, count = 0.0, 0
        bar = Progress(self.train_loader, f"epoch {epoch}/{settings.epochs} training", show=self.show_progress)
        for step, batch in enumerate(bar, 1):
            if self.missing is not None:
                batch = self.missing(batch, epoch, step)
            loss = self.loss(model(batch), batch).mean()
            value = loss.item()
            self.stop_if_diverged(value, epoch, step)
            accelerator.backward(loss)
            if settings.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            total, count = total + value, count + 1
            bar.note(loss=f"{total / count:.4f}")
        mean = torch.tensor([total / max(count, 1)], device=accelerator.device)
        return float(accelerator.gather(mean).mean())

    @property
    def show_progress(self) -> bool:
        return self.accelerator.is_local_main_process and not self.settings.quiet

    def evaluate(self, loader: DataLoader, desc: str) -> dict[str, np.ndarray]:
        return evaluate(self.model, loader, self.accelerator, self.objective, desc if self.show_progress else None)

    def record(self, epoch: int, train_loss: float, outputs: dict[str, dict[str, np.ndarray]]) -> dict:
        """An epoch's numbers: training loss, each split's metrics, notes on undefined values, and with
        --threshold tuned the thresholds chosen on this epoch's validation outputs."""
        record, notes, threshold = {"epoch": epoch, "train_loss": train_loss}, [], self.settings.threshold
        if threshold == "tuned" and "probs" in outputs.get("valid", {}):
            tuned = tune_thresholds(outputs["valid"]["labels"], outputs["valid"]["probs"])
            record["thresholds"], threshold = dict(zip(EMOTIONS, map(float, tuned), strict=True)), tuned
        elif threshold == "tuned":
            threshold = 0.5  # regression only: no emotion to decide
        for name, out in outputs.items():
            record[name], split_notes = split_metrics(out, threshold)
            notes += [f"{name}: {n}" for n in split_notes]
        record["notes"] = notes
        return record

    def stop_if_diverged(self, value: float, epoch: int, step: int, what: str = "the training loss is") -> None:
        """Stop every process at the first non-finite loss, before it reaches the weights or a results file."""
        bad = not np.isfinite(value)
        if self.accelerator.num_processes > 1:
            flag = torch.tensor([float(bad)], device=self.accelerator.device)
            bad = bool(self.accelerator.reduce(flag, reduction="sum").item())
        if bad:
            hints = f"lower --lr (now {self.settings.lr:g}) or set --max_grad_norm"
            if self.settings.mixed_precision == "fp16":
                hints += ", or use --mixed_precision bf16 (fp16 overflows)"
            kept = f"keeps the checkpoint of epoch {epoch - 1}" if epoch > 1 else "holds no finished epoch"
            raise UserError(
                f"training diverged: {what} {value} at epoch {epoch}, step {step}; {hints}. The run directory "
                f"{kept}; start over with --overwrite"
            )


@torch.no_grad()
def evaluate(model, loader: DataLoader, accelerator, objective: Objective, desc: str | None = None) -> dict:
    """Per-utterance outputs over a whole split, gathered from every process without duplicates; with `desc`,
    its progress shown."""
    model.eval()
    core = accelerator.unwrap_model(model)
    parts: dict[str, list] = {}
    for batch in Progress(loader, desc or "", show=desc is not None):
        outputs = model(batch)
        row = {"index": batch["index"], "loss": objective.per_sample(outputs, batch, core.va_mean, core.va_std)}
        row |= {"labels": batch["labels"], "va": batch["va"]}
        if "emotion_logits" in outputs:
            row["probs"] = emotion_probabilities(outputs["emotion_logits"], objective.emotion_output)
        if "va_z" in outputs:
            row["va_pred"] = core.va(outputs["va_z"].float())
        for key, value in accelerator.gather_for_metrics(row).items():
            parts.setdefault(key, []).append(value.cpu().numpy())
    return {key: np.concatenate(values) for key, values in parts.items()}


def split_metrics(out: dict[str, np.ndarray], threshold) -> tuple[dict, list[str]]:
    """A split's loss and task metrics, and notes on any that are undefined."""
    metrics, notes = {"loss": float(out["loss"].mean()), "n": int(len(out["index"]))}, []
    if "probs" in out:
        m, n = classification_metrics(out["labels"], out["probs"], threshold)
        metrics, notes = metrics | m, notes + n
    if "va_pred" in out:
        m, n = regression_metrics(out["va"], out["va_pred"])
        metrics, notes = metrics | m, notes + n
    return metrics, notes


def by_agreement(utterances, out: dict, tuned: dict | None, threshold) -> dict:
    """{"test_by_agreement": {"high": ..., "rest": ...}}: the chosen epoch's emotion metrics on the test utterances
    where at least 7 of the 10 evaluators chose one emotion, and on the others (with their counts "n"); empty
    for a cell without emotions or a corpus without its evaluators' columns."""
    high = raters.high_agreement([utterances[int(i)] for i in out["index"]]) if "probs" in out else None
    if high is None:
        return {}
    decide = np.array([tuned[e] for e in EMOTIONS]) if tuned else 0.5 if threshold == "tuned" else threshold
    high, strata = np.array(high), {}
    for name, rows in (("high", high), ("rest", ~high)):
        metrics = classification_metrics(out["labels"][rows], out["probs"][rows], decide)[0] if rows.any() else {}
        strata[name] = {"n": int(rows.sum())} | metrics
    return {"test_by_agreement": strata}


def human_reference(utterances, out: dict) -> dict:
    """{"human_reference": ...}: the test utterances' evaluators, each against the other nine, scored as the
    model is (`raters.human_reference`); empty for a corpus without its evaluators' columns."""
    reference = raters.human_reference([utterances[int(i)] for i in out["index"]])
    return {} if reference is None else {"human_reference": reference}


def choose(history: list[dict]) -> int:
    """The epoch a run reports: the lowest validation loss (the earliest of equals), or, without a
    validation part, the last epoch, as the original."""
    if "valid" not in history[-1]:
        return history[-1]["epoch"]
    return min(history, key=lambda record: record["valid"]["loss"])["epoch"]


def set_up(plan: RunPlan, accelerator, run_dir: Path, mode: str, shared: Shared, last: bool) -> FoldRun:
    """The fold's split, model, inputs, loaders, optimizer and schedule; config.json and trackers for a
    fresh run, the latest checkpoint for a resumed one. `plan`: the fold's (its --num_fold the fold)."""
    log, cell, settings = accelerator.print, plan.cell, plan.settings
    seed(settings.seed)
    corpus, utts = shared.corpus, shared.utterances
    fold, train_idx, valid_idx = splits(settings, shared)
    log(_fold_line(settings, shared, fold, train_idx, valid_idx))

    model = build_model(cell, settings, shared.encoders, last, log, shared.bio.signals if shared.bio else ())
    labels = np.array([utts[i].labels for i in train_idx])
    pos_weight = balanced_weights(labels) if settings.class_weight == "balanced" and cell.classifies else None
    _set_va_scaling(model, settings, [utts[i] for i in train_idx])
    bio_rows = _set_bio_scaling(model, shared.bio, train_idx) if shared.bio is not None else None
    model.freeze(settings.freeze)
    model.to(accelerator.device)
    encoders = shared.encoders
    spec = audio_spec(encoders.extractor, model.speech_encoder, model.config) if cell.uses_speech else None
    collate = Collator(encoders.tokenizer, settings.max_text_len, spec, settings.pad_to_max_length)
    if shared.inputs is None:  # the same for every fold: the first fold prepares them
        shared.inputs = _prepare(cell, settings, accelerator, model, shared, collate)
    inputs = shared.inputs if bio_rows is None else dataclasses.replace(shared.inputs, bio=bio_rows)
    order = partial(_eval_order, cell, settings, inputs, utts)
    targets = _emotion_targets(cell, settings, utts, train_idx, log)
    datasets = {
        name: KemdyDataset(utts, idx, inputs, spec, targets if name == "train" else None)
        for name, idx in (("train", train_idx), ("valid", order(valid_idx)), ("test", order(fold.test)))
    }
    lengths = _lengths(inputs, utts, train_idx, settings.max_seq_len) if settings.group_by_length else None
    sampler = EpochBatchSampler(len(train_idx), settings.batch_size, settings.seed, lengths)
    on_gpu = accelerator.device.type == "cuda"
    loader = partial(
        make_loader, collate=collate, workers=settings.num_workers, pin_memory=on_gpu, batch_size=settings.batch_size
    )
    train_loader = loader(datasets["train"], batch_sampler=sampler)
    eval_loaders = {name: loader(datasets[name]) for name in ("valid", "test") if datasets[name].indices}
    optimizer, scheduler = _optimizer(model, settings, steps=len(train_loader) * settings.epochs)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    eval_loaders = {name: accelerator.prepare(loader) for name, loader in eval_loaders.items()}

    run = FoldRun(
        cell=cell,
        settings=settings,
        accelerator=accelerator,
        run_dir=run_dir,
        corpus=corpus,
        utterances=utts,
        split=(fold, train_idx, valid_idx),
        model=model,
        encoders=encoders,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        eval_loaders=eval_loaders,
        checkpoints=Checkpoints(run_dir, accelerator, frozen=tuple(f"{m}_encoder." for m in encoders.references)),
        pos_weight=pos_weight,
        missing=_modality_dropout(cell, settings, accelerator, encoders, inputs, train_idx, collate),
    )
    if accelerator.is_main_process and not (run_dir / "config.json").is_file():
        config = rundir.provenance(
            plan, corpus, shared.fingerprint, accelerator, run.split, run.core, encoders.references, utts
        )
        if shared.test_corpus is not None:
            config["data"] |= rundir.describe_test_corpus(settings, shared.test_corpus, shared.labels)
        if pos_weight is not None:
            config["data"]["class_weights"] = dict(zip(EMOTIONS, pos_weight, strict=True))
        with writing("config.json", run_dir):
            rundir.write_file(run_dir, "config.json", runfiles.config_text(config))
    if settings.report_to != "none":  # events in <run_dir>/tensorboard/
        if accelerator.is_main_process:
            with writing("the TensorBoard events", run_dir):
                rundir.own(run_dir, "tensorboard")
        accelerator.project_configuration.logging_dir = str(run_dir)
        accelerator.init_trackers("tensorboard", config=_tracked_config(plan))
    state = run.checkpoints.resume(log) if mode == "resume" else None
    if state is not None:
        run.history = state["history"]
        log(f"resuming {run_dir} after epoch {state['epoch']}")
    return run


def fit(run: FoldRun) -> list[dict]:
    """The epochs: train, evaluate the validation and test parts, record, checkpoint. Returns the history."""
    settings, log = run.settings, run.accelerator.print
    try:
        for epoch in range(len(run.history) + 1, settings.epochs + 1):
            run.train_loader.set_epoch(epoch)  # accelerate passes it on to the batch sampler at every iteration
            train_loss = run.train_epoch(epoch)
            outputs = {name: run.evaluate(loader, f"epoch {epoch} {name}") for name, loader in run.eval_loaders.items()}
            for name, out in outputs.items():  # fp16 overflow can leave the training loss finite and these not
                bad = next((float(v[~np.isfinite(v)][0]) for v in out.values() if not np.isfinite(v).all()), 0.0)
                run.stop_if_diverged(bad, epoch, len(run.train_loader), what=f"a {name} output is")
            record = run.record(epoch, train_loss, outputs)
            run.history.append(record)
            log(epoch_line(record))
            if settings.report_to != "none":
                run.accelerator.log(_scalars(record), step=epoch)
            chosen = choose(run.history)
            state = {"epoch": epoch, "history": run.history, "chosen": chosen}
            run.checkpoints.save(epoch, state, outputs["test"] if chosen == epoch else None)
            if run.on_epoch is not None:  # after the checkpoint: a trial stopped here is kept to this epoch
                run.on_epoch(record)
    except KeyboardInterrupt:
        done = run.checkpoints.epochs()
        where = f"after epoch {done[-1]}" if done else "before the first epoch ended"
        raise Interrupted(f"interrupted {where} ({run.run_dir}); continue with --resume") from None
    return run.history


def finish(run: FoldRun, history: list[dict]) -> dict:
    """The chosen epoch's predictions, model and metrics.json (last: it marks a finished run); then the
    checkpoints go, unless kept, and the run's size is recorded. Returns what metrics.json holds."""
    settings, accelerator, run_dir = run.settings, run.accelerator, run.run_dir
    chosen = choose(history)
    if chosen != history[-1]["epoch"]:  # the model holds the last epoch's weights
        try:
            run.checkpoints.load(chosen)
        except DamagedCheckpoint as err:
            raise UserError(
                f"{err}: the chosen epoch's checkpoint is damaged; start the run over with --overwrite"
            ) from None
    test_outputs = run.checkpoints.test_outputs(chosen)
    result = {
        "script": run.cell.name,
        "dataset": f"KEMDy{settings.dataset}",
        "split": (settings.protocol or settings.split)
        + (", scored on validation" if settings.score_on == "valid" else ""),
        "fold": None if settings.test_dataset else settings.num_fold,
        **({"protocol": settings.protocol} if settings.protocol else {}),
        **({"test_dataset": f"KEMDy{settings.test_dataset}"} if settings.test_dataset else {}),
        "task": run.cell.task,
        "selection": "valid_loss" if run.split[2] else "last_epoch",
        "chosen_epoch": chosen,
        "test": history[chosen - 1]["test"],
        **({"thresholds": history[chosen - 1]["thresholds"]} if "thresholds" in history[chosen - 1] else {}),
        **({"layer_weights": run.core.layer_weights()} if settings.layers == "weighted" else {}),
        **by_agreement(run.utterances, test_outputs, history[chosen - 1].get("thresholds"), settings.threshold),
        **human_reference(run.utterances, test_outputs),
        "epochs": history,
    }
    if accelerator.is_main_process:
        with writing("the results", run_dir, "; the checkpoints are kept: then continue with --resume"):
            rundir.write_file(
                run_dir, predictions.FILE, predictions.text(predictions.of_outputs(run.utterances, test_outputs))
            )
            if "probs" in test_outputs:
                confusion = predictions.confusion_text(test_outputs["labels"], test_outputs["probs"])
                rundir.write_file(run_dir, predictions.CONFUSION, confusion)
            if settings.save_model:
                card = modelcard.card_text(read_config(run_dir), result)
                rundir.build_folder(run_dir, "model", partial(_save_model, run, card))
            rundir.write_file(run_dir, "metrics.json", runfiles.metrics_text(result))
    accelerator.wait_for_everyone()
    if settings.keep_checkpoint:
        run.checkpoints.prune(keep=chosen)
    else:
        run.checkpoints.remove()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        rundir.record_size(run_dir)
        accelerator.print(run_summary(result, run_dir))
    for tracker in accelerator.trackers:  # end_training() would also end the processes' group
        tracker.finish()
    accelerator.trackers = []
    accelerator.free_memory()  # the next fold's model, optimizer and loaders replace these
    return result


def _save_model(run: FoldRun, card: str, folder: Path) -> None:
    """The trained model, and its card (README.md) beside it."""
    enc = run.encoders
    run.core.save(folder, tokenizer=enc.tokenizer, extractor=enc.extractor, references=enc.references)
    (folder / "README.md").write_text(card, encoding="utf-8")


def finish_again(run_dir: Path, result: dict, settings: Settings, accelerator) -> None:
    """What finishing does after metrics.json, done for a run killed before it was complete (its size is not
    recorded yet): the checkpoints go, unless kept, and the size is recorded."""
    if not accelerator.is_main_process or "disk_bytes" in read_config(run_dir):
        return
    checkpoints = Checkpoints(run_dir, accelerator)
    if settings.keep_checkpoint and "chosen_epoch" in result:
        checkpoints.prune(keep=result["chosen_epoch"])
    else:
        checkpoints.remove()
    rundir.record_size(run_dir)


def _accelerator(settings: Settings):
    if settings.gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = settings.gpus
    from accelerate import Accelerator
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()  # loading and saving bars would drown the per-epoch progress
    hf_logging.disable_progress_bar()
    accelerator = Accelerator(
        mixed_precision=settings.mixed_precision,
        cpu=_launched_without_accelerator(),
        log_with=None if settings.report_to == "none" else settings.report_to,
        project_dir="runs",  # replaced by each fold's run directory before its trackers start
    )
    return accelerator


def _launched_without_accelerator() -> bool:
    """Several processes launched on a machine without GPUs: accelerate must be told to use gloo on CPU."""
    gpus = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not gpus


def _default_run_dir(cell: Cell, settings: Settings, fold: int, tags: list[str] = ()) -> Path:
    """runs/[demo/]<script>/KEMDy<d>[-to-KEMDy<t>][_session][_original][_freeze-<which>][_layers-weighted]
    [_<encoder>...]/fold<k> (a cross-corpus run, -to-KEMDy<t>, without fold<k>/):
    the frozen and layer-weighted grids sit beside the fine-tuned one, and a grid with other encoders beside
    the default's (named by `tags`, `encoder_tags`), each a row of its own in the report."""
    protocol = f"KEMDy{settings.dataset}" + folder_name(settings, cell)
    protocol += "".join(f"_{tag}" for tag in tags)
    folder = Path("runs", *(["demo"] if settings.demo else []), cell.name, protocol)
    return folder if settings.test_dataset else folder / f"fold{fold}"  # a cross-corpus run has no folds


def _resolve_demo(plan: RunPlan) -> RunPlan:
    """The demo's corpora (unless given) and its tiny encoders in place of the default ones."""
    from common.synthetic import demo_corpus, demo_models

    settings, models, changes = plan.settings, demo_models(), {}
    if not settings.dataset_dir:  # the built-in corpus, unless one is given
        changes["dataset_dir"] = str(demo_corpus(settings.dataset))
    if settings.test_dataset and not settings.test_dataset_dir:
        changes["test_dataset_dir"] = str(demo_corpus(settings.test_dataset))
    if plan.cell.uses_text and settings.text_model == DEFAULT_MODELS["text"]:
        changes["text_model"] = str(models / "text")
    if plan.cell.uses_speech and settings.speech_model == DEFAULT_MODELS["speech"]:
        changes["speech_model"] = str(models / "speech")
    return plan.but(**changes)


def splits(settings: Settings, shared: Shared) -> tuple:
    """(fold, train, valid) indices into `shared.utterances`: the fold's, or a cross-corpus run's; with --score_on
    valid, the validation part in place of the test part and a further part of the training part held out to
    choose the epoch (the test part then read by nothing)."""
    fold, train, valid = _outer_splits(settings, shared)
    if settings.score_on == "test":
        return fold, train, valid
    if not valid:
        raise UserError("--score_on valid: the fold has no validation part to score on; give --valid_ratio above 0")
    sessions = [shared.utterances[k].session for k in train] if settings.split == "session" else None
    inner_train, inner_valid = hold_out_validation(list(range(len(train))), settings.valid_ratio or 0.1, sessions)
    train, valid_inner = [train[k] for k in inner_train], [train[k] for k in inner_valid]
    return Fold(fold.fold, sorted(train + valid_inner), valid, ()), train, valid_inner


def _outer_splits(settings: Settings, shared: Shared) -> tuple:
    if settings.protocol:
        return protocols.PROTOCOLS[settings.protocol].splits(
            [u.segment_id for u in shared.corpus.utterances], settings.num_fold
        )
    sessions = [u.session for u in shared.corpus.utterances]
    if shared.test_corpus is None:
        return fold_splits(sessions, settings.num_fold, settings.split, settings.valid_ratio)
    return cross_corpus_splits(sessions, len(shared.test_corpus.utterances), settings.split, settings.valid_ratio)


def _fold_line(settings: Settings, shared: Shared, fold, train_idx, valid_idx) -> str:
    def excluded(corpus: Corpus) -> str:
        reasons = f": {dict(Counter(e.reason for e in corpus.excluded))}" if corpus.excluded else ""
        return f"{len(corpus.excluded)} rows excluded{reasons}"

    trained, tested = f"KEMDy{settings.dataset}", f"KEMDy{settings.test_dataset}"
    if shared.test_corpus is not None:
        return (
            f"{trained} -> {tested} (cross-corpus, validation by the {settings.split} split's rule): "
            f"{len(train_idx)} train, {len(valid_idx)} valid utterances of {trained} ({excluded(shared.corpus)}); "
            f"{len(fold.test)} test utterances of {tested} ({excluded(shared.test_corpus)})"
        )
    held = f", test sessions {', '.join(fold.test_sessions)}" if fold.test_sessions else ""
    split = f"protocol {settings.protocol}" if settings.protocol else f"{settings.split} split"
    return (
        f"KEMDy{settings.dataset} fold {settings.num_fold} ({split}{held}): {len(train_idx)} train, "
        f"{len(valid_idx)} valid, {len(fold.test)} test utterances ({excluded(shared.corpus)})"
    )


def _emotion_targets(cell: Cell, settings: Settings, utts, train_idx: list[int], log) -> dict | None:
    """With --targets raters, what the emotion head learns on each training utterance: the share of its evaluators
    who chose each emotion (its total evaluation's set where none of theirs was read); None otherwise."""
    if settings.targets != "raters" or not cell.classifies:
        return None
    targets, missing = raters.emotion_targets(utts, train_idx)
    if missing == len(train_idx):
        raise UserError(
            f"--targets raters: no training utterance of {settings.dataset_dir} has an evaluator's emotion (a copy "
            "of the corpus without the evaluators' columns?); train on the total evaluation, without --targets"
        )
    kept = f"; {missing} without any keep their total evaluation's" if missing else ""
    log(f"--targets raters: the emotion head learns {len(train_idx) - missing} utterances' evaluators' shares{kept}")
    return targets


def _modality_dropout(cell: Cell, settings: Settings, accelerator, encoders, inputs: Inputs, train_idx, collate):
    """With --modality_dropout on a multimodal cell, what makes a training utterance's modality missing."""
    if not settings.modality_dropout or cell.fusion is None:
        return None
    empty = None
    if inputs.text_vectors is None and inputs.text_sequences is None:  # the text encoder reads the tokens
        tokenizer, width = encoders.tokenizer, settings.max_text_len
        empty = (PairTokenIds(tokenizer, [""], [""], width) if settings.context else TokenIds(tokenizer, [""], width))[
            0
        ]
        if not len(empty):
            raise UserError(
                f"--modality_dropout: the tokenizer of --text_model {settings.text_model} gives an empty transcript no "
                "token at all, so the text encoder cannot be given a missing transcript; freeze it (--freeze text) "
                "to replace its vectors by their training mean instead"
            )
    return ModalityDropout(
        settings.modality_dropout,
        settings.seed,
        accelerator.process_index,
        empty,
        inputs,
        train_idx,
        collate.audio_spec,
        collate.pad_id if empty is not None else 0,
    )


def _set_va_scaling(model: EmotionModel, settings: Settings, train_utts) -> None:
    """Valence/arousal standardised with the training part's mean and deviation, or the raw 1-5 scale."""
    if settings.va_targets == "standardized":
        va = np.array([[u.valence, u.arousal] for u in train_utts])
        model.va_mean.copy_(torch.from_numpy(va.mean(axis=0)))
        model.va_std.copy_(torch.from_numpy(va.std(axis=0).clip(min=1e-3)))
    else:  # the original's: the heads predict the scale itself
        model.va_mean.zero_()
        model.va_std.fill_(1.0)


def _set_bio_scaling(model: EmotionModel, features: BioFeatures, train_idx: list[int]) -> np.ndarray:
    """The model standardises the bio-signal features with the training part's mean and deviation; returns the
    features its datasets read: the corpus's as they are, a cross-corpus run's test corpus's moved onto the
    training scale from their own corpus's (`bio.onto_scale`: each corpus's wristbands on their own scale)."""
    from common import bio

    mean, std = bio.statistics(features.rows[train_idx])
    model.bio_mean.copy_(torch.from_numpy(mean))
    model.bio_std.copy_(torch.from_numpy(std))
    rows, own = features.rows.copy(), features.corpus_rows
    if len(rows) > own:
        rows[own:] = bio.onto_scale(rows[own:], (mean, std))
    return rows


def _prepare(
    cell: Cell, settings: Settings, accelerator, model: EmotionModel, shared: Shared, collate: Collator
) -> Inputs:
    """Token ids and audio of every utterance (cached), and the pooled vectors of frozen encoders (for a fusion of
    sequences, their states)."""
    cache_dir = settings.cache_dir if settings.cache else None
    log = accelerator.print
    utts, encoders, digests = shared.utterances, shared.encoders, shared.digests
    with accelerator.main_process_first():  # the first process builds the caches, the others read them
        max_seconds = settings.max_seq_len if cell.uses_speech else None
        show = accelerator.is_local_main_process and not settings.quiet
        contexts = _contexts(cell, settings, shared, log)
        inputs = prepare_inputs(
            utts, encoders.tokenizer, settings.max_text_len, max_seconds, cache_dir, log, digests, show, contexts
        )
        for modality, encoder in (("text", model.text_encoder), ("speech", model.speech_encoder)):
            if encoder is None or settings.freeze not in (modality, "both"):
                continue
            # A fusion of sequences gets the frozen encoder's last-layer states; every layer's would be too large to
            # keep (docs/fusions.md), so with --layers weighted it runs the frozen encoder at every step.
            compute = (
                frozen_vectors if _reads_vectors(cell) else frozen_sequences if settings.layers == "last" else None
            )
            if compute is None:
                continue
            computed = compute(
                modality,
                model,
                utts,
                inputs,
                collate,
                batch_size=settings.batch_size,
                accelerator=accelerator,
                cache_dir=cache_dir,
                weights=encoders.references[modality]["weights"],
                log=log,
                show_progress=show,
            )
            setattr(inputs, f"{modality}_{'vectors' if _reads_vectors(cell) else 'sequences'}", computed)
        if model.config.context_speech:
            corpora = [shared.corpus] + ([shared.test_corpus] if shared.test_corpus else [])
            turns, offset = [], 0
            for corpus in corpora:  # the turns before, found within each corpus
                turns += [[offset + j for j in rows] for rows in turns_before(corpus.utterances, settings.context)]
                offset += len(corpus.utterances)
            inputs.speech_context, inputs.speech_context_mask = context_means(inputs.speech_vectors, turns)
            log(
                f"--context_speech: {int(inputs.speech_context_mask.sum())} of {len(turns)} utterances read the "
                f"speech of up to {settings.context} turns before them (the others open their dialogue)"
            )
    return inputs


def _contexts(cell: Cell, settings: Settings, shared: Shared, log) -> list[str] | None:
    """With --context K and a text encoder, each utterance's K turns before it (`dialogue.context_texts`), found
    within its own corpus; None otherwise."""
    if not settings.context or not cell.uses_text:
        return None
    corpora = [shared.corpus] + ([shared.test_corpus] if shared.test_corpus else [])
    contexts = [text for corpus in corpora for text in dialogue.context_texts(corpus.utterances, settings.context)]
    log(
        f"--context {settings.context}: {sum(map(bool, contexts))} of {len(contexts)} utterances are read with the "
        "turns before them (the others open their dialogue)"
    )
    return contexts


def _reads_vectors(cell: Cell) -> bool:
    """Whether the cell's model reads pooled vectors (a unimodal cell, or a fusion of vectors)."""
    return cell.fusion is None or FUSIONS[cell.fusion].reads == "vectors"


def _optimizer(model: EmotionModel, settings: Settings, steps: int):
    """AdamW (--optimizer) over the trainable parameters (the new layers at --head_lr) and the learning-rate
    schedule."""
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    encoder_params = [p for n, p in trainable if n.startswith(ENCODER_PREFIXES)]
    head_params = [p for n, p in trainable if not n.startswith(ENCODER_PREFIXES)]
    groups = [
        {"params": encoder_params, "lr": settings.lr},
        {"params": head_params, "lr": settings.head_lr or settings.lr},
    ]
    groups = [g for g in groups if g["params"]]  # frozen encoders leave the first group empty
    optimizer = adamw(groups, settings.optimizer, settings.lr, settings.weight_decay)
    warmup = int(settings.warmup_ratio * steps)
    if settings.lr_scheduler == "linear":
        return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, steps)
    return optimizer, get_constant_schedule_with_warmup(optimizer, warmup)


def make_loader(
    dataset, collate, workers: int, pin_memory: bool, batch_size: int = 1, batch_sampler=None
) -> DataLoader:
    sizes = {"batch_sampler": batch_sampler} if batch_sampler else {"batch_size": batch_size, "shuffle": False}
    return DataLoader(
        dataset,
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,
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


def _eval_order(cell: Cell, settings: Settings, inputs: Inputs, utts, indices: list[int]) -> list[int]:
    """The order a split is evaluated in: clips from the longest down where the model reads audio, so that a
    batch pads little (its outputs are gathered with their indices; predictions.csv keeps corpus order); corpus
    order for the original's speech inputs, whose batch padding changes what it computes."""
    if not cell.uses_speech or inputs.speech_vectors is not None or settings.speech_inputs == "original":
        return indices
    lengths = _lengths(inputs, utts, indices, settings.max_seq_len)
    return [indices[k] for k in np.argsort(-np.asarray(lengths), kind="stable")]


def _tracked_config(plan: RunPlan) -> dict:
    """The settings as TensorBoard's hyper-parameter table accepts them (numbers, strings, booleans)."""
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in plan.record().items()}


def _scalars(record: dict) -> dict[str, float]:
    """An epoch's numbers for the trackers: train/loss, valid/loss, test/micro_f1, test/f1_angry ..."""
    out = {"train/loss": record["train_loss"]}
    for split in ("valid", "test"):
        out |= {f"{split}/{k}": v for k, v in flat_metrics(record.get(split, {})).items() if v is not None}
    return out
