"""Bio-signals (common.bio): each utterance's samples are its speaker's file's samples tagged with its id, in both
corpora's layouts (files written here by hand from the format's description, and the synthetic corpus's files read
back with pandas); what is missing is counted by reason in the audit; a corpus without the folders reads as
before."""

import csv
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from common import audit, bio
from common.kemdy import read_corpus
from common.synthetic import generate, write_bio

F1, F2, M1 = "Sess01_script01_User001F_001", "Sess01_script01_User001F_002", "Sess01_script01_User002M_001"


def _utterance(root, segment_id, speaker, session="Sess01"):
    folder = "Session01" if segment_id.startswith("Sess01_script") else ""
    return SimpleNamespace(
        segment_id=segment_id,
        annotation_id=segment_id,
        session=session,
        speaker=speaker,
        wav=root / "wav" / folder / f"{segment_id}.wav",
    )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_kemdy20_files_by_hand_give_each_turn_its_wearers_tagged_samples_and_count_the_rest(tmp_path):
    folder = tmp_path / "{}" / "Session01"
    _write(
        Path(str(folder).format("EDA")) / "Sess01_script01_User001F.csv",
        "1598005652.000000,2020-0821-1127-32-250\n4.000000,hz\n"
        "0.51,2020-0821-1127-32-500\n"
        f"0.52,2020-0821-1127-32-750,{F1}\n"
        f"0.53,2020-0821-1127-33-000,{F1}\n"
        "0.54,2020-0821-1127-33-250\n"
        "oops,2020-0821-1127-33-500\n"
        f"0.60,2020-0821-1127-33-750,{F2}\n",
    )
    _write(
        Path(str(folder).format("IBI")) / "Sess01_script01_User001F.csv",
        "1598005652.000000,IBI,2020-0821-1127-32-250\n"
        f"1.25,0.81,2020-0821-1127-33-500,{F1}\n"
        "2.06,0.79,2020-0821-1127-34-310\n",
    )
    _write(Path(str(folder).format("TEMP")) / "Sess01_script01_User001F.csv", "33.1,2020-0821-1127-32-250\n33.2,x\n")
    utterances = [_utterance(tmp_path, F1, "User001F"), _utterance(tmp_path, F2, "User001F")]
    utterances.append(_utterance(tmp_path, M1, "User002M"))
    found = bio.read_signals(tmp_path, "20", utterances)
    assert found.signals == ("EDA", "TEMP", "IBI")
    assert found.samples[0]["EDA"].tolist() == pytest.approx([0.52, 0.53])
    assert found.samples[1]["EDA"].tolist() == pytest.approx([0.60])
    assert found.samples[0]["IBI"].tolist() == pytest.approx([0.81])
    assert "IBI" not in found.samples[1] and found.samples[2] == {}
    assert found.missing["EDA"] == {bio.NO_FILE: 1}  # the man's file
    assert found.missing["IBI"] == {bio.NO_TAGGED: 1, bio.NO_FILE: 1}
    assert found.missing["TEMP"] == {bio.UNREADABLE_FILE: 2, bio.NO_FILE: 1}  # its header lacks the rate line
    assert found.bad_line_counts["EDA"] == 1
    assert any("line 7: no number in column 1" in p for p in found.bad_lines["EDA"])
    assert any("second line is not '<rate>,hz'" in p for p in found.bad_lines["TEMP"])


def test_kemdy19_files_by_hand_are_read_by_the_speakers_actor_with_tags_of_both(tmp_path):
    f, m = "Sess01_impro01_F001", "Sess01_impro01_M001"
    _write(
        tmp_path / "EDA" / "Session01" / "Original" / "Sess01F.csv",
        f"0.5,12.25,2020-0821-1127-32-250,{f}\n0.6,12.50,2020-0821-1127-32-500,{m}\n0.7,12.75,2020-0821-1127-32-750\n",
    )
    _write(tmp_path / "EDA" / "Session01" / "Original" / "Sess01M.csv", f"1.5,12.25,x,{f}\n1.6,12.50,x,{m}\n")
    utterances = [_utterance(tmp_path, f, "Sess01_F"), _utterance(tmp_path, m, "Sess01_M")]
    found = bio.read_signals(tmp_path, "19", utterances)
    assert found.signals == ("EDA",)  # no TEMP or ECG folder: those signals are not there at all
    assert [s["EDA"].tolist() for s in found.samples] == [pytest.approx([0.5]), pytest.approx([1.6])]


@pytest.fixture(scope="module", params=["20", "19"])
def corpus(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"bio{request.param}")
    generate(request.param, root, sessions=3, utterances_per_session=40, seed=5)
    return request.param, root, write_bio(root, request.param, seed=5)


