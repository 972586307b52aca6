"""Command lines shared by the end-to-end tests."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_command(script, corpus, tiny_models, out, *flags, dataset="20", epochs=2):
    """`python <script>.py` on `corpus` with the tiny encoders and settings that learn in a few steps."""
    return [
        sys.executable,
        str(ROOT / f"{script}.py"),
        "--dataset",
        dataset,
        "--dataset_dir",
        str(corpus),
        "--epochs",
        str(epochs),
        "--batch_size",
        "8",
        "--lr",
        "1e-3",
        "--max_text_len",
        "32",
        "--text_model",
        str(tiny_models / "text"),
        "--speech_model",
        str(tiny_models / "speech"),
        "--output_dir",
        str(out),
        *map(str, flags),
    ]


def mark_run(folder, script, settings=None):
    """Mark a run directory written by hand as the project's, as a run's own marker would."""
    from common.rundir import Owner

    Owner(Path(folder), "run", script, settings or {}, {"listing": "corpus"}, False, ["metrics.json"]).write()
