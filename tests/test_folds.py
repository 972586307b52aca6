"""Contiguous 5-fold split: the original's integer boundaries, disjoint folds covering every utterance."""

import pytest

from common.errors import UserError
from common.folds import block_bounds, fold_sizes, hold_out_validation, make_fold


def _sessions(n: int) -> list[str]:
    return ["Sess01"] * n  # the contiguous split ignores sessions


@pytest.mark.parametrize(
    "n, bounds",
    [
        # Hand computation of int(n*k/5): 20554/5 = 4110.8, 8221.6, 12332.4, 16443.2
        (20554, [0, 4110, 8221, 12332, 16443, 20554]),
        # 13462/5 = 2692.4, 5384.8, 8077.2, 10769.6
        (13462, [0, 2692, 5384, 8077, 10769, 13462]),
        (7, [0, 1, 2, 4, 5, 7]),
        (3, [0, 0, 1, 1, 2, 3]),
    ],
)
def test_test_blocks_have_the_original_integer_boundaries(n, bounds):
    assert [block_bounds(n, k) for k in range(1, 6)] == list(zip(bounds[:-1], bounds[1:], strict=True))
    for k in range(1, 6):
        fold = make_fold(_sessions(n), k)
        assert fold.test == list(range(bounds[k - 1], bounds[k]))


@pytest.mark.parametrize("n", [0, 1, 4, 5, 6, 19, 240, 20554, 13462])
def test_folds_are_disjoint_and_cover_every_utterance_once(n):
    tests = []
    for k in range(1, 6):
        fold = make_fold(_sessions(n), k)
        assert fold.fold == k
        assert sorted(fold.train + fold.test) == list(range(n))
        assert not set(fold.train) & set(fold.test)
        assert fold.train == sorted(fold.train)
        tests += fold.test
    assert sorted(tests) == list(range(n)) and len(tests) == n


@pytest.mark.parametrize("fold", [0, 6, -1])
def test_a_fold_outside_1_to_5_is_refused(fold):
    with pytest.raises(UserError, match=f"--num_fold {fold}: choose a fold from 1 to 5"):
        make_fold(_sessions(100), fold)


def _corpus_sessions(count: int, sizes=(3, 5, 2, 7)) -> list[str]:
    """Utterance sessions as the readers order them: session blocks of uneven sizes, unpadded numbers."""
    return [f"Sess{s}" for s in range(1, count + 1) for _ in range(sizes[s % len(sizes)])]


@pytest.mark.parametrize(
    "count, blocks",
    [
        (20, [(1, 4), (5, 8), (9, 12), (13, 16), (17, 20)]),  # KEMDy19: four sessions per fold
        (40, [(1, 8), (9, 16), (17, 24), (25, 32), (33, 40)]),  # KEMDy20: eight per fold
        (12, [(1, 2), (3, 4), (5, 7), (8, 9), (10, 12)]),  # int(12k/5) = 2, 4, 7, 9, 12
        (5, [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]),
    ],
)
def test_session_folds_hold_out_whole_sessions_and_cover_every_utterance_once(count, blocks):
    sessions = _corpus_sessions(count)
    tests = []
    for k, (first, last) in enumerate(blocks, start=1):
        fold = make_fold(sessions, k, "session")
        expected = [f"Sess{s}" for s in range(first, last + 1)]  # number order: Sess9 before Sess10
        assert list(fold.test_sessions) == expected
        assert fold.test == [i for i, s in enumerate(sessions) if s in expected]
        assert not {sessions[i] for i in fold.train} & {sessions[i] for i in fold.test}
        assert sorted(fold.train + fold.test) == list(range(len(sessions)))
        tests += fold.test
    assert sorted(tests) == list(range(len(sessions)))


def test_session_validation_holds_out_the_last_whole_sessions_of_the_training_fold():
    sessions = _corpus_sessions(20)
    fold = make_fold(sessions, 5, "session")  # trains on Sess1..Sess16
    train, valid = hold_out_validation(fold.train, 0.1, sessions)
    # ceil(0.1 x 16 sessions) = 2 sessions: the last two of the training fold
    assert {sessions[i] for i in valid} == {"Sess15", "Sess16"}
    assert valid == [i for i in fold.train if sessions[i] in ("Sess15", "Sess16")]
    assert train == [i for i in fold.train if sessions[i] not in ("Sess15", "Sess16")]
    assert hold_out_validation(fold.train, 0.0, sessions) == (fold.train, [])
    one = [i for i, s in enumerate(sessions) if s == "Sess3"]  # a single session is never all held out
    assert hold_out_validation(one, 0.5, sessions) == (one, [])


def test_fold_sizes_add_up_for_both_splits():
    sessions = _corpus_sessions(20)
    for split in ("contiguous", "session"):
        rows = fold_sizes(sessions, split)
        assert [r["fold"] for r in rows] == [1, 2, 3, 4, 5]
        assert sum(r["test"] for r in rows) == len(sessions)
        assert all(r["train"] + r["valid"] + r["test"] == len(sessions) for r in rows)
    assert fold_sizes(sessions, "session")[0]["test_sessions"] == ["Sess1", "Sess2", "Sess3", "Sess4"]


def test_session_split_needs_five_sessions_and_a_known_name():
    with pytest.raises(UserError, match="--split session: the corpus has 4 sessions, fewer than 5 folds"):
        make_fold(_corpus_sessions(4), 1, "session")
    with pytest.raises(UserError, match="--split 'speaker': choose one of contiguous, session"):
        make_fold(_corpus_sessions(5), 1, "speaker")
