"""KEMDy's bio-signals: each utterance's own samples of every signal its corpus records.

Both corpora keep a wristband's signals beside the recordings (docs/data.md, "Bio-signals"):

- KEMDy20: `EDA/`, `TEMP/`, `IBI/SessionSS/<dialogue>_<wearer>.csv`, one file per wearer per dialogue. EDA and
  TEMP open with two header lines (`<unix start>,<clock>` and `4.000000,hz`), IBI with one
  (`<unix start>,IBI,<clock>`); then a sample per line, the value first (for IBI: seconds since the start, then
  the interval), and, on the samples recorded during one of the wearer's own turns, that turn's segment id last.
- KEMDy19: `EDA/`, `TEMP/`, `ECG/SessionSS/Original/SessSS{F,M}.csv`, one file per actor per session, no
  header, `value,seconds,<clock>[,<segment id>]`, where the tags cover every turn of the session, both actors'.

An utterance's samples of a signal are the samples of its speaker's file tagged with its segment id (or with the
id its annotation file writes, which differs for KEMDy20's session 17): what the speaker's body did while they
spoke. Where there are none, the reason is counted: no such file, a file that cannot be read, or no tagged
sample. A corpus without bio-signal folders reads as before and has no signals.

An utterance outside the corpus (`common.predict --bio`) comes as a CSV of its samples, `signal,value` and one
sample a line in time order; `python -m common.bio DATASET_DIR SEGMENT_ID` prints a corpus utterance's so.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SIGNALS = {"20": ("EDA", "TEMP", "IBI"), "19": ("EDA", "TEMP", "ECG")}
# Each signal's per-utterance features (`signal_features`): its level, its change and its variability over the
# utterance, and for EDA its phasic peaks per second.
FEATURES = {signal: ("level", "change", "variability") for signal in ("EDA", "TEMP", "IBI", "ECG")}
FEATURES["EDA"] += ("peaks_per_second",)
RATE = {"EDA": 4.0, "TEMP": 4.0}  # samples per second where the files have a fixed rate
PEAK_PROMINENCE = 0.01  # µS: an EDA peak rises at least this far above the samples around it
UNITS = {"EDA": "µS", "TEMP": "°C", "IBI": "s", "ECG": "mV"}
# KEMDy19's annotation columns of the E4's EDA and TEMP value at each segment's start and end (KEMDY_FORMAT.md).
ANNOTATION_CELLS = {"EDA": (0, 1), "TEMP": (2, 3)}  # positions in `Utterance.bio_cells`
NO_FILE, UNREADABLE_FILE, NO_TAGGED = "no file", "unreadable file", "no tagged samples"
REPORTED = 5  # unreadable lines named in the audit, per signal


@dataclass
class BioSignals:
    """The bio-signals of a corpus's utterances (in the corpus's order)."""

    signals: tuple[str, ...]  # those whose folder the corpus has
    samples: list[dict[str, np.ndarray]]  # per utterance: signal -> its tagged values, in file order
    missing: dict[str, Counter] = field(default_factory=dict)  # signal -> reason -> utterances
    files_read: int = 0
    bad_lines: dict[str, list[str]] = field(default_factory=dict)  # signal -> "file line N: why" (skipped lines)
    bad_line_counts: Counter = field(default_factory=Counter)


def wearer_file(root: Path, dataset: str, signal: str, u) -> Path:
    """The file that holds `signal` as the speaker of utterance `u` wore it."""
    if dataset == "20":  # the dialogue and wearer: the segment id without its turn number
        return root / signal / u.wav.parent.name / f"{u.segment_id.rsplit('_', 1)[0]}.csv"
    return root / signal / f"Session{u.session[4:]}" / "Original" / f"{u.session}{u.speaker[-1]}.csv"


class UnreadableFile(Exception):
    """A bio-signal file whose header or encoding is not the format's (the reason in the message)."""


