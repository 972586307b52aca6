"""common.robustness: a finished run's test utterances scored again with one input changed. The changes are checked
against hand computations (the signal-to-noise ratio reached, the characters changed); the scoring against the
run's own metrics.json (clean) and against itself in other batches; the babble against the run's split (never a
test utterance); the files against what the report reads back. That the demo's multimodal run is clearly worse
without its transcript and in 0-dB babble is checked on the tour's own run (test_docs.py)."""

import csv
import json

import numpy as np
import pytest

from common import robustness
from common.cli import parse_script
from common.errors import UserError
from common.robustness import FinishedRun, damaged, measure, with_noise
from common.train import train

from helpers import tiny_command


@pytest.mark.parametrize("snr", [20, 10, 5, 0, -5])
def test_noise_is_mixed_at_the_signal_to_noise_ratio_asked(snr):
    rng = np.random.default_rng(3)
    x = (0.3 * np.sin(np.arange(16000) / 7) + 0.01 * rng.standard_normal(16000)).astype(np.float32)
    noise = rng.standard_normal(16000).astype(np.float32) * 5
    y = with_noise(x, noise, snr)
    reached = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
    assert reached == pytest.approx(snr, abs=1e-3)
    silent = np.zeros(100, np.float32)
    assert np.array_equal(with_noise(silent, noise[:100], snr), silent)


def test_babble_is_each_talker_started_somewhere_and_repeated_to_the_clips_length():
    talker = np.arange(10, dtype=np.float32)
    out = robustness.babble(np.random.default_rng(0), [talker], 25)
    starts = [s for s in range(10) if np.array_equal(out, np.resize(np.roll(talker, -s), 25))]
    assert len(starts) == 1
    two = robustness.babble(np.random.default_rng(1), [talker, 2 * talker], 7)
    rng = np.random.default_rng(1)
    by_hand = np.resize(np.roll(talker, -int(rng.integers(10))), 7) + np.resize(
        np.roll(2 * talker, -int(rng.integers(10))), 7
    )
    assert np.array_equal(two, by_hand)


@pytest.mark.parametrize("rate", [0.05, 0.10, 0.20, 0.5])
def test_transcript_damage_changes_the_share_of_characters_asked_and_never_a_space(rate):
    text = "오늘 정말 즐거웠어 l/ 학교 에서 친구 랑 놀았어 b/ 그래서 기뻐"
    places = [k for k, ch in enumerate(text) if not ch.isspace()]
    k = round(rate * len(places))
    replaced = damaged(text, rate, np.random.default_rng(5), "replaced")
    changed = [i for i, (a, b) in enumerate(zip(text, replaced, strict=True)) if a != b]
    assert len(replaced) == len(text) and len(changed) == k
    assert all(0xAC00 <= ord(replaced[i]) <= 0xD7A3 and not text[i].isspace() for i in changed)
    deleted = damaged(text, rate, np.random.default_rng(5), "deleted")
    assert len(deleted) == len(text) - k and deleted.count(" ") == text.count(" ")
    rest = iter(text)
    assert all(ch in rest for ch in deleted)  # what is left is the transcript with k characters taken out


@pytest.fixture(scope="module")
def finished(corpus20, tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("robust") / "run"
    argv = tiny_command("multimodal_total", corpus20[0], tiny_models, out, "--fusion", "cross_attention", epochs=1)
    train(parse_script("multimodal_total", argv[2:]))
    return out


def test_clean_inputs_score_as_the_run_did_and_no_score_depends_on_its_batch(finished):
    run = FinishedRun(finished)
    rows = measure(run, batch_size=5, resamples=50, log=lambda _: None)
    assert [r["condition"] for r in rows] == [c.label for c in robustness.conditions(run.cell)]
    assert {"no transcript", "no audio", "speech vector: training mean", "babble 0 dB"} <= {
        r["condition"] for r in rows
    }
    test = json.loads((finished / "metrics.json").read_text())["test"]
    clean = rows[0]
    assert clean["condition"] == "clean" and clean["n"] == test["n"]
    for metric in ("micro_f1", "macro_f1", "uar", "mean_ccc"):
        assert clean[metric] == pytest.approx(test[metric], abs=1e-6), metric
    alone = measure(run, batch_size=1, resamples=50, log=lambda _: None)
    for a, b in zip(rows, alone, strict=True):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], abs=1e-5) for k in a if k != "condition")
    noisy = {r["condition"]: r for r in rows}
    assert (
        noisy["no audio"]["micro_f1_low"]
        <= noisy["no audio"]["micro_f1_difference"]
        <= noisy["no audio"]["micro_f1_high"]
    )


def test_babble_is_made_of_training_recordings_only(finished, monkeypatch):
    run = FinishedRun(finished)
    inputs = robustness.Inputs(run, seed=0)
    read = []
    clip = inputs.clip
    inputs.clip = lambda k: read.append(k) or clip(k)
    babble = next(c for c in robustness.CONDITIONS if c.name == "babble")
    inputs.items(babble)
    talkers = set(read) - set(run.test)
    test_wavs = {run.utterances[k].wav for k in run.test}
    assert talkers and talkers <= set(run.train) and not {run.utterances[k].wav for k in talkers} & test_wavs
    assert set(read) - talkers == set(run.test)  # the test clips themselves, to be mixed with it


