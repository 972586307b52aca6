"""The one-command GPU check runs end to end on CPU with tiny sizes: its demo runs, its determinism and bf16
checks, the device benchmark, and its two summary files."""

import json

from tools.gpucheck import BF16_TOLERANCE, CELL, check


def test_the_gpu_check_runs_end_to_end_and_writes_its_summary(tmp_path):
    result = check(tmp_path, tiny=True)
    assert result["passed"] and result["deterministic"] and result["finite"]
    assert result["bf16_gap"] <= BF16_TOLERANCE
    runs = {
        name: json.loads((tmp_path / "runs" / name / "metrics.json").read_text())["test"] for name in result["demo"]
    }
    assert runs["fp32"] == runs["fp32_again"] and runs["fp32"] != runs["bf16"]  # bf16 computed something else
    bench = result["benchmark"]
    for key in (f"{CELL}_fp32", f"{CELL}_bf16", "speech_classification_bf16"):
        assert bench[key]["clips_per_s"] > 0 and bench[key]["extraction_clips_per_s"] > 0
    assert set(bench["data_wait"]) == {"workers_0", "workers_2"}
    assert json.loads((tmp_path / "gpucheck.json").read_text()) == result
    assert (tmp_path / "gpucheck.md").read_text().startswith("# GPU check: passed (")
