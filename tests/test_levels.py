"""Levels: P.56 active speech level, dBFS, the light VAD and the clipping ratio."""

import math

import numpy as np
import pytest

from jsqa.levels import (
    SILENCE_DB,
    active_speech_level,
    clipping_ratio,
    level_dbfs,
    speech_ratio,
)

SR = 16000


def _p56_reference(x, sr=SR):
    """Sample-by-sample transliteration of ITU-T P.56 method B as in G.191 sv-p56.c
    (envelope, per-threshold hangover counters, bin_interp with 0.5 dB tolerance)."""
    t, hangover_s, margin, nbits = 0.03, 0.2, 15.9, 16
    g = math.exp(-1 / (sr * t))
    hangover = int(round(hangover_s * sr))
    c = [2.0 ** (j - 15) for j in range(nbits)]
    a = [0] * nbits
    hang = [hangover] * nbits
    p = q = sum2 = 0.0
    for s in x.astype(np.float64).tolist():
        sum2 += s * s
        p = g * p + (1 - g) * abs(s)
        q = g * q + (1 - g) * p
        for j in range(nbits):
            if q >= c[j]:
                a[j] += 1
                hang[j] = 0
            elif hang[j] < hangover:
                a[j] += 1
                hang[j] += 1

    def bin_interp(upcount, lwcount, upthr, lwthr, tol=0.5):
        if abs(upcount - upthr - margin) < tol:
            return upcount
        if abs(lwcount - lwthr - margin) < tol:
            return lwcount
        midcount, midthr = (upcount + lwcount) / 2, (upthr + lwthr) / 2
        for _ in range(20):
            diff = midcount - midthr - margin
            if -tol <= diff <= tol:
                break
            if diff > tol:
                midcount, midthr = (upcount + midcount) / 2, (upthr + midthr) / 2
            else:
                midcount, midthr = (midcount + lwcount) / 2, (midthr + lwthr) / 2
        return midcount

    a_db = [10 * math.log10(sum2 / n) if n else None for n in a]
    c_db = [20 * math.log10(cj) for cj in c]
    for j in range(1, nbits):
        if a_db[j] is not None and a_db[j] - c_db[j] <= margin:
            return bin_interp(a_db[j], a_db[j - 1], c_db[j], c_db[j - 1])
    raise AssertionError("margin not reached")


@pytest.mark.parametrize(
    "relpath",
    [
        "librispeech_examples/5703-47212-0000.flac",
        "asterisk_it/vm-review.flac",
        "cmu_arctic/cmu_arctic_us_axb_a0004.flac",
    ],
)
def test_active_speech_level_matches_p56_reference(speech_dir, relpath):
    import soundfile as sf

    x, sr = sf.read(speech_dir / relpath, dtype="float32")
    x = x[: 4 * sr]
    ref = _p56_reference(x)
    assert active_speech_level(x) == pytest.approx(ref, abs=0.5)


def test_active_speech_level_ignores_appended_silence(clean_speech):
    # The whole utterance, so it ends in its own pause: cut mid-word, the 0.2 s P.56
    # hangover would count some of the appended silence, by design.
    x = clean_speech
    seconds = x.size / SR
    padded = np.concatenate([np.zeros(2 * SR, np.float32), x, np.zeros(8 * SR, np.float32)])
    assert active_speech_level(padded) == pytest.approx(active_speech_level(x), abs=0.1)
    # The plain RMS level drops by 10*log10((seconds + 10) / seconds); the active level does not.
    drop = 10 * math.log10((seconds + 10) / seconds)
    assert level_dbfs(x) - level_dbfs(padded) == pytest.approx(drop, abs=0.05)


def test_active_speech_level_follows_gain(clean_speech):
    x = clean_speech[: 5 * SR]
    base = active_speech_level(x)
    assert active_speech_level(x * 10 ** (-12 / 20)) == pytest.approx(base - 12, abs=0.3)


def test_active_level_of_continuous_tone_is_its_rms():
    t = np.arange(2 * SR) / SR
    x = 0.5 * np.sin(2 * np.pi * 440 * t)
    assert active_speech_level(x) == pytest.approx(level_dbfs(x), abs=0.1)
    assert level_dbfs(x) == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)


def test_silence_levels():
    assert active_speech_level(np.zeros(SR)) == SILENCE_DB
    assert level_dbfs(np.zeros(SR)) == SILENCE_DB
    assert level_dbfs(np.zeros(0)) == SILENCE_DB


def test_speech_ratio_high_on_speech_low_on_silence_and_noise(clean_speech):
    rng = np.random.default_rng(0)
    assert speech_ratio(clean_speech) > 0.6
    assert speech_ratio(np.zeros(3 * SR)) == 0.0
    assert speech_ratio(1e-4 * rng.standard_normal(3 * SR)) < 0.05  # hiss at -80 dBFS
    assert speech_ratio(0.05 * rng.standard_normal(3 * SR)) < 0.05  # steady loud noise


def test_speech_ratio_counts_the_speech_part(clean_speech):
    speech = clean_speech[: 3 * SR]
    half = np.concatenate([speech, np.zeros(3 * SR, np.float32)])
    assert speech_ratio(half) == pytest.approx(speech_ratio(speech) / 2, abs=0.05)


def test_speech_ratio_in_background_noise(clean_speech, noise_dir):
    import soundfile as sf

    noise, _ = sf.read(noise_dir / "pst_background_samples" / "cafe.flac", dtype="float32")
    speech = clean_speech[: 5 * SR]
    noise = noise[: 5 * SR] * 10 ** ((active_speech_level(speech) - 15 - level_dbfs(noise[: 5 * SR])) / 20)
    assert speech_ratio(noise) < 0.2
    assert speech_ratio(speech + noise) > 0.4


def test_clipping_ratio():
    x = np.linspace(-1, 1, 2001)
    assert clipping_ratio(x, threshold=0.5) == pytest.approx(1001 / 2001, abs=1e-3)
    assert clipping_ratio(np.zeros(10)) == 0.0
    assert clipping_ratio(np.array([1.0, -1.0, 0.0, 0.2])) == 0.5
