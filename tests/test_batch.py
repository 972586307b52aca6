"""Batch prediction (common.batch through common.predict --csv/--wav_dir --out): every row written, each equal to
the Predictor's own answer, unreadable inputs reported per row, a stopped file continued to exactly the file an
uninterrupted command writes, and a file that is not this run's refused."""

import csv
import json
import signal
import subprocess
import sys
import time

import pytest

from common.cli import parse_script
from common.errors import UserError
from common.grid import EMOTIONS
from common.kemdy import read_corpus
from common.predict import Predictor
from common.predict import main as predict_main
from common.train import train

from helpers import ROOT, tiny_command


@pytest.fixture(scope="module")
def finished(corpus20, tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "run"
    argv = tiny_command("multimodal_total", corpus20[0], tiny_models, out, epochs=1)
    train(parse_script("multimodal_total", argv[2:]))
    return out


def _rows(path):
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_a_folder_of_wavs_is_predicted_row_by_row_as_the_predictor_answers_each(finished, corpus20, tmp_path, capsys):
    out = tmp_path / "out.csv"
    wav_dir = corpus20[0] / "wav"
    predict_main(["--run_dir", str(finished), "--wav_dir", str(wav_dir), "--out", str(out), "--batch_size", "5"])
    rows = _rows(out)
    wavs = sorted(wav_dir.rglob("*.wav"))
    assert [r["wav"] for r in rows] == [str(w.relative_to(wav_dir)) for w in wavs]
    by_wav = {u.wav: u for u in read_corpus("20", corpus20[0]).utterances}
    listed = [w for w in wavs if w in by_wav]  # the corpus's own recordings: their transcripts beside them
    answers = Predictor(finished)([str(w) for w in listed], [by_wav[w].text for w in listed])
    by_row = {r["wav"]: r for r in rows}
    for wav, answer in zip(listed, answers, strict=True):
        row = by_row[str(wav.relative_to(wav_dir))]
        assert row["error"] == "" and row["top1"] == answer["top1"]
        assert [float(row[f"prob_{e}"]) for e in EMOTIONS] == pytest.approx(
            [answer["probabilities"][e] for e in EMOTIONS], abs=2e-6
        )
        assert float(row["valence"]) == pytest.approx(answer["valence"], abs=2e-6)
    assert f"{len(rows)} utterances predicted, 0 there already" in capsys.readouterr().err


def test_unreadable_inputs_are_reported_in_their_rows_and_the_rest_predicted(finished, corpus20, tmp_path):
    u = read_corpus("20", corpus20[0]).utterances[0]
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")
    table = tmp_path / "in.csv"
    with table.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(
            [["id", "wav", "text"], ["a", str(u.wav), u.text], ["b", "gone.wav", "x"], ["c", "broken.wav", "y"]]
        )
    out = tmp_path / "out.csv"
    predict_main(["--run_dir", str(finished), "--csv", str(table), "--out", str(out)])
    a, b, c = _rows(out)
    (answer,) = Predictor(finished)([u.wav], [u.text])
    assert a["error"] == "" and float(a["prob_happy"]) == pytest.approx(answer["probabilities"]["happy"], abs=2e-6)
    assert b["error"] == f"{tmp_path / 'gone.wav'}: no such audio file" and b["prob_happy"] == ""
    assert c["error"].startswith(f"{tmp_path / 'broken.wav'}: cannot use the audio") and c["top1"] == ""


def test_a_stopped_file_is_continued_to_exactly_what_one_command_writes(finished, corpus20, tmp_path, capsys):
    wav_dir = corpus20[0] / "wav"
    whole, cut = tmp_path / "whole.csv", tmp_path / "cut.csv"
    args = ["--run_dir", str(finished), "--wav_dir", str(wav_dir), "--batch_size", "4"]
    predict_main([*args, "--out", str(whole)])
    text = whole.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    cut.write_text("".join(lines[:30]) + lines[30][:25], encoding="utf-8")  # 29 rows and half of the 30th
    predict_main([*args, "--out", str(cut)])
    assert cut.read_text(encoding="utf-8").splitlines()[:30] == text.splitlines()[:30]  # the complete rows kept
    continued, expected = _rows(cut), _rows(whole)
    assert [r["wav"] for r in continued] == [r["wav"] for r in expected]
    for a, b in zip(continued, expected, strict=True):  # its batches start elsewhere: equal within rounding
        numbers = [k for k in b if k.startswith("prob_") or k in ("valence", "arousal")]
        assert [float(a[k]) for k in numbers] == pytest.approx([float(b[k]) for k in numbers], abs=1e-5)
        assert {k: a[k] for k in a if k not in numbers} == {k: b[k] for k in b if k not in numbers}
    assert f"{len(lines) - 30} utterances predicted, 29 there already" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text("wav,score\nx.wav,1\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"--out .*other.csv: exists and is not this run's predictions"):
        predict_main([*args, "--out", str(other)])
    assert other.read_text(encoding="utf-8") == "wav,score\nx.wav,1\n"  # left as it was


def test_a_killed_command_continues_where_it_stopped(finished, corpus20, tmp_path):
    wav_dir = corpus20[0] / "wav"
    out = tmp_path / "out.csv"
    command = [sys.executable, "-m", "common.predict", "--run_dir", str(finished), "--wav_dir", str(wav_dir)]
    command += ["--out", str(out), "--batch_size", "1"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text(encoding="utf-8").count("\n") < 10):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = out.read_text(encoding="utf-8").count("\n") - 1
    assert 9 <= written < len(list(wav_dir.rglob("*.wav")))
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _rows(out)
    assert [r["wav"] for r in rows] == [str(w.relative_to(wav_dir)) for w in sorted(wav_dir.rglob("*.wav"))]
    assert all(json.dumps(r) for r in rows) and len({r["run_dir"] for r in rows}) == 1
