"""Published protocols (`--protocol`): their rows and folds against an independent transcription of the publishing
code, their headline metric against scikit-learn, and a run under one set beside its published figure."""

import csv
import json
import re

import numpy as np
import pytest
from sklearn.metrics import f1_score
from sklearn.model_selection import KFold

from common.errors import UserError
from common.grid import EMOTIONS
from common.kemdy import read_corpus
from common.metrics import top1_weighted_f1
from common.protocols import PROTOCOLS, select
from common.synthetic import generate

from helpers import tiny_command


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Both layouts with enough sessions for five folds of whole sessions (and every quirk the generator plants:
    KEMDy19's listener rows and recordings without files, KEMDy20's ids that name another session)."""
    root = tmp_path_factory.mktemp("protocol_corpora")
    generate("19", root / "KEMDy19", sessions=7, utterances_per_session=10, seed=5)
    generate("20", root / "KEMDy20", sessions=8, utterances_per_session=10, seed=3)
    return {"19": root / "KEMDy19", "20": root / "KEMDy20"}


def continual_erc_transcribed(root, fold):
    """WoongheeLee/continual_erc_etri's Dataset.load_dataset and FoldDataset._build_fold, written out with the csv
    module in place of pandas: {"train"|"valid"|"test": segment ids}, `fold` counted from 0 as theirs."""
    wavs = {p.stem for p in (root / "wav").rglob("*.wav")}
    txts = {p.stem for p in (root / "wav").rglob("*.txt")}
    data = []
    for path in sorted((root / "annotation").glob("*.csv")):
        table = list(csv.reader(path.open(encoding="utf-8-sig")))
        names = [c.strip().lower() for c in table[0]]
        wav, seg, total = names.index("wav"), names.index("segment id"), names.index("total evaluation")
        for row in table[2:]:
            segment_id, emotion = row[seg], row[total]
            if "F" in path.name and "F" not in segment_id or "M" in path.name and "M" not in segment_id:
                continue  # their speaker filter, by the file name's letter
            emotion = emotion.replace("disqust", "disgust")
            if ";" in emotion:
                continue
            cells = [row[wav], row[wav + 1], segment_id, emotion, row[total + 1], row[total + 2]]
            if segment_id not in wavs or segment_id not in txts or any(c.strip() == "" for c in cells):
                continue  # dropna: no wav, no transcript, or an empty cell
            data.append(segment_id)
    session_of = {s: re.search(r"(Sess\d{2})_", s).group(1) for s in data}
    keys = np.array(sorted(set(session_of.values())))
    kf = KFold(n_splits=5, shuffle=True, random_state=12)
    train_sessions, test_sessions = list(kf.split(np.zeros(len(keys)), np.arange(len(keys))))[fold]
    valid_sessions = np.random.RandomState(12 + fold).choice(train_sessions, 2, replace=False)
    train_sessions = np.array([i for i in train_sessions if i not in valid_sessions])
    parts = {"train": train_sessions, "valid": valid_sessions, "test": test_sessions}
    return {part: sorted(s for s in data if session_of[s] in set(keys[idx])) for part, idx in parts.items()}


@pytest.mark.parametrize("dataset", ["19", "20"])
def test_continual_erc_keeps_the_publishing_codes_rows_and_folds(corpora, dataset):
    corpus = read_corpus(dataset, corpora[dataset])
    kept = select("continual_erc", corpus)
    ids = [u.segment_id for u in kept.utterances]
    first = continual_erc_transcribed(corpora[dataset], 0)
    assert sorted(ids) == sorted(first["train"] + first["valid"] + first["test"])
    reasons = {e.reason for e in kept.excluded} - {e.reason for e in corpus.excluded}
    expected = {"--protocol continual_erc: more than one emotion"}
    expected |= {"--protocol continual_erc: a listener's row"} if dataset == "19" else set()
    expected |= {"--protocol continual_erc: no recording under its annotated id"} if dataset == "20" else set()
    assert reasons == expected
    tested = []
    for k in range(1, 6):
        fold, train, valid = PROTOCOLS["continual_erc"].splits(ids, k)
        theirs = continual_erc_transcribed(corpora[dataset], k - 1)
        ours = {"train": train, "valid": valid, "test": fold.test}
        assert {p: sorted(ids[i] for i in idx) for p, idx in ours.items()} == theirs, k
        assert sorted(fold.train) == sorted(train + valid)
        tested += fold.test
    assert sorted(tested) == list(range(len(ids)))  # every kept utterance tested once over the five folds


def test_the_headline_metric_is_scikit_learns_weighted_f1_of_the_most_probable_emotion():
    rng = np.random.default_rng(4)
    for _ in range(20):
        true = rng.integers(0, 7, 60)
        probs = rng.random((60, 7))
        probs[:, 2] -= 2 * (rng.random() < 0.5)  # sometimes an emotion never predicted
        expected = f1_score(true, probs.argmax(1), average="weighted", labels=range(7), zero_division=0)
        assert top1_weighted_f1(np.eye(7)[true], probs) == pytest.approx(expected, abs=1e-12)


def test_a_protocol_is_refused_with_flags_that_would_decide_its_rows_or_folds(corpora):
    from common.cli import parse_script

    base = ["--dataset", "19", "--dataset_dir", str(corpora["19"]), "--protocol", "continual_erc"]
    for flags, said in (
        (["--split", "session"], "--split session"),
        (["--labels", "original"], "--labels original"),
        (["--duplicate_rows", "first"], "--duplicate_rows first"),
    ):
        with pytest.raises(UserError, match=rf"^--protocol continual_erc: reads the corpus .*; not with {said}$"):
            parse_script("text_classification", [*base, *flags])
    with pytest.raises(UserError, match=r"^--protocol continual_erc: a protocol within one corpus"):
        parse_script("text_classification", [*base, "--test_dataset", "20", "--test_dataset_dir", str(corpora["20"])])


def test_a_run_under_the_protocol_stands_beside_the_published_figure(corpora, tiny_models, tmp_path):
    """Its five folds are the protocol's, its folder names the protocol, its metrics.json says it, and the report
    sets its weighted F1 (recomputed here from predictions.csv) beside the published 0.7039."""
    from common.cli import parse_script
    from common.report import main as report
    from common.train import train

    runs = tmp_path / "runs" / "text_classification" / "KEMDy19_continual_erc"
    argv = tiny_command("text_classification", corpora["19"], tiny_models, runs, dataset="19", epochs=1)[2:]
    results = train(parse_script("text_classification", [*argv, "--protocol", "continual_erc", "--num_fold", "all"]))
    ids = [u.segment_id for u in select("continual_erc", read_corpus("19", corpora["19"])).utterances]
    scores = []
    for k, result in enumerate(results, start=1):
        assert (result["split"], result["protocol"], result["fold"]) == ("continual_erc", "continual_erc", k)
        with (runs / f"fold{k}" / "predictions.csv").open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert sorted(r["segment_id"] for r in rows) == continual_erc_transcribed(corpora["19"], k - 1)["test"]
        true = np.array([[int(r[f"true_{e}"]) for e in EMOTIONS] for r in rows]).argmax(1)
        top = np.array([[float(r[f"prob_{e}"]) for e in EMOTIONS] for r in rows]).argmax(1)
        scores.append(f1_score(true, top, average="weighted", zero_division=0))
        assert result["test"]["top1_weighted_f1"] == pytest.approx(scores[-1], abs=1e-9)
    assert sorted(sum((continual_erc_transcribed(corpora["19"], k)["test"] for k in range(5)), [])) == sorted(ids)
    report([str(tmp_path / "runs"), "--no-figures", "--bootstrap", "100"])
    md = (tmp_path / "runs" / "report" / "results.md").read_text(encoding="utf-8")
    section = md[md.index("## Published protocols") :]
    row = next(line for line in section.splitlines() if line.startswith("| text_classification | KEMDy19 |"))
    assert f"| {np.mean(scores):.4f} ± {np.std(scores, ddof=1):.4f} | 0.7039 |" in row, row
    assert "WoongheeLee/continual_erc_etri" in row
    assert json.loads((runs / "fold1" / "config.json").read_text())["args"]["protocol"] == "continual_erc"
