"""Preprocessing caches: same inputs as without a cache, reused, invalidated by any change, never half-read."""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from common.cache import ArrayStore, cached
from common.data import Collator, Inputs, KemdyDataset, Pcm16Audio, TokenIds, prepare_inputs
from common.encoders import audio_spec, load_speech_encoder, load_text_encoder
from common.errors import UserError
from common.frozen import frozen_vectors
from common.kemdy import read_corpus
from common.model import EmotionModel, ModelConfig


class Log(list):
    """Collects the messages of prepare_inputs / frozen_vectors: "<kind> cache <folder>: <action> (...)"."""

    def __call__(self, message):
        self.append(message)

    def events(self) -> list[tuple[str, str]]:
        """(cache folder name, "built" / "reused" / "computed") of each message."""
        return [(Path(m.split()[2].rstrip(":")).name, m.split(": ")[1].split()[0]) for m in self]


def test_array_store_reads_back_every_row_and_stores_shared_rows_once(tmp_path):
    rows = [np.arange(5, dtype=np.int16), np.zeros(0, np.int16), np.arange(5, dtype=np.int16), np.array([-7], np.int16)]
    ArrayStore.write(tmp_path / "s", rows, np.int16, keys=["a", "b", "a", "c"])
    store = ArrayStore(tmp_path / "s")
    assert len(store) == 4 and [store[i].tolist() for i in range(4)] == [r.tolist() for r in rows]
    assert (tmp_path / "s" / "data.bin").stat().st_size == 6 * 2  # "a" once, "c" once
    assert store.lengths.tolist() == [5, 0, 5, 1] and store[0].dtype == np.int16


def test_a_full_disk_while_building_says_so_and_leaves_no_cache_behind(tmp_path):
    def broken(folder):
        folder.mkdir()
        (folder / "data.bin").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError, match=rf"^disk full: cannot write the audio cache in {tmp_path}; free some space"):
        cached(tmp_path, "audio", "k1", broken)
    assert [p.name for p in tmp_path.iterdir()] == ["kemdy_cache.json"]  # the folder is the cache's, and empty


@pytest.fixture
def copy20(corpus20, tmp_path):
    """A private copy of the KEMDy20 corpus, which the test may change."""
    return Path(shutil.copytree(corpus20[0], tmp_path / "KEMDy20"))


def test_cached_inputs_equal_inputs_prepared_on_the_fly(corpus19, tiny_models, tmp_path):
    utts = read_corpus("19", corpus19[0]).utterances  # stereo and 44.1/48 kHz files among them
    tok, _ = load_text_encoder(str(tiny_models / "text"))
    fresh = prepare_inputs(utts, tok, 8, 1.5)
    log = Log()
    stored = prepare_inputs(utts, tok, 8, 1.5, tmp_path / "cache", log)
    assert isinstance(fresh.audio, Pcm16Audio) and isinstance(fresh.tokens, TokenIds)
    assert isinstance(stored.audio, ArrayStore) and isinstance(stored.tokens, ArrayStore)
    for i in range(len(utts)):
        np.testing.assert_array_equal(stored.audio[i], fresh.audio[i])
        np.testing.assert_array_equal(stored.tokens[i], fresh.tokens[i])
    assert max(len(stored.tokens[i]) for i in range(len(utts))) == 8
    assert max(len(stored.audio[i]) for i in range(len(utts))) == 24000
    assert [action for _, action in log.events()] == ["built", "built"]
    # KEMDy19 lists each recording in two annotation files: its audio is stored once
    first_of_each_wav = {str(u.wav): k for k, u in enumerate(utts)}.values()
    (data,) = (tmp_path / "cache").glob("audio-*/data.bin")
    assert len(first_of_each_wav) < len(utts)
    assert data.stat().st_size == 2 * sum(len(fresh.audio[k]) for k in first_of_each_wav)


