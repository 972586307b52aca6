"""Audio decoding, collation, the training sampler and the validation hold-out."""

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2FeatureExtractor

from common.data import (
    AudioSpec,
    Collator,
    EpochBatchSampler,
    KemdyDataset,
    Pcm16Audio,
    load_audio,
    model_audio,
    prepare_inputs,
    to_pcm16,
)
from common.errors import UserError
from common.folds import hold_out_validation, make_fold
from common.kemdy import read_corpus


def write(path, x, rate):
    sf.write(str(path), x, rate, subtype="FLOAT")
    return path


def test_16k_mono_is_read_as_is_and_cut_to_max_seconds(tmp_path):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 3).astype(np.float32)
    path = write(tmp_path / "a.wav", x, 16000)
    np.testing.assert_array_equal(load_audio(path, 5), x)
    np.testing.assert_array_equal(load_audio(path, 2), x[:32000])
    np.testing.assert_array_equal(load_audio(path, 0.5), x[:8000])


@pytest.mark.parametrize("rate", [44100, 48000, 8000])
def test_other_rates_and_stereo_are_downmixed_and_resampled(tmp_path, rate):
    # Two tones below every rate's Nyquist frequency, one per channel: the mono mix at 16 kHz is known
    # in closed form, so the resampled file is compared with the signal itself, not with a resampler.
    t = np.arange(rate * 2) / rate
    left, right = 0.4 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 1250 * t + 0.3)
    path = write(tmp_path / "b.wav", np.stack([left, right], axis=1).astype(np.float32), rate)
    got = load_audio(path, 5)
    t16 = np.arange(32000) / 16000
    expected = 0.5 * (0.4 * np.sin(2 * np.pi * 440 * t16) + 0.2 * np.sin(2 * np.pi * 1250 * t16 + 0.3))
    assert got.dtype == np.float32 and len(got) == 32000
    inner = slice(800, 31200)  # the resampling filter's edges aside
    np.testing.assert_allclose(got[inner], expected[inner], atol=2e-3)


def test_long_files_are_only_read_up_to_max_seconds(tmp_path):
    x = np.zeros(48000 * 7, dtype=np.float32)
    x[48000 * 6] = 1.0
    path = write(tmp_path / "long.wav", x, 48000)
    got = load_audio(path, 5)
    assert len(got) == 80000 and np.abs(got).max() == 0.0


def spec(**kw):
    return AudioSpec(**({"normalize": True, "padding_value": 0.0, "min_samples": 400, "pass_mask": False} | kw))


def test_collator_pads_audio_to_the_longest_clip_and_marks_real_samples():
    items = [
        {
            "index": 4,
            "labels": np.ones(7, np.float32),
            "va": np.array([3, 2], np.float32),
            "audio": np.ones(1000, np.float32),
        },
        {
            "index": 9,
            "labels": np.zeros(7, np.float32),
            "va": np.array([1, 5], np.float32),
            "audio": np.full(100, 2.0, np.float32),
        },
    ]
    batch = Collator(None, 8, spec(padding_value=-1.0))(items)
    assert batch["audio"].shape == (2, 1000) and batch["index"].tolist() == [4, 9]
    assert batch["audio_mask"].sum(1).tolist() == [1000, 400]  # the short clip is stretched to min_samples
    assert batch["audio"][1, :100].eq(2.0).all() and batch["audio"][1, 100:].eq(-1.0).all()
    assert batch["va"].tolist() == [[3, 2], [1, 5]]
    fixed = Collator(None, 8, spec(pad_to=4000))(items)
    assert fixed["audio"].shape == (2, 4000) and fixed["audio_mask"].sum(1).tolist() == [1000, 400]


def test_dataset_normalises_each_clip_like_wav2vec2(corpus20):
    root, _ = corpus20
    utts = read_corpus("20", root).utterances
    assert sf.info(str(utts[5].wav)).subtype == "PCM_16"
    item = KemdyDataset(utts, [5], prepare_inputs(utts, max_seconds=5), spec())[0]
    # wav2vec2's own feature extractor is the reference: zero mean, unit variance per clip
    raw = sf.read(str(utts[5].wav), dtype="float32")[0][:80000]
    reference = Wav2Vec2FeatureExtractor(do_normalize=True)(raw, sampling_rate=16000)["input_values"][0]
    np.testing.assert_allclose(item["audio"], reference, rtol=1e-4, atol=1e-5)
    assert item["index"] == 5 and "input_ids" not in item
    assert "audio" not in KemdyDataset(utts, [5], prepare_inputs(utts), None)[0]


