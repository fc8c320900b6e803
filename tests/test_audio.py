"""Audio I/O: any format in, float32 mono 16 kHz out."""

import numpy as np
import pytest
import soundfile as sf

from jsqa.audio import SAMPLE_RATE, load_audio, resample, to_mono, write_audio


def _dominant_hz(x, sr):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return np.fft.rfftfreq(x.size, 1 / sr)[np.argmax(spectrum)]


def test_load_real_flac_matches_soundfile(speech_path):
    x = load_audio(speech_path)
    ref, sr = sf.read(speech_path, dtype="float32")
    assert sr == SAMPLE_RATE
    assert x.dtype == np.float32 and x.ndim == 1
    np.testing.assert_array_equal(x, ref)


def test_load_stereo_44k_wav_mixes_down_and_resamples(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    left = 0.5 * np.sin(2 * np.pi * 1000 * t)
    right = np.zeros_like(left)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="PCM_24")

    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.size - SAMPLE_RATE) <= 1
    assert _dominant_hz(x, SAMPLE_RATE) == pytest.approx(1000, abs=2)
    # The mix-down averages the channels: 0.5 amplitude in one channel -> 0.25.
    assert np.max(np.abs(x[1000:-1000])) == pytest.approx(0.25, abs=0.005)


def test_resample_round_trip_keeps_speech(clean_speech):
    x = clean_speech[: 3 * SAMPLE_RATE]
    y = resample(resample(x, SAMPLE_RATE, 48000), 48000, SAMPLE_RATE)
    assert y.size == x.size
    err = y[200:-200] - x[200:-200]
    snr = 10 * np.log10(np.sum(x[200:-200] ** 2) / np.sum(err**2))
    assert snr > 40


def test_resample_same_rate_is_identity(clean_speech):
    x = clean_speech[:1000]
    np.testing.assert_array_equal(resample(x, SAMPLE_RATE, SAMPLE_RATE), x)


def test_resample_to_8k_halves_length(clean_speech):
    x = clean_speech[: 2 * SAMPLE_RATE]
    assert resample(x, SAMPLE_RATE, 8000).size == SAMPLE_RATE


def test_to_mono():
    frames = np.array([[1.0, 0.0], [0.5, 0.5], [-1.0, 1.0]])
    np.testing.assert_allclose(to_mono(frames), [0.5, 0.5, 0.0])
    assert to_mono(np.ones(3)).dtype == np.float32
    with pytest.raises(ValueError):
        to_mono(np.zeros((2, 2, 2)))


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_write_then_load_round_trip(tmp_path, clean_speech, suffix):
    x = clean_speech[:SAMPLE_RATE]
    path = tmp_path / f"out{suffix}"
    write_audio(path, x)
    info = sf.info(path)
    assert info.samplerate == SAMPLE_RATE and info.channels == 1
    np.testing.assert_allclose(load_audio(path), x, atol=1 / 32768)


def test_write_at_8k_and_load_back_at_16k(tmp_path, clean_speech):
    x8 = resample(clean_speech[:SAMPLE_RATE], SAMPLE_RATE, 8000)
    path = tmp_path / "narrow.wav"
    write_audio(path, x8, sr=8000)
    assert sf.info(path).samplerate == 8000
    assert load_audio(path).size == SAMPLE_RATE
