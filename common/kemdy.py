"""KEMDy19 / KEMDy20 readers: a corpus root on disk -> ordered utterance records.

The order is the original's (annotation files sorted by name, rows in file order), because the
contiguous 5-fold split is defined on it. Every quirk of the real corpora is handled here and nowhere
else; the README's "Data" section lists them. Utterances that cannot be used are returned as
`Exclusion`s with a reason, never dropped silently; `common.audit` reports what was read.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

from common.errors import UserError
from common.grid import DUPLICATE_ROWS, EMOTIONS, KEMDY19_ROWS, LABEL_READINGS

# The corpora spell disgust "disqust"; both spellings are accepted.
_LABEL_INDEX = {name: i for i, name in enumerate(EMOTIONS)} | {"disqust": EMOTIONS.index("disgust")}
# The original's dictionary: exact names, with KEMDy20's spelling only (KEMDy19 writes "disgust").
ORIGINAL_LABELS = {"angry": 0, "disqust": 1, "fear": 2, "happy": 3, "neutral": 4, "sad": 5, "surprise": 6}
ALL_SEVEN = (1,) * len(EMOTIONS)
# The ten evaluators' columns follow the total evaluation: three each (Emotion, Valence, Arousal).
N_RATERS = 10


class Rating(NamedTuple):
    """One evaluator's judgement of an utterance: one emotion (its index in EMOTIONS), valence and arousal on
    1-5; None where the cell is empty or cannot be read (counted by the audit, never a reason to drop a row).
    A named tuple: tens of thousands of rows make ten each when a corpus is read."""

    emotion: int | None
    valence: float | None
    arousal: float | None


def _score(text: str) -> float | None:
    """A rater's valence or arousal: a number on 1-5, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 1.0 <= value <= 5.0 else None


def read_ratings(row: list[str], first: int) -> tuple[tuple[Rating, ...], int, int]:
    """The ten evaluators' ratings of a row whose first evaluator's Emotion cell is column `first`, and how many
    of their cells were missing (empty or absent) and unreadable."""
    cells = [c.strip() for c in row[first : first + 3 * N_RATERS]]
    cells += [""] * (3 * N_RATERS - len(cells))
    ratings, missing, unreadable = [], 0, 0
    for k in range(0, 3 * N_RATERS, 3):
        emotion, valence, arousal = cells[k], cells[k + 1], cells[k + 2]
        rating = Rating(_LABEL_INDEX.get(emotion.lower()), _score(valence), _score(arousal))
        if None in rating:
            for text, value in zip((emotion, valence, arousal), rating, strict=True):
                if value is None:
                    missing, unreadable = (missing + 1, unreadable) if not text else (missing, unreadable + 1)
        ratings.append(rating)
    return tuple(ratings), missing, unreadable


@dataclass(frozen=True)
class Layout:
    """Where one dataset keeps its annotation files and which columns hold what."""

    dataset: str
    file_pattern: re.Pattern  # annotation file name; group 1 = session number
    file_glob: str  # the same, for messages
    segment_col: int  # Segment ID; Emotion, Valence, Arousal follow it


LAYOUTS = {
    "19": Layout("19", re.compile(r"^Session(\d+)_([FM])_res\.csv$", re.I), "SessionNN_{F,M}_res.csv", 9),
    "20": Layout("20", re.compile(r"^Sess(\d+)_eval\.csv$", re.I), "SessNN_eval.csv", 3),
}


@dataclass(frozen=True)
class Utterance:
    """One usable annotation row and the recording it refers to."""

    segment_id: str  # the recording's id (its wav stem)
    annotation_id: str  # the id as written in the annotation file (differs for KEMDy20 session 17)
    annotation: str  # annotation file name
    line: int  # 1-based line of the row in that file
    session: str  # "Sess01"
    speaker: str  # KEMDy20 "User002M"; KEMDy19 "Sess01_F"
    wav: Path
    text: str  # first line of the transcript, raw (noise markers kept, as the original)
    emotion: str  # the Emotion cell as written
    labels: tuple[int, ...]  # multi-hot over EMOTIONS
    valence: float  # 1..5
    arousal: float  # 1..5
    duration: float  # seconds, from the wav header
    sample_rate: int
    channels: int
    level: float = 1.0  # a float recording's peak where it exceeds 1 (see `audio_level`), else 1
    ratings: tuple = ()  # the ten evaluators' Ratings, in the file's column order
    start: float | None = None  # seconds into its dialogue's recording session (the Wav start cell); None if unreadable
    # KEMDy19: the row's E4 EDA and TEMP cells (value at the segment's start and end) as written; KEMDy20: none.
    bio_cells: tuple[str, ...] = ()


