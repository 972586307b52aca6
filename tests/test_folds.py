"""Contiguous 5-fold split: the original's integer boundaries, disjoint folds covering every utterance."""

import pytest

from common.errors import UserError
from common.folds import block_bounds, make_fold


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
        fold = make_fold(n, k)
        assert fold.test == list(range(bounds[k - 1], bounds[k]))


@pytest.mark.parametrize("n", [0, 1, 4, 5, 6, 19, 240, 20554, 13462])
def test_folds_are_disjoint_and_cover_every_utterance_once(n):
    tests = []
    for k in range(1, 6):
        fold = make_fold(n, k)
        assert fold.fold == k
        assert sorted(fold.train + fold.test) == list(range(n))
        assert not set(fold.train) & set(fold.test)
        assert fold.train == sorted(fold.train)
        tests += fold.test
    assert sorted(tests) == list(range(n)) and len(tests) == n


@pytest.mark.parametrize("fold", [0, 6, -1])
def test_a_fold_outside_1_to_5_is_refused(fold):
    with pytest.raises(UserError, match=f"--num_fold {fold}: choose a fold from 1 to 5"):
        make_fold(100, fold)
