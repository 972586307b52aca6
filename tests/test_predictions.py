"""predictions.csv: the writer's text is the format written out by hand here, the reader gives back what was
written, and every kind of damage is refused in one line naming the file."""

from pathlib import Path

import numpy as np
import pytest

from common import predictions
from common.errors import UserError
from common.grid import EMOTIONS
from common.kemdy import Utterance

HAND = (
    "segment_id,true_angry,true_disgust,true_fear,true_happy,true_neutral,true_sad,true_surprise,"
    "prob_angry,prob_disgust,prob_fear,prob_happy,prob_neutral,prob_sad,prob_surprise,"
    "true_valence,true_arousal,pred_valence,pred_arousal\r\n"
    "Sess01_a,1,0,0,0,0,0,0,0.900000,0.000000,0.000000,0.000000,0.000000,0.000000,0.012346,1.0,5.0,1.000000,4.999999\r\n"
    "Sess01_b,0,0,0,1,1,0,0,0.100000,0.200000,0.300000,0.400000,0.500000,0.600000,0.700000,3.2,2.0,3.123457,1.500000\r\n"
)


def utterance(segment: str, labels: tuple, valence: float, arousal: float) -> Utterance:
    return Utterance(
        segment, segment, "a.csv", 1, "Sess01", "F", Path("x.wav"), "", "", labels, valence, arousal, 1.0, 16000, 1
    )


@pytest.fixture
def written(tmp_path):
    """The file of a total cell's two test utterances, gathered in the order 1, 0 of the corpus's."""
    utts = [
        utterance("Sess01_a", (1, 0, 0, 0, 0, 0, 0), 1.0, 5.0),
        utterance("Sess01_b", (0, 0, 0, 1, 1, 0, 0), 3.2, 2.0),
    ]
    out = {
        "index": np.array([1, 0]),
        "probs": np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], [0.9, 0, 0, 0, 0, 0, 0.0123456]]),
        "va_pred": np.array([[3.1234567, 1.5], [1.0, 4.9999994]]),
    }
    path = tmp_path / predictions.FILE
    path.write_text(predictions.text(predictions.of_outputs(utts, out)), newline="")
    return path, utts, out


def test_the_file_is_in_corpus_order_with_the_truth_beside_the_outputs_as_written_by_hand(written):
    path, _, _ = written
    assert path.read_bytes().decode() == HAND


def test_what_is_read_back_is_what_was_written(written):
    path, utts, out = written
    p = predictions.read(path, n=2)
    assert p.segment_ids == ["Sess01_a", "Sess01_b"]  # corpus order, whatever the gathered order
    np.testing.assert_array_equal(p.labels, [u.labels for u in utts])
    np.testing.assert_array_equal(p.va, [[1.0, 5.0], [3.2, 2.0]])
    np.testing.assert_allclose(p.probs, out["probs"][[1, 0]], atol=5e-7)
    np.testing.assert_allclose(p.va_pred, out["va_pred"][[1, 0]], atol=5e-7)


@pytest.mark.parametrize("emotions, va", [(True, False), (False, True)])
def test_a_cell_writes_only_the_outputs_it_has_and_they_read_back(tmp_path, emotions, va):
    utts = [utterance("s1", (0, 0, 0, 0, 1, 0, 0), 2.5, 3.5)]
    out = {"index": np.array([0])}
    out |= {"probs": np.full((1, len(EMOTIONS)), 0.25)} if emotions else {}
    out |= {"va_pred": np.array([[2.0, 4.0]])} if va else {}
    path = tmp_path / predictions.FILE
    path.write_text(predictions.text(predictions.of_outputs(utts, out)))
    header = path.read_text().splitlines()[0].split(",")
    assert ("prob_angry" in header, "pred_valence" in header) == (emotions, va)
    p = predictions.read(path)
    assert (p.probs is not None, p.va_pred is not None) == (emotions, va)
    np.testing.assert_array_equal(p.va, [[2.5, 3.5]])


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda text: text.replace("segment_id", "segment"), "its header is not one this project writes"),
        (lambda text: text[: text.rindex(",")] + "\n", "row 2 of 2 is cut short"),
        (lambda text: text.replace("0.900000", "ninety"), "row 1 holds a value that is not a number"),
        (lambda text: text.replace("0.900000", "nan"), "row 1 holds a value out of its range"),
        (lambda text: text.replace("Sess01_a,1", "Sess01_a,2"), "row 1 holds a value out of its range"),
        (lambda text: text.replace("Sess01_a,1", "Sess01_a,"), "row 1 of 2 is cut short"),
        (lambda text: "\n".join(text.splitlines()[:2]) + "\n", "holds 1 rows, the run tested 2 utterances"),
    ],
)
def test_every_damage_is_refused_in_one_line_naming_the_file(written, damage, problem):
    path, _, _ = written
    path.write_text(damage(path.read_text()))
    with pytest.raises(UserError, match=rf"^{path}: damaged \({problem}\)$"):
        predictions.read(path, n=2)


def test_a_file_that_is_not_text_is_refused_in_one_line(tmp_path):
    path = tmp_path / predictions.FILE
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(UserError, match=rf"^{path}: damaged \(UnicodeDecodeError: "):
        predictions.read(path)