@dataclass(frozen=True)
class Exclusion:
    """An annotation row that is not used, and why."""

    segment_id: str
    reason: str
    annotation: str
    line: int
    detail: str = ""


@dataclass
class Corpus:
    dataset: str
    root: Path
    annotation_files: list[str]
    rows: int  # non-blank data rows read, used or not
    utterances: list[Utterance]
    excluded: list[Exclusion]
    other_actor_rows: int = 0  # KEMDy19 rows dropped by rows="speaker"
    transcript_encodings: Counter = field(default_factory=Counter)
    labels: str = "checked"  # how Emotion cells were read (LABEL_READINGS)
    duplicates: list[Exclusion] = field(default_factory=list)  # rows repeating a segment id of their file
    blank_first_line: list[str] = field(default_factory=list)  # utterances whose transcript starts blank
    rater_names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per file, as its header writes them
    rater_cells: Counter = field(default_factory=Counter)  # the used rows' rater cells: "missing", "unreadable"
    unreadable_ratings: list[str] = field(default_factory=list)  # "<segment id>: evaluator k" of those cells

    def fingerprint(self) -> str:
        """A hash of the listing (utterances in order, their files, labels, scores and transcripts): runs
        that continue or are compared must have read the same corpus."""
        from common.cache import fingerprint

        return fingerprint(
            self.dataset,
            self.labels,
            [
                (u.segment_id, u.wav.relative_to(self.root).as_posix(), u.labels, u.valence, u.arousal, u.text)
                for u in self.utterances
            ],
        )


def audio_level(wav: str | Path) -> float:
    """The level a recording is stored at in the 16-bit audio cache: 1, or for a float file whose samples go
    beyond ±1, its peak (the clip is stored divided by it and multiplied back when read, never clipped).
    Raises ValueError for NaN or infinite samples, which would poison every batch they are in."""
    info = sf.info(str(wav))
    if info.subtype not in ("FLOAT", "DOUBLE"):
        return 1.0  # integer samples cannot go beyond full scale
    x = sf.read(str(wav), dtype="float32")[0]
    if not np.isfinite(x).all():
        raise ValueError("NaN or infinite samples")
    return max(1.0, float(np.abs(x).max(initial=0.0)))


