"""How a finished run holds up when its input is worse: its own test utterances scored again, one input changed at a
time, each condition beside the clean inputs with a paired bootstrap interval on the difference.

    python -m common.robustness runs/multimodal_total_concat/KEMDy20/fold1 [more run directories]

The conditions (each where the cell reads what it changes):
- speech noise at 20, 10, 5 and 0 dB signal-to-noise ratio: white noise, and babble, the sum of three other
  recordings of the run's training part (never the utterance itself, never a test utterance), each started at a
  random place and repeated to the clip's length;
- a missing modality (multimodal cells): no transcript (the empty string through the tokenizer), no audio (silence
  of the clip's length), or a modality's vector (for a fusion of sequences, its states: one position) replaced by
  its mean over the training part;
- transcript damage, a stand-in for speech-recognition errors: 5, 10 and 20 % of the transcript's characters (not
  its spaces) deleted, or replaced (a Hangul syllable by another syllable, any other character by a Hangul
  syllable). With --context, only the utterance's own transcript is damaged, not the turns before it;
- with --asr_model M (any transformers speech-to-text model, a hub name or a folder), the transcripts M makes of the
  test recordings (their first 30 s) in place of the annotated ones; robustness/asr.csv lists each beside the
  annotated one with its character error rate (edit distance over the annotated transcript's characters, spaces
  left out).
Noise is added to the clip as training stored it (16 kHz, cut to --max_seq_len, at its recording's level) and the
clip is then prepared as always. Every draw is seeded by (--seed, the condition, the utterance): an utterance's
score depends on neither its batch nor the other utterances. The clean condition is predicted again and must equal
the run's predictions.csv.

Writes <run>/robustness/: robustness.csv (every metric of every condition, its difference from clean and the
interval), robustness.md (the headline metrics) and snr.png (the headline metric against the SNR). `common.report`
gathers the robustness tables of the runs it finds.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import paths, predictions, rundir
from common.errors import UserError, run_cli

SNRS = (20, 10, 5, 0)
DAMAGE = (0.05, 0.10, 0.20)
BABBLE_TALKERS = 3
FOLDER = "robustness"
HANGUL = (0xAC00, 0xD7A3)  # the precomposed syllables


@dataclass(frozen=True)
class Condition:
    name: str  # "white noise"
    level: str  # "10 dB", "5 %", or "" for a condition of one level
    modality: str  # the input it changes: "text" or "speech"
    multimodal: bool = False  # only for a cell that reads both

    @property
    def label(self) -> str:
        return f"{self.name} {self.level}".strip()


CONDITIONS = (
    [Condition("clean", "", "")]
    + [Condition(kind, f"{snr} dB", "speech") for kind in ("white noise", "babble") for snr in SNRS]
    + [
        Condition("no transcript", "", "text", True),
        Condition("no audio", "", "speech", True),
        Condition("text vector: training mean", "", "text", True),
        Condition("speech vector: training mean", "", "speech", True),
    ]
    + [
        Condition(f"characters {how}", f"{round(rate * 100)} %", "text")
        for how in ("deleted", "replaced")
        for rate in DAMAGE
    ]
    + [Condition("no bio-signals", "", "bio")]  # every signal missing: the wristband not worn
)


ASR = "ASR transcripts"
ASR_SECONDS = 30.0  # of each recording transcribed: Whisper's window


def conditions(cell, asr_model: str | None = None, bio: bool = False) -> list[Condition]:
    """The conditions that apply to a cell: those changing an input it reads (`bio`: its model reads bio-signals);
    a missing modality for a cell that reads both; with `asr_model`, its transcripts for a cell that reads text."""
    reads = {"text": cell.uses_text, "speech": cell.uses_speech, "bio": bio, "": True}
    found = [c for c in CONDITIONS if reads[c.modality] and (not c.multimodal or cell.fusion is not None)]
    return found + ([Condition(ASR, f"({asr_model})", "text")] if asr_model and cell.uses_text else [])


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Edit distance (insertions, deletions, substitutions of characters, spaces left out) over the reference's
    characters; a reference without any: 0 if the hypothesis has none either, else 1."""
    ref, hyp = "".join(reference.split()), "".join(hypothesis.split())
    if not ref:
        return float(bool(hyp))
    previous = list(range(len(hyp) + 1))
    for i, a in enumerate(ref, 1):
        current = [i]
        for j, b in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1] / len(ref)


