"""Batch prediction: many utterances streamed through a trained run into one CSV, a batch at a time, resumable.

    python -m common.predict --run_dir DIR --csv utterances.csv --out predictions.csv
    python -m common.predict --run_dir DIR --wav_dir clips/ --out predictions.csv  # transcript: a .txt beside a wav

A run that reads bio-signals takes each utterance's samples file from a `bio` column, or from the .bio.csv beside
a wav.

Only one batch's inputs are in memory at once (memory stays flat however many utterances: measured in the
benchmark). Each output row holds the input's own columns, then the run directory, the emotion probabilities, the
labels at the run's threshold, the most probable emotion, valence and arousal, and `error`: an utterance that cannot
be read (no such file, undecodable audio, a transcript the tokenizer gives no token) gets its reason there and
empty outputs, and the batch goes on. A file of an earlier command on the same run and the same inputs is continued
where it stopped (its complete rows kept, a half-written last line dropped); any other existing file is refused.
"""

from __future__ import annotations

import csv
import ctypes
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common import atomic
from common.errors import UserError
from common.grid import DIMENSIONS, EMOTIONS
from common.progress import Progress

RUN_COLUMN = "run_dir"
TRIM_EVERY = 1  # batches between two returns of freed memory (every 16: the peak grew by half over 10,000 clips)


@dataclass(frozen=True)
class Utterance:
    """One input row: its own columns (copied to the output), and what the model reads."""

    columns: dict
    wav: str | None
    text: str | None
    turns: list[str]
    bio: str | None = None  # its bio-signal samples file (`common.bio.read_samples`)
    context_wavs: tuple = ()  # the turns before's recordings, oldest first (--context_speech)