def _tagged_by_pandas(path: Path, dataset: str, signal: str, segment_id: str) -> list[float]:
    """The file's values tagged with `segment_id`, read by pandas (bad lines coerced away)."""
    skip = {"20": {"EDA": 2, "TEMP": 2, "IBI": 1}, "19": {}}[dataset].get(signal, 0)
    table = pd.read_csv(path, header=None, skiprows=skip, names=range(5), dtype=str)
    value, tag = (1, 3) if signal == "IBI" else (0, 2 if dataset == "20" else 3)
    values = pd.to_numeric(table[value], errors="coerce")
    return values[(table[tag] == segment_id) & values.notna()].tolist()


def test_the_synthetic_files_read_back_as_pandas_reads_them_and_the_audit_counts_what_is_missing(corpus):
    dataset, root, truth = corpus
    c = read_corpus(dataset, root)
    found = bio.read_signals(root, dataset, c.utterances)
    for u, samples in zip(c.utterances, found.samples, strict=True):
        for signal in found.signals:
            path = bio.wearer_file(root, dataset, signal, u)
            expected = _tagged_by_pandas(path, dataset, signal, u.segment_id) if path.is_file() else []
            assert samples.get(signal, np.array([])).tolist() == pytest.approx(expected, rel=1e-6), (
                u,
                signal,
            )  # kept as float32
    s = audit.summarize(c)["bio"]
    missing_eda = [
        u
        for u in c.utterances
        if bio.wearer_file(root, dataset, "EDA", u).relative_to(root).as_posix() in truth.missing_files
    ]
    assert missing_eda and s["EDA"]["missing"][bio.NO_FILE] == len(missing_eda)
    assert s["EDA"]["skipped_lines"] == 1 and truth.bad_lines[0] in s["EDA"]["problems"][0].replace(f"{root}/", "")
    untagged = sum(u.segment_id in truth.untagged for u in c.utterances)
    assert s["TEMP"]["missing"][bio.NO_TAGGED] >= untagged > 0
    if dataset == "20":
        assert s["IBI"]["missing"][bio.NO_TAGGED] == len(truth.without_ibi) > 0  # sparse: half the turns
    else:
        empty, used = {"EDA": 0, "TEMP": 0}, {(u.annotation, u.line) for u in c.utterances}
        for file in (root / "annotation").glob("*.csv"):
            with file.open(encoding="utf-8", newline="") as f:
                for line, row in enumerate(csv.reader(f), start=1):
                    if (file.name, line) in used:  # the audit counts the rows it uses
                        empty["EDA"] += not (row[5] and row[6])
                        empty["TEMP"] += not (row[7] and row[8])
        assert s["annotation_cells_empty"] == empty and empty["TEMP"] >= truth.empty_cells > 0
    lines = "\n".join(audit._bio_lines(s, len(c.utterances)))
    assert (
        f"EDA   utterances {len(c.utterances) - sum(s['EDA']['missing'].values()):>6} of {len(c.utterances)}" in lines
    )


def test_the_planted_signal_raises_the_speakers_eda_with_arousal(corpus):
    dataset, root, _ = corpus
    c = read_corpus(dataset, root)
    found = bio.read_signals(root, dataset, c.utterances)
    pairs = [(s["EDA"].mean(), u.arousal) for u, s in zip(c.utterances, found.samples, strict=True) if "EDA" in s]
    rho = spearmanr(*zip(*pairs, strict=True)).statistic
    assert rho > 0.5, rho


def test_a_corpus_without_bio_folders_lists_the_same_utterances_and_says_it_has_none(corpus, tmp_path):
    dataset, root, _ = corpus
    bare = tmp_path / "bare"
    shutil.copytree(root, bare, ignore=shutil.ignore_patterns(*bio.SIGNALS[dataset]))
    with_bio, without = read_corpus(dataset, root), read_corpus(dataset, bare)
    assert with_bio.fingerprint() == without.fingerprint()  # the same listing, labels and transcripts
    assert audit.summarize(without)["bio"] == {"signals": [], "files_read": 0} | (
        {"annotation_cells_empty": audit.summarize(with_bio)["bio"]["annotation_cells_empty"]}
        if dataset == "19"
        else {}
    )
    assert (
        audit._bio_lines(audit.summarize(without)["bio"], 1)[0] == "bio-signals: none (no EDA, TEMP, IBI or ECG folder)"
    )


