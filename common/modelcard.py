"""A trained model's card: README.md in its model/ folder, in the Hugging Face model-card format (YAML metadata
holding the model-index of its test results, then prose), written from the run's config.json and metrics.json,
so that whoever receives the folder knows what trained it, on which data and folds, and how well it did."""

from __future__ import annotations

from common.grid import FUSIONS, Cell

# The test metrics a card lists, in its table and its model-index: (key in metrics.json, name).
HEADLINE = (
    ("micro_f1", "micro-F1"),
    ("macro_f1", "macro-F1"),
    ("top1_accuracy", "top-1 accuracy (WA)"),
    ("uar", "UAR"),
    ("top1_weighted_f1", "top-1 weighted F1"),
    ("valence_ccc", "valence CCC"),
    ("arousal_ccc", "arousal CCC"),
    ("mean_ccc", "mean CCC"),
)
TERMS = (
    "KEMDy19 and KEMDy20 are distributed by ETRI under a license agreement "
    "([KEMDy19](https://nanum.etri.re.kr/share/kjnoh2/KEMDy19?lang=En_us), "
    "[KEMDy20](https://nanum.etri.re.kr/share/kjnoh2/KEMDy20?lang=En_us)). Its terms may restrict sharing weights "
    "trained on the corpus: read them before you publish this folder."
)


def _is_hub_name(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def card_text(config: dict, result: dict) -> str:
    """The card of the run whose config.json and metrics.json hold `config` and `result`."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    cell, args = Cell(**config["cell"]), config["args"]
    dataset = result["dataset"]
    tested = (
        f"all of {result['test_dataset']} (cross-corpus)" if result.get("test_dataset") else f"fold {result['fold']}"
    )
    split = f"{result.get('split', 'contiguous')}, {tested}"
    found = [(key, name, result["test"][key]) for key, name in HEADLINE if result["test"].get(key) is not None]
    task = "text-classification" if cell.modality == "text" else "audio-classification"
    encoders = [config["models"][m]["name"] for m in ("text", "speech") if m in config.get("models", {})]
    data = ModelCardData(
        language="ko",
        license="other",
        tags=["emotion-recognition", "kemdy", cell.modality, cell.task],
        base_model=[name for name in encoders if _is_hub_name(name)] or None,
        model_name=f"{cell.name} on {dataset}, {tested}",
        eval_results=[
            EvalResult(
                task_type=task,
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=split,
                metric_type=key,
                metric_name=name,
                metric_value=round(float(value), 4),
            )
            for key, name, value in found
        ],
    )
    fusion = f", {cell.fusion} fusion ({FUSIONS[cell.fusion].summary})" if cell.fusion else ""
    outputs = {
        "classification": "each of the seven emotions' probability",
        "regression": "valence and arousal on the 1-5 scale",
        "total": "each of the seven emotions' probability, and valence and arousal on the 1-5 scale",
    }[cell.task]
    sizes = config["data"].get("split", {})
    signals = config["data"].get("bio_signals", [])
    bio = f" and the speaker's bio-signals ({', '.join(signals)})" if signals and cell.modality != "bio" else ""
    lines = [
        f"# {cell.name} on {dataset}, {tested}",
        "",
        *(
            [
                "**Trained on the built-in synthetic demo corpus with tiny random encoders: it shows that the "
                "pipeline runs, and knows nothing of real speech or emotion.**",
                "",
            ]
            if args.get("demo")
            else []
        ),
        f"A {cell.modality} {cell.task} model (encoders: {', '.join(encoders) or 'none'}{fusion}{bio}) that gives "
        f"{outputs} for a Korean utterance"
        + (f" from the speaker's bio-signals ({', '.join(signals)})" if cell.modality == "bio" else "")
        + ". Made with the KEMDy emotion-recognition toolkit (a re-implementation of "
        "[KNUAI/etri_multimodal](https://github.com/KNUAI/etri_multimodal)).",
        "",
        "## Training data",
        "",
        f"{dataset}, split {split}: "
        + ", ".join(f"{n} {part} utterances" for part, n in sizes.items())
        + f"; the epoch reported is {result.get('chosen_epoch', 'the last')} (chosen by "
        f"{result.get('selection', 'last_epoch').replace('_', ' ')})."
        + (
            " The emotion head learnt the share of the ten evaluators who chose each emotion (`--targets raters`)."
            if args.get("targets") == "raters" and cell.classifies
            else ""
        ),
        "",
        "## Results on its test utterances",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {name} | {value:.4f} |" for _, name, value in found),
        "",
        "## How it was made",
        "",
        "```",
        f"python {config['command']}",
        "```",
        "",
        "Every setting is in the run's `config.json` (`args`). To apply it to new utterances:",
        "",
        "```",
        "python -m common.predict --run_dir <this run's folder>"
        + (" --wav clip.wav" if cell.uses_speech else "")
        + (" --text '<transcript>'" if cell.uses_text else "")
        + (" --bio samples.csv  # its bio-signals: signal,value lines" if signals else ""),
        "```",
        "",
        "## Intended use and limits",
        "",
        "Research on emotion recognition in Korean speech and text. KEMDy's utterances are scripted and improvised "
        "dialogues between actors (KEMDy19: 40) or speakers (KEMDy20: 80) recorded in a studio; a model trained "
        "on them may do worse on other speakers, microphones or spontaneous speech, and its emotions are those "
        "seven classes only.",
        "",
        "## Terms",
        "",
        TERMS,
        "",
    ]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))
