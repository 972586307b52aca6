"""The audit of a KEMDy folder: what the readers use and skip, labels, scores, audio and fold sizes.

python -m common.audit --dataset 20 --dataset_dir /data/KEMDy20 [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter

from common import bio, dialogue, raters
from common.errors import UserError, run_cli
from common.folds import SPLITS, fold_sizes
from common.grid import EMOTIONS
from common.kemdy import Corpus, all_seven_in_original, read_corpus


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.pstdev(values), 4),
        "min": min(values),
        "median": round(statistics.median(values), 4),
        "max": max(values),
    }


def summarize(corpus: Corpus, max_seconds: float = 5.0, short_seconds: float = 0.25) -> dict:
    """Everything the audit reports, as plain JSON-ready data."""
    utts = corpus.utterances
    n_labels = Counter(sum(u.labels) for u in utts)
    recordings = {u.wav: u for u in utts}.values()  # KEMDy19 lists each recording twice
    durations = [u.duration for u in recordings]
    # Rows the original used with all seven emotions: used here, or excluded here only for their label.
    seven = [(u.segment_id, u.annotation, u.line, u.emotion) for u in utts if all_seven_in_original(u.emotion)]
    seven += [
        (e.segment_id, e.annotation, e.line, e.detail.split("Emotion cell ", 1)[-1][1:-1])
        for e in corpus.excluded
        if e.reason == "unknown_emotion"
    ]
    return {
        "dataset": f"KEMDy{corpus.dataset}",
        "root": str(corpus.root),
        "annotation_files": corpus.annotation_files,
        "rows": corpus.rows,
        "used": len(utts),
        "labels": corpus.labels,
        "excluded": [
            {
                "segment_id": e.segment_id,
                "reason": e.reason,
                "annotation": e.annotation,
                "line": e.line,
                "detail": e.detail,
            }
            for e in corpus.excluded
        ],
        "exclusion_counts": dict(Counter(e.reason for e in corpus.excluded).most_common()),
        "other_actor_rows": corpus.other_actor_rows,
        "label_counts": {name: sum(u.labels[i] for u in utts) for i, name in enumerate(EMOTIONS)},
        "single_label": n_labels.get(1, 0),
        "multi_label": sum(n for k, n in n_labels.items() if k > 1),
        "labels_per_utterance": {str(k): n for k, n in sorted(n_labels.items())},
        "duplicate_rows": [
            {"segment_id": d.segment_id, "annotation": d.annotation, "line": d.line} for d in corpus.duplicates
        ],
        "original_all_seven": {
            "rows": len(seven),
            "cells": dict(Counter(cell for *_, cell in seven).most_common()),
            "segment_ids": [sid for sid, *_ in sorted(seven, key=lambda r: (r[1], r[2]))],
        },
        "valence": _stats([u.valence for u in utts]),
        "arousal": _stats([u.arousal for u in utts]),
        "sessions": len({u.session for u in utts}),
        "speakers": len({u.speaker for u in utts}),
        "audio": {
            "recordings": len(durations),
            "seconds": _stats(durations),
            "total_hours": round(sum(durations) / 3600, 3),
            f"longer_than_{max_seconds:g}s": sum(d > max_seconds for d in durations),
            f"shorter_than_{short_seconds:g}s": sum(d < short_seconds for d in durations),
            "sample_rates": {str(k): n for k, n in sorted(Counter(u.sample_rate for u in recordings).items())},
            "channels": {str(k): n for k, n in sorted(Counter(u.channels for u in recordings).items())},
            "beyond_full_scale": sum(u.level > 1 for u in recordings),  # float files, kept at their level
        },
        "transcripts": {
            "encodings": dict(sorted(corpus.transcript_encodings.items())),
            "empty": sum(not u.text for u in utts),
            "blank_first_line": len(corpus.blank_first_line),
        },
        "folds": _fold_sizes([u.session for u in utts]),
        "raters": raters.summary(corpus),
        "dialogues": dialogue.summary(utts),
        "bio": bio.summary(corpus.root, corpus.dataset, utts),
    }


def _fold_sizes(sessions: list[str]) -> dict[str, list[dict]]:
    """Fold sizes under each split the corpus is large enough for."""
    out = {}
    for split in SPLITS:
        try:
            out[split] = fold_sizes(sessions, split)
        except UserError:  # too few utterances or sessions: the audit still reports the rest
            pass
    return out


def format_summary(s: dict) -> str:
    files = s["annotation_files"]
    out = [
        f"{s['dataset']} at {s['root']}",
        f"annotation files: {len(files)} ({files[0]} .. {files[-1]})",
        f"rows: {s['rows']}   used: {s['used']}   excluded: {len(s['excluded'])}"
        + (f"   other actor's rows dropped: {s['other_actor_rows']}" if s["other_actor_rows"] else ""),
        f"sessions: {s['sessions']}   speakers: {s['speakers']}   Emotion cells read: {s['labels']}",
    ]
    if s["excluded"]:
        out.append("exclusions by reason:")
        for reason, n in s["exclusion_counts"].items():
            ids = [e["segment_id"] for e in s["excluded"] if e["reason"] == reason]
            shown = ", ".join(ids[:20]) + (f", ... ({len(ids) - 20} more)" if len(ids) > 20 else "")
            out.append(f"  {reason:<28}{n:>6}  {shown}")
    used = s["used"]
    out.append("utterances carrying each label:")
    for name, n in s["label_counts"].items():
        out.append(f"  {name:<10}{n:>7}  {100 * n / used:5.1f} %")
    out.append(
        f"single-label: {s['single_label']}   multi-label: {s['multi_label']}   "
        f"(labels per utterance: {s['labels_per_utterance']})"
    )
    if s["duplicate_rows"]:
        shown = ", ".join(f"{d['segment_id']} ({d['annotation']}:{d['line']})" for d in s["duplicate_rows"][:10])
        out.append(f"rows repeating a segment id of their file (all used, as the original): {shown}")
    seven = s["original_all_seven"]
    ids = seven["segment_ids"]
    out.append(
        f"rows the original's label dictionary turns into all seven emotions: {seven['rows']}"
        + (f"  cells {seven['cells']}" if ids else "")
        + (f"  ({', '.join(ids[:10])}{', ...' if len(ids) > 10 else ''})" if ids else "")
    )
    for key in ("valence", "arousal"):
        v = s[key]
        out.append(f"{key:<8} mean {v['mean']:.3f}  std {v['std']:.3f}  range {v['min']:g} .. {v['max']:g}")
    a = s["audio"]
    sec = a["seconds"]
    longer, shorter = (k for k in a if k.startswith(("longer", "shorter")))
    out.append(
        f"audio: {a['recordings']} recordings, {a['total_hours']} h; seconds min {sec['min']:.2f}  "
        f"median {sec['median']:.2f}  mean {sec['mean']:.2f}  max {sec['max']:.2f}; "
        f"{longer.replace('_', ' ')}: {a[longer]}; {shorter.replace('_', ' ')}: {a[shorter]}"
    )
    out.append(f"       sample rates {a['sample_rates']}  channels {a['channels']}")
    if a["beyond_full_scale"]:
        out.append(f"       float recordings beyond ±1 (kept unclipped, at their level): {a['beyond_full_scale']}")
    t = s["transcripts"]
    out.append(
        f"transcripts: encodings {t['encodings']}  empty {t['empty']}  first line blank {t['blank_first_line']} "
        "(the first line is the utterance, as the original read it)"
    )
    out += _raters_lines(s["raters"], used)
    out.append(_dialogue_line(s["dialogues"]))
    out += _bio_lines(s["bio"], used)
    out.append("folds (utterances train / valid / test, with --valid_ratio 0.1):")
    for split, rows in s["folds"].items():
        for r in rows:
            held = r.get("test_sessions")
            out.append(
                f"  --split {split:<10} --num_fold {r['fold']}: {r['train']:>6} / {r['valid']:>5} / {r['test']:>5}"
                + (f"   test sessions {' .. '.join(dict.fromkeys([held[0], held[-1]]))}" if held else "")
            )
    return "\n".join(out)


def _dialogue_line(d: dict) -> str:
    """The dialogues: how many, their turns (a recording listed twice is one turn), and any kept in file order."""
    turns = d["turns_per_dialogue"]
    line = f"dialogues: {d['dialogues']}   turns: {d['turns']}"
    line += f" (per dialogue: min {turns['min']}, median {turns['median']}, max {turns['max']})" if turns else ""
    line += f"   utterances of no dialogue: {d['without_dialogue']}" if d["without_dialogue"] else ""
    undated = d["kept_in_corpus_order"]
    return line + (f"   in file order for lack of a start time: {', '.join(undated)}" if undated else "")


def _bio_lines(b: dict, used: int) -> list[str]:
    """Each bio-signal: the utterances with the speaker's own samples, how many, and why the others have none."""
    if not b["signals"]:
        return ["bio-signals: none (no EDA, TEMP, IBI or ECG folder)"]
    out = [f"bio-signals ({b['files_read']} files read; an utterance's samples: its speaker's, tagged with its id):"]
    for signal in b["signals"]:
        d = b[signal]
        n = d["samples_per_utterance"]
        line = f"  {signal:<5} utterances {d['utterances']:>6} of {used}"
        line += f"; samples per utterance min {n['min']}, median {n['median']:g}, max {n['max']}" if n else ""
        line += "".join(f"; {reason} {count}" for reason, count in d["missing"].items())
        out.append(line + (f"; lines skipped {d['skipped_lines']}" if d["skipped_lines"] else ""))
        out += [f"        {problem}" for problem in d["problems"]]
    if "annotation_cells_empty" in b:
        empty = b["annotation_cells_empty"]
        out.append(f"  annotation rows with an empty E4 cell (start or end): EDA {empty['EDA']}, TEMP {empty['TEMP']}")
    return out