def from_csv(path: Path) -> tuple[list[str], Iterator[Utterance], int]:
    """(the CSV's columns, its rows as utterances, read one at a time, how many) of a batch file: a wav column
    (paths relative to the file) and/or a text column, a context column optional (the turns before, one a line)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            count = sum(1 for _ in reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"--csv {path}: cannot read it ({err})") from None
    if not set(columns) & {"wav", "text", "bio"} or not count:
        raise UserError(f"--csv {path}: needs a header with a wav, a text and/or a bio column, and at least one row")

    def rows() -> Iterator[Utterance]:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for row in csv.DictReader(f):
                wav = str(path.parent / row["wav"]) if row.get("wav") else ("" if "wav" in row else None)
                text = row.get("text") or ("" if "text" in row else None)
                bio = str(path.parent / row["bio"]) if row.get("bio") else None
                before = tuple(str(path.parent / w) for w in (row.get("context_wav") or "").splitlines() if w.strip())
                yield Utterance(row, wav, text, (row.get("context") or "").splitlines(), bio, before)

    return columns, rows(), count


def from_folder(folder: Path) -> tuple[list[str], Iterator[Utterance], int]:
    """Every .wav under `folder` (sorted, subfolders included), with the transcript of the .txt of the same name
    beside it where there is one (its first line, UTF-8 or cp949 as KEMDy's)."""
    if not folder.is_dir():
        raise UserError(f"--wav_dir {folder}: no such folder")
    wavs = sorted(folder.rglob("*.wav"))
    if not wavs:
        raise UserError(f"--wav_dir {folder}: holds no .wav file")

    def rows() -> Iterator[Utterance]:
        for wav in wavs:
            text, bio = _transcript(wav.with_suffix(".txt")), wav.with_suffix(".bio.csv")
            yield Utterance(
                {"wav": str(wav.relative_to(folder))}, str(wav), text, [], str(bio) if bio.is_file() else None
            )

    return ["wav"], rows(), len(wavs)


def _transcript(path: Path) -> str | None:
    if not path.is_file():
        return None
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    for encoding in ("utf-8", "cp949"):
        try:
            return raw.decode(encoding).splitlines()[0].strip() if raw.strip() else ""
        except UnicodeDecodeError:
            continue
    return None


def header(columns: list[str], predictor) -> list[str]:
    """The output file's columns: the input's, the run, the outputs the cell has, and `error`."""
    out = [*columns, RUN_COLUMN]
    if predictor.model.emotion_head is not None:
        out += [f"prob_{e}" for e in EMOTIONS] + ["labels", "top1"]
    if predictor.model.va_head is not None:
        out += list(DIMENSIONS)
    return [*out, "error"]


def flat(result: dict) -> dict:
    """A structured answer (`Predictor.result`) as the output file's cells."""
    cells = {f"prob_{e}": f"{p:.6f}" for e, p in result.get("probabilities", {}).items()}
    if "labels" in result:
        cells |= {"labels": ";".join(result["labels"]), "top1": result["top1"]}
    cells |= {d: f"{result[d]:.6f}" for d in DIMENSIONS if d in result}
    return cells | {"error": result.get("error", "")}


def _done(out: Path, head: list[str], run: str) -> list[list[str]]:
    """The complete rows an earlier command wrote to `out` for this run (none: a new file), the file cut after the
    last of them (a row half written when it stopped goes). Any other file there is refused."""
    if not out.exists():
        return []
    text = out.read_bytes().decode("utf-8", errors="replace")
    rows = list(csv.reader(io.StringIO(text)))
    complete = []
    for row in rows[1:]:
        if len(row) != len(head) or not text.endswith("\n") and row is rows[-1]:
            break
        complete.append(row)
    if not rows or rows[0] != head or any(row[head.index(RUN_COLUMN)] != run for row in complete):
        raise UserError(f"--out {out}: exists and is not this run's predictions; give a new file (or remove it)")
    if len(complete) != len(rows) - 1 or not text.endswith("\n"):
        f = io.StringIO(newline="")
        csv.writer(f).writerows(rows[: 1 + len(complete)])
        atomic.write_text(out, f.getvalue())
    return complete


def run(  # noqa: PLR0913 (the command's options)
    predictor,
    columns: list[str],
    rows: Iterator[Utterance],
    count: int,
    out: Path | None,
    batch_size: int,
    run_dir: str,
    show: bool = True,
    emit=print,
) -> int:
    """Stream `rows` through `predictor`, `batch_size` at a time, into the CSV `out` (or as JSON lines to `emit`);
    returns how many rows it predicted (a continued file's earlier rows are checked against the inputs and kept)."""
    import json

    head = header(columns, predictor)
    earlier = _done(out, head, run_dir) if out is not None else []
    f = None
    if out is not None:
        f = open(out, "a", encoding="utf-8", newline="")  # noqa: SIM115 (closed after the last batch)
        if not earlier and f.tell() == 0:
            csv.writer(f).writerow(head)
    done = 0
    try:
        batches = _batches(rows, batch_size, earlier, columns, out)
        total = -(-(count - len(earlier)) // batch_size)
        for batch in Progress(batches, "predicting", total=total, show=show):
            for utt, result in zip(batch, _predict(predictor, batch), strict=True):
                if f is None:
                    emit(json.dumps(utt.columns | result, ensure_ascii=False))
                else:
                    record = utt.columns | {RUN_COLUMN: run_dir} | flat(result)
                    csv.writer(f).writerow([record.get(c, "") for c in head])
            if f is not None:  # a batch on disk before the next starts: a stopped command loses at most one
                f.flush()
                os.fsync(f.fileno())
            done += len(batch)
            batches_done = -(-done // batch_size)
            if batches_done % TRIM_EVERY == 0:
                _give_back_freed_memory()
    finally:
        if f is not None:
            f.close()
    return done


def _give_back_freed_memory() -> None:
    """Return the memory a batch freed to the system (glibc's malloc_trim). Batches of clips of every length leave
    glibc's arenas fragmented: without it, 10,000 clips took the peak from 0.96 to 2.05 GiB (with it: flat,
    tools.bench --batch_predict)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # another C library (musl): nothing to trim
            pass


def _batches(rows: Iterator[Utterance], size: int, earlier: list, columns: list[str], out) -> Iterator[list]:
    """Batches of the rows after those an earlier command wrote (which must be the same inputs)."""
    batch = []
    for k, row in enumerate(rows):
        if k < len(earlier):
            if [row.columns.get(c) or "" for c in columns] != earlier[k][: len(columns)]:
                raise UserError(f"--out {out}: row {k + 1} was written for other inputs; give a new file")
            continue
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _predict(predictor, batch: list[Utterance]) -> list[dict]:
    """Each utterance's answer, or its `error`: those that can be read are predicted together."""
    results: list[dict] = [{} for _ in batch]
    readable = []
    for k, utt in enumerate(batch):
        try:
            wavs = [utt.wav] if predictor.uses_speech else None
            texts = [utt.text] if predictor.uses_text and utt.text is not None else None
            bios = [utt.bio] if predictor.signals else None
            turns, before = [utt.turns] if utt.turns else None, [list(utt.context_wavs)]
            readable.append((k, predictor.items(wavs, texts, turns, bios, before)[0]))
        except UserError as err:
            results[k] = {"error": str(err)}
    if readable:
        items = [dict(item, index=n) for n, (_, item) in enumerate(readable)]
        probs, va = predictor.outputs(items, len(items))
        for n, (k, _) in enumerate(readable):
            results[k] = predictor.result(probs[n] if probs is not None else None, va[n] if va is not None else None)
    return results