def read_file(path: Path, dataset: str, signal: str) -> tuple[dict[str, list[float]], list[tuple[int, str]]]:
    """(tagged values by segment id in file order, (line number, reason) of each line that is no sample).

    Untagged samples (recorded outside the tagged turns) are read past."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UnreadableFile(f"{type(err).__name__}: {err}") from None
    header = _header_lines(lines, dataset, signal)
    value_at, tag_at = (1, 3) if signal == "IBI" else (0, 2 if dataset == "20" else 3)
    tagged: dict[str, list[float]] = defaultdict(list)
    bad = []
    for number, line in enumerate(lines[header:], start=header + 1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        try:
            value = float(cells[value_at])
        except (IndexError, ValueError):
            bad.append((number, f"no number in column {value_at + 1}: {line[:60]!r}"))
            continue
        if not np.isfinite(value):
            bad.append((number, f"a value that is not finite: {line[:60]!r}"))
            continue
        if len(cells) > tag_at and cells[tag_at]:
            tagged[cells[tag_at]].append(value)
    return dict(tagged), bad


def _header_lines(lines: list[str], dataset: str, signal: str) -> int:
    """How many header lines the file opens with, checked against the format."""
    if dataset == "19":
        return 0
    first = lines[0].split(",") if lines else []
    if signal == "IBI":
        if len(first) < 2 or first[1].strip() != "IBI":
            raise UnreadableFile(f"its first line is not '<start>,IBI,<clock>': {lines[0][:60] if lines else ''!r}")
        return 1
    second = lines[1].split(",") if len(lines) > 1 else []
    if len(second) < 2 or second[1].strip() != "hz":
        raise UnreadableFile(f"its second line is not '<rate>,hz': {lines[1][:60] if len(lines) > 1 else ''!r}")
    return 2


def read_signals(root: Path, dataset: str, utterances: Sequence) -> BioSignals:
    """Every utterance's samples of each signal whose folder the corpus has; what is missing, counted by reason."""
    root = Path(root)
    signals = tuple(s for s in SIGNALS[dataset] if (root / s).is_dir())
    bio = BioSignals(signals, [{} for _ in utterances])
    for signal in signals:
        files: dict[Path, dict | str] = {}
        missing: Counter = Counter()
        for k, u in enumerate(utterances):
            path = wearer_file(root, dataset, signal, u)
            if path not in files:
                files[path] = _read_or_reason(path, dataset, signal, bio)
            found = files[path]
            if isinstance(found, str):
                missing[found] += 1
                continue
            values = found.get(u.segment_id) or found.get(u.annotation_id)
            if values:
                bio.samples[k][signal] = np.asarray(values, dtype=np.float32)
            else:
                missing[NO_TAGGED] += 1
        bio.missing[signal] = missing
    return bio


def signal_files(root: Path, dataset: str) -> list[Path]:
    """Every file under the corpus's bio-signal folders, in a fixed order: what a run that reads them records."""
    return sorted(p for s in SIGNALS[dataset] if (root / s).is_dir() for p in (root / s).rglob("*") if p.is_file())


def _read_or_reason(path: Path, dataset: str, signal: str, bio: BioSignals) -> dict | str:
    """A file's tagged samples, or why there are none; its skipped lines noted in `bio`."""
    if not path.is_file():
        return NO_FILE
    try:
        tagged, bad = read_file(path, dataset, signal)
    except UnreadableFile as err:
        bio.bad_lines.setdefault(signal, []).append(f"{path}: {err}")
        return UNREADABLE_FILE
    bio.files_read += 1
    bio.bad_line_counts[signal] += len(bad)
    noted = bio.bad_lines.setdefault(signal, [])
    noted += [f"{path} line {n}: {why}" for n, why in bad[: max(0, REPORTED - len(noted))]]
    return tagged


def summary(root: Path, dataset: str, utterances: Sequence) -> dict:
    """The audit's account of the bio-signals: per signal, the utterances that have it, their samples, and those
    without it by reason; for KEMDy19, the annotation's empty EDA/TEMP cells."""
    bio = read_signals(root, dataset, utterances)
    out = {"signals": list(bio.signals), "files_read": bio.files_read}
    for signal in bio.signals:
        counts = [len(s[signal]) for s in bio.samples if signal in s]
        out[signal] = {
            "utterances": len(counts),
            "samples_per_utterance": {"min": min(counts), "median": float(np.median(counts)), "max": max(counts)}
            if counts
            else None,
            "missing": dict(bio.missing[signal].most_common()),
            "skipped_lines": bio.bad_line_counts[signal],
            "problems": bio.bad_lines.get(signal, []),
        }
    if dataset == "19":
        out["annotation_cells_empty"] = {
            signal: sum(any(not u.bio_cells[i] for i in at) for u in utterances if u.bio_cells)
            for signal, at in ANNOTATION_CELLS.items()
        }
    return out


def signal_features(signal: str, x: np.ndarray) -> list[float]:
    """One utterance's features of one signal (`FEATURES`), from its samples `x` in time order:

    - level: their mean;
    - change: the last minus the first (0 for a single sample);
    - variability: their standard deviation (population; for IBI, the SDNN of the intervals);
    - peaks_per_second (EDA): the skin-conductance responses, local maxima whose prominence (scipy's: the height
      above the higher of the two lowest points that separate them from a higher sample) is at least
      PEAK_PROMINENCE, over the utterance's seconds at the E4's 4 Hz."""
    from scipy.signal import find_peaks

    x = np.asarray(x, dtype=np.float64)
    values = [float(x.mean()), float(x[-1] - x[0]), float(x.std())]
    if signal == "EDA":
        peaks = find_peaks(x, prominence=PEAK_PROMINENCE)[0]
        values.append(len(peaks) / (len(x) / RATE["EDA"]))
    return values