def transcribe(model: str, wavs: list, batch_size: int) -> list[str]:
    """Each recording's transcript by a transformers speech-to-text model (a hub name or a folder)."""
    from transformers import pipeline

    from common.data import SAMPLE_RATE, load_audio

    try:
        asr = pipeline("automatic-speech-recognition", model=model)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(
            f"--asr_model {model}: cannot load a speech-to-text model ({type(err).__name__}: {err})"
        ) from None
    clips = [{"raw": load_audio(w, ASR_SECONDS), "sampling_rate": SAMPLE_RATE} for w in wavs]
    return [out["text"].strip() for out in asr(clips, batch_size=batch_size)]


def with_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`x` plus `noise` scaled so that the clip's power over the noise's is `snr_db` (mean squares over the clip);
    a silent clip, or silent noise, stays as it is."""
    signal, power = float(np.mean(np.square(x, dtype=np.float64))), float(np.mean(np.square(noise, dtype=np.float64)))
    if signal == 0 or power == 0:
        return x.copy()
    scale = np.sqrt(signal / (power * 10 ** (snr_db / 10)))
    return (x + scale * noise).astype(np.float32)


def babble(rng: np.random.Generator, talkers: list[np.ndarray], n: int) -> np.ndarray:
    """The sum of `talkers`, each started at a random place and repeated to `n` samples."""
    out = np.zeros(n, np.float64)
    for x in talkers:
        if len(x):
            start = int(rng.integers(len(x)))
            out += np.resize(np.roll(x, -start), n)
    return out.astype(np.float32)


def damaged(text: str, rate: float, rng: np.random.Generator, how: str) -> str:
    """`text` with round(rate x its characters other than spaces) of them, chosen at random, deleted or replaced
    by a Hangul syllable other than themselves."""
    places = [k for k, ch in enumerate(text) if not ch.isspace()]
    chosen = set(rng.choice(places, size=round(rate * len(places)), replace=False).tolist()) if places else set()
    out = []
    for k, ch in enumerate(text):
        if k not in chosen:
            out.append(ch)
        elif how == "replaced":
            other = ch
            while other == ch:
                other = chr(int(rng.integers(HANGUL[0], HANGUL[1] + 1)))
            out.append(other)
    return "".join(out)


class FinishedRun:
    """A finished run's model, its test utterances (checked against its predictions.csv) and its training part."""

    def __init__(self, run_dir: Path, dataset_dir: str | None = None, log=print):
        from common.predict import Predictor
        from common.runfiles import read_config, read_metrics
        from common.settings import of_record
        from common.train import Shared, read_corpora, splits

        self.run_dir = Path(run_dir)
        if rundir.read_run(self.run_dir) is None:
            raise UserError(f"{self.run_dir}: not a run directory of this project (no run marker)")
        if not (self.run_dir / "metrics.json").is_file():
            raise UserError(f"{self.run_dir}: not a finished run (no metrics.json); finish it with --resume")
        self.metrics = read_metrics(self.run_dir)
        self.predictor = Predictor(self.run_dir)
        config = read_config(self.run_dir)
        self.settings = of_record(config["args"])
        if dataset_dir:
            self.settings = dataclasses.replace(self.settings, dataset_dir=dataset_dir)
        if self.settings.test_dataset:
            raise UserError(f"{self.run_dir}: a cross-corpus run; robustness is measured on a fold's test part")
        shared = Shared()
        shared.corpus, _ = read_corpora(self.settings, log=lambda _: None)
        fold, self.train, _ = splits(self.settings, shared)
        self.utterances, self.test = shared.utterances, fold.test
        self.truth = predictions.read(self.run_dir / predictions.FILE)
        tested = [self.utterances[k].segment_id for k in self.test]
        if tested != self.truth.segment_ids:
            raise UserError(
                f"{self.run_dir}: its predictions.csv does not list the test utterances of {self.settings.dataset_dir} "
                "(the corpus changed since the run, or moved: give --dataset_dir)"
            )
        self.cell = self.predictor.model.config.cell
        log(f"{self.run_dir}: {len(self.test)} test utterances, {len(self.train)} training utterances")


