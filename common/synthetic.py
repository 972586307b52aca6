"""Synthetic KEMDy corpora in the real on-disk layout, with planted signal, for the demo and the tests.

    python -m common.synthetic --dataset 20 --out DIR [--sessions 4 --utterances_per_session 60 --seed 0]

The corpus follows the layout the readers expect from the real data (folders, file names, two header
rows, column positions, cp949 transcripts) and carries every quirk: multi-label `;` rows, disgust spelt
`disqust` in KEMDy20 and `disgust` in KEMDy19, KEMDy20's session-17 id mismatch (in session 17, or the
last session of a smaller corpus), KEMDy19's two annotation files per session and 6 annotated recordings
without a wav, a transcript or both (12 rows, as in the real corpus), transcripts re-saved as UTF-8 with
and without BOM, noise markers, clips shorter than 0.25 s and longer than 5 s; with --odd_audio also
44.1/48 kHz and stereo files.

Generative rule, per recording (utterance index i, all draws from the seed):
- Labels: a primary emotion from PRIOR; with probability 0.1 a second, different one (`;`-joined); with
  --label_mix kemdy20, in the real KEMDy20's proportions instead.
- Latent valence/arousal: the mean over its labels of VA_MEAN plus N(0, 0.35) each. Ten evaluators
  score round(latent + N(0, 0.6)) clipped to 1..5; the annotation holds their mean (a multiple of 0.1).
  KEMDy19's two files hold two independent panels for the same recording.
- Text cue (probability 0.7): the transcript contains a word of each label from EMOTION_WORDS; otherwise
  only neutral filler words. Markers such as `l/`, `b/`, `*` are sprinkled in, as in the real corpus.
- Speech cue (probability 0.7, independent of the text cue): the voice has the primary emotion's
  timbre from VOICES (pitch, contour, vibrato, breathiness); otherwise the timbre of a random emotion.
  Syllable rate always follows the latent arousal (1 + 0.9 * (arousal - 1) per second).
Text alone reveals the label of ~70 % of utterances, speech alone of ~70 % (and arousal always),
together of ~91 %: each modality beats chance and their combination beats both.

With `interaction` (--interaction P; 0, the default, draws nothing more), a share P of the utterances is told only
by the two modalities together, as sarcasm is: the transcript holds one happy or one sad word among fillers, and
the voice is happy's or sad's; a word and a voice that agree mean that emotion, and that disagree (a happy word
said in a sad voice, or the reverse) mean disgust. Each word and each voice is learnt from the other utterances,
but neither alone tells disgust (each stands for it half the time): a model that adds a text score to a speech
score can tell at most three of the four combinations, one whose fusion multiplies or attends all four.

With `context_signal` (--context_signal P; 0, the default, draws nothing more), a share P of the turns that follow
a turn whose words tell its emotion take that emotion, as a reply often does, and their own transcript holds fillers
only: their words tell nothing, the turn before them does. A text model that reads the turns before an utterance
(`--context`) can tell these; one that reads the utterance alone cannot.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from common.atomic import build_folder
from common.errors import UserError, run_cli
from common.grid import EMOTIONS

PRIOR = {"angry": 0.12, "disgust": 0.08, "fear": 0.08, "happy": 0.20, "neutral": 0.30, "sad": 0.12, "surprise": 0.10}
# The real KEMDy20's mix (labels over all 40 files: neutral 11,740, happy 1,543, angry 234, surprise 221,
# sad 195, disgust 109, fear 64; 634 of 13,462 rows carry two labels or more), for imbalance studies.
KEMDY20_COUNTS = {
    "angry": 234,
    "disgust": 109,
    "fear": 64,
    "happy": 1543,
    "neutral": 11740,
    "sad": 195,
    "surprise": 221,
}
LABEL_MIXES = {
    "demo": (PRIOR, 0.1),
    "kemdy20": ({e: n / sum(KEMDY20_COUNTS.values()) for e, n in KEMDY20_COUNTS.items()}, 634 / 13462),
}
VA_MEAN = {
    "angry": (1.8, 4.2),
    "disgust": (1.9, 3.3),
    "fear": (2.0, 3.8),
    "happy": (4.3, 3.7),
    "neutral": (3.0, 2.6),
    "sad": (1.8, 1.9),
    "surprise": (3.6, 4.3),
}
EMOTION_WORDS = {
    "angry": ["화가 나", "짜증나", "열받아", "어이없어"],
    "disgust": ["역겨워", "더러워", "징그러워", "불쾌해"],
    "fear": ["무서워", "겁나", "두려워", "불안해"],
    "happy": ["행복해", "기뻐", "신나", "좋아"],
    "neutral": ["그렇구나", "알겠어", "보통이야", "괜찮아"],
    "sad": ["슬퍼", "우울해", "속상해", "눈물나"],
    "surprise": ["깜짝이야", "놀랐어", "세상에", "대박"],
}
FILLERS = [
    "그래서",
    "오늘",
    "우리",
    "진짜",
    "그냥",
    "아니",
    "근데",
    "저기",
    "내가",
    "너는",
    "이거",
    "그거",
    "어제",
    "집에",
    "회사",
    "친구",
    "밥을",
    "먹었어",
    "했어",
    "갔어",
    "있잖아",
    "말이야",
    "생각",
    "정말",
    "좀",
    "다시",
    "같이",
    "혼자",
    "지금",
    "나중에",
    "주말에",
    "학교",
    "전화",
    "얘기",
]
MARKERS = ["c/", "n/", "N/", "u/", "l/", "b/", "*", "+", "/"]


@dataclass(frozen=True)
class Voice:
    f0: float  # Hz
    slope: float  # relative pitch change from start to end
    vibrato: float  # relative depth of a 6 Hz vibrato
    breath: float  # share of noise in the source


# Pitches a third of an octave or more apart, so that the speakers' +-5 % never confuse two emotions.
VOICES = {
    "angry": Voice(210, -0.10, 0.00, 0.45),
    "disgust": Voice(160, -0.20, 0.00, 0.25),
    "fear": Voice(375, 0.00, 0.06, 0.10),
    "happy": Voice(280, 0.25, 0.00, 0.00),
    "neutral": Voice(120, 0.00, 0.00, 0.00),
    "sad": Voice(90, -0.30, 0.00, 0.05),
    "surprise": Voice(500, 0.50, 0.00, 0.00),
}
INTERACTION = ("happy", "sad")  # the interaction utterances' two emotions, of word and of voice
SPEAKER_PITCH = {"F": 1.05, "M": 0.95}
TEXT_CUE, SPEECH_CUE = 0.7, 0.7
N_EVALUATORS = 10
# Real sizes: KEMDy20 40 sessions / 13,462 utterances; KEMDy19 20 sessions / 10,283 recordings (20,566 rows).
FULL_SIZE = {"20": (40, 13462), "19": (20, 10283)}
N_MISSING_19 = 6  # recordings annotated but lacking files: 12 rows, as in the real KEMDy19


@dataclass(frozen=True)
class Recording:
    """The generator's ground truth for one recording (tests compare the readers against it)."""

    segment_id: str  # on disk
    annotation_id: str  # as written in the annotation file(s)
    session: int
    speaker: str
    labels: tuple[str, ...]
    text: str
    text_cue: bool
    speech_cue: bool
    duration: float
    sample_rate: int
    channels: int
    encoding: str  # transcript encoding: cp949, utf-8 or utf-8-bom
    missing: str  # "", "wav", "transcript" or "both"
    scores: tuple[tuple[float, float], ...]  # (valence, arousal) per annotation file, in file order
    # An utterance told only by its word and voice together (generate's `interaction`): (the emotion of its word,
    # of its voice); else None.
    told: tuple[str, str] | None = None
    follows: bool = False  # takes the emotion the words of the turn before it tell, its own telling none


