"""Impairments: each test measures, on real speech, the property the transform promises."""

import json
import shutil

import numpy as np
import pytest
from scipy.signal import correlate, fftconvolve, welch

from jsqa import g711
from jsqa.audio import load_audio, resample
from jsqa.impairments import (
    AddNoise,
    Chain,
    Clipping,
    Codec,
    CodecUnavailableError,
    CompetingTalker,
    Echo,
    G711,
    Gain,
    Narrowband,
    PacketLoss,
    Resynthesis,
    Reverb,
    available_codecs,
)
from jsqa.levels import active_speech_level, clipping_ratio, level_dbfs
from jsqa.noises import Babble, NoisePool

SR = 16000
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


@pytest.fixture(scope="module")
def speech(clean_speech):
    """4 s of LibriSpeech at an active level of -30 dB: mixes stay below full scale."""
    x = clean_speech[SR : 5 * SR]
    return (x * 10 ** ((-30 - active_speech_level(x)) / 20)).astype(np.float32)


@pytest.fixture(scope="module")
def other_talker(speech_dir):
    return speech_dir / "asterisk_it" / "vm-review.flac"


def _band_db(x, lo, hi):
    f, p = welch(x, fs=SR, nperseg=1024)
    return 10 * np.log10(np.sum(p[(f >= lo) & (f < hi)]) + 1e-30)


def _snr(x, y):
    return 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((x.astype(np.float64) - y) ** 2))


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 25.0])
@pytest.mark.parametrize("noise", ["white", "pink", "brown", "speech_shaped", "pool", "babble"])
def test_add_noise_hits_target_snr(speech, noise_dir, speech_dir, noise, snr_db):
    sources = {
        "pool": NoisePool(noise_dir),
        "babble": Babble(speech_dir / "cmu_arctic", count=4),
    }
    y = AddNoise(snr_db, sources.get(noise, noise))(speech, np.random.default_rng(0))
    assert y.shape == speech.shape and y.dtype == np.float32
    assert np.max(np.abs(y)) < 1.0  # no peak guard: y - x is the noise
    measured = active_speech_level(speech) - level_dbfs(y - speech)
    assert measured == pytest.approx(snr_db, abs=0.2)


def test_add_noise_from_file_and_array(speech, noise_dir):
    path = noise_dir / "pst_background_samples" / "traffic.flac"
    for noise in (path, load_audio(path)[:SR]):  # the 1 s array is looped to 4 s
        y = AddNoise(5.0, noise)(speech, np.random.default_rng(1))
        assert active_speech_level(speech) - level_dbfs(y - speech) == pytest.approx(5.0, abs=0.2)


def test_add_noise_rejects_unknown_noise(speech):
    with pytest.raises(ValueError, match="neither a file nor one of white"):
        AddNoise(5.0, "pinkk")(speech, np.random.default_rng(0))


def test_add_noise_guards_full_scale_and_keeps_snr(clean_speech):
    loud = clean_speech[: 3 * SR] * (0.95 / np.max(np.abs(clean_speech[: 3 * SR])))
    y = AddNoise(0.0, "white")(loud, np.random.default_rng(0))
    assert np.max(np.abs(y)) <= 1.0
    scale = np.dot(y, loud) / np.dot(loud, loud)  # the guard scaled speech and noise together
    assert scale < 1.0
    measured = active_speech_level(loud) - level_dbfs(y / scale - loud)
    assert measured == pytest.approx(0.0, abs=0.2)


@pytest.mark.parametrize("sir_db", [0.0, 6.0, 15.0])
def test_competing_talker_hits_target_sir(speech, other_talker, sir_db):
    y = CompetingTalker(sir_db, other_talker)(speech, np.random.default_rng(0))
    measured = active_speech_level(speech) - active_speech_level(y - speech)
    assert measured == pytest.approx(sir_db, abs=0.2)