class Inputs:
    """The model inputs of a run's test utterances under a condition, each drawn from its own seeded stream."""

    def __init__(self, run: FinishedRun, seed: int, transcripts: list[str] | None = None, predictor=None):
        """`transcripts`: a speech-to-text model's, of the test utterances (the ASR condition's); `predictor`: the
        one whose inputs these are, if not the run's own (`common.export` compares its graph with the model)."""
        from common.data import stored_audio

        self.run, self.seed, self.p, self.transcripts = run, seed, predictor or run.predictor, transcripts
        self.max_seconds = self.p.args["max_seq_len"]
        self.clips: dict[int, np.ndarray] = {}

        def clip(k: int) -> np.ndarray:
            if k not in self.clips:
                u = run.utterances[k]
                self.clips[k] = stored_audio(u.wav, self.max_seconds, u.level).astype(np.float32) / 32768.0
            return self.clips[k]

        self.clip = clip
        self.speech_before: dict[int, tuple] = {}  # with --context_speech, each utterance's turns before's speech
        self.bio = None  # each utterance's bio-signal features, for a run that reads them
        if self.p.signals:
            from common import bio

            found = bio.read_signals(Path(run.settings.dataset_dir), run.settings.dataset, run.utterances)
            self.bio = bio.feature_rows(self.p.signals, found.samples).astype(np.float32)
        wavs_of_test = {run.utterances[k].wav for k in run.test}
        self.talkers = [k for k in run.train if run.utterances[k].wav not in wavs_of_test]

    def rng(self, condition: Condition, k: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, CONDITIONS.index(condition), k])  # the ASR condition draws nothing

    def items(self, condition: Condition) -> list[dict]:
        from common.data import model_samples

        run, p = self.run, self.p
        items = [{"index": i} for i in range(len(run.test))]
        if p.uses_text:
            for item, ids in zip(items, self._tokens(*self._texts(condition)), strict=True):
                item["input_ids"] = ids
        if p.uses_speech:
            for item, k in zip(items, run.test, strict=True):
                x = self.clip(k)
                if condition.name == "no audio":
                    x = np.zeros_like(x)
                elif condition.modality == "speech" and condition.level.endswith("dB"):
                    x = with_noise(x, self._noise(condition, k, len(x)), float(condition.level.split()[0]))
                item["audio"] = model_samples(x, p.spec, run.utterances[k].level)
        for item, k in zip(items, run.test, strict=True):
            item |= self._beside(condition, k)
        return items

    def _beside(self, condition: Condition, k: int) -> dict:
        """What utterance k's item carries beside its transcript and recording: with --context_speech its turns
        before's speech (as recorded, whatever the condition; computed once), and its bio-signal features."""
        from common.dialogue import turns_before

        out, p = {}, self.p
        if p.uses_speech and p.model.config.context_speech:
            if not self.speech_before:
                self.turns = turns_before(self.run.utterances, p.args["context"])
            if k not in self.speech_before:
                self.speech_before[k] = p.speech_before([self.run.utterances[j].wav for j in self.turns[k]])
            out["speech_context"], out["speech_context_mask"] = self.speech_before[k]
        if self.bio is not None:
            out["bio"] = self.bio[k] if condition.name != "no bio-signals" else np.full_like(self.bio[k], np.nan)
        return out

    def _texts(self, condition: Condition) -> tuple[list[str], list[str] | None]:
        """(transcripts, the turns before each with --context) of the test utterances under `condition`."""
        from common.dialogue import context_texts

        run, p = self.run, self.p
        texts = [run.utterances[k].text for k in run.test]
        contexts = None
        if p.context:
            every = context_texts(run.utterances, p.context)
            contexts = [every[k] for k in run.test]
        if condition.name.startswith("characters"):
            how, rate = condition.name.split()[-1], float(condition.level.rstrip(" %")) / 100
            texts = [damaged(t, rate, self.rng(condition, k), how) for t, k in zip(texts, run.test, strict=True)]
        elif condition.name == ASR:
            texts = list(self.transcripts)
        elif condition.name == "no transcript":
            texts, contexts = [""] * len(texts), [""] * len(texts) if contexts else None
        return texts, contexts

    def _tokens(self, texts: list[str], contexts: list[str] | None):
        from common.data import PairTokenIds, TokenIds, tokenless

        p = self.p
        if tokenless(p.tokenizer, texts, p.args["max_text_len"]):
            raise Unusable("the run's tokenizer gives an empty transcript no token at all")
        if contexts is not None:
            return PairTokenIds(p.tokenizer, contexts, texts, p.args["max_text_len"])
        return TokenIds(p.tokenizer, texts, p.args["max_text_len"])

    def _noise(self, condition: Condition, k: int, n: int) -> np.ndarray:
        rng = self.rng(condition, k)
        if condition.name == "white noise":
            return rng.standard_normal(n).astype(np.float32)
        chosen = rng.choice(len(self.talkers), size=min(BABBLE_TALKERS, len(self.talkers)), replace=False)
        return babble(rng, [self.clip(self.talkers[int(j)]) for j in chosen], n)

    def training_mean(self, modality: str, batch_size: int) -> dict:
        """The batch entries that put the training part's mean in place of `modality`'s vector (or states)."""
        import torch

        run, p = self.run, self.p
        model = p.model
        sequences = model.fusion is not None and model.fusion.reads == "sequences"
        saved_test = run.test
        run.test = self.talkers if modality == "speech" else list(run.train)
        try:
            items = self.items(CONDITIONS[0])
        finally:
            run.test = saved_test
        total, count = None, 0
        for start in range(0, len(items), batch_size):
            batch = {k: v.to(p.device) for k, v in p.collate(items[start : start + batch_size]).items()}
            with torch.no_grad():
                if sequences:
                    states, mask = model.sequence(modality, batch)
                    part, n = (states * mask[..., None]).sum(dim=(0, 1)), int(mask.sum())
                else:
                    vectors = model.own_vector(modality, batch)
                    part, n = vectors.sum(dim=0), len(vectors)
            total, count = (part if total is None else total + part), count + n
        mean = (total / count).float().cpu()
        if sequences:
            return {f"{modality}_seq": mean[None, None, :], f"{modality}_seq_mask": torch.ones(1, 1, dtype=torch.long)}
        return {f"{modality}_vec": mean[None, :]}


