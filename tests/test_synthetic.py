"""Synthetic corpora: exact layout, quirks, planted signal, determinism."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from common.errors import UserError
from common.grid import EMOTIONS
from common.synthetic import EMOTION_WORDS, FULL_SIZE, SPEAKER_PITCH, VOICES, _sizes, generate


def tree_digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_corpus(tmp_path):
    a = generate("20", tmp_path / "a", sessions=2, utterances_per_session=8, seed=3)
    b = generate("20", tmp_path / "b", sessions=2, utterances_per_session=8, seed=3)
    c = generate("20", tmp_path / "c", sessions=2, utterances_per_session=8, seed=4)
    assert a == b and a != c
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b") != tree_digest(tmp_path / "c")


def test_kemdy20_layout_headers_and_encodings(corpus20):
    root, truth = corpus20
    assert sorted(p.name for p in (root / "annotation").iterdir()) == [
        "Sess01_eval.csv",
        "Sess02_eval.csv",
        "Sess03_eval.csv",
    ]
    assert {p.name for p in root.iterdir()} == {"annotation", "wav", "EDA", "IBI", "TEMP"}
    lines = (root / "annotation" / "Sess01_eval.csv").read_text(encoding="utf-8").splitlines()
    first, second = lines[0].split(","), lines[1].split(",")
    assert first[:7] == ["Numb", "Wav", "", "Segment ID", "Total Evaluation", "", ""] and first[7] == "Eval01F"
    assert second[:7] == ["", "start", "end", "", "Emotion", "Valence", "Arousal"] and len(second) == 37
    assert lines[2].split(",")[:4] == ["1", "0.0000", lines[2].split(",")[2], "Sess01_script01_User001F_001"]
    r = truth[0]
    wav = root / "wav" / "Session01" / "Sess01_script01_User001F_001.wav"
    assert r.segment_id == wav.stem and sf.info(str(wav)).samplerate == 16000
    for r in truth:
        data = (root / "wav" / f"Session{r.session:02d}" / f"{r.segment_id}.txt").read_bytes()
        if r.encoding == "cp949":
            assert data.decode("cp949") == r.text + "\r\n"
            with pytest.raises(UnicodeDecodeError):
                data.decode("utf-8")
        else:
            assert data.startswith(b"\xef\xbb\xbf") == (r.encoding == "utf-8-bom")
            assert data.decode("utf-8-sig") == r.text + "\r\n"
    assert {r.encoding for r in truth} == {"cp949", "utf-8", "utf-8-bom"}


def test_kemdy20_carries_the_quirks(corpus20):
    root, truth = corpus20
    text = (root / "annotation" / "Sess03_eval.csv").read_text()
    assert "Sess01_script01_User005F_001" in text  # session-17-style id in the last session's file
    assert not (root / "wav" / "Session01" / "Sess01_script01_User005F_001.wav").exists()
    assert any(len(r.labels) == 2 for r in truth)
    assert ";" in text or any(";" in (root / "annotation" / f"Sess0{s}_eval.csv").read_text() for s in (1, 2))
    if any("disgust" in r.labels for r in truth):
        assert "disqust" in "".join(p.read_text() for p in (root / "annotation").iterdir())
    assert any(r.duration < 0.25 for r in truth) and any(r.duration > 5 for r in truth)
    assert {(r.sample_rate, r.channels) for r in truth} == {(16000, 1)}
    assert any(any(m in r.text for m in ("c/", "n/", "N/", "u/", "l/", "b/", "*", "+")) for r in truth)


def test_kemdy19_layout_two_files_per_session_and_missing_files(corpus19):
    root, truth = corpus19
    names = sorted(p.name for p in (root / "annotation").iterdir())
    assert names == [f"Session{s:02d}_{g}_res.csv" for s in (1, 2, 3) for g in "FM"]
    f_rows = (root / "annotation" / "Session01_F_res.csv").read_bytes().split(b"\r\n")
    m_rows = (root / "annotation" / "Session01_M_res.csv").read_bytes().split(b"\r\n")
    assert f_rows[0].split(b",")[9:11] == [b"Segment ID", b"Total Evaluation"]
    assert f_rows[1].split(b",")[:2] == [b" ", b"start"] and f_rows[1].split(b",")[9] == b" "
    ids = lambda rows: [r.split(b",")[9] for r in rows[2:] if r]  # noqa: E731
    assert ids(f_rows) == ids(m_rows) == [r.segment_id.encode() for r in truth if r.session == 1]
    assert [r.split(b",")[11:13] for r in f_rows[2:5]] != [r.split(b",")[11:13] for r in m_rows[2:5]]
    r = truth[0]
    assert (root / "wav" / "Session01" / "Sess01_impro01" / "Sess01_impro01_F001.wav").is_file()
    assert r.segment_id == "Sess01_impro01_F001"
    missing = [r for r in truth if r.missing]
    assert sorted(r.missing for r in missing) == ["both", "both", "transcript", "transcript", "wav", "wav"]
    for r in missing:
        wav = root / "wav" / f"Session{r.session:02d}" / r.segment_id[:-5] / f"{r.segment_id}.wav"
        assert wav.exists() == (r.missing == "transcript")
        assert wav.with_suffix(".txt").exists() == (r.missing == "wav")


def test_odd_audio_only_when_asked(corpus19):
    root, truth = corpus19
    assert {(r.sample_rate, r.channels) for r in truth} == {(16000, 1), (44100, 1), (48000, 1), (16000, 2)}
    stereo = next(r for r in truth if r.channels == 2 and not r.missing)
    info = sf.info(
        str(root / "wav" / f"Session{stereo.session:02d}" / stereo.segment_id[:-5] / f"{stereo.segment_id}.wav")
    )
    assert (info.channels, info.samplerate) == (2, 16000)


def test_text_cue_plants_emotion_words_and_only_then(corpus20):
    _, truth = corpus20
    words = {w for ws in EMOTION_WORDS.values() for w in ws}
    for r in truth:
        if r.text_cue:
            assert all(any(w in r.text for w in EMOTION_WORDS[label]) for label in r.labels)
        else:
            assert not any(w in r.text for w in words)
    share = np.mean([r.text_cue for r in truth])
    assert 0.56 < share < 0.84  # Bernoulli(0.7) over 120 utterances: 3.3 standard deviations each side


def dominant_pitch(x, rate):
    """Autocorrelation pitch estimate between 70 and 500 Hz (independent of the generator's code)."""
    x = x - x.mean()
    ac = np.correlate(x, x, mode="full")[len(x) - 1 :]
    lo, hi = int(rate / 500), int(rate / 70)
    return rate / (lo + int(np.argmax(ac[lo:hi])))


def test_speech_cue_sets_the_voice_pitch_of_the_primary_emotion(corpus20):
    root, truth = corpus20
    checked = 0
    for r in truth:
        if not r.speech_cue or r.duration < 1.0 or VOICES[r.labels[0]].slope or VOICES[r.labels[0]].vibrato:
            continue
        x, rate = sf.read(str(root / "wav" / f"Session{r.session:02d}" / f"{r.segment_id}.wav"), dtype="float32")
        shift = SPEAKER_PITCH[r.speaker[-1]]
        assert dominant_pitch(x[: rate // 2 * 2], rate) == pytest.approx(VOICES[r.labels[0]].f0 * shift, rel=0.06)
        checked += 1
    assert checked >= 10


def test_full_size_matches_the_real_counts():
    assert sum(_sizes(*FULL_SIZE["20"])) == 13462 and len(_sizes(*FULL_SIZE["20"])) == 40
    assert 2 * sum(_sizes(*FULL_SIZE["19"])) == 20566 and len(_sizes(*FULL_SIZE["19"])) == 20


def test_refuses_to_write_over_an_existing_corpus(corpus20):
    root, _ = corpus20
    with pytest.raises(UserError, match="already holds a corpus"):
        generate("20", root)


def test_command_line_writes_a_corpus(tmp_path):
    out = tmp_path / "c"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "common.synthetic",
            "--dataset",
            "19",
            "--out",
            str(out),
            "--sessions",
            "1",
            "--utterances_per_session",
            "12",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "12 recordings" in proc.stdout
    assert len(list((out / "annotation").iterdir())) == 2


def test_tiny_encoders_load_like_hub_models_and_tokenize_korean(tiny_models):
    from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models / "text")
    tokens = tok.tokenize("l/ 오늘 정말 행복해 * 밖에서 뛰놀았다")
    assert "[UNK]" not in tokens and "행복해" in tokens  # syllables and frequent words survive save/load
    assert tok("짜증나")["input_ids"][0] == tok.cls_token_id
    text = AutoModel.from_pretrained(tiny_models / "text")
    assert (text.config.model_type, text.config.hidden_size, text.config.num_hidden_layers) == ("bert", 64, 2)
    speech = AutoModel.from_pretrained(tiny_models / "speech")
    assert speech.config.model_type == "wav2vec2" and speech.config.feat_extract_norm == "group"
    assert int(np.prod(speech.config.conv_stride)) == 320 and len(speech.config.conv_kernel) == 7
    fe = AutoFeatureExtractor.from_pretrained(tiny_models / "speech")
    assert (fe.sampling_rate, fe.do_normalize, fe.return_attention_mask) == (16000, True, False)


def test_tiny_models_command_writes_text_and_speech_folders(tmp_path):
    from common.synthetic import main

    main(["--tiny_models", str(tmp_path / "m")])  # in this process (a command line is run in the test above)
    assert {p.name for p in (tmp_path / "m" / "text").iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    }
    assert {p.name for p in (tmp_path / "m" / "speech").iterdir()} >= {"config.json", "preprocessor_config.json"}


def test_the_kemdy20_label_mix_is_as_skewed_as_the_real_corpus(tmp_path):
    truth = generate("20", tmp_path / "mix", sessions=5, utterances_per_session=160, seed=0, label_mix="kemdy20")
    share = {e: sum(e in r.labels for r in truth) / len(truth) for e in EMOTIONS}
    assert 0.82 < share["neutral"] < 0.92 and 0.08 < share["happy"] < 0.16  # real: 0.872 and 0.115
    assert share["fear"] < 0.02 and sum(len(r.labels) > 1 for r in truth) / len(truth) < 0.08  # 0.005; 0.047
    with pytest.raises(UserError, match="--label_mix 'uniform': choose demo or kemdy20"):
        generate("20", tmp_path / "bad", label_mix="uniform")


def test_demo_keeps_a_corpus_given_with_dataset_dir(monkeypatch, tmp_path):
    import common.synthetic
    from common.cli import parse_args
    from common.grid import Cell
    from common.train import _resolve_demo

    monkeypatch.setattr(common.synthetic, "demo_corpus", lambda dataset: tmp_path / "builtin")
    monkeypatch.setattr(common.synthetic, "demo_models", lambda: tmp_path / "models")
    cell = Cell("text", "classification")
    given = _resolve_demo(parse_args(cell, ["--demo", "--dataset_dir", str(tmp_path / "mine")])).settings
    builtin = _resolve_demo(parse_args(cell, ["--demo"])).settings
    assert (given.dataset_dir, builtin.dataset_dir) == (str(tmp_path / "mine"), str(tmp_path / "builtin"))
    assert given.text_model == str(tmp_path / "models" / "text")


def test_a_resumed_demo_continues_its_run_and_resume_with_overwrite_is_refused():
    from common.cli import parse_args
    from common.grid import Cell

    cell = Cell("text", "classification")
    assert parse_args(cell, ["--demo"]).settings.overwrite is True
    resumed = parse_args(cell, ["--demo", "--resume"]).settings
    assert (resumed.resume, resumed.overwrite) == (True, False)
    with pytest.raises(UserError, match=r"^--resume and --overwrite: choose one"):
        parse_args(cell, ["--resume", "--overwrite"])


def test_the_interaction_option_tells_an_emotion_only_by_word_and_voice_together(tmp_path, corpus20):
    root = tmp_path / "KEMDy20"
    truth = generate("20", root, sessions=4, utterances_per_session=100, seed=2, interaction=0.5)
    told = [r for r in truth if r.told is not None]
    assert 0.4 < len(told) / len(truth) < 0.6 and all(r.told is None for r in corpus20[1])  # off by default
    words = {w: e for e, ws in EMOTION_WORDS.items() for w in ws}
    for r in told:
        word, voice = r.told
        said = [e for w, e in words.items() if w in r.text]
        assert said == [word], r.text  # one emotion word, of its word's emotion
        assert r.labels == ((word,) if word == voice else ("disgust",))
    # Neither modality alone tells disgust: each word and each voice stands for it about half the time.
    for side in (0, 1):
        for emotion in ("happy", "sad"):
            share = np.mean([r.labels == ("disgust",) for r in told if r.told[side] == emotion])
            assert 0.35 < share < 0.65, (side, emotion, share)
    checked = 0  # the voice: its emotion's pitch, as a speech cue's
    for r in (r for r in told if r.duration > 1.0 and r.told[1] == "sad"):
        x, rate = sf.read(str(root / "wav" / f"Session{r.session:02d}" / f"{r.segment_id}.wav"), dtype="float32")
        shift = SPEAKER_PITCH[r.speaker[-1]]
        assert dominant_pitch(x[: rate // 2 * 2], rate) == pytest.approx(VOICES["sad"].f0 * shift, rel=0.2)
        checked += 1
    assert checked >= 10


BEFORE_CONTEXT_SIGNAL = "41277690b58717025c4b0bb4ea1a9c6da3cf448e"  # the generator before --context_signal


@pytest.mark.parametrize("dataset", ["20", "19"])
def test_the_context_signal_option_makes_replies_and_without_it_the_corpus_is_byte_for_byte_as_before(
    tmp_path, dataset
):
    from test_unmoved import _history_tree

    from common.dialogue import dialogue_of

    from helpers import everything

    old = _history_tree(BEFORE_CONTEXT_SIGNAL, tmp_path / "old")
    write = "import sys; from common.synthetic import generate; generate(sys.argv[1], sys.argv[2], 3, 40, seed=4)"
    subprocess.run([sys.executable, "-c", write, dataset, str(tmp_path / "before")], cwd=old, check=True)
    generate(dataset, tmp_path / "now", 3, 40, seed=4)
    assert everything(tmp_path / "now") == everything(tmp_path / "before")

    truth = generate(dataset, tmp_path / "replies", 3, 40, seed=4, context_signal=0.6)
    words = [w for ws in EMOTION_WORDS.values() for w in ws]
    replies = 0
    for before, r in zip(truth, truth[1:], strict=False):
        if r.follows:
            replies += 1
            assert dialogue_of(r.segment_id) == dialogue_of(before.segment_id)  # the turn before, in its dialogue
            assert r.labels == before.labels and before.text_cue and not r.text_cue
            assert not any(w in r.text for w in words), r.text  # its own words tell nothing
    pairs = zip(truth, truth[1:], strict=False)
    cued = sum(b.text_cue for b, r in pairs if dialogue_of(b.segment_id) == dialogue_of(r.segment_id))
    assert 0.45 < replies / cued < 0.75 and not truth[0].follows