def synthesize(
    rng: np.random.Generator, seconds: float, voice: Voice, arousal: float, sample_rate: int, f0_scale: float = 1.0
) -> np.ndarray:
    """A voiced 'utterance': harmonic source with the voice's pitch contour, syllable-rate envelope."""
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n) / sample_rate
    rel = t / max(seconds, 1e-3)
    f0 = voice.f0 * f0_scale * (1 + voice.slope * (rel - 0.5)) * (1 + voice.vibrato * np.sin(2 * np.pi * 6 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate + rng.uniform(0, 2 * np.pi)
    # Harmonics 1..6 with 1/h amplitudes; sin(h*p) by the Chebyshev recurrence (two transcendentals).
    two_cos, prev, cur = 2 * np.cos(phase), np.zeros(n), np.sin(phase)
    source = cur.copy()
    for h in range(2, 7):
        prev, cur = cur, two_cos * cur - prev
        source += cur / h
    noise = rng.standard_normal(n)
    source = (1 - voice.breath) * source / 1.5 + voice.breath * noise
    rate = 1.0 + 0.9 * (arousal - 1.0)
    envelope = 0.5 * (1 - np.cos(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    x = envelope * source + 0.02 * rng.standard_normal(n)
    return (0.3 + 0.1 * arousal) * x / (np.abs(x).max() + 1e-9)


def _sentence(rng: np.random.Generator, labels: tuple[str, ...], cue: bool) -> str:
    words = list(rng.choice(FILLERS, size=int(rng.integers(3, 10))))
    if cue:
        for label in labels:
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(EMOTION_WORDS[label])))
    for _ in range(int(rng.binomial(2, 0.3))):
        marker = str(rng.choice(MARKERS))
        k = int(rng.integers(0, len(words)))
        words[k] = words[k] + marker if marker in ("*", "+") else f"{marker} {words[k]}"
    return " ".join(words)


def _told_sentence(rng: np.random.Generator, emotion: str) -> str:
    """An interaction utterance's transcript: fillers and one word of `emotion`."""
    words = list(rng.choice(FILLERS, size=int(rng.integers(3, 10))))
    words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(EMOTION_WORDS[emotion])))
    return " ".join(words)


def _panel(rng: np.random.Generator, labels: tuple[str, ...], latent: tuple[float, float]):
    """Ten evaluators' (emotion, valence, arousal) and the total evaluation's V/A (their mean)."""
    scores = np.clip(np.rint(np.asarray(latent) + rng.normal(0, 0.6, size=(N_EVALUATORS, 2))), 1, 5)
    names = [
        labels[int(rng.integers(len(labels)))] if rng.random() < 0.85 else str(rng.choice(EMOTIONS))
        for _ in range(N_EVALUATORS)
    ]
    total = tuple(round(float(v), 1) for v in scores.mean(axis=0))
    return names, scores.astype(int), total


def _spell20(label: str) -> str:
    """KEMDy20's total evaluation spells disgust "disqust"; KEMDy19's writes "disgust", as do both corpora's
    evaluators."""
    return "disqust" if label == "disgust" else label


def _fmt(x: float) -> str:
    return f"{x:.1f}".removesuffix(".0") if x == int(x) else f"{x:.1f}"


def _sizes(sessions: int, total: int) -> list[int]:
    base, extra = divmod(total, sessions)
    return [base + (s < extra) for s in range(sessions)]