class Unusable(Exception):
    """A condition this run cannot be scored under (the reason in its message)."""


def _pooled(run: FinishedRun, probs, va_pred):
    from common.compare import Pooled
    from common.report import run_threshold

    truth = run.truth
    ids = [(run.metrics["fold"], s) for s in truth.segment_ids]
    decisions = top1 = labels = None
    if probs is not None:
        labels = truth.labels
        decisions = (probs > np.asarray(run_threshold(run.run_dir))).astype(np.int8)
        top1 = probs.argmax(axis=1)
    return Pooled(ids, labels, decisions, top1, truth.va if va_pred is not None else None, va_pred)


def scored(run: FinishedRun, condition: Condition, inputs: Inputs, batch_size: int = 8):
    """The run's test outputs under `condition` as the comparisons pool them (`compare.Pooled`); raises Unusable
    where the run cannot be scored under it."""
    given = inputs.training_mean(condition.modality, batch_size) if condition.name.endswith("training mean") else {}
    probs, va = run.predictor.outputs(inputs.items(condition), batch_size, given)
    if condition.name == "clean":
        _check_clean(run, probs, va)
    return _pooled(run, probs, va)


def chosen(cell, names: list[str] | None, asr_model: str | None = None, bio: bool = False) -> list[Condition]:
    """The conditions named (a name, `babble`, takes each of its levels; a label, `babble 0 dB`, one), clean
    first and the ASR condition where a model is given; all that apply to the cell without names. A name that
    applies to none is refused in one line."""
    found = conditions(cell, asr_model, bio)
    if not names:
        return found
    unknown = [n for n in names if not any(n in (c.name, c.label) for c in found)]
    if unknown:
        known = ", ".join(dict.fromkeys(c.name for c in found))
        raise UserError(f"--condition {unknown[0]!r}: not a condition of a {cell.name} run; choose from {known}")
    return [c for c in found if c.name in ("clean", ASR) or c.name in names or c.label in names]