def test_the_features_are_their_definitions_computed_by_hand():
    x = np.array([1.0, 2.0, 1.0, 3.0, 1.0])
    # mean 1.6; last - first 0; population std sqrt((.36 + .16 + .36 + 1.96 + .36) / 5) = 0.8; two peaks in 1.25 s
    assert bio.signal_features("EDA", x) == pytest.approx([1.6, 0.0, 0.8, 2 / 1.25])
    assert bio.signal_features("EDA", np.array([1.0, 1.005, 1.0, 1.2])) == pytest.approx(
        [1.05125, 0.2, np.std([1.0, 1.005, 1.0, 1.2]), 0.0]
    )  # a 0.005 rise is no peak
    assert bio.signal_features("IBI", np.array([0.8])) == pytest.approx([0.8, 0.0, 0.0])
    rows = bio.feature_rows(("EDA", "IBI"), [{"EDA": x, "IBI": np.array([0.8, 0.7])}, {"EDA": x}])
    assert rows.shape == (2, 7) and np.isnan(rows[1, 4:]).all() and not np.isnan(rows[0]).any()
    assert rows[0, 4:] == pytest.approx([0.75, -0.1, 0.05])


def test_standardising_reads_only_the_training_part_of_each_rows_own_corpus():
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.normal(2, 0.5, (6, 2)), rng.normal(10, 3, (6, 2))])
    rows[1, 0] = np.nan  # a missing signal
    corpora, train = ["19"] * 6 + ["20"] * 6, [0, 1, 2, 3, 6, 7, 8, 9]
    out = bio.standardised(rows, corpora, train)
    for part, fit in ((slice(0, 6), [0, 1, 2, 3]), (slice(6, 12), [6, 7, 8, 9])):
        values = rows[fit]
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        assert out[part] == pytest.approx((rows[part] - mean) / std, nan_ok=True)
    assert np.isnan(out[1, 0])
    changed = rows.copy()
    changed[[4, 5, 10, 11]] = 1e6  # the test rows: nothing of theirs enters the statistics
    assert bio.standardised(changed, corpora, train)[train] == pytest.approx(out[train], nan_ok=True)


def test_the_bio_encoder_gives_a_missing_signal_its_learnt_embedding_and_no_row_depends_on_its_batch():
    import torch

    from common.bioencoder import BioEncoder

    torch.manual_seed(0)
    encoder = BioEncoder(("EDA", "TEMP"), width=8).eval()
    rows = torch.randn(4, 7)
    rows[1, :4] = float("nan")  # utterance 1 has no EDA
    out = encoder(rows)
    assert not out.isnan().any()
    with torch.no_grad():  # by hand: the absent vector in EDA's place, TEMP's projection beside it
        temp = encoder.projections[1](rows[1, 4:])
        by_hand = encoder.mix(torch.cat([encoder.absent[0], temp]))
    assert torch.allclose(out[1], by_hand, atol=1e-6)
    alone = torch.cat([encoder(rows[k : k + 1]) for k in range(4)])
    assert torch.allclose(out, alone, atol=1e-6)
    encoder.train()
    encoder(rows).sum().backward()
    assert encoder.absent.grad[0].abs().sum() > 0 and encoder.absent.grad[1].abs().sum() == 0  # TEMP is never missing
    assert all(not p.grad.isnan().any() for p in encoder.parameters())


def test_the_bio_encoder_learns_arousal_from_the_planted_signal_of_held_out_sessions(corpus):
    import torch

    from common.bioencoder import BioEncoder

    dataset, root, _ = corpus
    c = read_corpus(dataset, root)
    found = bio.read_signals(root, dataset, c.utterances)
    train = [k for k, u in enumerate(c.utterances) if u.session != "Sess03"]
    test = [k for k, u in enumerate(c.utterances) if u.session == "Sess03"]
    rows = bio.standardised(bio.feature_rows(found.signals, found.samples), [dataset] * len(c.utterances), train)
    arousal = torch.tensor([u.arousal for u in c.utterances], dtype=torch.float32)

    def held_out_rho(features: np.ndarray) -> float:
        torch.manual_seed(0)
        model = torch.nn.Sequential(BioEncoder(found.signals, width=16, dropout=0.0), torch.nn.Linear(16, 1))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        x = torch.tensor(features, dtype=torch.float32)
        for _ in range(200):
            optimizer.zero_grad()
            loss = ((model(x[train]).squeeze(-1) - arousal[train]) ** 2).mean()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            predicted = model.eval()(x[test]).squeeze(-1)
        return spearmanr(predicted.numpy(), arousal[test].numpy()).statistic

    learnt = held_out_rho(rows)
    shuffled = held_out_rho(rows[np.random.default_rng(0).permutation(len(rows))])  # features of other utterances
    assert learnt > 0.5 and learnt > shuffled + 0.3, (learnt, shuffled)


def test_bio_files_are_never_written_over_a_corpus_that_has_them(corpus):
    from common.errors import UserError

    dataset, root, _ = corpus
    before = {p: p.read_bytes() for p in (root / "annotation").iterdir()}
    with pytest.raises(UserError, match=r"already holds bio-signal files"):
        write_bio(root, dataset)
    assert {p: p.read_bytes() for p in (root / "annotation").iterdir()} == before