def test_a_second_run_reuses_the_cache_and_any_change_rebuilds_it(copy20, tiny_models, tmp_path):
    cache = tmp_path / "cache"
    tok, _ = load_text_encoder(str(tiny_models / "text"))

    def prepare(max_text_len=32, max_seconds=5.0):
        log = Log()
        prepare_inputs(read_corpus("20", copy20).utterances, tok, max_text_len, max_seconds, cache, log)
        return log.events()

    (tokens, built1), (audio, built2) = prepare()
    assert built1 == built2 == "built" and tokens.startswith("tokens-") and audio.startswith("audio-")
    assert prepare() == [(tokens, "reused"), (audio, "reused")]

    utts = read_corpus("20", copy20).utterances
    stat = utts[3].wav.stat()
    os.utime(utts[3].wav, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same bytes, newer file
    assert prepare() == [(tokens, "reused"), (audio, "reused")]  # keyed by the recordings' content
    data = bytearray(utts[3].wav.read_bytes())
    data[-2:] = bytes([data[-2] ^ 0x40, data[-1]])  # one sample of the same file changed: same size
    utts[3].wav.write_bytes(bytes(data))
    os.utime(utts[3].wav, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with its old time
    (tokens2, t2), (audio2, a2) = prepare()
    assert (tokens2, t2) == (tokens, "reused") and a2 == "built" and audio2 != audio

    txt = utts[5].wav.with_suffix(".txt")
    data = txt.read_bytes()  # the first line gets a "!" at its end
    end = min([data.find(c) for c in (b"\r", b"\n") if c in data] or [len(data)])
    txt.write_bytes(data[:end] + b"!" + data[end:])
    assert read_corpus("20", copy20).utterances[5].text == utts[5].text + "!"
    (tokens3, t3), (audio3, a3) = prepare()
    assert t3 == "built" and tokens3 != tokens and (audio3, a3) == (audio2, "reused")

    tok.add_tokens(["새토큰"])
    (tokens4, t4), _ = prepare()
    assert t4 == "built" and tokens4 not in (tokens, tokens3)

    (tokens5, t5), (audio5, a5) = prepare(max_text_len=8, max_seconds=2.0)
    assert t5 == a5 == "built" and {tokens5, audio5}.isdisjoint({tokens, tokens3, tokens4, audio, audio2})
    folders = {p.name for p in cache.iterdir() if p.is_dir()}
    assert folders == {tokens, tokens3, tokens4, tokens5, audio, audio2, audio5}


def test_an_unfinished_cache_folder_is_never_read(copy20, tiny_models, tmp_path):
    cache = tmp_path / "cache"
    utts = read_corpus("20", copy20).utterances
    log = Log()
    prepare_inputs(utts, max_seconds=5.0, cache_dir=cache, log=log)
    (folder,) = cache.glob("audio-*")
    # a crashed build leaves only a hidden temporary folder of its process: the next run removes it and
    # builds the real one
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = cache / f".{folder.name}.tmp-{int(dead.stdout)}-abcdef12"
    shutil.move(folder, leftover)
    log2 = Log()
    inputs = prepare_inputs(utts, max_seconds=5.0, cache_dir=cache, log=log2)
    assert log2[0] == f"removed {leftover}, left half-written by a run that is no longer running"
    assert "built" in log2[1] and (cache / folder.name).is_dir() and not leftover.exists()
    np.testing.assert_array_equal(inputs.audio[0], Pcm16Audio([utts[0].wav], 5.0)[0])


def test_collator_pads_token_ids_exactly_like_the_tokenizer(corpus20, tiny_models):
    utts = read_corpus("20", corpus20[0]).utterances[:9]
    tok, _ = load_text_encoder(str(tiny_models / "text"))
    texts = [u.text for u in utts]
    ds = KemdyDataset(utts, range(9), prepare_inputs(utts, tok, 12))
    items = [ds[i] for i in range(9)]
    for pad_to_max, padding in ((False, "longest"), (True, "max_length")):
        batch = Collator(tok, 12, None, pad_to_max)(items)
        expected = tok(texts, padding=padding, truncation=True, max_length=12, return_tensors="pt")
        assert set(expected) == {"input_ids", "attention_mask", "token_type_ids"}
        for name in expected:
            assert torch.equal(batch[name], expected[name]), name
    assert batch["input_ids"].shape == (9, 12)


def _frozen_setup(tiny_models, corpus20, modality):
    utts = read_corpus("20", corpus20[0]).utterances[:24]
    tok, text = load_text_encoder(str(tiny_models / "text"))
    fe, speech = load_speech_encoder(str(tiny_models / "speech"))
    spec = audio_spec(fe, speech)
    model = EmotionModel(ModelConfig("multimodal", "total", "concat"), text, speech)
    inputs = prepare_inputs(utts, tok, 32, 5.0)
    return utts, tok, model, inputs, Collator(tok, 32, spec), spec


class CPU:
    device = torch.device("cpu")

    @staticmethod
    def autocast():
        return torch.autocast("cpu", enabled=False)


@pytest.mark.parametrize("modality", ["text", "speech"])
def test_frozen_vectors_are_each_utterances_own_pooled_output_and_are_cached(tiny_models, corpus20, tmp_path, modality):
    utts, tok, model, inputs, collate, spec = _frozen_setup(tiny_models, corpus20, modality)
    cache = tmp_path / "cache"
    cached_inputs = prepare_inputs(utts, tok, 32, 5.0, cache, Log())
    log = Log()
    model.train()  # vectors are computed without dropout whatever the model's mode
    vectors = frozen_vectors(
        modality, model, utts, cached_inputs, collate, batch_size=8, accelerator=CPU, cache_dir=cache, log=log
    )
    width = (model.text_encoder if modality == "text" else model.speech_encoder).config.hidden_size
    assert model.training and vectors.shape == (24, width) and "computed" in log[0]
    model.eval()
    ds = KemdyDataset(utts, range(24), inputs, spec)
    encode = model.encode_text if modality == "text" else model.encode_speech
    with torch.no_grad():
        for i in (0, 5, 17, 23):
            alone = collate([ds[i]])
            np.testing.assert_allclose(vectors[i], encode(alone)[0].numpy(), rtol=1e-4, atol=1e-5)
    again = frozen_vectors(
        modality, model, utts, cached_inputs, collate, batch_size=8, accelerator=CPU, cache_dir=cache, log=log
    )
    assert "reused" in log[1] and np.array_equal(again, vectors)
    with torch.no_grad():
        next(model.text_encoder.parameters() if modality == "text" else model.speech_encoder.parameters()).add_(0.1)
    frozen_vectors(
        modality, model, utts, cached_inputs, collate, batch_size=8, accelerator=CPU, cache_dir=cache, log=log
    )
    assert "computed" in log[2]  # other weights, other vectors


def _train(cell, corpus, tiny_models, out, *flags):
    from common.cli import parse_args
    from common.train import train

    argv = ["--dataset", "20", "--dataset_dir", str(corpus), "--num_fold", "2", "--epochs", "2", "--batch_size", "8"]
    argv += ["--lr", "1e-3", "--max_text_len", "32", "--output_dir", str(out), "--group_by_length"]
    argv += ["--text_model", str(tiny_models / "text"), "--speech_model", str(tiny_models / "speech"), *flags]
    (result,) = train(parse_args(cell, argv))
    return result


def test_runs_without_cache_with_a_cold_cache_and_with_a_warm_one_give_the_same_numbers(
    corpus20, tiny_models, tmp_path
):
    from common.grid import Cell

    cell = Cell("multimodal", "total", "concat")
    cache = ["--cache_dir", str(tmp_path / "cache")]
    plain = _train(cell, corpus20[0], tiny_models, tmp_path / "a", "--no-cache")
    cold = _train(cell, corpus20[0], tiny_models, tmp_path / "b", *cache)
    warm = _train(cell, corpus20[0], tiny_models, tmp_path / "c", *cache)
    assert plain["epochs"] == cold["epochs"] == warm["epochs"]
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir() if p.is_dir()) == ["audio", "tokens"]


@pytest.mark.parametrize("layers", ["last", "weighted"])
def test_frozen_vectors_computed_now_or_read_from_the_cache_give_the_same_run(corpus20, tiny_models, tmp_path, layers):
    from common.grid import Cell

    cell = Cell("multimodal", "total", "concat")
    flags = ["--freeze", "both", "--layers", layers]
    cold = _train(cell, corpus20[0], tiny_models, tmp_path / "a", *flags, "--cache_dir", str(tmp_path / "cache"))
    warm = _train(cell, corpus20[0], tiny_models, tmp_path / "b", *flags, "--cache_dir", str(tmp_path / "cache"))
    plain = _train(cell, corpus20[0], tiny_models, tmp_path / "c", *flags, "--no-cache")
    assert cold["epochs"] == warm["epochs"] == plain["epochs"]  # computing them draws no training randomness


def test_frozen_encoders_keep_their_weights_and_the_heads_still_learn(corpus20, tiny_models, tmp_path):
    from safetensors.torch import load_file

    from common.grid import Cell

    cell = Cell("multimodal", "total", "element_wise_add")
    result = _train(
        cell, corpus20[0], tiny_models, tmp_path / "run", "--freeze", "text", "--cache_dir", str(tmp_path / "cache")
    )
    assert result["epochs"][1]["train_loss"] < result["epochs"][0]["train_loss"]
    model, _, _ = EmotionModel.load(tmp_path / "run" / "model")
    for part, same in (("text", True), ("speech", False)):
        after, before = (
            getattr(model, f"{part}_encoder").state_dict(),
            load_file(str(tiny_models / part / "model.safetensors")),
        )
        equal = all(torch.equal(after[k], before[k]) for k in after)
        assert equal == same, part
    assert [p.name.split("-")[0] for p in sorted((tmp_path / "cache").glob("text_vectors-*"))] == ["text_vectors"]
    assert not list((tmp_path / "cache").glob("speech_vectors-*"))


def _rss_bytes() -> int:
    """This process's resident memory (Linux): a memory map's pages and copies read into the heap alike."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no VmRSS in /proc/self/status")


def test_vector_rows_read_every_row_of_a_large_cache_without_keeping_it_resident(tmp_path):
    from common.cache import VectorRows

    rows, shape = 1600, (13, 2048)  # 170 MB of float32, as every layer's summary of a large corpus
    expected = np.lib.format.open_memmap(tmp_path / "vectors.npy", mode="w+", dtype=np.float32, shape=(rows, *shape))
    expected[:] = np.arange(rows, dtype=np.float32)[:, None, None] + np.linspace(0, 1, shape[1], dtype=np.float32)
    expected.flush()
    del expected
    vectors = VectorRows(tmp_path / "vectors.npy")
    assert (len(vectors), vectors.shape, vectors.ndim) == (rows, (rows, *shape), 3)
    before = _rss_bytes()
    for k in range(rows):
        row = vectors[k]
        assert row.shape == shape and row[0, 0] == k and row[-1, -1] == k + 1
    assert _rss_bytes() - before < 100 * 2**20  # a plain memory map, or reading it whole, would hold all 170 MB
    whole = np.load(tmp_path / "vectors.npy")
    assert np.array_equal(np.stack([vectors[k] for k in (0, 7, rows - 1)]), whole[[0, 7, rows - 1]])


def test_vector_rows_index_like_numpy_and_refuse_rows_they_do_not_hold(tmp_path):
    from common.cache import VectorRows

    whole = np.random.default_rng(0).standard_normal((9, 3, 4)).astype(np.float32)
    np.save(tmp_path / "vectors.npy", whole)
    vectors = VectorRows(tmp_path / "vectors.npy")
    for index in ([4, 0, 8, 4], np.array([2, 7]), []):
        assert np.array_equal(vectors[index], whole[index]) and vectors[index].shape == whole[index].shape
    assert np.array_equal(vectors[np.int64(5)], whole[5])
    with pytest.raises(IndexError, match=r"row 9 of .*vectors.npy, which holds 9"):
        vectors[[1, 9]]
    with pytest.raises(IndexError, match="row -1 of"):
        vectors[-1]
    # a batch's rows in one call, through a DataLoader, as training reads them
    utts = [SimpleNamespace(labels=[0] * 7, valence=3.0, arousal=3.0)] * 9
    dataset = KemdyDataset(utts, [8, 3, 5], Inputs(text_vectors=vectors))
    (batch,) = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=Collator())
    assert batch["index"].tolist() == [8, 3, 5] and torch.equal(batch["text_vec"], torch.from_numpy(whole[[8, 3, 5]]))
    with open(tmp_path / "vectors.npy", "r+b") as f:  # cut short after it was opened
        f.truncate(f.seek(0, os.SEEK_END) - 10)
    with pytest.raises(UserError, match=r"vectors.npy: ends before byte \d+: the cache changed while the run used it"):
        vectors[8]


def test_a_cache_file_changed_in_place_is_caught_by_its_checksum_and_rebuilt(copy20, corpus19, tiny_models, tmp_path):
    tok, _ = load_text_encoder(str(tiny_models / "text"))
    utts = read_corpus("20", copy20).utterances
    cache = tmp_path / "cache"
    prepare_inputs(utts, tok, 32, cache_dir=cache)
    (folder,) = cache.glob("tokens-*")
    data = folder / "data.bin"
    # another corpus's token ids in its place, the file's size unchanged
    other = prepare_inputs(read_corpus("19", corpus19[0]).utterances, tok, 32)
    ids = np.concatenate([other.tokens[i] for i in range(len(other.tokens))]).astype(np.int32)
    size = data.stat().st_size // 4
    data.write_bytes(np.resize(ids, size).tobytes())
    assert data.stat().st_size == size * 4
    log = Log()
    inputs = prepare_inputs(utts, tok, 32, cache_dir=cache, log=log)
    assert log[0] == f"{folder}: damaged (data.bin: content changed (checksum)); building it again"
    fresh = prepare_inputs(utts, tok, 32)
    assert all(np.array_equal(inputs.tokens[i], fresh.tokens[i]) for i in range(len(utts)))


DAMAGED_JSON = {
    "wrong type": '{"a.wav": {"size": 1}}',
    "a name outside the folder": '{"../a.wav": {"bytes": 1, "crc32": [1]}}',
    "Infinity": '{"a.wav": [1, 2, 3, Infinity, "x"]}',
    "an earlier form": '{"a.wav": [100, 1, 2, 3, "' + "0" * 64 + '"]}',
    "a digest that is not one": '{"a.wav": "100 1 2 3 xyz"}',
    "deep nesting": "[" * 5000 + "]" * 5000,
    "not JSON": '{"a.wav": [1, 2',
}


@pytest.mark.parametrize("damage", list(DAMAGED_JSON))
def test_a_damaged_digest_index_or_checksum_file_is_read_again_never_trusted(tmp_path, damage):
    import hashlib

    from common.cache import CHECKSUMS, file_digests, open_cached, own_folder

    wavs = [tmp_path / "corpus" / name for name in ("a.wav", "b.wav")]
    wavs[0].parent.mkdir()
    for k, wav in enumerate(wavs):
        wav.write_bytes(bytes([k]) * 100)
    truth = {str(w): hashlib.sha256(w.read_bytes()).hexdigest() for w in wavs}
    folder = own_folder(tmp_path / "cache")
    assert file_digests(wavs, folder) == truth
    (index,) = folder.glob("digests-*.json")
    index.write_text(DAMAGED_JSON[damage])
    assert file_digests(wavs, folder) == truth  # every file read again, the index written anew
    assert file_digests(wavs, folder) == truth and len(index.read_text()) > 100

    def build(tmp):
        tmp.mkdir()
        (tmp / "a.wav").write_bytes(b"cached")

    log = []
    built, _ = cached(folder, "audio", "0123456789abcdef0123", build)
    (built / CHECKSUMS).write_text(DAMAGED_JSON[damage])
    value, _, rebuilt = open_cached(
        folder, "audio", "0123456789abcdef0123", build, lambda f: (f / "a.wav").read_bytes(), log.append
    )
    assert (value, rebuilt) == (b"cached", True)
    assert len(log) == 1 and log[0].startswith(f"{built}: damaged (checksums.json: ") and "building it again" in log[0]


def test_a_verified_cache_file_is_read_again_only_once_its_stamp_changes(tmp_path, monkeypatch):
    """Checksums are remembered with the stamp each file had when they were taken: an unchanged file is not read
    again, a file written since (its modification time even set back by hand) is, and a damaged verified.json
    is never trusted."""
    import common.cache
    from common.cache import VERIFIED, open_cached, own_folder

    def build(tmp):
        tmp.mkdir()
        (tmp / "a.bin").write_bytes(b"a" * 1000)
        (tmp / "b.bin").write_bytes(b"b" * 1000)

    folder = own_folder(tmp_path / "cache")
    built, _ = cached(folder, "audio", "0123456789abcdef0123", build)
    reads, block_crcs = [], common.cache._block_crcs
    monkeypatch.setattr(common.cache, "_block_crcs", lambda path: reads.append(path.name) or block_crcs(path))

    def open_it():
        log = []
        _, _, rebuilt = open_cached(folder, "audio", "0123456789abcdef0123", build, lambda f: None, log.append)
        return rebuilt, log

    assert open_it() == (False, []) and reads == []  # unchanged since it was sealed: nothing read
    assert open_it() == (False, []) and reads == []
    stat = (built / "a.bin").stat()
    (built / "a.bin").write_bytes(b"x" * 1000)  # same size, other content, its times set back
    os.utime(built / "a.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    rebuilt, log = open_it()
    assert rebuilt and log == [f"{built}: damaged (a.bin: content changed (checksum)); building it again"]
    assert reads == ["a.bin", "a.bin", "b.bin"]  # the changed file, then the folder built again and sealed
    reads.clear()
    assert open_it() == (False, []) and reads == []
    (built / VERIFIED).write_text('{"a.bin": [1, 2, 3, "x"]}')  # damaged: every file is read
    assert open_it() == (False, []) and sorted(reads) == ["a.bin", "b.bin"]
    (built / VERIFIED).write_text("{}")
    (built / "b.bin").write_bytes(b"y" * 1000)
    assert open_it()[1] == [f"{built}: damaged (b.bin: content changed (checksum)); building it again"]
