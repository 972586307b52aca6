"""The dialogues KEMDy's utterances are turns of: each one's dialogue, and the turns that came before it.

KEMDy records scripted and improvised dialogues between two speakers: KEMDy20's `Sess01_script01` between the
session's two users, KEMDy19's `Sess01_impro01` between its two actors. A dialogue's turns are ordered by their
start time in the annotation file (the Wav start cell), and a recording is one turn: KEMDy19 lists each
recording twice (in its speaker's file and its listener's), and both rows have the same turns before them. A
dialogue in which some turn has no readable start time keeps the corpus's order and is counted.

With `--context K` an utterance is read with the K turns before it (`context_texts`): both speakers' words, oldest
first, each turn marked `A:` where its speaker is the utterance's own and `B:` where it is the other, so that a
model can tell a reply from a continuation. Only transcripts enter, never a later turn and never a label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_DIALOGUE = re.compile(r"^(Sess\d+_(?:script|impro)\d+)_", re.I)
SAME, OTHER = "A", "B"  # a context turn's mark: the utterance's own speaker, or the other one


def dialogue_of(segment_id: str) -> str | None:
    """The dialogue a segment id is a turn of (`Sess01_script01_User002M_001` -> `Sess01_script01`), if any."""
    found = _DIALOGUE.match(segment_id)
    return found.group(1) if found else None


def speaker_of(segment_id: str) -> str | None:
    """Who speaks a turn: KEMDy20's user (`Sess01_script01_User002M_001` -> `User002M`), KEMDy19's actor
    (`Sess01_impro01_F001` -> `F`); None for an id of no dialogue."""
    name = dialogue_of(segment_id)
    if name is None:
        return None
    return re.sub(r"\d+$", "", segment_id[len(name) + 1 :].split("_")[0]) or None


@dataclass(frozen=True)
class Dialogues:
    turns: dict[str, list[int]]  # each dialogue's turns in order: the index of the first row of each recording
    place: list[int | None]  # each utterance's place among its dialogue's turns (None: an id of no dialogue)
    undated: list[str]  # dialogues kept in the corpus's order, some turn having no start time

    def before(self, k: int, count: int, utterances: Sequence) -> list[int]:
        """The `count` turns before utterance k's in its dialogue, oldest first; never a later turn, never its own."""
        place = self.place[k]
        if place is None or count <= 0:
            return []
        turns = self.turns[dialogue_of(utterances[k].segment_id)]
        return turns[max(0, place - count) : place]


def dialogues(utterances: Sequence) -> Dialogues:
    """The dialogues of a corpus's utterances (anything with `segment_id` and `start`)."""
    first: dict[str, int] = {}  # a recording's first row
    by_dialogue: dict[str, list[int]] = {}
    for k, u in enumerate(utterances):
        name = dialogue_of(u.segment_id)
        if name is not None and u.segment_id not in first:
            first[u.segment_id] = k
            by_dialogue.setdefault(name, []).append(k)
    turns, undated = {}, []
    for name, rows in by_dialogue.items():
        if any(utterances[k].start is None for k in rows):
            turns[name] = rows
            undated.append(name)
        else:
            turns[name] = sorted(rows, key=lambda k: (utterances[k].start, k))
    place_of = {utterances[k].segment_id: i for rows in turns.values() for i, k in enumerate(rows)}
    return Dialogues(turns, [place_of.get(u.segment_id) for u in utterances], undated)


def context_text(turns: Sequence[tuple[bool, str]]) -> str:
    """The context segment of a text pair: each (same speaker?, transcript) turn marked, oldest first."""
    return " ".join(f"{SAME if same else OTHER}: {text}" for same, text in turns)


def context_texts(utterances: Sequence, count: int) -> list[str]:
    """Each utterance's context segment: the `count` turns before it in its dialogue (`Dialogues.before`), marked
    by speaker; the empty string for a first turn or an id of no dialogue."""
    found = dialogues(utterances)
    out = []
    for k, u in enumerate(utterances):
        speaker = speaker_of(u.segment_id)
        turns = found.before(k, count, utterances)
        out.append(context_text([(speaker_of(utterances[j].segment_id) == speaker, utterances[j].text) for j in turns]))
    return out


def turns_before(utterances: Sequence, count: int) -> list[list[int]]:
    """Each utterance's `count` turns before it in its dialogue (`Dialogues.before`: indices, oldest first)."""
    found = dialogues(utterances)
    return [found.before(k, count, utterances) for k in range(len(utterances))]


def summary(utterances: Sequence) -> dict:
    """The audit's account of the dialogues: how many, their turns, and those kept in the corpus's order."""
    found = dialogues(utterances)
    lengths = sorted(len(rows) for rows in found.turns.values())
    return {
        "dialogues": len(lengths),
        "turns": sum(lengths),
        "turns_per_dialogue": {"min": lengths[0], "median": lengths[len(lengths) // 2], "max": lengths[-1]}
        if lengths
        else None,
        "without_dialogue": sum(p is None for p in found.place),
        "kept_in_corpus_order": found.undated,
    }
