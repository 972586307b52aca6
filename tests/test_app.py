"""The web page (common.app) in a real headless Chromium: it loads; a test clip and its transcript give the
probabilities `common.predict` prints; a click on a cell of the confusion matrix keeps exactly the utterances the
run's confusion.csv counts there; a selected utterance's recording plays. Skipped, saying why, where Gradio,
Playwright or Chromium is not installed (`.ci/run` installs them)."""

import csv
import importlib.util
import json
import os

import pytest

from common.cli import parse_script
from common.grid import EMOTIONS
from common.kemdy import read_corpus
from common.predict import Predictor
from common.predict import main as predict_main
from common.report import main as report_main
from common.train import train
from tools.pageshots import browser, cell, chromium, predict_on_page, served, shoot

from helpers import tiny_command

MISSING = [name for name in ("gradio", "playwright") if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING) or chromium() is None,
    reason=f"the page's test needs {', '.join(MISSING) or 'Chromium'}: pip install -r requirements-app.txt and "
    "apt-get install chromium (as .ci/run does)",
)


@pytest.fixture(scope="module")
def runs(corpus20, tiny_models, tmp_path_factory):
    """A folder with one finished multimodal run (both tasks) and the report over it."""
    folder = tmp_path_factory.mktemp("app") / "runs"
    argv = tiny_command("multimodal_total", corpus20[0], tiny_models, folder / "mm", epochs=2)
    train(parse_script("multimodal_total", argv[2:]))
    report_main([str(folder)])
    return folder


def _confusion(run):
    with (run / "confusion.csv").open(newline="") as f:
        return {row["true"]: {e: int(row[f"top1_{e}"]) for e in EMOTIONS} for row in csv.DictReader(f)}


def test_the_page_predicts_as_common_predict_filters_by_the_confusion_matrix_and_plays_a_test_utterance(
    runs, corpus20, tmp_path, capsys
):
    run = runs / "mm"
    with (run / "predictions.csv").open(newline="") as f:
        first = next(csv.DictReader(f))
    utterance = {u.segment_id: u for u in read_corpus("20", corpus20[0]).utterances}[first["segment_id"]]
    predict_main(["--run_dir", str(run), "--wav", str(utterance.wav), "--text", utterance.text])
    printed = json.loads(capsys.readouterr().out)
    counts = _confusion(run)
    true, top1 = max(
        ((t, p) for t in EMOTIONS for p in EMOTIONS), key=lambda tp: (counts[tp[0]][tp[1]], tp[0] != tp[1])
    )
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    with served(runs, env) as url, browser() as page:
        page.goto(url)
        page.wait_for_selector("#predict", timeout=60000)
        assert "KEMDy emotion recognition" in page.locator("h1").inner_text()
        # Try it: the answer printed on the page is common.predict's
        answer = json.loads(predict_on_page(page, str(utterance.wav), utterance.text))
        assert answer["top1"] == printed["top1"] and answer["labels"] == printed["labels"]
        for e in EMOTIONS:
            assert answer["probabilities"][e] == pytest.approx(printed["probabilities"][e], abs=1e-6)
        assert (answer["valence"], answer["arousal"]) == pytest.approx((printed["valence"], printed["arousal"]))
        # Errors: a click on the matrix's fullest cell keeps what confusion.csv counts there, and only those
        page.get_by_role("tab", name="Errors").click()
        page.wait_for_selector(cell("confusion", 0, 0), timeout=30000)
        page.locator(cell("confusion", EMOTIONS.index(true), EMOTIONS.index(top1) + 1)).click()
        n = counts[true][top1]
        page.wait_for_function(f"document.querySelector('#count').innerText.startsWith('{n} of 24 ')", timeout=30000)
        assert page.locator("#table [role=grid]").get_attribute("aria-rowcount") == str(n + 1)  # and its header
        for i in range(min(n, 8)):  # the rows in view
            text = [page.locator(cell("table", i, j)).inner_text().strip() for j in (1, 2)]
            assert true in text[0].split(", ") and text[1] == top1, text
        # ... and a selected utterance plays
        page.locator(cell("table", 0, 0)).click()
        page.wait_for_selector("#player audio", state="attached", timeout=30000)
        segment = page.locator(cell("table", 0, 0)).inner_text().strip()
        assert segment in page.locator("#said").inner_text()
        page.wait_for_function("document.querySelector('#player audio').readyState >= 2", timeout=30000)
        page.evaluate("() => { document.querySelector('#player audio').play(); }")  # not waiting on its promise
        page.wait_for_function("document.querySelector('#player audio').currentTime > 0.05", timeout=30000)
        duration = page.evaluate("document.querySelector('#player audio').duration")
        wav = {u.segment_id: u for u in read_corpus("20", corpus20[0]).utterances}[segment]
        assert duration == pytest.approx(wav.duration, abs=0.05)
        # Report: common.report's table of the folder
        page.get_by_role("tab", name="Report").click()
        page.wait_for_selector("text=multimodal_total", timeout=30000)


