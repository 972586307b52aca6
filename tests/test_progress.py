"""Progress in a log file: a plain line about every 10 % of a slow loop, with its rate and time left; nothing
for a quick loop, under --quiet, or in the processes that are not the main one."""

import itertools

import pytest

from common import progress
from common.cli import parse_args
from common.grid import Cell
from common.progress import Progress
from common.train import train

from helpers import tiny_command


@pytest.fixture
def one_second_per_item(monkeypatch):
    clock = itertools.count()  # 0 when the loop starts, then one second more at each item
    monkeypatch.setattr(progress.time, "monotonic", lambda: float(next(clock)))


def test_a_slow_loop_gets_a_line_every_ten_percent_with_rate_time_left_and_loss(one_second_per_item, capsys):
    bar = Progress(range(50), "epoch 1/3 training")
    for k in bar:
        bar.note(loss=f"{1 / (k + 1):.4f}")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10  # 5, 10, ..., 50 items: the first 5 s print nothing
    assert lines[0] == "epoch 1/3 training: 5/50 (10%), 1.00/s, 45 s left, loss 0.2000"
    assert lines[-1] == "epoch 1/3 training: 50/50 (100%), 1.00/s, 0 s left, loss 0.0200"


def test_a_quick_loop_or_a_hidden_one_prints_nothing(capsys, one_second_per_item):
    assert list(Progress(range(4), "quick")) == [0, 1, 2, 3]  # done in 4 s
    assert list(Progress(range(50), "hidden", show=False)) == list(range(50))
    assert capsys.readouterr().err == ""


def test_a_run_in_a_log_file_shows_its_batches_and_quiet_keeps_only_the_epochs(
    corpus20, tiny_models, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(progress, "AFTER_SECONDS", 0.0)
    cell = Cell("text", "classification")
    for flags in ([], ["--quiet"]):
        argv = tiny_command(cell.name, corpus20[0], tiny_models, tmp_path / f"run{len(flags)}", *flags, epochs=1)
        train(parse_args(cell, argv[2:]))
        captured = capsys.readouterr()
        shown = [line.split(":")[0] for line in captured.err.splitlines() if "/s, " in line]
        assert "epoch 1: train loss" in captured.out
        if flags:
            assert shown == []
        else:
            assert {"epoch 1/1 training", "epoch 1 valid", "epoch 1 test"} <= set(shown)
            assert captured.err.count("epoch 1/1 training: 11/11 (100%)") == 1  # 86 utterances, batches of 8