def feature_rows(signals: Sequence[str], samples: Sequence[dict]) -> np.ndarray:
    """Every utterance's features of `signals`, side by side in FEATURES' order (utterances x features); NaN where
    the utterance has no sample of a signal (a model marks that with a learnt embedding, never a zero)."""
    width = sum(len(FEATURES[s]) for s in signals)
    rows = np.full((len(samples), width), np.nan)
    for k, found in enumerate(samples):
        at = 0
        for signal in signals:
            n = len(FEATURES[signal])
            if signal in found and len(found[signal]):
                rows[k, at : at + n] = signal_features(signal, found[signal])
            at += n
    return rows


def present(signals: Sequence[str], rows: np.ndarray) -> dict[str, int]:
    """How many of the rows (`feature_rows`) have each signal."""
    starts = np.cumsum([0] + [len(FEATURES[s]) for s in signals])
    return {s: int(np.isfinite(rows[:, at]).sum()) for s, at in zip(signals, starts, strict=False)}


def statistics(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, deviation) of each feature over the rows that have it; a feature no row has: (0, 1); one that does
    not vary: deviation 1 (it is only centred)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a feature no row has: all-NaN
        mean, std = np.nanmean(rows, axis=0), np.nanstd(rows, axis=0)
    return np.nan_to_num(mean), np.where(np.isfinite(std) & (std > 0), std, 1.0)


def standardised(rows: np.ndarray, corpora: Sequence[str], train: Sequence[int]) -> np.ndarray:
    """`rows` standardised with the statistics of the training part (`train`: row indices) of each row's own
    corpus: KEMDy19's and KEMDy20's wristbands on their own scales. NaN (a missing signal) stays NaN."""
    corpora = np.asarray(corpora)
    out = np.full_like(rows, np.nan)
    chosen = np.zeros(len(rows), dtype=bool)
    chosen[list(train)] = True
    for corpus in np.unique(corpora):
        own = corpora == corpus
        mean, std = statistics(rows[own & chosen])
        out[own] = (rows[own] - mean) / std
    return out


def onto_scale(rows: np.ndarray, scale: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Another corpus's `rows` moved onto the scale `scale` (a training part's mean and deviation): standardised
    with their own corpus's statistics (of its features, never its labels), then given `scale`'s, so that a model
    that standardises with `scale` reads each corpus on its own scale (a cross-corpus run's test corpus)."""
    mean, std = statistics(rows)
    return (rows - mean) / std * scale[1] + scale[0]


USER_HEADER = "signal,value"


def samples_text(samples: dict[str, np.ndarray]) -> str:
    """An utterance's samples as `common.predict --bio` reads them."""
    lines = [USER_HEADER] + [f"{signal},{float(v)!r}" for signal, values in samples.items() for v in values]
    return "\n".join(lines) + "\n"


def read_samples(path: Path, signals: Sequence[str]) -> dict[str, np.ndarray]:
    """The samples of `signals` in a file `samples_text` writes (a signal without a line: missing); one line naming
    the file and the problem where it is not that format."""
    from common.errors import UserError

    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read the bio-signal samples ({type(err).__name__}: {err})") from None
    if not lines or lines[0].replace(" ", "") != USER_HEADER:
        raise UserError(f"{path}: a bio-signal file opens with the header {USER_HEADER!r}, then one sample a line")
    found: dict[str, list[float]] = defaultdict(list)
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        signal, _, value = (c.strip() for c in line.partition(","))
        if signal not in signals:
            raise UserError(f"{path} line {number}: {signal!r} is no signal this run reads ({', '.join(signals)})")
        try:
            number_value = float(value)
        except ValueError:
            number_value = float("nan")
        if not np.isfinite(number_value):
            raise UserError(f"{path} line {number}: {value!r} is not a finite number")
        found[signal].append(number_value)
    return {signal: np.asarray(values, dtype=np.float32) for signal, values in found.items()}


def main(argv: list[str] | None = None) -> None:
    import argparse

    from common.cli import HelpFormatter
    from common.errors import UserError
    from common.kemdy import check_root, read_corpus

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="python -m common.bio",
        description="Print one utterance's bio-signal samples as common.predict --bio reads them.",
    )
    parser.add_argument("dataset_dir", help="the corpus folder (KEMDy19 or KEMDy20 layout)")
    parser.add_argument("segment_id", help="the utterance's segment id, as its annotation file writes it")
    parser.add_argument("--dataset", choices=tuple(SIGNALS), default="20", help="the corpus's layout")
    args = parser.parse_args(argv)
    root = Path(args.dataset_dir)
    check_root(args.dataset, root)
    utterances = [
        u for u in read_corpus(args.dataset, root).utterances if args.segment_id in (u.segment_id, u.annotation_id)
    ]
    if not utterances:
        raise UserError(f"{root}: lists no utterance {args.segment_id}")
    found = read_signals(root, args.dataset, utterances[:1])
    print(samples_text(found.samples[0]), end="")


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(main)
