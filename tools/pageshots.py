"""The web page (common.app) served and driven in a headless Chromium: its three views as screenshots.

    python -m tools.pageshots runs/demo --wav demo/v4/KEMDy20/wav/Session01/Sess01_script01_User001F_001.wav \
        --text '말이야 했어 갔어 c/ 학교 너는 혼자 생각' --out docs --replace

Chromium is the system's (Debian: `apt-get install chromium`, and `fonts-noto-cjk` for the transcripts' Hangul;
or the CHROMIUM variable names one), driven by Playwright without its own browser download. tests/test_app.py
starts the page and the browser with the same two functions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common.errors import UserError, run_cli

ROOT = Path(__file__).resolve().parents[1]
VIEWS = ("try", "errors", "report")


def chromium() -> str | None:
    """The system's Chromium, or None."""
    named = os.environ.get("CHROMIUM")
    return named if named and Path(named).is_file() else shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(folder: Path, env: dict | None = None, timeout: float = 120.0):
    """`python -m common.app folder` on a free port of 127.0.0.1 until the block ends; yields its address."""
    port = free_port()
    command = [sys.executable, "-m", "common.app", str(folder), "--port", str(port)]
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (read back if it stops; closed below)
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"common.app ended before serving:\n{log.read()[-3000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"common.app did not serve {url} within {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        log.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def browser():
    """A headless Chromium page (1200 x 900) that may play audio without a click."""
    from playwright.sync_api import sync_playwright

    path = chromium()
    if path is None:
        raise UserError("no Chromium found: apt-get install chromium, or name one with CHROMIUM=...")
    with sync_playwright() as p:
        args = ["--no-sandbox", "--autoplay-policy=no-user-gesture-required"]
        chrome = p.chromium.launch(executable_path=path, args=args)
        try:
            yield chrome.new_page(viewport={"width": 1200, "height": 900})
        finally:
            chrome.close()


def predict_on_page(page, wav: str | None, text: str | None, bio: str | None = None) -> str:
    """The Try-it view given a recording, a transcript and a bio-signal samples file (those given); the answer as
    the page prints it."""
    page.get_by_role("tab", name="Try it").click()
    if wav:
        page.locator("#wav input[type=file]").set_input_files(wav)
        page.wait_for_selector("audio", state="attached", timeout=30000)
    if text:
        page.locator("#transcript textarea").fill(text)
    if bio:
        page.locator("#bio input[type=file]").set_input_files(bio)
        page.wait_for_selector("#bio a, #bio .file-preview", state="attached", timeout=30000)
    page.locator("#predict").click()
    page.wait_for_function("document.querySelector('#answer textarea').value.length > 0", timeout=60000)
    return page.locator("#answer textarea").input_value()


def shoot(url: str, out: Path, wav: str | None, text: str | None) -> list[Path]:
    """The three views as PNGs in `out` (app_try.png, app_errors.png, app_report.png): a prediction, the errors
    of the confusion matrix's first wrong cell with its first utterance selected, the report."""
    shots = []
    with browser() as page:
        page.goto(url)
        page.wait_for_selector("#predict", timeout=60000)
        predict_on_page(page, wav, text)
        shots.append(out / "app_try.png")
        page.screenshot(path=str(shots[-1]), full_page=True)
        page.get_by_role("tab", name="Errors").click()
        page.wait_for_selector(cell("confusion", 0, 0), timeout=30000)
        wrong = _first_wrong_cell(page)
        if wrong:
            page.locator(cell("confusion", *wrong)).click()
            page.wait_for_timeout(1500)
        page.locator(cell("table", 0, 0)).click()
        page.wait_for_function("document.querySelector('#player audio')?.readyState >= 2", timeout=30000)
        page.wait_for_timeout(500)  # the player's controls show the length
        shots.append(out / "app_errors.png")
        page.screenshot(path=str(shots[-1]), full_page=True)
        page.get_by_role("tab", name="Report").click()
        page.wait_for_selector("#report table", timeout=30000)
        figures = "Array.from(document.querySelectorAll('#figures img'))"
        page.evaluate(f"{figures}.forEach(i => {{ i.loading = 'eager'; }})")  # drawn lazily, when scrolled to
        page.wait_for_function(f"{figures}.every(i => i.complete && i.naturalWidth > 0)", timeout=30000)
        page.evaluate("window.scrollTo(0, 0)")
        shots.append(out / "app_report.png")
        page.screenshot(path=str(shots[-1]), full_page=True)
    return shots


def cell(table: str, row: int, column: int) -> str:
    """The selector of a cell of one of the page's tables (Gradio's data frames draw only the rows in view)."""
    return f'#{table} [data-testid="cell-{row}-{column}"]'


def _first_wrong_cell(page) -> tuple[int, int] | None:
    """(row, column) of the confusion matrix's largest count off its diagonal, or None."""
    from common.grid import EMOTIONS

    best, where = 0, None
    for i in range(len(EMOTIONS)):
        for j in range(1, len(EMOTIONS) + 1):
            value = int(page.locator(cell("confusion", i, j)).inner_text().strip() or 0)
            if j - 1 != i and value > best:
                best, where = value, (i, j)
    return where


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.pageshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a finished run, or a folder of them (with common.report run over it)")
    parser.add_argument("--wav", help="the recording the Try-it view predicts")
    parser.add_argument("--text", help="its transcript")
    parser.add_argument("--out", default="docs", help="folder for the three PNGs")
    parser.add_argument("--replace", action="store_true", help="write over the three PNGs where they exist")
    args = parser.parse_args(argv)
    out = Path(args.out)
    taken = [str(out / f"app_{view}.png") for view in VIEWS if (out / f"app_{view}.png").exists()]
    if taken and not args.replace:
        raise UserError(f"{', '.join(taken)}: exist; give --replace to write over them, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    with served(Path(args.folder)) as url:
        for shot in shoot(url, out, args.wav, args.text):
            print(f"wrote {shot}")


if __name__ == "__main__":
    run_cli(main)
