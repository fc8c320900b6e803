"""Noises: generated colours, speech-shaped, babble and recorded files, all at one level."""

import numpy as np
import pytest
from scipy.signal import welch

from jsqa.audio import load_audio
from jsqa.data import list_audio
from jsqa.levels import frame_energies_db, level_dbfs
from jsqa.noises import (
    NOISE_DBFS,
    Babble,
    ColoredNoise,
    NoisePool,
    SpeechShapedNoise,
    NAMED_NOISES,
    babble,
    brown,
    crackle,
    excerpt,
    long_term_spectrum,
    modulated,
    pink,
    speech_shaped,
    white,
)

SR = 16000


def _slope(x):
    """Slope of log10 power against log10 frequency between 100 Hz and 6 kHz."""
    f, p = welch(x, fs=SR, nperseg=4096)
    band = (f >= 100) & (f <= 6000)
    return np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0]


def _log_spectrum_corr(a, b):
    fa, pa = long_term_spectrum([a])
    _, pb = long_term_spectrum([b])
    band = (fa >= 100) & (fa <= 7000)
    return np.corrcoef(10 * np.log10(pa[band]), 10 * np.log10(pb[band]))[0, 1]


@pytest.fixture(scope="module")
def other_talkers(speech_dir):
    """Short clips of five talkers who are not the LibriSpeech test talker."""
    files = [
        speech_dir / "asterisk_it" / "vm-review.flac",
        speech_dir / "asterisk_ru" / "vm-rec-temp.flac",
        speech_dir / "asterisk_fr" / "vm-tocallnum.flac",
        speech_dir / "cmu_arctic" / "cmu_arctic_us_aew_a0001.flac",
        speech_dir / "cmu_arctic" / "cmu_arctic_us_axb_a0004.flac",
    ]
    return files


@pytest.mark.parametrize(("make", "expected"), [(white, 0.0), (pink, -1.0), (brown, -2.0)])
def test_colored_noise_spectral_slope_and_level(make, expected):
    x = make(5 * SR, np.random.default_rng(1))
    assert x.dtype == np.float32 and x.size == 5 * SR
    assert level_dbfs(x) == pytest.approx(NOISE_DBFS, abs=0.01)
    assert _slope(x) == pytest.approx(expected, abs=0.1)
    assert abs(float(np.mean(x))) < 1e-3


def test_generated_noise_is_seeded():
    a = pink(SR, np.random.default_rng(3))
    np.testing.assert_array_equal(a, pink(SR, np.random.default_rng(3)))
    assert not np.array_equal(a, pink(SR, np.random.default_rng(4)))
    np.testing.assert_array_equal(ColoredNoise("pink")(SR, np.random.default_rng(3)), a)
    with pytest.raises(ValueError, match="colour"):
        ColoredNoise("purple")


def test_speech_shaped_noise_follows_speech_spectrum(clean_speech, other_talkers):
    speech = [load_audio(p) for p in other_talkers]
    noise = speech_shaped(5 * SR, np.random.default_rng(0), speech)
    assert level_dbfs(noise) == pytest.approx(NOISE_DBFS, abs=0.01)
    # Its long-term spectrum is that of speech (here, of a different talker)...
    assert _log_spectrum_corr(noise, clean_speech) > 0.8
    assert _log_spectrum_corr(noise, np.concatenate(speech)) > 0.95
    from_files = SpeechShapedNoise(tuple(str(p) for p in other_talkers))(5 * SR, np.random.default_rng(0))
    np.testing.assert_allclose(from_files, noise, atol=1e-6)
    # ...but unlike speech it is stationary.
    assert np.std(frame_energies_db(noise)) < 0.2 * np.std(frame_energies_db(clean_speech))


def test_modulated_noise_has_a_new_spectrum_and_swell_each_draw():
    draws = [modulated(4 * SR, np.random.default_rng(seed)) for seed in range(6)]
    assert all(x.dtype == np.float32 and x.size == 4 * SR for x in draws)
    assert all(level_dbfs(x) == pytest.approx(NOISE_DBFS, abs=0.01) for x in draws)
    # Spectra unlike one another, where the generated colours share one shape per name.
    corr = [_log_spectrum_corr(a, b) for a, b in zip(draws, draws[1:])]
    assert min(corr) < 0.5
    assert _log_spectrum_corr(pink(4 * SR, np.random.default_rng(0)), pink(4 * SR, np.random.default_rng(1))) > 0.9
    # A swell: frame levels wander where white noise's stay put (the largest of six draws).
    swell = max(np.std(frame_energies_db(x)) for x in draws)
    assert swell > 3 * np.std(frame_energies_db(white(4 * SR, np.random.default_rng(0))))
    np.testing.assert_array_equal(NAMED_NOISES["modulated"](SR, np.random.default_rng(2)),
                                  modulated(SR, np.random.default_rng(2)))