def _raters_lines(r: dict, used: int) -> list[str]:
    out = ["evaluators (read by position; names as each file's header writes them):"]
    out += [f"  {' '.join(n['evaluators'])}  ({n['files']} files)" for n in r["names"]]
    high = next(k for k in r if k.startswith("at_least_"))
    out.append(
        f"  utterances with all ten ratings read: {r['complete']} of {used}; rater cells missing "
        f"{r['cells_missing']}, unreadable {r['cells_unreadable']}"
    )
    if r["not_fully_read"]:
        shown = r["not_fully_read"][:20]
        more = len(r["not_fully_read"]) - len(shown)
        out.append(f"  not fully read: {'; '.join(shown)}" + (f"; ... ({more} more)" if more else ""))
    out.append(
        f"  {high.replace('_', ' ')} on one emotion: {r[high]} of {r['complete']} "
        f"(evaluators choosing the most chosen emotion: {r['votes_for_the_top_emotion']})"
    )
    out.append(
        "  total evaluation differs from its evaluators: emotion not their plurality "
        f"{r['emotion_not_their_plurality']}, valence/arousal not their mean (by more than 0.05) "
        f"{r['scores_not_their_mean']}"
    )
    return out


def main(argv: list[str] | None = None) -> None:
    from common.cli import CORPUS_FLAGS, HelpFormatter, add_flag, corpus_root

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="python -m common.audit",
        description="Audit a KEMDy19/KEMDy20 folder: what the readers use and skip.",
    )
    corpus_flags = parser.add_argument_group("data")
    for name in CORPUS_FLAGS:
        add_flag(corpus_flags.add_argument, name)
    parser.add_argument("--demo", action="store_true", help="audit the built-in synthetic demo corpus instead")
    parser.add_argument("--json", action="store_true", help="print the audit as JSON")
    args = parser.parse_args(argv)
    if args.demo:
        from common.synthetic import demo_corpus

        args.dataset_dir = str(demo_corpus(args.dataset))
    root = corpus_root("--dataset_dir", args.dataset_dir, args.dataset, ", or use --demo")
    corpus = read_corpus(args.dataset, root, rows=args.kemdy19_rows, labels=args.labels, duplicates=args.duplicate_rows)
    summary = summarize(corpus)
    print(json.dumps(summary, ensure_ascii=False, indent=1) if args.json else format_summary(summary))


if __name__ == "__main__":
    run_cli(main)