def test_16_bit_pcm_is_stored_losslessly_and_other_audio_to_16_bits(tmp_path):
    pcm = np.random.default_rng(2).integers(-32768, 32768, 16000, dtype=np.int16)
    sf.write(str(tmp_path / "pcm.wav"), pcm, 16000, subtype="PCM_16")
    np.testing.assert_array_equal(Pcm16Audio([tmp_path / "pcm.wav"], 5)[0], pcm)
    x = np.array([0.5, -1.0, 0.99999, -0.3333333, 1.5], np.float32)
    assert to_pcm16(x).tolist() == [16384, -32768, 32767, -10923, 32767]


def test_batch_sampler_is_a_seeded_function_of_the_epoch_and_covers_everything():
    a, b = EpochBatchSampler(103, 10, seed=3), EpochBatchSampler(103, 10, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert a.batches() == b.batches() and len(a) == 11
    assert sorted(i for batch in a.batches() for i in batch) == list(range(103))
    b.set_epoch(3)
    assert a.batches() != b.batches()


def test_length_grouping_puts_similar_lengths_together_and_still_shuffles():
    rng = np.random.default_rng(0)
    lengths = rng.uniform(0.2, 5.0, 1000).tolist()
    grouped = EpochBatchSampler(1000, 16, seed=1, lengths=lengths)
    plain = EpochBatchSampler(1000, 16, seed=1)

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert sorted(i for b in grouped.batches() for i in b) == list(range(1000))
    assert padding(grouped.batches()) < 0.1 * padding(plain.batches())
    grouped.set_epoch(1)
    first = grouped.batches()
    grouped.set_epoch(2)
    assert first != grouped.batches()
    assert [max(lengths[i] for i in b) for b in first] != sorted(
        [max(lengths[i] for i in b) for b in first], reverse=True
    )


def test_validation_is_the_last_block_of_the_training_fold():
    fold = make_fold(["Sess01"] * 100, 2)
    train, valid = hold_out_validation(fold.train, 0.1)
    assert valid == list(range(92, 100)) and train == [*range(20), *range(40, 92)]
    assert hold_out_validation(fold.train, 0.0) == (fold.train, [])
    with pytest.raises(UserError, match=r"--valid_ratio 1.0: choose a value in \[0, 1\)"):
        hold_out_validation(fold.train, 1.0)


def test_torch_tensors_come_out_with_the_right_dtypes():
    items = [
        {
            "index": 0,
            "labels": np.ones(7, np.float32),
            "va": np.ones(2, np.float32),
            "audio": np.ones(500, np.float32),
        }
    ]
    batch = Collator(None, 8, spec())(items)
    assert batch["audio"].dtype == torch.float32 and batch["audio_mask"].dtype == torch.int64
    assert batch["labels"].dtype == torch.float32 and batch["index"].dtype == torch.int64


def test_a_float_recording_beyond_full_scale_reaches_the_model_unclipped(tmp_path):
    from common.kemdy import audio_level

    x = (2.5 * np.sin(np.arange(16000) / 7)).astype(np.float32)
    sf.write(str(tmp_path / "loud.wav"), x, 16000, subtype="FLOAT")
    level = audio_level(tmp_path / "loud.wav")
    stored = Pcm16Audio([tmp_path / "loud.wav"], 5, [level])[0]
    raw = model_audio(stored, AudioSpec(normalize=False, padding_value=0.0, min_samples=400, pass_mask=False), level)
    np.testing.assert_allclose(raw, x, atol=level / 32768)  # 16-bit steps of its own peak, not clipped at 1
    assert np.abs(raw).max() > 2.4 and np.abs(to_pcm16(x)).max() == 32767  # clipping would have flattened it
    normalised = model_audio(
        stored, AudioSpec(normalize=True, padding_value=0.0, min_samples=400, pass_mask=False), level
    )
    reference = Wav2Vec2FeatureExtractor(do_normalize=True)(x, sampling_rate=16000)["input_values"][0]
    np.testing.assert_allclose(normalised, reference, atol=1e-3)