def test_crackle_is_impulsive():
    def crest_db(x):
        return 20 * np.log10(np.max(np.abs(x)) / np.sqrt(np.mean(x.astype(np.float64) ** 2)))

    for seed in range(4):
        x = crackle(4 * SR, np.random.default_rng(seed))
        assert x.size == 4 * SR and level_dbfs(x) == pytest.approx(NOISE_DBFS, abs=0.01)
        assert crest_db(x) > crest_db(white(4 * SR, np.random.default_rng(seed))) + 4
    np.testing.assert_array_equal(NAMED_NOISES["crackle"](SR, np.random.default_rng(2)),
                                  crackle(SR, np.random.default_rng(2)))


def test_default_speech_shaped_noise_falls_above_500_hz():
    noise = speech_shaped(5 * SR, np.random.default_rng(0))
    f, p = welch(noise, fs=SR, nperseg=2048)
    low = p[(f > 300) & (f < 500)].mean()
    high = p[(f > 3000) & (f < 4000)].mean()
    assert 10 * np.log10(low / high) > 12
    assert SpeechShapedNoise()(SR, np.random.default_rng(0)).size == SR


def test_babble_from_other_talkers_is_speech_like_and_steadier(other_talkers):
    talkers = [load_audio(p) for p in other_talkers]
    rng = np.random.default_rng(0)
    mix = babble(4 * SR, rng, talkers, count=5)
    assert mix.size == 4 * SR
    assert level_dbfs(mix) == pytest.approx(NOISE_DBFS, abs=0.01)
    single = excerpt(talkers[0], 4 * SR, np.random.default_rng(0))
    # Overlapping talkers fill each other's pauses: the frame level varies much less.
    assert np.std(frame_energies_db(mix)) < 0.6 * np.std(frame_energies_db(single))
    assert _log_spectrum_corr(mix, np.concatenate(talkers)) > 0.9


def test_babble_source_over_files(other_talkers):
    source = Babble(other_talkers, count=4)
    a = source(2 * SR, np.random.default_rng(5))
    np.testing.assert_array_equal(a, source(2 * SR, np.random.default_rng(5)))
    assert level_dbfs(a) == pytest.approx(NOISE_DBFS, abs=0.01)
    assert source.params() == {"name": "Babble", "count": 4, "files": 5}


def test_noise_pool_over_the_shared_noise_folder(noise_dir):
    pool = NoisePool(noise_dir)
    assert len(pool) == len(list_audio(noise_dir)) > 50
    rng = np.random.default_rng(0)
    levels = []
    for _ in range(5):
        path, x = pool.sample(SR, rng)
        assert path in pool.files and x.size == SR and x.dtype == np.float32
        levels.append(level_dbfs(x))
    # Recorded levels span -52 to -9 dBFS; the pool sets them all to one level.
    np.testing.assert_allclose(levels, NOISE_DBFS, atol=0.01)
    assert pool.params()["files"] == len(pool)


def test_noise_pool_loops_short_files(noise_dir):
    short = noise_dir / "flare_water" / "river_loop.flac"
    pool = NoisePool([short])
    raw = load_audio(short)
    n = raw.size * 2 + 123
    x = pool(n, np.random.default_rng(2))
    assert x.size == n
    np.testing.assert_allclose(x[: raw.size + 123], x[raw.size :], atol=1e-6)


def test_noise_pool_crops_long_files_at_random_offsets(noise_dir):
    long_file = noise_dir / "pst_background_samples" / "cafe.flac"
    pool = NoisePool([long_file])
    raw = load_audio(long_file)
    x = pool(SR, np.random.default_rng(1))
    y = pool(SR, np.random.default_rng(2))
    assert not np.array_equal(x, y)
    # The excerpt is a contiguous, rescaled piece of the file.
    start = int(np.argmax(np.correlate(raw, x[:400], mode="valid")))
    gain = x[1000] / raw[start + 1000]
    np.testing.assert_allclose(x, raw[start : start + SR] * gain, rtol=1e-4, atol=1e-6)


def test_noise_pool_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        NoisePool(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no audio"):
        NoisePool(tmp_path)