def decode_text(data: bytes) -> tuple[str, str] | None:
    """Strict decoding, UTF-8 (with or without BOM) first, then cp949; None if neither fits."""
    for encoding in ("utf-8-sig", "cp949"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding == "utf-8-sig":
            encoding = "utf-8-bom" if data.startswith(b"\xef\xbb\xbf") else "utf-8"
        return text, encoding
    return None


def parse_emotions(cell: str) -> tuple[int, ...]:
    """`neutral;happy` -> multi-hot over EMOTIONS. Raises ValueError naming an unknown label."""
    names = [part.strip().lower() for part in cell.split(";") if part.strip()]
    if not names:
        raise ValueError("empty Emotion cell")
    hot = [0] * len(EMOTIONS)
    for name in names:
        if name not in _LABEL_INDEX:
            raise ValueError(f"unknown emotion label {name!r}")
        hot[_LABEL_INDEX[name]] = 1
    return tuple(hot)


def original_emotions(cell: str) -> tuple[int, ...]:
    """What the original made of an Emotion cell: parts split on `;`, not stripped, looked up in its
    dictionary; a part it does not know (`disgust`, `neutral `, an empty part after a trailing `;`)
    sets all seven emotions, because its multi-hot row was indexed with None."""
    if not cell:
        raise ValueError("empty Emotion cell")  # the original crashed on it (pandas reads it as NaN)
    parts = cell.split(";")
    if any(part not in ORIGINAL_LABELS for part in parts):
        return ALL_SEVEN
    return tuple(int(any(ORIGINAL_LABELS[part] == i for part in parts)) for i in range(len(EMOTIONS)))


def all_seven_in_original(cell: str) -> bool:
    """Whether the original's dictionary turned this Emotion cell into all seven emotions."""
    return bool(cell) and any(part not in ORIGINAL_LABELS for part in cell.split(";"))


def _parse_score(cell: str, name: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{name} {cell.strip()!r} is not a number") from None
    if math.isnan(value) or not 1.0 <= value <= 5.0:
        raise ValueError(f"{name} {cell.strip()!r} is outside 1..5")
    return value


def _read_annotation(path: Path, layout: Layout) -> tuple[list[list[str]], int, list[str]]:
    """(data rows, cells of the header row, the first header row) of one annotation file, after checking its two
    header rows."""
    decoded = decode_text(path.read_bytes())
    if decoded is None:
        raise UserError(f"{path}: annotation file is neither UTF-8 nor cp949 text")
    rows = list(csv.reader(io.StringIO(decoded[0], newline="")))
    if len(rows) < 2:
        raise UserError(f"{path}: expected two header rows, found {len(rows)} row(s)")
    first, second = rows[0], rows[1]
    col = layout.segment_col

    def cell(row: list[str], i: int) -> str:
        return row[i].strip().lower().replace(" ", "") if i < len(row) else ""

    if cell(first, col) != "segmentid":
        other = LAYOUTS["20" if layout.dataset == "19" else "19"]
        if cell(first, other.segment_col) == "segmentid":
            raise UserError(
                f"{path}: 'Segment ID' is in column {other.segment_col + 1} as in KEMDy{other.dataset}, "
                f"not column {col + 1} as in KEMDy{layout.dataset}: use --dataset {other.dataset}"
            )
        found = repr(first[col].strip()) if col < len(first) else "nothing"
        raise UserError(
            f"{path}: expected 'Segment ID' in column {col + 1} of the first header row, found {found} "
            f"(missing columns?)"
        )
    wanted = ["emotion", "valence", "arousal"]
    found = [cell(second, col + k) for k in (1, 2, 3)]
    if found != wanted:
        raise UserError(
            f"{path}: expected Emotion, Valence, Arousal in columns {col + 2}-{col + 4} of the second "
            f"header row, found {', '.join(repr(f) for f in found)} (missing columns?)"
        )
    return rows[2:], len(second), first


class _Skip(Exception):
    """An annotation row that cannot be used: reason code and detail."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail


class _RowReader:
    """Turns annotation rows into Utterances; caches per-recording lookups (KEMDy19 lists each twice)."""

    def __init__(self, layout: Layout, root: Path, labels: str):
        self.layout, self.root, self.labels = layout, root, labels
        self._info: dict[Path, object] = {}
        self._text: dict[Path, tuple[str, str] | None] = {}
        self.blank_first_line: set[Path] = set()  # transcripts whose text starts on a later line

    def _wav_info(self, wav: Path) -> tuple[object, float]:
        """(header, level) of a recording."""
        if wav not in self._info:
            try:
                info = sf.info(str(wav)), 1.0
                if info[0].frames == 0:
                    info = _Skip("empty_wav", f"{wav}: no samples")
                elif info[0].subtype in ("FLOAT", "DOUBLE"):
                    info = info[0], audio_level(wav)
            except ValueError as err:
                info = _Skip("unreadable_wav", f"{wav}: {err}")
            except (sf.LibsndfileError, RuntimeError, OSError) as err:
                message = (str(err).strip() or "unreadable").splitlines()[0]
                info = _Skip("unreadable_wav", f"{wav}: {message}")
            self._info[wav] = info
        if isinstance(self._info[wav], _Skip):
            raise self._info[wav]
        return self._info[wav]

    def _transcript(self, txt: Path) -> tuple[str, str]:
        if txt not in self._text:
            self._text[txt] = decode_text(txt.read_bytes())
        if self._text[txt] is None:
            raise _Skip("undecodable_transcript", f"{txt}: neither UTF-8 nor cp949")
        return self._text[txt]

    def read(self, annotation: str, file_session: str, line: int, row: list[str], width: int) -> tuple[Utterance, str]:
        """The row's utterance and its transcript's encoding; raises _Skip when unusable."""
        col = self.layout.segment_col
        if len(row) < col + 4:
            raise _Skip("malformed_row", f"{len(row)} columns, need at least {col + 4}")
        if len(row) > width:  # the original's pandas refused such a file; here the row is set aside
            raise _Skip("malformed_row", f"{len(row)} cells, the header has {width} (an unquoted comma in a cell?)")
        annotation_id = row[col].strip()
        if not annotation_id:
            raise _Skip("missing_segment_id")
        try:
            valence = _parse_score(row[col + 2], "valence")
            arousal = _parse_score(row[col + 3], "arousal")
        except ValueError as err:
            raise _Skip("invalid_valence_arousal", str(err)) from None
        segment_id, session, speaker, wav = _locate(self.layout, self.root, file_session, annotation_id)
        txt = wav.with_suffix(".txt")
        has_wav, has_txt = wav.is_file(), txt.is_file()
        if not has_wav and not has_txt:
            raise _Skip("missing_wav_and_transcript", str(wav))
        if not has_wav or not has_txt:
            raise _Skip("missing_wav", str(wav)) if not has_wav else _Skip("missing_transcript", str(txt))
        info, level = self._wav_info(wav)
        text, encoding = self._transcript(txt)
        lines = text.splitlines()
        if lines and not lines[0].strip() and any(rest.strip() for rest in lines[1:]):
            self.blank_first_line.add(txt)  # the first line is the utterance, as the original read it
        # Last, so that a row excluded for its label is one the original used (as all seven emotions).
        try:
            labels = (original_emotions if self.labels == "original" else parse_emotions)(row[col + 1])
        except ValueError as err:
            reason = "unknown_emotion" if "unknown" in str(err) else "missing_emotion"
            raise _Skip(reason, f"{err} in Emotion cell {row[col + 1]!r}") from None
        return Utterance(
            segment_id=segment_id,
            annotation_id=annotation_id,
            annotation=annotation,
            line=line,
            session=session,
            speaker=speaker,
            wav=wav,
            text=lines[0].strip() if lines else "",
            emotion=row[col + 1],
            labels=labels,
            valence=valence,
            arousal=arousal,
            duration=info.frames / info.samplerate if info.samplerate else 0.0,
            sample_rate=info.samplerate,
            channels=info.channels,
            level=level,
            start=_start(row[1]),
            bio_cells=tuple(c.strip() for c in row[5:9]) if self.layout.dataset == "19" else (),
        ), encoding


def _start(cell: str) -> float | None:
    """A Wav start cell in seconds; None where it is empty or not a finite number (never a reason to drop a row)."""
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _locate(layout: Layout, root: Path, file_session: str, annotation_id: str) -> tuple[str, str, str, Path]:
    """(segment id on disk, session, speaker, wav path) for an annotation row."""
    match = re.match(r"Sess(\d+)", annotation_id)
    if layout.dataset == "20":
        # Session-17 quirk, handled generally: an id naming another session than its annotation file
        # lives in the file's session folder under the file's prefix.
        segment_id = annotation_id
        if match and int(match.group(1)) != int(file_session):
            segment_id = f"Sess{file_session}" + annotation_id[match.end() :]
        session = f"Sess{file_session}"
        wav = root / "wav" / f"Session{file_session}" / f"{segment_id}.wav"
        speaker = re.search(r"User\d+[FM]?", segment_id, re.I)
        return segment_id, session, speaker.group(0) if speaker else "", wav
    number = match.group(1) if match else file_session
    session = f"Sess{number}"
    # The recording folder is the id without its last five characters ("_F001").
    wav = root / "wav" / f"Session{number}" / annotation_id[:-5] / f"{annotation_id}.wav"
    gender = _gender(annotation_id)
    return annotation_id, session, f"{session}_{gender}" if gender else "", wav


def _gender(kemdy19_id: str) -> str:
    """The speaking actor of a KEMDy19 segment id ("Sess01_impro01_F001" -> "F"), or ""."""
    match = re.search(r"_([FM])\d+$", kemdy19_id, re.I)
    return match.group(1).upper() if match else ""


def check_root(dataset: str, root: Path, flag: str = "--dataset_dir") -> list[Path]:
    """The dataset's annotation files in the original's order, or a UserError saying what is wrong (with
    `flag`, the option that named the folder)."""
    if dataset not in LAYOUTS:
        raise UserError(f"--dataset {dataset!r}: choose 19 or 20")
    if not root.is_dir():
        raise UserError(f"{flag} {root}: no such directory")
    for sub in ("annotation", "wav"):
        if not (root / sub).is_dir():
            raise UserError(f"{flag} {root}: not a KEMDy{dataset} root (no {sub}/ folder)")
    layout = LAYOUTS[dataset]
    names = sorted(p.name for p in (root / "annotation").iterdir() if p.is_file())
    files = [root / "annotation" / n for n in names if layout.file_pattern.match(n)]
    if files:
        return files
    other = LAYOUTS["20" if dataset == "19" else "19"]
    if any(other.file_pattern.match(n) for n in names):
        raise UserError(
            f"{root / 'annotation'}: holds KEMDy{other.dataset} annotation files ({other.file_glob}), "
            f"not KEMDy{dataset}'s ({layout.file_glob}): use --dataset {other.dataset}"
        )
    raise UserError(f"{root / 'annotation'}: no KEMDy{dataset} annotation files ({layout.file_glob})")


def read_corpus(
    dataset: str, root: str | Path, rows: str = "all", labels: str = "checked", duplicates: str = "all"
) -> Corpus:
    """Read a KEMDy19/20 root. rows="speaker" keeps, for KEMDy19, only the speaking actor's file's row;
    labels="original" reads Emotion cells as the original did (`original_emotions`); duplicates="first"
    keeps only the first row of a segment id that one annotation file lists twice (the original used
    every row, and so does "all")."""
    dataset, root = str(dataset), Path(root)
    if rows not in KEMDY19_ROWS:
        raise UserError(f"rows {rows!r}: choose 'all' or 'speaker'")
    if duplicates not in DUPLICATE_ROWS:
        raise UserError(f"duplicates {duplicates!r}: choose {' or '.join(DUPLICATE_ROWS)}")
    if labels not in LABEL_READINGS:
        raise UserError(f"labels {labels!r}: choose {' or '.join(LABEL_READINGS)}")
    files = check_root(dataset, root)
    corpus = Corpus(dataset, root, [p.name for p in files], rows=0, utterances=[], excluded=[], labels=labels)
    reader = _RowReader(LAYOUTS[dataset], root, labels)
    for path in files:
        _read_file(corpus, reader, path, rows, duplicates)
    if not corpus.utterances:
        reasons = Counter(e.reason for e in corpus.excluded).most_common(3)
        raise UserError(
            f"--dataset_dir {root}: no usable KEMDy{dataset} utterances in {corpus.rows} rows"
            + (f" (excluded: {', '.join(f'{r} x{n}' for r, n in reasons)})" if reasons else "")
        )
    return corpus


def _read_file(corpus: Corpus, reader: _RowReader, path: Path, rows: str, duplicates: str) -> None:
    """The rows of one annotation file, into the corpus's utterances or exclusions."""
    layout = reader.layout
    file_match = layout.file_pattern.match(path.name)
    data, width, first = _read_annotation(path, layout)
    raters = layout.segment_col + 4
    corpus.rater_names[path.name] = tuple(
        first[raters + 3 * k].strip() if raters + 3 * k < len(first) else "" for k in range(N_RATERS)
    )
    seen: set[str] = set()
    for line, row in enumerate(data, start=3):
        if not any(c.strip() for c in row):
            continue
        corpus.rows += 1
        if corpus.dataset == "19" and rows == "speaker" and len(row) > layout.segment_col:
            gender = _gender(row[layout.segment_col].strip())
            if gender and gender != file_match.group(2).upper():
                corpus.other_actor_rows += 1
                continue
        try:
            utterance, encoding = reader.read(path.name, file_match.group(1), line, row, width)
            if utterance.annotation_id in seen:
                corpus.duplicates.append(Exclusion(utterance.annotation_id, "duplicate_row", path.name, line))
                if duplicates == "first":
                    raise _Skip("duplicate_row", f"listed again in {path.name}: the first row is used")
            seen.add(utterance.annotation_id)
        except _Skip as skip:
            ident = row[layout.segment_col].strip() if len(row) > layout.segment_col else ""
            corpus.excluded.append(Exclusion(ident or f"{path.name}:{line}", skip.reason, path.name, line, skip.detail))
            continue
        ratings, missing, unreadable = read_ratings(row, raters)
        utterance = replace(utterance, ratings=ratings)
        corpus.rater_cells["missing"] += missing
        corpus.rater_cells["unreadable"] += unreadable
        if unreadable:
            bad = [str(k + 1) for k, r in enumerate(ratings) if None in (r.emotion, r.valence, r.arousal)]
            corpus.unreadable_ratings.append(f"{utterance.segment_id}: evaluator {', '.join(bad)}")
        corpus.utterances.append(utterance)
        corpus.transcript_encodings[encoding] += 1
        if utterance.wav.with_suffix(".txt") in reader.blank_first_line:
            corpus.blank_first_line.append(utterance.segment_id)


def label_distribution(corpus: Corpus) -> dict:
    """Utterances per emotion (a multi-label one in each of its emotions) and each score's mean, deviation
    and range: what a cross-corpus run prints and records for both corpora."""
    labels = np.array([u.labels for u in corpus.utterances])
    scores = {name: np.array([getattr(u, name) for u in corpus.utterances]) for name in ("valence", "arousal")}
    out_of_scale = sum(e.reason == "invalid_valence_arousal" for e in corpus.excluded)
    return {
        "utterances": len(corpus.utterances),
        "emotions": dict(zip(EMOTIONS, map(int, labels.sum(axis=0)), strict=True)),
        **{
            name: {"mean": float(v.mean()), "sd": float(v.std()), "min": float(v.min()), "max": float(v.max())}
            for name, v in scores.items()
        },
        "excluded_invalid_valence_arousal": out_of_scale,
    }


# More rows than this share with a score off the 1..5 scale: the corpus is on another scale, not a few bad rows.
OFF_SCALE_SHARE = 0.01


def compare_labels(train: Corpus, test: Corpus) -> tuple[dict, str]:
    """({corpus: label_distribution}, the two side by side as text) for a cross-corpus run; refuses corpora
    whose emotion sets differ (an emotion only one of them has would be scored on a model that never saw it,
    or never tested), and a corpus on another scale: the readers admit valence and arousal only on 1..5 and
    exclude (and count) a row off it, so more than 1 % of its rows off it is refused. KEMDy20's `disqust` is
    read as KEMDy19's `disgust`."""
    names = [f"KEMDy{train.dataset} (train)", f"KEMDy{test.dataset} (test)"]
    found = {f"KEMDy{c.dataset}": label_distribution(c) for c in (train, test)}
    a, b = found.values()
    only = {
        name: [e for e in EMOTIONS if mine["emotions"][e] and not other["emotions"][e]]
        for name, mine, other in ((names[0], a, b), (names[1], b, a))
    }
    for corpus, found_ in ((train, a), (test, b)):
        off = found_["excluded_invalid_valence_arousal"]
        if off > OFF_SCALE_SHARE * corpus.rows:
            raise UserError(
                f"{corpus.root}: {off} of its {corpus.rows} rows have valence or arousal off the 1..5 scale of "
                f"KEMDy{train.dataset if corpus is test else test.dataset}: the corpora's scales differ; rescale "
                "them to 1..5 first"
            )
    if any(only.values()):
        what = "; ".join(f"only {name} has {', '.join(emotions)}" for name, emotions in only.items() if emotions)
        raise UserError(
            f"--dataset_dir {train.root} and --test_dataset_dir {test.root}: the corpora's emotion sets differ "
            f"({what}); a cross-corpus score needs the same seven emotions on both sides"
        )
    lines = ["labels of the two corpora (utterances; a multi-label one counts in each of its emotions):"]
    lines.append(f"  {'':<10}{names[0]:>28}{names[1]:>28}")
    for e in EMOTIONS:
        cells = [f"{d['emotions'][e]} ({100 * d['emotions'][e] / d['utterances']:.1f} %)" for d in (a, b)]
        lines.append(f"  {e:<10}{cells[0]:>28}{cells[1]:>28}")
    for score in ("valence", "arousal"):
        cells = [
            f"{d[score]['mean']:.2f} ± {d[score]['sd']:.2f} in [{d[score]['min']:g}, {d[score]['max']:g}]"
            for d in (a, b)
        ]
        lines.append(f"  {score:<10}{cells[0]:>28}{cells[1]:>28}")
    cells = [f"{d['excluded_invalid_valence_arousal']} rows excluded" for d in (a, b)]
    lines.append(f"  {'off the 1..5 scale':<18}{cells[0]:>20}{cells[1]:>28}")
    return found, "\n".join(lines)