def test_narrowband_removes_energy_outside_the_telephone_band(speech):
    y = Narrowband()(speech, np.random.default_rng(0))
    assert y.shape == speech.shape
    change = {band: _band_db(y, *band) - _band_db(speech, *band) for band in [(0, 150), (500, 3000), (4000, 8000)]}
    assert abs(change[(500, 3000)]) < 1.0
    assert change[(0, 150)] < -25
    assert change[(4000, 8000)] < -60


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_g711_round_trip_goes_through_the_g711_codec(speech, law):
    y = G711(law)(speech, np.random.default_rng(0))
    assert y.shape == speech.shape and y.dtype == np.float32
    encode, decode = (g711.mulaw_encode, g711.mulaw_decode) if law == "mulaw" else (g711.alaw_encode, g711.alaw_decode)
    expected = resample(decode(encode(resample(speech, SR, 8000))), 8000, SR)
    np.testing.assert_array_equal(y, expected[: speech.size])
    # 8 kHz sampling: nothing above 4 kHz; 8-bit log PCM: about 35 dB SNR at a -30 dB level.
    assert _band_db(y, 4100, 8000) - _band_db(y, 300, 3400) < -50
    narrow = resample(resample(speech, SR, 8000), 8000, SR)
    assert 25 < _snr(narrow, y) < 45


def test_g711_rejects_unknown_law():
    with pytest.raises(ValueError, match="mulaw"):
        G711("ulaw")


CODECS = [("opus", 6), ("opus", 32), ("mp3", 8), ("mp3", 32), ("gsm", None), ("amr-nb", 4.75), ("amr-nb", 12.2)]


@pytest.mark.parametrize(("codec", "bitrate"), CODECS)
def test_codec_output_is_aligned_and_same_length(speech, codec, bitrate):
    if codec not in available_codecs():
        pytest.skip(f"no {codec} encoder on PATH (needs ffmpeg; AMR-NB: sox with amr-nb)")
    y = Codec(codec, bitrate)(speech, np.random.default_rng(0))
    assert y.shape == speech.shape and y.dtype == np.float32
    xc = correlate(y, speech, mode="full", method="fft")
    lags = np.arange(-speech.size + 1, speech.size)
    assert abs(lags[np.argmax(xc)]) <= 1
    assert np.corrcoef(y, speech)[0, 1] > 0.5
    if codec in ("gsm", "amr-nb"):  # narrowband codecs: 8 kHz sampling
        assert _band_db(y, 4100, 8000) - _band_db(y, 300, 3400) < -40


@needs_ffmpeg
@pytest.mark.parametrize("codec", ["opus", "mp3"])
def test_codec_lower_bitrate_is_worse(speech, codec):
    low, high = {"opus": (6, 32), "mp3": (8, 32)}[codec]
    rng = np.random.default_rng(0)
    assert _snr(speech, Codec(codec, high)(speech, rng)) > _snr(speech, Codec(codec, low)(speech, rng)) + 0.5


def test_resynthesis_keeps_level_and_band_and_rebuilt_phase_is_harsher(speech):
    rng = np.random.default_rng(0)
    kept = Resynthesis(bands=24)(speech, rng)
    rebuilt = Resynthesis(bands=24, iterations=8)(speech, rng)
    for y in (kept, rebuilt):
        assert y.shape == speech.shape and y.dtype == np.float32
        assert level_dbfs(y) == pytest.approx(level_dbfs(speech), abs=0.1)
        # Wideband out: unlike a telephone codec, the band above 4 kHz keeps its energy.
        assert _band_db(y, 4100, 8000) - _band_db(speech, 4100, 8000) > -6
    assert np.corrcoef(kept, speech)[0, 1] > 0.5
    assert abs(np.corrcoef(rebuilt, speech)[0, 1]) < 0.2
    with pytest.raises(ValueError, match="bands"):
        Resynthesis(bands=1)