def test_the_tables_are_written_into_the_run_and_read_back_by_the_report(finished, tmp_path, capsys):
    robustness.main([str(finished), "--resamples", "50"])
    folder = finished / "robustness"
    assert {p.name for p in folder.iterdir()} == {"robustness.csv", "robustness.md", "snr.png"}
    marker = json.loads((finished / "kemdy_run.json").read_text())
    assert "robustness" in marker["entries"]
    metric, rows = robustness.read_table(finished)
    with (folder / "robustness.csv").open(encoding="utf-8") as f:
        written = list(csv.DictReader(f))
    assert metric == "micro_f1" and [r["condition"] for r in rows] == [r["condition"] for r in written]
    assert all(r["micro_f1"] == pytest.approx(float(w["micro_f1"])) for r, w in zip(rows, written, strict=True))
    from common.report import find_fold_sets, robustness_rows

    lines = robustness_rows(find_fold_sets(finished.parent))
    assert lines[0] == "## Robustness" and sum(line.startswith("| run ") for line in lines) == 1
    assert len([line for line in lines if line.startswith(f"| {finished.as_posix()} |")]) == len(rows)
    robustness.main([str(finished), "--resamples", "50"])  # again: replaced, not refused
    text = (folder / "robustness.csv").read_text(encoding="utf-8")
    (folder / "robustness.csv").write_text(text.replace("clean,", "clean,x", 1), encoding="utf-8")
    with pytest.raises(UserError, match=r"robustness\.csv: damaged \(line 2, n: 'x.*' is not a number\)"):
        robustness.read_table(finished)
    lines = robustness_rows(find_fold_sets(finished.parent))
    assert lines[:2] == ["## Robustness", ""] and lines[2].startswith("Left out: ") and "damaged (line 2" in lines[2]


def test_what_is_not_a_finished_run_of_this_project_is_one_line(tmp_path, corpus20, tiny_models):
    (tmp_path / "theirs").mkdir()
    with pytest.raises(UserError, match=r"theirs: not a run directory of this project \(no run marker\)"):
        FinishedRun(tmp_path / "theirs")
    out = tmp_path / "text"
    train(
        parse_script(
            "text_classification", tiny_command("text_classification", corpus20[0], tiny_models, out, epochs=1)[2:]
        )
    )
    run = FinishedRun(out)
    names = [c.name for c in robustness.conditions(run.cell)]
    assert "white noise" not in names and "no transcript" not in names and "characters deleted" in names
    (out / "metrics.json").unlink()
    with pytest.raises(UserError, match=r"text: not a finished run \(no metrics.json\)"):
        FinishedRun(out)


def test_character_error_rate_is_the_edit_distance_over_the_references_characters():
    from common.robustness import character_error_rate

    assert character_error_rate("오늘 정말", "오늘 정말") == 0
    assert character_error_rate("오늘 정말", "오늘정말") == 0  # spaces left out
    assert character_error_rate("오늘 정말", "오 정말요") == pytest.approx(2 / 4)  # one deleted, one inserted
    assert character_error_rate("abcd", "xbcy") == pytest.approx(2 / 4)  # two substituted
    assert character_error_rate("", "") == 0 and character_error_rate("", "아") == 1
    assert character_error_rate("가나", "") == 1


def test_a_speech_to_text_models_transcripts_are_scored_and_listed(finished, tmp_path, capsys):
    from common.synthetic import write_tiny_asr

    model = write_tiny_asr(tmp_path / "asr")
    robustness.main([str(finished), "--resamples", "50", "--condition", "no transcript", "--asr_model", str(model)])
    metric, rows = robustness.read_table(finished)
    assert [r["condition"] for r in rows] == ["clean", "no transcript", f"ASR transcripts ({model})"]
    with (finished / "robustness" / "asr.csv").open(encoding="utf-8") as f:
        listed = list(csv.DictReader(f))
    run = FinishedRun(finished)
    assert [r["segment_id"] for r in listed] == [run.utterances[k].segment_id for k in run.test]
    heard = [r["asr_transcript"] for r in listed]
    assert all(heard) and heard == robustness.transcribe(str(model), [run.utterances[k].wav for k in run.test], 1)
    from common.robustness import character_error_rate

    assert all(
        float(r["cer"]) == pytest.approx(character_error_rate(r["transcript"], r["asr_transcript"]), abs=1e-4)
        for r in listed
    )
    inputs = robustness.Inputs(run, 0, heard)
    condition = robustness.conditions(run.cell, str(model))[-1]
    by_hand = [robustness.Inputs(run, 0)._tokens([t], None)[0] for t in heard]
    assert all(
        np.array_equal(item["input_ids"], ids) for item, ids in zip(inputs.items(condition), by_hand, strict=True)
    )