def measure(  # noqa: PLR0913 (keyword options of the command)
    run: FinishedRun,
    seed: int = 0,
    batch_size: int = 8,
    resamples: int = 1000,
    log=print,
    names: list[str] | None = None,
    asr: tuple[str, list[str]] | None = None,
) -> list[dict]:
    """One row per condition (`names`: those only, with clean): the condition, n, each metric of the cell's task,
    and each one's difference from clean with its 95 % paired bootstrap interval (or the reason it cannot be
    scored). `asr`: (a speech-to-text model, its transcripts of the test utterances), for the ASR condition."""
    from common.compare import metrics_of, paired_bootstrap, utterance_counts
    from common.metrics import from_counts

    inputs, rows, clean = Inputs(run, seed, asr[1] if asr else None), [], None
    metrics = metrics_of(run.cell.task)
    for condition in chosen(run.cell, names, asr[0] if asr else None, bool(run.predictor.signals)):
        try:
            pooled = scored(run, condition, inputs, batch_size)
        except Unusable as why:
            rows.append({"condition": condition.label, "n": len(run.test), "note": str(why)})
            continue
        if clean is None:
            clean = pooled
        row = {"condition": condition.label, "n": len(run.test)}
        for metric in metrics:
            counts = utterance_counts(pooled.labels, pooled.decisions, pooled.top1, pooled.va, pooled.va_pred, metric)
            row[metric] = float(from_counts(counts.sum(0, keepdims=True), np.array([len(run.test)]), metric)[0])
            if pooled is not clean:
                diff, low, high = paired_bootstrap(pooled, clean, metric, resamples, seed)
                row |= {f"{metric}_difference": diff, f"{metric}_low": low, f"{metric}_high": high}
        rows.append(row)
        log(f"  {condition.label}: " + "  ".join(f"{m} {row[m]:.4f}" for m in metrics))
    return rows


def _check_clean(run: FinishedRun, probs, va) -> None:
    """The clean inputs predicted again give the run's own predictions.csv (else the inputs are not the run's)."""
    for name, ours, theirs in (("probabilities", probs, run.truth.probs), ("valence/arousal", va, run.truth.va_pred)):
        if ours is not None and not np.allclose(ours, theirs, atol=1e-4):
            worst = float(np.abs(ours - theirs).max())
            raise UserError(
                f"{run.run_dir}: its model predicts the clean test utterances' {name} up to {worst:.2g} away from its "
                "predictions.csv; the corpus or the model changed since the run"
            )