def test_codec_without_ffmpeg_says_what_to_install(speech, monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert available_codecs() == []
    with pytest.raises(CodecUnavailableError, match=r"ffmpeg not found.*apt-get install -y ffmpeg"):
        Codec("opus", 12)(speech, np.random.default_rng(0))
    with pytest.raises(CodecUnavailableError, match=r"AMR-NB needs ffmpeg .* or sox"):
        Codec("amr-nb", 12.2)(speech, np.random.default_rng(0))


def test_codec_validates_parameters():
    with pytest.raises(ValueError, match="unknown codec"):
        Codec("aac", 32)
    with pytest.raises(ValueError, match="not valid for opus"):
        Codec("opus", 2)
    with pytest.raises(ValueError, match="not valid for amr-nb"):
        Codec("amr-nb", 8)
    assert Codec("gsm").params() == {"name": "Codec", "codec": "gsm", "bitrate": None}


@pytest.fixture(scope="module")
def ten_minutes(clean_speech):
    """A 10 min signal: enough frames that the measured loss rate is within a few % of its mean."""
    return np.tile(clean_speech, int(np.ceil(600 * SR / clean_speech.size)))[: 600 * SR]


@pytest.mark.parametrize(("rate", "burst"), [(0.02, 1.0), (0.1, 3.0), (0.2, 5.0)])
def test_packet_loss_rate_and_burst_length(ten_minutes, rate, burst):
    frames_in = ten_minutes.reshape(-1, 320)
    assert not np.any(np.all(frames_in == 0, axis=1))
    y = PacketLoss(rate, burst=burst)(ten_minutes, np.random.default_rng(0))
    lost = np.all(y.reshape(-1, 320) == 0, axis=1)
    assert lost.mean() == pytest.approx(rate, rel=0.1)
    # Mean length of the runs of lost frames: the burstiness of the Gilbert-Elliott channel.
    edges = np.diff(np.concatenate([[0], lost.astype(int), [0]]))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    assert runs.mean() == pytest.approx(burst, rel=0.15)


def test_packet_loss_repeat_concealment(speech):
    loss = PacketLoss(0.2, burst=2.0, concealment="repeat")
    y = loss(speech, np.random.default_rng(4))
    mask = loss.loss_mask(speech.size // 320, np.random.default_rng(4))
    frames_in, frames_out = speech.reshape(-1, 320), y.reshape(-1, 320)
    np.testing.assert_array_equal(frames_out[~mask], frames_in[~mask])
    ramp = np.linspace(1.0, 0.5, 320, endpoint=False)
    checked = 0
    for i in np.flatnonzero(mask):
        if i > 0 and not mask[i - 1]:  # first lost frame of a burst: the previous frame, fading to half
            np.testing.assert_allclose(frames_out[i], frames_in[i - 1] * ramp, atol=1e-6)
            checked += 1
    assert checked > 5


def test_packet_loss_validates():
    with pytest.raises(ValueError):
        PacketLoss(1.0)
    with pytest.raises(ValueError):
        PacketLoss(0.6, burst=1.0)  # would need P(good->bad) > 1
    with pytest.raises(ValueError):
        PacketLoss(0.1, concealment="interpolate")
    x = np.ones(1000, np.float32)
    np.testing.assert_array_equal(PacketLoss(0.0)(x, np.random.default_rng(0)), x)


@pytest.mark.parametrize("ratio", [0.005, 0.02, 0.1])
def test_clipping_ratio_is_measured_on_the_output(speech, ratio):
    y = Clipping(ratio=ratio)(speech, np.random.default_rng(0))
    peak = float(np.max(np.abs(y)))
    assert clipping_ratio(y, threshold=peak * 0.9999) == pytest.approx(ratio, rel=0.1)
    untouched = np.abs(speech) < peak
    np.testing.assert_array_equal(y[untouched], speech[untouched])


def test_clipping_at_threshold(speech):
    loud = speech * 20
    y = Clipping(threshold=0.5)(loud, np.random.default_rng(0))
    assert np.max(np.abs(y)) == pytest.approx(0.5)
    assert clipping_ratio(y, threshold=0.5) == pytest.approx(np.mean(np.abs(loud) >= 0.5))
    with pytest.raises(ValueError, match="exactly one"):
        Clipping()


def test_gain(speech):
    rng = np.random.default_rng(0)
    assert level_dbfs(Gain(-12)(speech, rng)) - level_dbfs(speech) == pytest.approx(-12, abs=0.01)
    hot = Gain(30)(speech, rng)
    assert np.max(np.abs(hot)) == 1.0 and clipping_ratio(hot) > 0.001


def _rt60_from_rir(h):
    """Schroeder backward integration; line fit from -5 to -35 dB (T30), extrapolated to -60 dB."""
    edc = np.cumsum((h**2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    fit = (edc_db <= -5) & (edc_db >= -35)
    slope = np.polyfit(np.flatnonzero(fit) / SR, edc_db[fit], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("rt60", [0.2, 0.5, 1.0])
def test_reverb_rir_decays_with_the_given_rt60(rt60):
    h = Reverb(rt60).rir(np.random.default_rng(0))
    assert _rt60_from_rir(h) == pytest.approx(rt60, rel=0.1)
    assert np.sum(h**2) == pytest.approx(1.0)


def test_reverb_applies_its_rir(speech):
    reverb = Reverb(0.5, drr_db=3.0)
    y = reverb(speech, np.random.default_rng(7))
    expected = fftconvolve(speech.astype(np.float64), reverb.rir(np.random.default_rng(7)))[: speech.size]
    np.testing.assert_allclose(y, expected, atol=1e-6)
    assert abs(level_dbfs(y) - level_dbfs(speech)) < 3


def test_echo_shows_as_a_correlation_peak_at_the_delay(speech):
    y = Echo(delay_ms=120, attenuation_db=6)(speech, np.random.default_rng(0))
    delay = int(0.120 * SR)
    xc = correlate(y, speech, mode="full", method="fft")
    lags = np.arange(-speech.size + 1, speech.size)
    away = np.abs(lags) > 80  # beyond the 5 ms main lobe around lag 0
    assert lags[away][np.argmax(xc[away])] == delay
    echo_level = level_dbfs(y - speech) - level_dbfs(speech[:-delay])
    assert echo_level == pytest.approx(-6.0, abs=0.3)


def _all_transforms(noise_dir, other_talker):
    return [
        AddNoise(10, "pink"),
        AddNoise(5, NoisePool(noise_dir)),
        CompetingTalker(5, other_talker),
        Narrowband(),
        G711("alaw"),
        PacketLoss(0.1, burst=2, concealment="repeat"),
        Clipping(ratio=0.01),
        Gain(-6),
        Reverb(0.4),
        Echo(80, 10),
        Chain([Narrowband(), G711(), AddNoise(20, "white"), PacketLoss(0.05)]),
    ]


def test_same_seed_same_output_and_params_are_json(speech, noise_dir, other_talker):
    x = speech[: 2 * SR + 7]  # an odd length
    for transform in _all_transforms(noise_dir, other_talker):
        a = transform(x, np.random.default_rng(11))
        b = transform(x, np.random.default_rng(11))
        assert a.shape == x.shape and a.dtype == np.float32, transform
        np.testing.assert_array_equal(a, b)
        params = json.loads(json.dumps(transform.params()))
        assert params["name"] == type(transform).__name__


@pytest.mark.parametrize("index", [0, 1, 2, 5, 8])
def test_different_seeds_differ_for_random_transforms(speech, noise_dir, other_talker, index):
    transform = _all_transforms(noise_dir, other_talker)[index]
    a = transform(speech, np.random.default_rng(1))
    assert not np.array_equal(a, transform(speech, np.random.default_rng(2)))


def test_chain_applies_steps_in_order(speech):
    steps = [Narrowband(), AddNoise(15, "pink"), PacketLoss(0.1, burst=2)]
    rng = np.random.default_rng(3)
    expected = speech
    for step in steps:
        expected = step(expected, rng)
    np.testing.assert_array_equal(Chain(steps)(speech, np.random.default_rng(3)), expected)
    params = Chain(steps).params()
    assert [s["name"] for s in params["steps"]] == ["Narrowband", "AddNoise", "PacketLoss"]
    assert params["steps"][1] == {"name": "AddNoise", "snr_db": 15, "noise": "pink"}