def test_the_three_views_are_captured_and_a_folder_without_runs_is_refused(runs, corpus20, tmp_path):
    from common.app import main as app_main
    from common.errors import UserError

    u = read_corpus("20", corpus20[0]).utterances[0]
    with served(runs, os.environ | {"HF_HUB_OFFLINE": "1"}) as url:
        shots = shoot(url, tmp_path, str(u.wav), u.text)
    assert [p.name for p in shots] == ["app_try.png", "app_errors.png", "app_report.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in shots)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: holds no finished run with a saved model"):
        app_main([str(tmp_path / "empty")])


def test_a_bio_run_asks_for_its_samples_only_and_answers_as_common_predict(corpus20, tmp_path):
    from common import bio

    folder = tmp_path / "runs"
    argv = ["--dataset", "20", "--dataset_dir", str(corpus20[0]), "--epochs", "1", "--output_dir", str(folder / "bio")]
    train(parse_script("bio_total", argv))
    with (folder / "bio" / "predictions.csv").open(newline="") as f:
        segment = next(csv.DictReader(f))["segment_id"]
    utterances = [u for u in read_corpus("20", corpus20[0]).utterances if u.segment_id == segment]
    samples = tmp_path / "samples.csv"
    samples.write_text(bio.samples_text(bio.read_signals(corpus20[0], "20", utterances).samples[0]), encoding="utf-8")
    (expected,) = Predictor(folder / "bio")(bios=[str(samples)])
    with served(folder, os.environ | {"HF_HUB_OFFLINE": "1"}) as url, browser() as page:
        page.goto(url)
        page.wait_for_selector("#predict", timeout=60000)
        assert page.locator("#bio").is_visible()
        assert not page.locator("#wav").is_visible() and not page.locator("#transcript").is_visible()
        answer = json.loads(predict_on_page(page, None, None, str(samples)))
    assert answer["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
    assert (answer["valence"], answer["arousal"]) == pytest.approx((expected["valence"], expected["arousal"]))


def test_a_regression_runs_errors_are_its_largest_valence_and_arousal_errors_first(corpus20, tiny_models, tmp_path):
    from common.app import RunView

    argv = tiny_command("text_regression", corpus20[0], tiny_models, tmp_path / "reg", epochs=1)
    train(parse_script("text_regression", argv[2:]))
    with (tmp_path / "reg" / "predictions.csv").open(newline="") as f:
        written = {
            r["segment_id"]: abs(float(r["pred_valence"]) - float(r["true_valence"]))
            + abs(float(r["pred_arousal"]) - float(r["true_arousal"]))
            for r in csv.DictReader(f)
        }
    view = RunView(tmp_path / "reg")
    table = view.table(view.chosen())
    assert sorted(table["segment"]) == sorted(written) and "predicted" not in table
    assert list(table["error"]) == sorted(table["error"], reverse=True)
    # each row's error is its |valence error| + |arousal error| from predictions.csv (6 decimals there, 2 here)
    assert list(table["error"]) == pytest.approx([written[s] for s in table["segment"]], abs=0.006)


def test_a_run_whose_marker_is_damaged_is_left_out_and_named(runs, tmp_path):
    import shutil

    from common.app import finished_runs

    for name in ("good", "bad"):
        shutil.copytree(runs / "mm", tmp_path / "set" / name)
    (tmp_path / "set" / "bad" / "kemdy_run.json").write_text("{")
    said = []
    assert finished_runs(tmp_path / "set", log=said.append) == [tmp_path / "set" / "good"]
    assert len(said) == 1 and said[0].startswith("left out: ") and "bad" in said[0] and "damaged" in said[0]


def test_the_screenshots_never_write_over_files_unless_told(tmp_path):
    from common.errors import UserError
    from tools.pageshots import main as pageshots_main

    (tmp_path / "app_try.png").write_bytes(b"mine")
    with pytest.raises(UserError, match=r"app_try.png: exist; give --replace"):
        pageshots_main([str(tmp_path), "--out", str(tmp_path)])
    assert (tmp_path / "app_try.png").read_bytes() == b"mine"
