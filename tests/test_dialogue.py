"""The dialogues' turns against the annotation files read here with the csv module: ordered by their start times,
one turn per recording, and the turns before an utterance never later than it."""

import csv
from types import SimpleNamespace

import pytest

from common.dialogue import dialogue_of, dialogues, summary
from common.kemdy import read_corpus


def turns_by_hand(root, segment_col):
    """{dialogue: segment ids in order of their start times}, each recording once (its first row's start). A
    KEMDy20 id naming another session than its file's is that file's recording (the session-17 quirk)."""
    starts = {}
    for path in sorted((root / "annotation").glob("*.csv")):
        session = "Sess" + path.name.split("_")[0][-2:]  # Sess03_eval.csv, Session03_F_res.csv
        for row in list(csv.reader(path.open(encoding="utf-8-sig")))[2:]:
            segment_id = row[segment_col].strip()
            segment_id = session + segment_id[6:] if segment_id[:6] != session else segment_id
            starts.setdefault(segment_id, float(row[1]))
    by_dialogue = {}
    for segment_id, start in starts.items():
        by_dialogue.setdefault("_".join(segment_id.split("_")[:2]), []).append((start, segment_id))
    return {name: [s for _, s in sorted(turns)] for name, turns in by_dialogue.items()}


@pytest.mark.parametrize("dataset, segment_col", [("19", 9), ("20", 3)])
def test_each_dialogues_turns_follow_their_start_times_one_per_recording(corpus19, corpus20, dataset, segment_col):
    root = {"19": corpus19, "20": corpus20}[dataset][0]
    utts = read_corpus(dataset, root).utterances
    found = dialogues(utts)
    expected = turns_by_hand(root, segment_col)
    ids = {name: [utts[k].segment_id for k in rows] for name, rows in found.turns.items()}
    used = {u.segment_id for u in utts}  # rows the readers exclude (no wav, no transcript) are no turns
    assert ids == {name: [s for s in turns if s in used] for name, turns in expected.items() if set(turns) & used}
    assert found.undated == [] and None not in found.place
    if dataset == "19":  # each recording is listed twice: both rows have the same turns before them
        twice = [k for k, u in enumerate(utts) if sum(v.segment_id == u.segment_id for v in utts) == 2]
        assert twice
        for k in twice:
            j = next(i for i, v in enumerate(utts) if v.segment_id == utts[k].segment_id)
            assert found.before(k, 3, utts) == found.before(j, 3, utts)


def test_the_turns_before_an_utterance_are_earlier_turns_of_its_dialogue_only(corpus20):
    utts = read_corpus("20", corpus20[0]).utterances
    found = dialogues(utts)
    for k, u in enumerate(utts):
        before = found.before(k, 4, utts)
        assert len(before) == min(4, found.place[k])
        assert all(dialogue_of(utts[j].segment_id) == dialogue_of(u.segment_id) for j in before)
        assert all(utts[j].start < u.start for j in before) and k not in before
        assert [utts[j].start for j in before] == sorted(utts[j].start for j in before)
    assert found.before(0, 0, utts) == []


def test_a_dialogue_with_a_turn_of_no_start_time_keeps_the_corpus_order_and_is_counted():
    def turn(segment_id, start):
        return SimpleNamespace(segment_id=segment_id, start=start)

    utts = [
        turn("Sess01_script01_User001F_002", 5.0),
        turn("Sess01_script01_User002M_001", 1.0),
        turn("Sess02_impro01_F001", 3.0),
        turn("Sess02_impro01_M001", None),
        turn("other", 0.0),
    ]
    found = dialogues(utts)
    assert found.turns == {"Sess01_script01": [1, 0], "Sess02_impro01": [2, 3]}
    assert found.undated == ["Sess02_impro01"] and found.place == [1, 0, 0, 1, None]
    assert summary(utts) == {
        "dialogues": 2,
        "turns": 4,
        "turns_per_dialogue": {"min": 2, "median": 2, "max": 2},
        "without_dialogue": 1,
        "kept_in_corpus_order": ["Sess02_impro01"],
    }