def markdown(run: FinishedRun, rows: list[dict]) -> str:
    """The table of the headline metrics: each condition's value and its difference from clean [interval]."""
    from common.compare import metrics_of

    metrics = metrics_of(run.cell.task)
    head = ["condition", *(f"{m}" for m in metrics), *(f"− clean: {m}" for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if "note" in row:  # not scored, and why
            cells = ["n/a"] * len(metrics) + [row["note"]] + [""] * (len(metrics) - 1)
            lines.append(f"| {row['condition']} | " + " | ".join(cells) + " |")
            continue
        values = [f"{row[m]:.4f}" for m in metrics]
        diffs = [difference_text(row, m) for m in metrics]
        lines.append(f"| {row['condition']} | " + " | ".join(values + diffs) + " |")
    return "\n".join(lines) + "\n"


def difference_text(row: dict, metric: str) -> str:
    """`+0.0123 [-0.0040, +0.0290]`: a condition's difference from clean in `metric` and its interval ("" for clean
    and a condition not scored)."""
    if row.get(f"{metric}_difference") is None:
        return ""
    return f"{row[f'{metric}_difference']:+.4f} [{row[f'{metric}_low']:+.4f}, {row[f'{metric}_high']:+.4f}]"


def table_csv(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    f = io.StringIO(newline="")
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)
    return f.getvalue()


def read_table(run_dir: Path) -> tuple[str, list[dict]] | None:
    """(headline metric, rows) of a run's robustness.csv read back, every number checked; None where the run has
    none. A damaged file is one line naming it."""
    from common.compare import EMOTION_METRICS, VA_METRICS

    path = Path(run_dir) / FOLDER / "robustness.csv"
    if not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path}: damaged ({type(err).__name__}: {err})") from None
    columns = set(rows[0]) if rows else set()
    metric = next((m for m in (*EMOTION_METRICS, *VA_METRICS) if m in columns), None)
    if not rows or "condition" not in columns or metric is None or rows[0]["condition"] != "clean":
        raise UserError(f"{path}: damaged (not a robustness table: a condition column, clean first, and a metric)")
    out = []
    for k, row in enumerate(rows, 2):
        checked = {"condition": row["condition"]}
        for key, value in row.items():
            if key in ("condition", "note") or value in ("", None):
                continue
            try:
                number = float(value)
            except ValueError:
                raise UserError(f"{path}: damaged (line {k}, {key}: {value!r} is not a number)") from None
            if not np.isfinite(number):
                raise UserError(f"{path}: damaged (line {k}, {key}: {value!r} is not a finite number)")
            checked[key] = number
        out.append(checked)
    return metric, out


def figure(run: FinishedRun, rows: list[dict], path: Path) -> None:
    """The headline metric against the SNR, white noise and babble, clean as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.compare import metrics_of

    metric = metrics_of(run.cell.task)[0]
    by_label = {row["condition"]: row for row in rows if metric in row}
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for kind in ("white noise", "babble"):
        points = [(snr, by_label[f"{kind} {snr} dB"][metric]) for snr in SNRS if f"{kind} {snr} dB" in by_label]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=kind)
    ax.axhline(by_label["clean"][metric], color="gray", linestyle="--", label="clean")
    ax.set_xlabel("signal-to-noise ratio (dB)")
    ax.set_ylabel(metric)
    ax.invert_xaxis()
    ax.legend()
    ax.set_title(f"{run.metrics['script']} fold {run.metrics['fold']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def asr_csv(run: FinishedRun, transcripts: list[str]) -> str:
    """Each test utterance's annotated transcript beside the speech-to-text model's, and its character error rate."""
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(["segment_id", "transcript", "asr_transcript", "cer"])
    for k, heard in zip(run.test, transcripts, strict=True):
        u = run.utterances[k]
        writer.writerow([u.segment_id, u.text, heard, f"{character_error_rate(u.text, heard):.4f}"])
    return f.getvalue()


def write(run: FinishedRun, rows: list[dict], transcripts: list[str] | None = None) -> Path:
    """<run>/robustness/, recorded in the run's marker and replaced as a whole (the run locked meanwhile)."""

    def build(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if transcripts is not None:
            (folder / "asr.csv").write_text(asr_csv(run, transcripts), encoding="utf-8")
        (folder / "robustness.csv").write_text(table_csv(rows), encoding="utf-8")
        (folder / "robustness.md").write_text(markdown(run, rows), encoding="utf-8")
        if run.cell.uses_speech:
            figure(run, rows, folder / "snr.png")

    return rundir.add_to_finished_run(run.run_dir, FOLDER, build, "the robustness tables")


def main(argv: list[str] | None = None) -> None:
    from common.cli import HelpFormatter

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="python -m common.robustness",
        description="Score finished runs' test utterances again under noise, a missing modality and transcript "
        "damage; writes <run>/robustness/.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run directories (each a fold)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise, the babble and the damage")
    parser.add_argument(
        "--batch_size", type=int, default=8, help="utterances per forward pass (answers do not depend on it)"
    )
    parser.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples of each interval")
    parser.add_argument("--dataset_dir", help="where the run's corpus is now, if it moved since the run")
    parser.add_argument(
        "--condition",
        action="append",
        metavar="NAME",
        help="only this condition (and clean), one flag each: a name (babble, no audio, characters deleted ...) takes "
        "every level, a label (babble 0 dB) one; default: every condition that applies",
    )
    parser.add_argument(
        "--asr_model",
        help="also score on the transcripts this transformers speech-to-text model (hub name or folder) makes of the "
        "test recordings",
    )
    args = parser.parse_args(argv)
    for flag in ("dataset_dir",):
        paths.check(f"--{flag}", getattr(args, flag))
    if args.batch_size < 1 or args.resamples < 1:
        raise UserError("--batch_size and --resamples must be at least 1")
    for run_dir in args.run_dirs:
        paths.check("RUN_DIR", run_dir)
        run = FinishedRun(Path(run_dir), args.dataset_dir)
        asr = None
        if args.asr_model and run.cell.uses_text:
            wavs = [run.utterances[k].wav for k in run.test]
            asr = (args.asr_model, transcribe(args.asr_model, wavs, args.batch_size))
            cer = np.mean(
                [character_error_rate(run.utterances[k].text, t) for k, t in zip(run.test, asr[1], strict=True)]
            )
            print(f"{run_dir}: --asr_model {args.asr_model}: character error rate {cer:.3f} over the test utterances")
        rows = measure(run, args.seed, args.batch_size, args.resamples, names=args.condition, asr=asr)
        print(f"wrote {write(run, rows, asr[1] if asr else None)}/")


if __name__ == "__main__":
    run_cli(main)