class _Writer:
    """Shared state of one corpus: random streams, the label draws and file writing."""

    def __init__(
        self,
        out: Path,
        seed: int,
        odd_audio: bool,
        cues: tuple[float, float],
        label_mix: str,
        interaction: float = 0,
        context_signal: float = 0,
    ):
        self.out, self.seed, self.odd_audio, self.cues, self.label_mix = out, seed, odd_audio, cues, label_mix
        self.interaction, self.context_signal = interaction, context_signal
        self.rng = np.random.default_rng(seed)
        self.index = 0

    def draw(
        self,
        speaker_shift: float,
        segment_id: str,
        annotation_id: str,
        session: int,
        speaker: str,
        missing: str,
        n_panels: int,
        before: Recording | None = None,
    ) -> tuple[Recording, list, Path]:
        """A recording and its panels and audio; `before`: the turn before it in its dialogue, if any."""
        rng, i = self.rng, self.index
        self.index += 1
        prior, second = LABEL_MIXES[self.label_mix]
        primary = str(rng.choice(list(prior), p=list(prior.values())))
        labels = (primary,)
        if rng.random() < second:
            others = [e for e in prior if e != primary]
            weights = np.array([prior[e] for e in others])
            labels = (primary, str(rng.choice(others, p=weights / weights.sum())))
        told = None  # an interaction utterance's (emotion of its word, of its voice)
        if self.interaction and rng.random() < self.interaction:
            told = (str(rng.choice(INTERACTION)), str(rng.choice(INTERACTION)))
            labels = (told[0],) if told[0] == told[1] else ("disgust",)
            primary = labels[0]
        follows = bool(self.context_signal and before and before.text_cue and rng.random() < self.context_signal)
        if follows:
            labels, primary = before.labels, before.labels[0]
        means = np.mean([VA_MEAN[label] for label in labels], axis=0)
        latent = tuple(float(np.clip(m + rng.normal(0, 0.35), 1, 5)) for m in means)
        text_cue, speech_cue = bool(rng.random() < self.cues[0]), bool(rng.random() < self.cues[1])
        text_cue = text_cue and not follows
        voice = VOICES[primary if speech_cue else str(rng.choice(EMOTIONS))]
        if told is not None:
            voice = VOICES[told[1]]
        if i % 50 == 17:
            seconds = float(rng.uniform(0.08, 0.24))
        elif i % 50 == 33:
            seconds = float(rng.uniform(5.5, 9.0))
        else:
            seconds = float(np.clip(rng.lognormal(np.log(1.6), 0.4), 0.3, 9.0))
        sample_rate, channels = 16000, 1
        if self.odd_audio:
            sample_rate = {5: 44100, 6: 48000}.get(i % 10, 16000)
            channels = 2 if i % 10 == 8 else 1
        encoding = {3: "utf-8", 7: "utf-8-bom"}.get(i % 10, "cp949")
        text = _sentence(rng, labels, text_cue) if told is None else _told_sentence(rng, told[0])
        panels = [_panel(rng, labels, latent) for _ in range(n_panels)]
        audio_rng = np.random.default_rng([self.seed, i])
        x = synthesize(audio_rng, seconds, voice, latent[1], sample_rate, f0_scale=speaker_shift)
        if channels == 2:
            x = np.stack([x, 0.8 * x + 0.01 * audio_rng.standard_normal(len(x))], axis=1)
        rec = Recording(
            segment_id=segment_id,
            annotation_id=annotation_id,
            session=session,
            speaker=speaker,
            labels=labels,
            text=text,
            text_cue=text_cue,
            speech_cue=speech_cue,
            duration=len(x) / sample_rate,
            sample_rate=sample_rate,
            channels=channels,
            encoding=encoding,
            missing=missing,
            scores=tuple(p[2] for p in panels),
            told=told,
            follows=follows,
        )
        return rec, panels, x

    def write_files(self, wav: Path, rec: Recording, x: np.ndarray) -> None:
        wav.parent.mkdir(parents=True, exist_ok=True)
        if rec.missing not in ("wav", "both"):
            sf.write(str(wav), x, rec.sample_rate, subtype="PCM_16")
        if rec.missing not in ("transcript", "both"):
            data = (rec.text + "\r\n").encode("cp949" if rec.encoding == "cp949" else "utf-8")
            wav.with_suffix(".txt").write_bytes((b"\xef\xbb\xbf" if rec.encoding == "utf-8-bom" else b"") + data)


def _write_csv(path: Path, header: list[list[str]], rows: list[list[str]], crlf: bool) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n" if crlf else "\n").writerows(header + rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue(), encoding="utf-8")


def _eval_cells(panel) -> list[str]:
    """The ten evaluators' cells: one emotion each, always spelled `disgust` (KEMDy20's `disqust` is its total
    evaluation's spelling only), integer valence and arousal."""
    names, scores, total = panel
    cells = []
    for name, (v, a) in zip(names, scores, strict=False):
        cells += [name, str(v), str(a)]
    return cells


