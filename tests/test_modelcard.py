"""Every saved model carries its card: README.md in the Hugging Face format, read back with huggingface_hub, saying
what its run's config.json and metrics.json say."""

import json

import pytest
from huggingface_hub import ModelCard

from common.cli import parse_script
from common.modelcard import card_text
from common.predict import Predictor
from common.train import train

from helpers import tiny_command


@pytest.mark.parametrize("script", ["text_classification", "multimodal_total_gated"])
def test_a_saved_model_carries_a_card_of_its_run(corpus20, tiny_models, tmp_path, script):
    out = tmp_path / "run"
    name = "multimodal_total" if script.endswith("gated") else script
    flags = ["--fusion", "gated"] if script.endswith("gated") else []
    (result,) = train(parse_script(name, tiny_command(name, corpus20[0], tiny_models, out, *flags, epochs=1)[2:]))
    card = ModelCard.load(out / "model" / "README.md")
    config = json.loads((out / "config.json").read_text())
    meta = card.data.to_dict()
    assert meta["language"] == "ko" and meta["license"] == "other" and "kemdy" in meta["tags"]
    (index,) = meta["model-index"]
    assert index["name"] == f"{script} on KEMDy20, fold 5"
    reported = {m["type"]: m["value"] for r in index["results"] for m in r["metrics"]}
    expected = {k: round(v, 4) for k, v in result["test"].items() if k in reported}
    assert reported == expected and len(reported) >= (4 if "classification" in script else 7)
    assert {r["dataset"]["name"] for r in index["results"]} == {"KEMDy20"}
    text = card.text
    assert f"python {config['command']}" in text and "contiguous, fold 5" in text
    assert f"{config['data']['split']['test']} test utterances" in text
    assert "license agreement" in text and "restrict sharing weights" in text
    assert ("gated fusion" in text) == script.endswith("gated") and "synthetic demo corpus" not in text
    for key, value in expected.items():
        assert f"| {value:.4f} |" in text, key
    Predictor(out)  # the model folder with its card still loads
    demo = card_text(config | {"args": config["args"] | {"demo": True}}, json.loads((out / "metrics.json").read_text()))
    assert "synthetic demo corpus with tiny random encoders" in demo
