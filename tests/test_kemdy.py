"""KEMDy19/20 readers: order, labels, quirks, exclusions and errors, against the generator's ground truth
and against small hand-written corpora."""

import csv
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.audit import format_summary, summarize
from common.errors import UserError
from common.grid import EMOTIONS
from common.kemdy import LAYOUTS, N_RATERS, Rating, decode_text, original_emotions, parse_emotions, read_corpus
from common.synthetic import generate

HEADER20 = (
    "Numb,Wav,,Segment ID,Total Evaluation,,,Eval01F,,\n,start,end,,Emotion,Valence,Arousal,Emotion,Valence,Arousal\n"
)
HEADER19 = (
    "Numb,Wav,,ECG,,EDA,,TEMP,,Segment ID,Total Evaluation,,,Eval01,,\n"
    " ,start,end,start,end,start,end,start,end, ,Emotion,Valence,Arousal,Emotion,Valence,Arousal\n"
)


def hot(*names):
    return tuple(int(e in names) for e in EMOTIONS)


def write_wav(path: Path, seconds=0.5, rate=16000, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.1 * np.sin(np.arange(int(seconds * rate)) / 10)
    sf.write(str(path), np.stack([x] * channels, axis=1) if channels > 1 else x, rate)


def kemdy20(root: Path, session: int, rows, transcripts=None, header=HEADER20):
    """A KEMDy20 annotation file with `rows` = [(id, emotion, valence, arousal)], plus a wav and a
    transcript (bytes from `transcripts`, or the id in cp949) for every id not starting with 'nofile'."""
    (root / "wav").mkdir(parents=True, exist_ok=True)
    lines = [f"{i},0.0,1.0,{sid},{emo},{v},{a},neutral,3,3" for i, (sid, emo, v, a) in enumerate(rows, 1)]
    path = root / "annotation" / f"Sess{session:02d}_eval.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    for sid, *_ in rows:
        if sid.startswith("Sess"):
            stem = f"Sess{session:02d}" + sid[6:]
            wav = root / "wav" / f"Session{session:02d}" / f"{stem}.wav"
            write_wav(wav)
            data = (transcripts or {}).get(sid, f"문장 {sid}\n".encode("cp949"))
            wav.with_suffix(".txt").write_bytes(data)
    return path


def test_kemdy20_records_follow_annotation_order_and_match_the_generator(corpus20):
    root, truth = corpus20
    corpus = read_corpus("20", root)
    assert corpus.annotation_files == ["Sess01_eval.csv", "Sess02_eval.csv", "Sess03_eval.csv"]
    assert corpus.rows == len(truth) == 120
    assert corpus.excluded == []
    assert [u.segment_id for u in corpus.utterances] == [r.segment_id for r in truth]
    assert [u.annotation_id for u in corpus.utterances] == [r.annotation_id for r in truth]
    for u, r in zip(corpus.utterances, truth, strict=True):
        assert u.labels == hot(*r.labels)
        assert (u.valence, u.arousal) == r.scores[0]
        assert u.text == r.text
        assert u.speaker == r.speaker and u.session == f"Sess{r.session:02d}"
        assert u.duration == pytest.approx(r.duration)
        assert u.wav == root / "wav" / f"Session{r.session:02d}" / f"{r.segment_id}.wav"
    assert corpus.transcript_encodings == Counter(r.encoding for r in truth)
    assert [u.line for u in corpus.utterances[:3]] == [3, 4, 5]


def test_kemdy20_ids_naming_another_session_are_found_in_their_files_session(corpus20):
    root, truth = corpus20
    corpus = read_corpus("20", root)
    moved = [u for u in corpus.utterances if u.annotation_id != u.segment_id]
    assert moved, "the synthetic corpus must carry the session-17 quirk"
    for u in moved:
        assert u.annotation == "Sess03_eval.csv" and u.annotation_id.startswith("Sess01_")
        assert u.segment_id == "Sess03" + u.annotation_id[6:] and u.wav.is_file()


def test_session_17_quirk_on_a_hand_written_file(tmp_path):
    kemdy20(tmp_path, 17, [("Sess16_script01_User033F_001", "happy", 4, 3)])
    (u,) = read_corpus("20", tmp_path).utterances
    assert u.segment_id == "Sess17_script01_User033F_001"
    assert u.annotation_id == "Sess16_script01_User033F_001"
    assert u.wav == tmp_path / "wav" / "Session17" / "Sess17_script01_User033F_001.wav"
    assert u.speaker == "User033F" and u.session == "Sess17"


def test_kemdy19_reads_every_row_of_both_files_and_lists_the_recordings_without_files(corpus19):
    root, truth = corpus19
    corpus = read_corpus("19", root)
    assert corpus.annotation_files == [f"Session{s:02d}_{g}_res.csv" for s in (1, 2, 3) for g in "FM"]
    assert corpus.rows == 2 * len(truth) == 240
    missing = {r.segment_id: r.missing for r in truth if r.missing}
    assert len(missing) == 6
    reasons = {"wav": "missing_wav", "transcript": "missing_transcript", "both": "missing_wav_and_transcript"}
    assert sorted((e.segment_id, e.reason) for e in corpus.excluded) == sorted(
        (sid, reasons[kind]) for sid, kind in missing.items() for _ in "FM"
    )
    assert len(corpus.utterances) == 240 - 12
    # Order: file by file (F then M per session), rows in file order; each file's own evaluation.
    expected = []
    for s in (1, 2, 3):
        for k, _ in enumerate("FM"):
            expected += [(r.segment_id, r.scores[k]) for r in truth if r.session == s and not r.missing]
    assert [(u.segment_id, (u.valence, u.arousal)) for u in corpus.utterances] == expected
    first = corpus.utterances[0]
    assert first.wav == root / "wav" / "Session01" / "Sess01_impro01" / "Sess01_impro01_F001.wav"
    assert first.speaker == "Sess01_F"


def test_kemdy19_speaker_rows_keep_one_row_per_recording_from_the_speakers_file(corpus19):
    root, truth = corpus19
    corpus = read_corpus("19", root, rows="speaker")
    assert corpus.other_actor_rows == len(truth)
    assert len(corpus.utterances) == len(truth) - 6
    assert len({u.segment_id for u in corpus.utterances}) == len(corpus.utterances)
    for u in corpus.utterances:
        assert u.annotation.endswith(f"_{u.segment_id[-4]}_res.csv")


def test_audio_headers_give_sample_rate_channels_and_duration(corpus19):
    root, truth = corpus19
    by_id = {r.segment_id: r for r in truth}
    corpus = read_corpus("19", root)
    assert {(u.sample_rate, u.channels) for u in corpus.utterances} == {(16000, 1), (44100, 1), (48000, 1), (16000, 2)}
    for u in corpus.utterances:
        r = by_id[u.segment_id]
        assert (u.sample_rate, u.channels) == (r.sample_rate, r.channels)
        assert u.duration == pytest.approx(r.duration)


@pytest.mark.parametrize(
    "cell, names",
    [
        ("neutral", ["neutral"]),
        ("neutral;happy", ["neutral", "happy"]),
        (" Disqust ; sad ", ["disgust", "sad"]),
        ("disgust;", ["disgust"]),
        ("surprise;fear;angry", ["surprise", "fear", "angry"]),
    ],
)
def test_emotion_cells_become_multi_hot_vectors_in_the_documented_order(cell, names):
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert parse_emotions(cell) == hot(*names)


@pytest.mark.parametrize(
    "cell, names",
    [
        ("neutral", ["neutral"]),
        ("disqust", ["disgust"]),  # KEMDy20's spelling: the only one the original's dictionary knew
        ("neutral;happy", ["neutral", "happy"]),
        ("disgust", EMOTIONS),  # KEMDy19's spelling: all seven
        ("neutral; happy", EMOTIONS),  # parts were not stripped
        ("neutral;", EMOTIONS),  # an empty part after a trailing ;
        ("Neutral", EMOTIONS),  # nor lower-cased
        ("sad;joyful", EMOTIONS),
    ],
)
def test_the_original_dictionary_turns_any_label_it_does_not_know_into_all_seven_emotions(cell, names):
    # By hand, what the original did: make_label[k][emotion_dict.get(part)] = 1 for every part, where a
    # None index selects the whole row.
    dictionary = {"angry": 0, "disqust": 1, "fear": 2, "happy": 3, "neutral": 4, "sad": 5, "surprise": 6}
    row = np.zeros((1, 7))
    for part in cell.split(";"):
        row[0][dictionary.get(part)] = 1
    assert original_emotions(cell) == tuple(row[0].astype(int)) == hot(*names)


def test_a_kemdy19_disgust_row_is_all_seven_emotions_under_the_original_labels_and_listed_by_the_audit(tmp_path):
    ids = [f"Sess01_impro01_F{k:03d}" for k in range(1, 5)]
    cells = ["disgust", "neutral;disgust", "happy", "joyful"]
    lines = [
        f"{k},0,1,0,1,0,1,0,1,{sid},{cell},3,3,neutral,3,3"
        for k, (sid, cell) in enumerate(zip(ids, cells, strict=True), 1)
    ]
    path = tmp_path / "annotation" / "Session01_F_res.csv"
    path.parent.mkdir(parents=True)
    path.write_text(HEADER19 + "\n".join(lines) + "\n", encoding="utf-8")
    for sid in ids:
        wav = tmp_path / "wav" / "Session01" / "Sess01_impro01" / f"{sid}.wav"
        write_wav(wav)
        wav.with_suffix(".txt").write_text("그래", encoding="utf-8")
    checked = read_corpus("19", tmp_path)
    original = read_corpus("19", tmp_path, labels="original")
    assert [u.labels for u in checked.utterances] == [hot("disgust"), hot("neutral", "disgust"), hot("happy")]
    assert [(e.segment_id, e.reason) for e in checked.excluded] == [(ids[3], "unknown_emotion")]
    assert "'joyful'" in checked.excluded[0].detail
    # The original used every row whose files exist, 'joyful' included, as a row of seven ones.
    assert [u.labels for u in original.utterances] == [hot(*EMOTIONS), hot(*EMOTIONS), hot("happy"), hot(*EMOTIONS)]
    assert original.excluded == [] and [u.emotion for u in original.utterances] == cells
    for corpus in (checked, original):
        seven = summarize(corpus)["original_all_seven"]
        assert seven["rows"] == 3 and seven["segment_ids"] == [ids[0], ids[1], ids[3]]
        assert seven["cells"] == {"disgust": 1, "neutral;disgust": 1, "joyful": 1}
    proc = run_audit("--dataset", "19", "--dataset_dir", str(tmp_path), "--labels", "original")
    assert proc.returncode == 0, proc.stderr
    assert "Emotion cells read: original" in proc.stdout
    assert "rows the original's label dictionary turns into all seven emotions: 3" in proc.stdout
    assert f"({ids[0]}, {ids[1]}, {ids[3]})" in proc.stdout


def test_the_synthetic_corpora_spell_disgust_as_the_real_ones(tmp_path):
    from common.synthetic import generate

    for dataset, spelling in (("19", "disgust"), ("20", "disqust")):
        root = tmp_path / dataset
        truth = generate(dataset, root, sessions=2, utterances_per_session=40, seed=3)
        assert any("disgust" in r.labels for r in truth)
        emotion = LAYOUTS[dataset].segment_col + 1  # the total evaluation's Emotion; the evaluators' follow it
        cells, raters = set(), set()
        for path in (root / "annotation").iterdir():
            for row in list(csv.reader(path.open(encoding="utf-8")))[2:]:
                cells |= {row[emotion]} if "dis" in row[emotion] else set()
                raters |= {c for c in row[emotion + 3 :: 3] if "dis" in c}
        assert cells and all(spelling in c and c.count("dis") == c.count(spelling) for c in cells)
        assert raters == {"disgust"}  # both corpora's evaluators write disgust
        seven = summarize(read_corpus(dataset, root))["original_all_seven"]["rows"]
        # KEMDy19 lists every recording in both actors' files; recordings without files are excluded.
        used = [r for r in truth if not r.missing]
        assert seven == (2 * sum("disgust" in r.labels for r in used) if dataset == "19" else 0)


def test_transcripts_decode_strictly_utf8_first_then_cp949():
    text = "오늘 정말 행복해"
    assert decode_text(text.encode("utf-8")) == (text, "utf-8")
    assert decode_text(b"\xef\xbb\xbf" + text.encode("utf-8")) == (text, "utf-8-bom")
    assert decode_text(text.encode("cp949")) == (text, "cp949")
    assert decode_text(b"\xff\xfe\xfa\xff") is None


def test_transcript_quirks_first_line_encodings_empty_and_undecodable(tmp_path):
    ids = [f"Sess01_script01_User001F_{k:03d}" for k in range(1, 6)]
    transcripts = {
        ids[0]: "l/ 진짜 화가 나 *\r\n둘째 줄\r\n".encode("cp949"),
        ids[1]: b"\xef\xbb\xbf" + "좋아 b/\n".encode(),
        ids[2]: "슬퍼".encode(),
        ids[3]: b"",
        ids[4]: b"\xff\xfe\xfa\xff",
    }
    kemdy20(tmp_path, 1, [(i, "neutral", 3, 3) for i in ids], transcripts)
    corpus = read_corpus("20", tmp_path)
    assert [u.text for u in corpus.utterances] == ["l/ 진짜 화가 나 *", "좋아 b/", "슬퍼", ""]
    assert corpus.transcript_encodings == Counter({"cp949": 1, "utf-8-bom": 1, "utf-8": 2})
    (bad,) = corpus.excluded
    assert (bad.segment_id, bad.reason) == (ids[4], "undecodable_transcript")
    assert bad.detail.startswith(str(tmp_path / "wav" / "Session01" / f"{ids[4]}.txt"))
    assert summarize(corpus)["transcripts"]["empty"] == 1


def test_rows_with_unusable_labels_or_files_are_excluded_with_their_reason(tmp_path):
    rows = [
        ("Sess01_script01_User001F_001", "happy", 4.2, 3.1),
        ("Sess01_script01_User001F_002", "joyful", 4, 3),
        ("Sess01_script01_User001F_003", "", 3, 3),
        ("Sess01_script01_User001F_004", "sad", "nan", 3),
        ("Sess01_script01_User001F_005", "sad", 2, 5.5),
        ("Sess01_script01_User001F_006", "sad", 2, "high"),
        ("nofile_Sess01_script01_User001F_007", "sad", 2, 2),
        ("Sess01_script01_User001F_008", "angry;disgust", 1.5, 4.5),
    ]
    kemdy20(tmp_path, 1, rows)
    (tmp_path / "wav" / "Session01" / "Sess01_script01_User001F_001.wav").write_bytes(b"RIFF, not really")
    corpus = read_corpus("20", tmp_path)
    got = [(e.segment_id, e.reason, e.line) for e in corpus.excluded]
    assert got == [
        ("Sess01_script01_User001F_001", "unreadable_wav", 3),
        ("Sess01_script01_User001F_002", "unknown_emotion", 4),
        ("Sess01_script01_User001F_003", "missing_emotion", 5),
        ("Sess01_script01_User001F_004", "invalid_valence_arousal", 6),
        ("Sess01_script01_User001F_005", "invalid_valence_arousal", 7),
        ("Sess01_script01_User001F_006", "invalid_valence_arousal", 8),
        ("nofile_Sess01_script01_User001F_007", "missing_wav_and_transcript", 9),
    ]
    assert "'joyful'" in corpus.excluded[1].detail and "5.5" in corpus.excluded[4].detail
    (u,) = corpus.utterances
    assert (u.segment_id, u.labels, u.valence, u.arousal) == (
        "Sess01_script01_User001F_008",
        hot("angry", "disgust"),
        1.5,
        4.5,
    )


def test_blank_rows_are_ignored_and_short_rows_are_excluded(tmp_path):
    path = kemdy20(tmp_path, 1, [("Sess01_script01_User001F_001", "happy", 4, 3)])
    path.write_text(path.read_text() + ",,,,,,,,,\n \n5,0.0,1.0,Sess01_script01_User001F_002\n")
    corpus = read_corpus("20", tmp_path)
    assert corpus.rows == 2 and len(corpus.utterances) == 1
    (e,) = corpus.excluded
    assert (e.segment_id, e.reason, e.line) == ("Sess01_script01_User001F_002", "malformed_row", 6)


def test_kemdy19_second_header_row_with_spaces_and_crlf_is_read(tmp_path):
    sid = "Sess02_script03_M012"
    path = tmp_path / "annotation" / "Session02_M_res.csv"
    path.parent.mkdir(parents=True)
    row = f"1,0,1,0,1,0,1,0,1,{sid},neutral;sad,2.5,1.9,sad,2,2"
    path.write_bytes((HEADER19 + row + "\n").replace("\n", "\r\n").encode("cp949"))
    wav = tmp_path / "wav" / "Session02" / "Sess02_script03" / f"{sid}.wav"
    write_wav(wav, seconds=0.2, rate=48000, channels=2)
    wav.with_suffix(".txt").write_bytes("그래서 슬퍼".encode("cp949"))
    (u,) = read_corpus("19", tmp_path).utterances
    assert (u.segment_id, u.labels, u.valence, u.arousal, u.text) == (
        sid,
        hot("neutral", "sad"),
        2.5,
        1.9,
        "그래서 슬퍼",
    )
    assert (u.sample_rate, u.channels, u.speaker) == (48000, 2, "Sess02_M")
    assert u.duration == pytest.approx(0.2)


@pytest.mark.parametrize(
    "setup, dataset, message",
    [
        (lambda root: None, "20", "no such directory"),
        (lambda root: (root / "wav").mkdir(parents=True), "20", "not a KEMDy20 root (no annotation/ folder)"),
        (lambda root: (root / "annotation").mkdir(parents=True), "19", "not a KEMDy19 root (no wav/ folder)"),
        (
            lambda root: kemdy20(root, 1, [("Sess01_script01_User001F_001", "happy", 4, 3)]),
            "19",
            "holds KEMDy20 annotation files (SessNN_eval.csv), not KEMDy19's (SessionNN_{F,M}_res.csv): "
            "use --dataset 20",
        ),
    ],
)
def test_wrong_roots_stop_with_a_message_naming_the_folder(tmp_path, setup, dataset, message):
    root = tmp_path / "KEMDy"
    setup(root)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        read_corpus(dataset, root)
    assert str(root) in str(err.value) and "\n" not in str(err.value)


def test_kemdy19_folder_read_as_kemdy20_says_use_dataset_19(corpus19):
    root, _ = corpus19
    with pytest.raises(UserError, match=r"holds KEMDy19 annotation files .* use --dataset 19"):
        read_corpus("20", root)


def write_annotation(root: Path, name: str, text: str | bytes) -> Path:
    (root / "wav").mkdir(parents=True, exist_ok=True)
    path = root / "annotation" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(
    "name, text, message",
    [
        (
            "Session01_F_res.csv",
            HEADER20 + "1,0,1,Sess01_x,happy,3,3\n",
            r"'Segment ID' is in column 4 as in KEMDy20, not column 10 as in KEMDy19: use --dataset 20",
        ),
        (
            "Session01_F_res.csv",
            "Numb,Wav\n,start\n",
            r"expected 'Segment ID' in column 10 of the first header row, found nothing \(missing columns\?\)",
        ),
        (
            "Session01_F_res.csv",
            HEADER19.replace("Valence,Arousal,Emotion", "Valence,Emotion"),
            r"expected Emotion, Valence, Arousal in columns 11-13 of the second header row",
        ),
        ("Session01_F_res.csv", "", r"expected two header rows, found 0 row\(s\)"),
        ("Session01_F_res.csv", b"\xff\xfe\xfa\xff,\n", "annotation file is neither UTF-8 nor cp949 text"),
    ],
)
def test_malformed_annotation_files_stop_with_a_message_naming_the_file(tmp_path, name, text, message):
    path = write_annotation(tmp_path, name, text)
    with pytest.raises(UserError, match=message) as err:
        read_corpus("19", tmp_path)
    assert str(err.value).startswith(f"{path}: ")


def test_kemdy20_header_in_kemdy19_position_says_use_dataset_19(tmp_path):
    write_annotation(tmp_path, "Sess01_eval.csv", HEADER19)
    with pytest.raises(UserError, match="use --dataset 19"):
        read_corpus("20", tmp_path)


def test_a_corpus_with_nothing_usable_stops_and_names_the_reasons(tmp_path):
    kemdy20(tmp_path, 1, [("nofile_a", "happy", 3, 3), ("nofile_b", "glad", 3, 3)])
    with pytest.raises(UserError, match=r"no usable KEMDy20 utterances in 2 rows \(excluded: "):
        read_corpus("20", tmp_path)


def run_audit(*args):
    return subprocess.run([sys.executable, "-m", "common.audit", *args], capture_output=True, text=True)


def test_audit_json_reports_counts_exclusions_labels_and_audio(corpus19):
    root, truth = corpus19
    proc = run_audit("--dataset", "19", "--dataset_dir", str(root), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    used = [r for r in truth if not r.missing]
    assert report["rows"] == 240 and report["used"] == 228
    assert sorted(e["segment_id"] for e in report["excluded"]) == sorted([r.segment_id for r in truth if r.missing] * 2)
    assert {e["reason"] for e in report["excluded"]} == {
        "missing_wav",
        "missing_transcript",
        "missing_wav_and_transcript",
    }
    assert report["label_counts"] == {e: 2 * sum(e in r.labels for r in used) for e in EMOTIONS}
    assert report["multi_label"] == 2 * sum(len(r.labels) > 1 for r in used)
    assert report["single_label"] + report["multi_label"] == 228
    valences = [r.scores[k][0] for r in used for k in (0, 1)]
    assert report["valence"]["min"] == min(valences) and report["valence"]["max"] == max(valences)
    assert report["valence"]["mean"] == pytest.approx(np.mean(valences), abs=1e-4)
    durations = [r.duration for r in used]
    assert report["audio"]["recordings"] == len(used)
    assert report["audio"]["seconds"]["max"] == pytest.approx(max(durations))
    assert report["audio"]["longer_than_5s"] == sum(d > 5 for d in durations) > 0
    assert report["audio"]["shorter_than_0.25s"] == sum(d < 0.25 for d in durations) > 0
    # 228 utterances: test blocks end at int(228k/5) = 45, 91, 136, 182, 228; valid = ceil(0.1 x rest)
    assert [(f["train"], f["valid"], f["test"]) for f in report["folds"]["contiguous"]] == [
        (164, 19, 45),
        (163, 19, 46),
        (164, 19, 45),
        (163, 19, 46),
        (163, 19, 46),
    ]
    assert "session" not in report["folds"]  # 3 sessions: too few for five session folds


def test_audit_text_report_and_one_line_errors(corpus20, tmp_path):
    root, _ = corpus20
    proc = run_audit("--dataset", "20", "--dataset_dir", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "rows: 120   used: 120   excluded: 0" in proc.stdout
    assert "annotation files: 3 (Sess01_eval.csv .. Sess03_eval.csv)" in proc.stdout
    assert "  --split contiguous --num_fold 5:     86 /    10 /    24\n" in proc.stdout  # 120 = 5 x 24
    bad = run_audit("--dataset", "20", "--dataset_dir", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == f"error: --dataset_dir {tmp_path / 'nowhere'}: no such directory\n"


def test_an_unquoted_comma_in_a_cell_is_a_malformed_row_not_a_shifted_one(tmp_path):
    ids = ["Sess01_script01_User001F_001", "Sess01_script01_User001F_002"]
    path = kemdy20(tmp_path, 1, [(ids[0], "happy", 4, 3), (ids[1], "sad", 2, 2)])
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(",sad,2,2,", ",sad,3,5,2,")  # valence written 3,5 without quotes
    path.write_text("\n".join(lines) + "\n")
    corpus = read_corpus("20", tmp_path)
    assert [u.segment_id for u in corpus.utterances] == [ids[0]]
    (e,) = corpus.excluded
    assert (e.segment_id, e.reason, e.line) == (ids[1], "malformed_row", 4)
    assert e.detail == "11 cells, the header has 10 (an unquoted comma in a cell?)"


def test_a_segment_listed_twice_in_one_file_is_used_twice_as_the_original_or_once_and_listed(tmp_path):
    sid = "Sess01_script01_User001F_001"
    kemdy20(tmp_path, 1, [(sid, "happy", 4, 3), ("Sess01_script01_User001F_002", "sad", 2, 2), (sid, "angry", 1, 5)])
    both = read_corpus("20", tmp_path)
    assert [(u.segment_id, u.labels) for u in both.utterances] == [
        (sid, hot("happy")),
        ("Sess01_script01_User001F_002", hot("sad")),
        (sid, hot("angry")),
    ]
    assert summarize(both)["duplicate_rows"] == [{"segment_id": sid, "annotation": "Sess01_eval.csv", "line": 5}]
    first = read_corpus("20", tmp_path, duplicates="first")
    assert [u.labels for u in first.utterances] == [hot("happy"), hot("sad")]
    assert [(e.segment_id, e.reason, e.line) for e in first.excluded] == [(sid, "duplicate_row", 5)]
    proc = run_audit("--dataset", "20", "--dataset_dir", str(tmp_path))
    assert f"rows repeating a segment id of their file (all used, as the original): {sid} (Sess01_eval.csv:5)" in (
        proc.stdout
    )


def test_transcripts_starting_with_a_blank_line_are_counted_and_keep_the_first_line_rule(tmp_path):
    ids = [f"Sess01_script01_User001F_{k:03d}" for k in (1, 2)]
    kemdy20(tmp_path, 1, [(i, "neutral", 3, 3) for i in ids], {ids[0]: "\r\n둘째 줄에 있는 말\r\n".encode("cp949")})
    corpus = read_corpus("20", tmp_path)
    assert [u.text for u in corpus.utterances][0] == ""  # the original read the first line
    assert corpus.blank_first_line == [ids[0]] and summarize(corpus)["transcripts"]["blank_first_line"] == 1


def test_a_float_wav_with_nan_or_infinite_samples_is_unreadable(tmp_path):
    ids = [f"Sess01_script01_User001F_{k:03d}" for k in (1, 2, 3)]
    kemdy20(tmp_path, 1, [(i, "neutral", 3, 3) for i in ids])
    folder = tmp_path / "wav" / "Session01"
    x = np.sin(np.arange(8000) / 10).astype(np.float32) * 0.1
    for sid, bad in ((ids[0], np.nan), (ids[1], np.inf)):
        y = x.copy()
        y[100] = bad
        sf.write(str(folder / f"{sid}.wav"), y, 16000, subtype="FLOAT")
    sf.write(str(folder / f"{ids[2]}.wav"), x, 16000, subtype="FLOAT")  # a clean float file is fine
    corpus = read_corpus("20", tmp_path)
    assert [u.segment_id for u in corpus.utterances] == [ids[2]]
    assert [(e.segment_id, e.reason, e.detail) for e in corpus.excluded] == [
        (sid, "unreadable_wav", f"{folder / sid}.wav: NaN or infinite samples") for sid in ids[:2]
    ]


def test_a_wav_with_a_header_and_no_samples_is_excluded_as_empty(tmp_path):
    ids = [f"Sess01_script01_User001F_{k:03d}" for k in (1, 2)]
    kemdy20(tmp_path, 1, [(i, "neutral", 3, 3) for i in ids])
    empty = tmp_path / "wav" / "Session01" / f"{ids[0]}.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16000, subtype="PCM_16")
    assert sf.info(str(empty)).frames == 0 and empty.stat().st_size == 44  # a valid header, nothing after it
    corpus = read_corpus("20", tmp_path)
    assert [u.segment_id for u in corpus.utterances] == [ids[1]]
    assert [(e.segment_id, e.reason, e.detail) for e in corpus.excluded] == [
        (ids[0], "empty_wav", f"{empty}: no samples")
    ]
    assert summarize(corpus)["exclusion_counts"] == {"empty_wav": 1}


def test_a_float_wav_beyond_full_scale_is_kept_at_its_level(tmp_path):
    ids = [f"Sess01_script01_User001F_{k:03d}" for k in (1, 2, 3)]
    kemdy20(tmp_path, 1, [(i, "neutral", 3, 3) for i in ids])
    folder = tmp_path / "wav" / "Session01"
    x = np.sin(np.arange(8000) / 10).astype(np.float32)
    sf.write(str(folder / f"{ids[0]}.wav"), 2.5 * x, 16000, subtype="FLOAT")
    sf.write(str(folder / f"{ids[1]}.wav"), 0.5 * x, 16000, subtype="FLOAT")
    corpus = read_corpus("20", tmp_path)
    assert [u.level for u in corpus.utterances] == [pytest.approx(2.5 * np.abs(x).max()), 1.0, 1.0]  # 3rd: PCM
    assert summarize(corpus)["audio"]["beyond_full_scale"] == 1


@pytest.mark.parametrize("dataset", ["19", "20"])
def test_the_ten_evaluators_are_read_by_position_as_the_annotation_files_write_them(tmp_path, dataset):
    """Each utterance's ratings are its row's thirty cells after the total evaluation, read here with the csv
    module by the positions ../shared/KEMDY_FORMAT.md gives; the names are each file's first header row's."""
    root = tmp_path / dataset
    generate(dataset, root, sessions=2, utterances_per_session=30, seed=5)
    corpus = read_corpus(dataset, root)
    first = {"19": 13, "20": 7}[dataset]  # the first evaluator's Emotion column
    tables = {p.name: list(csv.reader(p.open(encoding="utf-8"))) for p in (root / "annotation").iterdir()}
    for u in corpus.utterances:
        row = tables[u.annotation][u.line - 1]
        expected = [
            Rating(EMOTIONS.index(row[c].replace("disqust", "disgust")), float(row[c + 1]), float(row[c + 2]))
            for c in range(first, first + 3 * N_RATERS, 3)
        ]
        assert list(u.ratings) == expected, u.segment_id
    for name, table in tables.items():
        assert corpus.rater_names[name] == tuple(table[0][first : first + 3 * N_RATERS : 3])
    assert corpus.rater_cells == Counter() and len(corpus.utterances) == len(
        {(u.annotation, u.line) for u in corpus.utterances}
    )


def test_a_missing_or_unreadable_rater_cell_is_counted_never_a_reason_to_drop_a_row(tmp_path):
    root = tmp_path / "20"
    generate("20", root, sessions=2, utterances_per_session=20, seed=6)
    before = [(u.segment_id, u.labels, u.valence, u.arousal) for u in read_corpus("20", root).utterances]
    path = root / "annotation" / "Sess01_eval.csv"
    rows = list(csv.reader(path.open(encoding="utf-8")))
    rows[2][7], rows[2][8] = "", "7"  # evaluator 1 of the first utterance: no emotion, valence off the scale
    rows[3][10] = "angy"  # evaluator 2 of the second: an emotion the corpora do not have
    rows[4] = rows[4][:28]  # the third row stops before evaluator 8 (columns 28-30)
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    corpus = read_corpus("20", root)
    assert [(u.segment_id, u.labels, u.valence, u.arousal) for u in corpus.utterances] == before
    first, second, third = corpus.utterances[:3]
    assert first.ratings[0].emotion is None and first.ratings[0].valence is None and first.ratings[0].arousal
    assert second.ratings[1].emotion is None and second.ratings[1].valence is not None
    assert [r.emotion is None for r in third.ratings] == [False] * 7 + [True] * 3
    # missing: the first's emotion and the third's 9 cells (evaluators 8 to 10); unreadable: 2
    assert corpus.rater_cells == Counter({"missing": 1 + 9, "unreadable": 2})
    text = format_summary(summarize(corpus))
    assert f"utterances with all ten ratings read: {len(before) - 3} of {len(before)}" in text
    assert "rater cells missing 10, unreadable 2" in text
    assert f"  not fully read: {first.segment_id}: evaluator 1; {second.segment_id}: evaluator 2" in text.splitlines()


def test_the_data_page_shows_the_audits_evaluators_and_dialogues_of_the_demo_corpus_as_printed(demo20):
    page = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```text\n((?:evaluators |dialogues:).*?)```", page, re.S)
    printed = format_summary(summarize(read_corpus("20", demo20))).splitlines()
    assert len(blocks) == 2
    for block in blocks:
        shown = block.splitlines()
        start = printed.index(shown[0])
        assert printed[start : start + len(shown)] == shown