def _generate_20(w: _Writer, sizes: list[int]) -> list[Recording]:
    n_sessions = len(sizes)
    quirk = 17 if n_sessions >= 17 else (n_sessions if n_sessions >= 2 else 0)
    header = [
        ["Numb", "Wav", "", "Segment ID", "Total Evaluation", "", ""]
        + sum(([f"Eval{e:02d}{'MF'[e % 2]}", "", ""] for e in range(1, N_EVALUATORS + 1)), []),
        ["", "start", "end", "", "Emotion", "Valence", "Arousal"] + ["Emotion", "Valence", "Arousal"] * N_EVALUATORS,
    ]
    recordings = []
    for s, size in enumerate(sizes, start=1):
        users = [(f"User{2 * s - 1:03d}F", SPEAKER_PITCH["F"]), (f"User{2 * s:03d}M", SPEAKER_PITCH["M"])]
        n_scripts = min(6, max(1, size // 10))
        rows, clock, counters = [], 0.0, {}
        for k in range(size):
            script = 1 + k * n_scripts // size
            user, shift = users[k % 2]
            counters[(script, user)] = counters.get((script, user), 0) + 1
            segment_id = f"Sess{s:02d}_script{script:02d}_{user}_{counters[(script, user)]:03d}"
            annotation_id = segment_id
            if s == quirk and script <= 2:
                annotation_id = f"Sess{(s % n_sessions) + 1:02d}" + segment_id[6:]
            before = recordings[-1] if k and script == 1 + (k - 1) * n_scripts // size else None
            rec, panels, x = w.draw(shift, segment_id, annotation_id, s, user, "", 1, before)
            w.write_files(w.out / "wav" / f"Session{s:02d}" / f"{segment_id}.wav", rec, x)
            (v, a) = rec.scores[0]
            rows.append(
                [
                    str(k + 1),
                    f"{clock:.4f}",
                    f"{clock + rec.duration:.4f}",
                    annotation_id,
                    ";".join(map(_spell20, rec.labels)),
                    _fmt(v),
                    _fmt(a),
                ]
                + _eval_cells(panels[0])
            )
            clock += rec.duration + 0.5
            recordings.append(rec)
        _write_csv(w.out / "annotation" / f"Sess{s:02d}_eval.csv", header, rows, crlf=False)
    for bio in ("EDA", "IBI", "TEMP"):
        (w.out / bio).mkdir(parents=True, exist_ok=True)
    return recordings


def _generate_19(w: _Writer, sizes: list[int]) -> list[Recording]:
    total = sum(sizes)
    missing_at = (
        {int(total * (j + 0.5) / N_MISSING_19): ("wav", "transcript", "both")[j % 3] for j in range(N_MISSING_19)}
        if total >= 2 * N_MISSING_19
        else {}
    )
    header = [
        ["Numb", "Wav", "", "ECG", "", "EDA", "", "TEMP", "", "Segment ID", "Total Evaluation", "", ""]
        + sum(([f"Eval{e:02d}", "", ""] for e in range(1, N_EVALUATORS + 1)), []),
        [" ", "start", "end", "start", "end", "start", "end", "start", "end", " ", "Emotion", "Valence", "Arousal"]
        + ["Emotion", "Valence", "Arousal"] * N_EVALUATORS,
    ]
    recordings, index = [], 0
    for s, size in enumerate(sizes, start=1):
        n_dialogs = max(1, size // 12)
        rows_by_file: dict[str, list[list[str]]] = {"F": [], "M": []}
        clock, counters = 0.0, {}
        for k in range(size):
            dialog = k * n_dialogs // size
            kind = f"{('impro', 'script')[dialog % 2]}{dialog // 2 + 1:02d}"
            gender = "FM"[k % 2]
            shift = SPEAKER_PITCH[gender]
            counters[(kind, gender)] = counters.get((kind, gender), 0) + 1
            segment_id = f"Sess{s:02d}_{kind}_{gender}{counters[(kind, gender)]:03d}"
            before = recordings[-1] if k and dialog == (k - 1) * n_dialogs // size else None
            rec, panels, x = w.draw(
                shift, segment_id, segment_id, s, f"Sess{s:02d}_{gender}", missing_at.get(index, ""), 2, before
            )
            index += 1
            w.write_files(w.out / "wav" / f"Session{s:02d}" / segment_id[:-5] / f"{segment_id}.wav", rec, x)
            bio = [f"{clock + d:.3f}" for d in (0.0, rec.duration)] * 3
            for actor, panel in zip("FM", panels, strict=False):
                v, a = panel[2]
                rows_by_file[actor].append(
                    [
                        str(k + 1),
                        f"{clock:.3f}",
                        f"{clock + rec.duration:.3f}",
                        *bio,
                        segment_id,
                        ";".join(rec.labels),
                        _fmt(v),
                        _fmt(a),
                    ]
                    + _eval_cells(panel)
                )
            clock += rec.duration + 0.5
            recordings.append(rec)
        for actor, rows in rows_by_file.items():
            _write_csv(w.out / "annotation" / f"Session{s:02d}_{actor}_res.csv", header, rows, crlf=True)
    for bio in ("ECG", "EDA", "TEMP"):
        (w.out / bio).mkdir(parents=True, exist_ok=True)
    return recordings


def generate(  # noqa: PLR0913 (keyword-only after the first five)
    dataset: str,
    out: str | Path,
    sessions: int = 4,
    utterances_per_session: int = 60,
    seed: int = 0,
    *,
    odd_audio: bool = False,
    full_size: bool = False,
    cues: tuple[float, float] = (TEXT_CUE, SPEECH_CUE),
    label_mix: str = "demo",
    interaction: float = 0.0,
    context_signal: float = 0.0,
) -> list[Recording]:
    """Write a synthetic KEMDy corpus to `out` (which must not hold one already); return its ground truth.

    KEMDy19's utterances_per_session counts recordings; each appears in both annotation files.
    full_size reproduces the real session and utterance counts. `cues` are the chances that the text
    and that the voice reveal an utterance's emotion; `label_mix` "kemdy20" draws the labels in the real
    KEMDy20's proportions (87 % neutral) instead of the demo's balanced-ish ones. `interaction`: the share of
    utterances told only by their word and voice together; `context_signal`: the share of turns that take the
    emotion of the turn before them (see the module's docstring).
    """
    dataset, out = str(dataset), Path(out)
    if dataset not in FULL_SIZE:
        raise UserError(f"--dataset {dataset!r}: choose 19 or 20")
    if full_size:
        sessions, total = FULL_SIZE[dataset]
    else:
        if sessions < 1 or utterances_per_session < 1:
            raise UserError("--sessions and --utterances_per_session must be at least 1")
        total = sessions * utterances_per_session
    if (out / "annotation").exists():
        raise UserError(f"--out {out}: already holds a corpus (annotation/ exists); choose an empty folder")
    if label_mix not in LABEL_MIXES:
        raise UserError(f"--label_mix {label_mix!r}: choose {' or '.join(LABEL_MIXES)}")
    for name, share in (("interaction", interaction), ("context_signal", context_signal)):
        if not 0 <= share <= 1:
            raise UserError(f"--{name} {share}: a share, from 0 to 1")
    w = _Writer(out, seed, odd_audio, cues, label_mix, interaction, context_signal)
    return (_generate_20 if dataset == "20" else _generate_19)(w, _sizes(sessions, total))


BIO_RATE = {"EDA": 4, "TEMP": 4, "ECG": 16}  # samples per second (the E4's 4 Hz; an ECG written at 16 Hz)
BIO_BASE = {"EDA": 2.0, "TEMP": 33.0, "ECG": 0.0}
BIO_AROUSAL = {"EDA": 0.6, "TEMP": 0.05, "ECG": 0.0}  # a speaker's level rises by this per point of arousal
# The arousal a body shows in a turn: the annotated one plus this much noise (a standard deviation, in points), the
# same for every signal of the turn: what keeps the planted signal weak.
BIO_FELT_NOISE = 0.7
EMPTY_E4_CELLS = 0.06  # KEMDy19: the share of annotation rows whose E4 cells are left empty


@dataclass
class BioTruth:
    """What `write_bio` left out on purpose, for the tests."""

    missing_files: list[str]  # wearer files not written (paths under the corpus root)
    untagged: list[str]  # segment ids whose samples were written without their tag (EDA and TEMP)
    bad_lines: list[str]  # "path line N" of a sample line that is no number
    without_ibi: list[str]  # KEMDy20 segment ids whose wearer's IBI file has no interval in the turn
    empty_cells: int  # KEMDy19 annotation rows whose four E4 cells were emptied
    felt: dict[str, float] = field(default_factory=dict)  # segment id -> the arousal its speaker's signals show


def write_bio(root: str | Path, dataset: str, seed: int = 0) -> BioTruth:
    """The bio-signal files of a corpus `generate` wrote, in the real layout (`common.bio`), with a weak planted
    signal: during a turn, its speaker's EDA (and, a little, their skin temperature) rises with the turn's arousal,
    and their heart beats faster. Every quirk the real files have: KEMDy20's header lines, untagged samples between
    the wearer's turns, a sparse IBI (half the turns have no interval); one wearer's EDA file missing, one turn's
    samples written without their tag, one line that is no number; KEMDy19's headerless files whose tags cover both
    actors' turns, and its annotation files' E4 cells (EDA and TEMP at each segment's start and end), some empty."""
    from common import bio
    from common.kemdy import read_corpus

    root, dataset = Path(root), str(dataset)
    written = [p for signal in bio.SIGNALS[dataset] if (root / signal).is_dir() for p in (root / signal).rglob("*")]
    if written:  # a real corpus, or one given its files already: never written over
        raise UserError(
            f"{root}: already holds bio-signal files ({written[0]}); write them into a new synthetic corpus"
        )
    rows = "speaker" if dataset == "19" else "all"
    utterances = read_corpus(dataset, root, rows=rows).utterances
    rng = np.random.default_rng([seed, 37])
    felt_noise = np.random.default_rng([seed, 38])
    truth = BioTruth(
        [], [], [], [], 0, {u.segment_id: u.arousal + felt_noise.normal(0, BIO_FELT_NOISE) for u in utterances}
    )
    files: dict[Path, list] = {}
    for u in utterances:  # the speaker's file (KEMDy19: the session's turns go in both actors' files)
        path = bio.wearer_file(root, dataset, "EDA", u).relative_to(root / "EDA")
        files.setdefault(path, []).append(u)
    if dataset == "19":
        for path in list(files):
            other = path.with_name(path.name[:-5] + {"F": "M", "M": "F"}[path.name[-5]] + ".csv")
            files[path] = files[other] = sorted({*files[path], *files.get(other, [])}, key=lambda u: u.start or 0)
    untagged = {files[next(iter(files))][0].segment_id}  # the first file's first turn: tags left off
    values: dict[tuple[Path, str], list] = {}
    for n, (path, turns) in enumerate(sorted(files.items())):
        wearer = path.stem[-1] if dataset == "19" else path.stem.rsplit("_", 1)[-1]
        for signal in bio.SIGNALS[dataset]:
            if signal == "EDA" and n == len(files) - 1:  # the last wearer's EDA file is missing
                truth.missing_files.append(f"EDA/{path.as_posix()}")
                continue
            writer = _ibi_lines if signal == "IBI" else _sample_lines
            lines = writer(rng, dataset, signal, turns, wearer, untagged, truth, values, path)
            if signal == "EDA" and n == 0:  # one sample line that is no number
                at = len(lines) // 2
                lines.insert(at, "n/a," + lines[at].split(",", 1)[1])
                truth.bad_lines.append(f"EDA/{path.as_posix()} line {at + 1}")
            (root / signal / path).parent.mkdir(parents=True, exist_ok=True)
            (root / signal / path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    truth.untagged = sorted(untagged)
    if dataset == "19":
        truth.empty_cells = _e4_cells(root, rng, values)
    return truth


def _clock(seconds: float) -> str:
    """A wall-clock stamp as the files write it: 2020-0821-1127-32-250."""
    whole = int(seconds)
    minutes, second = divmod(whole, 60)
    hours, minute = divmod(minutes, 60)
    return f"2020-0821-{11 + hours:02d}{minute:02d}-{second:02d}-{int((seconds - whole) * 1000):03d}"


def _level(signal: str, turn, wearer: str, felt: dict) -> float:
    """The wearer's level during a turn: raised by the arousal the turn's speaker shows where the wearer speaks it."""
    own = turn.speaker.endswith(wearer)
    return BIO_BASE[signal] + (BIO_AROUSAL[signal] * (felt[turn.segment_id] - 3) if own else 0.0)


def _sample_lines(rng, dataset, signal, turns, wearer, untagged, truth, values, path) -> list[str]:
    """EDA, TEMP or ECG lines over the dialogue (KEMDy19: the session), tagged in the tagged turns."""
    rate = BIO_RATE[signal]
    first, last = turns[0].start or 0.0, max((t.start or 0.0) + t.duration for t in turns)
    times = np.arange(max(0.0, first - 2.0), last + 2.0, 1 / rate)
    spans = [((t.start or 0.0), (t.start or 0.0) + t.duration, t) for t in turns]
    lines = [f"1598005652.000000,{_clock(0)}", f"{rate:.6f},hz"] if dataset == "20" else []
    for time in times:
        turn = next((t for begin, end, t in spans if begin <= time < end), None)
        level = _level(signal, turn, wearer, truth.felt) if turn else BIO_BASE[signal]
        value = level + rng.normal(0, 0.05 if signal != "ECG" else 0.3)
        line = f"{value:.6f},{_clock(time)}" if dataset == "20" else f"{value:.6f},{time:.3f},{_clock(time)}"
        tagged = turn is not None and (dataset == "19" or turn.speaker.endswith(wearer))
        if tagged and turn.segment_id not in untagged:
            line += f",{turn.segment_id}"
            values.setdefault((path, signal), []).append((turn.segment_id, value))
        lines.append(line)
    return lines


def _ibi_lines(rng, dataset, signal, turns, wearer, untagged, truth, values, path) -> list[str]:
    """KEMDy20's inter-beat intervals: a beat a little faster with arousal, and only in half the turns."""
    lines = [f"1598005652.000000,IBI,{_clock(0)}"]
    for t in turns:
        if not t.speaker.endswith(wearer):
            continue
        if rng.random() < 0.5:
            truth.without_ibi.append(t.segment_id)
            continue
        interval, time = 0.8 - 0.04 * (truth.felt[t.segment_id] - 3), (t.start or 0.0) + 0.1
        while time < (t.start or 0.0) + t.duration:
            lines.append(f"{time:.6f},{interval + rng.normal(0, 0.01):.6f},{_clock(time)},{t.segment_id}")
            time += interval
    return lines


def _e4_cells(root: Path, rng, values: dict) -> int:
    """KEMDy19's annotation files given their actor's E4 EDA and TEMP value at each segment's start and end
    (columns 5-8), a few rows left empty; the rows emptied."""
    emptied = 0
    for file in sorted((root / "annotation").glob("Session*_res.csv")):
        actor = f"Session{file.name[7:9]}/Original/Sess{file.name[7:9]}{file.name.split('_')[1]}.csv"
        by_id = {signal: {} for signal in ("EDA", "TEMP")}
        for signal in by_id:
            for segment, value in values.get((Path(actor), signal), []):
                by_id[signal].setdefault(segment, []).append(value)
        with file.open(encoding="utf-8", newline="") as f:
            table = list(csv.reader(f))
        for row in table[2:]:
            cells = []
            for signal in ("EDA", "TEMP"):
                found = by_id[signal].get(row[9], [])
                cells += [f"{found[0]:.3f}", f"{found[-1]:.3f}"] if found else ["", ""]
            if rng.random() < EMPTY_E4_CELLS:
                cells, emptied = ["", "", "", ""], emptied + 1
            row[5:9] = cells
        _write_csv(file, table[:2], table[2:], crlf=True)
    return emptied


def _hangul_syllables() -> list[str]:
    """The 2,350 Hangul syllables of KS X 1001 (those EUC-KR encodes): nearly all of everyday Korean text."""
    # Python's euc_kr also writes the other syllables, as 8-byte jamo sequences: keep the 2-byte ones.
    return [chr(c) for c in range(0xAC00, 0xD7A4) if len(chr(c).encode("euc_kr")) == 2]


# Encoder sizes: "tiny" for the demo and the tests, "small" (a few million weights) for the benchmark.
SIZES = {
    "tiny": {
        "text": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
        "speech": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
        "conv_dim": 32,
    },
    "small": {
        "text": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
        "speech": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
        "conv_dim": 128,
    },
    # klue/bert-base and wav2vec2-base-960h's sizes (random weights): for timing what the real ones cost
    "base": {
        "text": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
        "speech": {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "num_conv_pos_embeddings": 128,
            "num_conv_pos_embedding_groups": 16,
        },
        "conv_dim": 512,
    },
}


def write_tiny_models(out: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    """Tiny random-weight BERT (+ Korean WordPiece tokenizer) and wav2vec2 (+ feature extractor) in
    `out/text` and `out/speech`, saved with save_pretrained so they load like hub models.

    The wav2vec2 keeps the real 7-layer convolution stack (total stride 320) and group norm, as
    wav2vec2-base-960h, with narrow layers; the BERT is 2 layers of width 64 (see SIZES).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizerFast,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    out = Path(out)
    rng = np.random.default_rng(seed)
    syllables = _hangul_syllables()
    # Each syllable alone and inside a word, so that both its forms (X and ##X) are in the vocabulary.
    lines = FILLERS + [w for ws in EMOTION_WORDS.values() for w in ws] + MARKERS + syllables
    lines += ["아" + x for x in syllables]
    lines += [_sentence(rng, (str(rng.choice(EMOTIONS)),), True) for _ in range(300)]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # BertNormalizer's defaults strip accents, which splits Hangul syllables into jamo.
    tok.normalizer = normalizers.BertNormalizer(strip_accents=False, lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        lines, trainers.WordPieceTrainer(vocab_size=8000, special_tokens=specials, show_progress=False)
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    tokenizer = BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=False,
        strip_accents=False,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(seed)
    bert = BertModel(
        BertConfig(
            vocab_size=tok.get_vocab_size(),
            max_position_embeddings=512,
            **SIZES[size]["text"],
        )
    )
    with torch.no_grad():  # a pooler that passes [CLS] through, as a trained one does, instead of a near-zero map
        bert.pooler.dense.weight.copy_(torch.eye(bert.config.hidden_size))
        bert.pooler.dense.bias.zero_()
    bert.save_pretrained(out / "text")
    tokenizer.save_pretrained(out / "text")
    wav2vec2 = Wav2Vec2Model(
        Wav2Vec2Config(
            **{"num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4, **SIZES[size]["speech"]},
            conv_dim=(SIZES[size]["conv_dim"],) * 7,
            conv_kernel=(10, 3, 3, 3, 3, 2, 2),
            conv_stride=(5, 2, 2, 2, 2, 2, 2),
            feat_extract_norm="group",
            mask_time_prob=0.05,
            layerdrop=0.1,
        )
    )
    wav2vec2.save_pretrained(out / "speech")
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(out / "speech")
    return out


TEXT_FAMILIES = ("bert", "roberta", "xlm-roberta", "electra", "deberta-v2", "distilbert", "modernbert", "qwen2")


def write_tiny_text_family(out: str | Path, family: str, tiny_models: str | Path, seed: int = 0) -> Path:
    """A tiny random text encoder of another family (TEXT_FAMILIES), of the tiny BERT's size, with that BERT's
    Korean tokenizer (from `tiny_models`/text), saved in `out` as a hub model would be. The decoder-only one
    (Qwen2) has a tokenizer that pads on the left, as such models' tokenizers do."""
    import torch
    import transformers as hf
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(tiny_models) / "text")
    size = SIZES["tiny"]["text"]
    common = {**size, "vocab_size": len(tokenizer), "max_position_embeddings": 512, "pad_token_id": 0}
    configs = {
        "bert": lambda: hf.BertConfig(**common),
        "roberta": lambda: hf.RobertaConfig(**common | {"max_position_embeddings": 514}),
        "xlm-roberta": lambda: hf.XLMRobertaConfig(**common | {"max_position_embeddings": 514}),
        "electra": lambda: hf.ElectraConfig(**common, embedding_size=size["hidden_size"]),
        "deberta-v2": lambda: hf.DebertaV2Config(**common),
        "distilbert": lambda: hf.DistilBertConfig(
            dim=size["hidden_size"],
            n_layers=size["num_hidden_layers"],
            n_heads=size["num_attention_heads"],
            hidden_dim=size["intermediate_size"],
            vocab_size=len(tokenizer),
            pad_token_id=0,
        ),
        "modernbert": lambda: hf.ModernBertConfig(
            **common,
            global_attn_every_n_layers=1,
            bos_token_id=None,
            eos_token_id=None,
            cls_token_id=None,
            sep_token_id=None,
        ),
        "qwen2": lambda: hf.Qwen2Config(**common, num_key_value_heads=size["num_attention_heads"]),
    }
    if family not in configs:
        raise UserError(f"{family!r}: not one of the tiny text families ({', '.join(configs)})")
    tokenizer.pad_token = "[PAD]"  # id 0, as the configs say
    if family == "qwen2":
        tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "left"  # saved with it
    torch.manual_seed(seed)
    out = Path(out)
    AutoModel.from_config(configs[family]()).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


SPEECH_FAMILIES = ("wav2vec2", "xls-r", "hubert", "wavlm", "data2vec-audio", "wav2vec2-conformer", "whisper")


def write_tiny_speech_family(out: str | Path, family: str, seed: int = 0) -> Path:
    """A tiny random speech encoder of a family (SPEECH_FAMILIES), with the real convolution stack (stride 320)
    at the tiny wav2vec2's widths, and the feature extractor such checkpoints ship: an attention mask from
    the layer-norm families' (XLS-R, WavLM, Data2Vec-audio, the conformer), none from the group-norm ones.
    Whisper's is a whole WhisperModel (encoder and decoder) with its 30-s window and log-mel extractor."""
    import torch
    import transformers as hf
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    out, size = Path(out), SIZES["tiny"]["speech"]
    if family == "whisper":
        config = hf.WhisperConfig(
            d_model=size["hidden_size"],
            encoder_layers=size["num_hidden_layers"],
            encoder_attention_heads=size["num_attention_heads"],
            encoder_ffn_dim=size["intermediate_size"],
            decoder_layers=1,
            decoder_attention_heads=size["num_attention_heads"],
            decoder_ffn_dim=size["intermediate_size"],
            vocab_size=64,
            max_target_positions=32,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        )
        torch.manual_seed(seed)
        hf.WhisperModel(config).save_pretrained(out)
        hf.WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out)
        return out
    conv = {
        "conv_dim": (SIZES["tiny"]["conv_dim"],) * 7,
        "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
        "conv_stride": (5, 2, 2, 2, 2, 2, 2),
        "num_conv_pos_embedding_groups": 4,
        "mask_time_prob": 0.05,
    }
    layer_norm = {"feat_extract_norm": "layer", "do_stable_layer_norm": True}
    families = {  # (config, whether its extractor returns an attention mask)
        "wav2vec2": (lambda: hf.Wav2Vec2Config(**size, **conv, num_conv_pos_embeddings=16), False),
        "xls-r": (lambda: hf.Wav2Vec2Config(**size, **conv, **layer_norm, num_conv_pos_embeddings=16), True),
        "hubert": (lambda: hf.HubertConfig(**size, **conv, num_conv_pos_embeddings=16), False),
        "wavlm": (lambda: hf.WavLMConfig(**size, **conv, num_conv_pos_embeddings=16, num_buckets=32), True),
        "data2vec-audio": (lambda: hf.Data2VecAudioConfig(**size, **conv, num_conv_pos_embeddings=3), True),
        "wav2vec2-conformer": (
            lambda: hf.Wav2Vec2ConformerConfig(
                **size, **conv, **layer_norm, num_conv_pos_embeddings=16, conv_depthwise_kernel_size=3
            ),
            True,
        ),
    }
    if family not in families:
        raise UserError(f"{family!r}: not one of the tiny speech families ({', '.join(families)})")
    config, mask = families[family]
    torch.manual_seed(seed)
    AutoModel.from_config(config()).save_pretrained(out)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=mask
    ).save_pretrained(out)
    return out


def write_tiny_asr(out: str | Path, seed: int = 0) -> Path:
    """A tiny random Whisper speech-to-text model (`common.robustness --asr_model`): a byte-level BPE of the demo's
    words with Whisper's special tokens after it (as in Whisper's own vocabulary, where the timestamps come last),
    a one-layer encoder and decoder, and a generation config that never ends a transcript early, so that every
    clip gets text (random text: the weights are random)."""
    import torch
    import transformers as hf
    from tokenizers import ByteLevelBPETokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        FILLERS + [w for ws in EMOTION_WORDS.values() for w in ws], vocab_size=300, show_progress=False
    )
    bpe.save_model(str(out))
    end = "<|endoftext|>"
    tokenizer = hf.WhisperTokenizer(
        str(out / "vocab.json"), str(out / "merges.txt"), unk_token=end, bos_token=end, eos_token=end, pad_token=end
    )
    specials = ["<|startoftranscript|>", "<|ko|>", "<|transcribe|>", "<|translate|>", "<|notimestamps|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in [end, *specials]}
    config = hf.WhisperConfig(
        d_model=32,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        vocab_size=len(tokenizer),
        max_target_positions=48,
        pad_token_id=ids[end],
        bos_token_id=ids[end],
        eos_token_id=ids[end],
        decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    torch.manual_seed(seed)
    model = hf.WhisperForConditionalGeneration(config)
    generation = model.generation_config
    generation.decoder_start_token_id = config.decoder_start_token_id
    generation.no_timestamps_token_id = ids["<|notimestamps|>"]
    generation.is_multilingual, generation.forced_decoder_ids, generation.max_length = False, None, 16
    generation.suppress_tokens = generation.begin_suppress_tokens = sorted(ids.values())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    hf.WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out)
    return out


# Versioned, so that a change to the generator or the tiny encoders never meets an older demo build.
DEMO_VERSION = 4
DEMO_DIR = Path(__file__).resolve().parents[1] / "demo" / f"v{DEMO_VERSION}"


def demo_corpus(dataset: str, demo_dir: Path = DEMO_DIR) -> Path:
    """The built-in demo corpus of a dataset's layout, built on first use under demo/."""
    per_session = 160 if str(dataset) == "20" else 80  # recordings; KEMDy19 annotates each twice

    def write(tmp: Path) -> None:
        generate(dataset, tmp, 5, per_session)
        write_bio(tmp, dataset)

    return build_folder(Path(demo_dir) / f"KEMDy{dataset}", write)


def demo_models(demo_dir: Path = DEMO_DIR) -> Path:
    """The built-in tiny encoders (demo_dir/tiny_models/{text,speech}), built on first use."""
    return build_folder(Path(demo_dir) / "tiny_models", write_tiny_models)


def main(argv: list[str] | None = None) -> None:
    from common.cli import HelpFormatter

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter, prog="python -m common.synthetic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dataset", choices=("19", "20"), default="20", help="which layout to write")
    parser.add_argument("--out", help="folder to create the corpus in")
    parser.add_argument(
        "--tiny_models",
        metavar="DIR",
        help="write tiny random encoders to DIR/text and DIR/speech (instead of, or besides, a corpus)",
    )
    parser.add_argument(
        "--family",
        choices=TEXT_FAMILIES + SPEECH_FAMILIES,
        help="with --tiny_models DIR: write a tiny encoder of this family to DIR/<family> instead (a text family "
        "takes the tiny tokenizer of DIR/text, written first if missing)",
    )
    parser.add_argument("--sessions", type=int, default=4, help="number of sessions")
    parser.add_argument(
        "--utterances_per_session", type=int, default=60, help="recordings per session (KEMDy19 annotates each twice)"
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, same corpus")
    parser.add_argument("--odd_audio", action="store_true", help="also write 44.1/48 kHz and stereo files")
    parser.add_argument(
        "--label_mix",
        choices=tuple(LABEL_MIXES),
        default="demo",
        help="emotion proportions: the demo's, or the real KEMDy20's (87 %% neutral, 0.5 %% fear)",
    )
    parser.add_argument(
        "--interaction",
        type=float,
        default=0.0,
        help="share of utterances told only by a word and a voice together, as sarcasm is (see above)",
    )
    parser.add_argument(
        "--context_signal",
        type=float,
        default=0.0,
        help="share of turns that take the emotion of the turn before them, their own words telling nothing (see "
        "above)",
    )
    parser.add_argument(
        "--bio",
        action="store_true",
        help="also write the bio-signal files (EDA, TEMP and IBI or ECG) in the real layout, EDA rising with arousal",
    )
    parser.add_argument(
        "--full_size",
        action="store_true",
        help="the real corpus size (KEMDy20: 13,462 utterances; KEMDy19: 20,566 rows)",
    )
    args = parser.parse_args(argv)
    if not (args.out or args.tiny_models):
        parser.error("give --out DIR (a corpus), --tiny_models DIR (encoders), or both")
    if args.tiny_models and args.family:
        folder = Path(args.tiny_models) / args.family
        if args.family in SPEECH_FAMILIES:
            build_folder(folder, lambda tmp: write_tiny_speech_family(tmp, args.family, args.seed))
        else:
            if not (Path(args.tiny_models) / "text").is_dir():
                write_tiny_models(args.tiny_models, seed=args.seed)
            build_folder(folder, lambda tmp: write_tiny_text_family(tmp, args.family, args.tiny_models, args.seed))
        print(f"wrote a tiny {args.family} encoder to {folder}")
    elif args.tiny_models:
        write_tiny_models(args.tiny_models, seed=args.seed)
        print(f"wrote tiny encoders to {args.tiny_models}/text and {args.tiny_models}/speech")
    if not args.out:
        return
    recordings = generate(
        args.dataset,
        args.out,
        args.sessions,
        args.utterances_per_session,
        args.seed,
        odd_audio=args.odd_audio,
        full_size=args.full_size,
        label_mix=args.label_mix,
        interaction=args.interaction,
        context_signal=args.context_signal,
    )
    if args.bio:
        write_bio(args.out, args.dataset, args.seed)
    what = f"a synthetic KEMDy{args.dataset} corpus of {len(recordings)} recordings"
    print(f"wrote {what}{' with bio-signals' if args.bio else ''} to {os.fspath(args.out)}")


if __name__ == "__main__":
    run_cli(main)
