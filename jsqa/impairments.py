"""Impairments: small, seeded, composable transforms that degrade speech.

Each transform is a frozen dataclass with explicit parameters. Calling it as
``transform(x, rng)`` takes float32 mono 16 kHz audio and returns degraded audio of the
same length; every random choice comes from ``rng``, so the same seed gives the same
output. ``transform.params()`` is a JSON-able dict (with the class ``name``) for labels
and caches. ``Chain([...])`` applies several in order.

Mixing transforms (``AddNoise``, ``CompetingTalker``, ``Echo``, ``Reverb``) never clip:
if the result would exceed full scale, the whole output is scaled down, which keeps
their SNR / SIR / attenuation. ``Gain`` and ``Clipping`` saturate at full scale on purpose.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import numpy as np
from scipy.signal import butter, correlate, fftconvolve, istft, sosfiltfilt, stft

from . import g711
from .audio import SAMPLE_RATE, hz_to_mel, mel_to_hz, resample
from .levels import active_speech_level, level_dbfs
from .noises import NAMED_NOISES, _load_cached, excerpt

NARROWBAND_RATE = 8000
PEAK_LIMIT = 0.99  # the guard for mixing transforms leaves a little headroom

NoiseSpec = Union[str, os.PathLike, np.ndarray, Callable[[int, np.random.Generator], np.ndarray]]


class CodecUnavailableError(RuntimeError):
    """The external tool (ffmpeg, or sox for AMR-NB) a codec needs is not installed."""


def _mono(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"impairments take 1-D mono audio, got shape {x.shape}")
    return x


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad to n samples, as float32."""
    y = np.asarray(y, dtype=np.float32)
    if y.size >= n:
        return y[:n].copy()
    return np.concatenate([y, np.zeros(n - y.size, dtype=np.float32)])


def _guard_peak(y: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(y), initial=0.0))
    return y * (PEAK_LIMIT / peak) if peak > 1.0 else y


def _draw(source: NoiseSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples from a noise or talker spec: a named generated noise, a file, an array, a callable."""
    if isinstance(source, str) and source in NAMED_NOISES:
        return NAMED_NOISES[source](n, rng)
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise ValueError(f"{source!r} is neither a file nor one of {', '.join(NAMED_NOISES)}")
        return excerpt(_load_cached(str(source)), n, rng)
    if isinstance(source, np.ndarray):
        return excerpt(source, n, rng)
    if callable(source):
        return _fit(source(n, rng), n)
    raise TypeError(f"cannot draw audio from {type(source).__name__}")


def _describe(value):
    if hasattr(value, "params"):
        return value.params()
    if isinstance(value, np.ndarray):
        return {"name": "array", "samples": int(value.size)}
    if isinstance(value, os.PathLike):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if callable(value):
        return {"name": getattr(value, "__name__", type(value).__name__)}
    return value


class Impairment:
    """Base class: ``params()`` lists the dataclass fields under the class name."""

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict:
        out = {"name": type(self).__name__}
        for f in dataclasses.fields(self):
            out[f.name] = _describe(getattr(self, f.name))
        return out


@dataclass(frozen=True, eq=False)
class AddNoise(Impairment):
    """Add noise at ``snr_db``: the P.56 active speech level of x minus the RMS level of the noise.

    ``noise``: "white", "pink", "brown", "speech_shaped", a file path, an array (looped or
    cropped from a random offset), or a source ``f(n, rng)`` such as a ``NoisePool`` or ``Babble``.
    """

    snr_db: float
    noise: NoiseSpec = "white"

    def __call__(self, x, rng):
        x = _mono(x)
        noise = _draw(self.noise, x.size, rng).astype(np.float64)
        noise_level = level_dbfs(noise)
        if noise_level <= -100:
            return x.copy()
        gain = 10 ** ((active_speech_level(x) - self.snr_db - noise_level) / 20)
        return _guard_peak(x + gain * noise).astype(np.float32)


@dataclass(frozen=True, eq=False)
class CompetingTalker(Impairment):
    """Add another talker at ``sir_db``: the difference of the two P.56 active speech levels.

    ``talker``: a file path, an array, or a source ``f(n, rng)``; looped or cropped from a random offset.
    """

    sir_db: float
    talker: NoiseSpec

    def __call__(self, x, rng):
        x = _mono(x)
        other = _draw(self.talker, x.size, rng).astype(np.float64)
        other_level = active_speech_level(other)
        if other_level <= -100:
            return x.copy()
        gain = 10 ** ((active_speech_level(x) - self.sir_db - other_level) / 20)
        return _guard_peak(x + gain * other).astype(np.float32)


@dataclass(frozen=True)
class Narrowband(Impairment):
    """Telephone band: resample to 8 kHz, zero-phase Butterworth band-pass, back to 16 kHz."""

    low_hz: float = 300.0
    high_hz: float = 3400.0
    order: int = 4

    def __call__(self, x, rng):
        x = _mono(x)
        narrow = resample(x, SAMPLE_RATE, NARROWBAND_RATE).astype(np.float64)
        sos = butter(self.order, [self.low_hz, self.high_hz], btype="bandpass", fs=NARROWBAND_RATE, output="sos")
        if narrow.size > 1:
            narrow = sosfiltfilt(sos, narrow, padlen=min(3 * (2 * len(sos) + 1), narrow.size - 1))
        return _fit(resample(narrow, NARROWBAND_RATE, SAMPLE_RATE), x.size)


@dataclass(frozen=True)
class G711(Impairment):
    """G.711 round trip at 8 kHz ("mulaw" or "alaw"), through ``jsqa.g711``."""

    law: str = "mulaw"

    def __post_init__(self):
        if self.law not in ("mulaw", "alaw"):
            raise ValueError(f"G.711 law must be 'mulaw' or 'alaw', not {self.law!r}")

    def __call__(self, x, rng):
        x = _mono(x)
        encode, decode = (
            (g711.mulaw_encode, g711.mulaw_decode) if self.law == "mulaw" else (g711.alaw_encode, g711.alaw_decode)
        )
        narrow = resample(x, SAMPLE_RATE, NARROWBAND_RATE)
        return _fit(resample(decode(encode(narrow)), NARROWBAND_RATE, SAMPLE_RATE), x.size)


# name -> (container suffix, encoder options, sample rate the codec runs at, default kbit/s)
_FFMPEG_CODECS = {
    "opus": ("ogg", ["-c:a", "libopus", "-application", "voip"], 16000, 16.0),
    "mp3": ("mp3", ["-c:a", "libmp3lame"], 16000, 16.0),
    "gsm": ("gsm", ["-c:a", "libgsm"], 8000, 13.0),
    "amr-nb": ("amr", ["-c:a", "libopencore_amrnb"], 8000, 12.2),
}
AMR_NB_KBPS = (4.75, 5.15, 5.9, 6.7, 7.4, 7.95, 10.2, 12.2)  # modes MR475 ... MR122
_INSTALL_HINT = "install it (Debian/Ubuntu: apt-get install -y ffmpeg sox libsox-fmt-all; macOS: brew install ffmpeg sox)"
MAX_ALIGN_S = 0.1


@functools.lru_cache(maxsize=4)
def _ffmpeg_encoders(ffmpeg: str) -> str:
    return subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout


@functools.lru_cache(maxsize=4)
def _sox_formats(sox: str) -> str:
    return subprocess.run([sox, "-h"], capture_output=True, text=True).stdout


def _amr_via_ffmpeg(ffmpeg: str | None) -> bool:
    return ffmpeg is not None and "libopencore_amrnb" in _ffmpeg_encoders(ffmpeg)


def available_codecs() -> list[str]:
    """The ``Codec`` names the tools on PATH can run now (ffmpeg, and ffmpeg or sox for AMR-NB)."""
    ffmpeg, sox = shutil.which("ffmpeg"), shutil.which("sox")
    names = [name for name in _FFMPEG_CODECS if name != "amr-nb"] if ffmpeg else []
    if _amr_via_ffmpeg(ffmpeg) or (sox is not None and "amr-nb" in _sox_formats(sox)):
        names.append("amr-nb")
    return names


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{Path(cmd[0]).name} failed ({' '.join(cmd[1:6])} ...): {' | '.join(tail)}")


def _align(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Shift y by the lag (within MAX_ALIGN_S) that best matches x, then fit it to len(x)."""
    max_lag = int(MAX_ALIGN_S * SAMPLE_RATE)
    m = min(x.size, y.size)
    if m < 2 * max_lag or not np.any(x):
        return _fit(y, x.size)
    xc = correlate(y[:m].astype(np.float64), x[:m].astype(np.float64), mode="full", method="fft")
    lags = np.arange(-m + 1, m)
    window = np.abs(lags) <= max_lag
    lag = int(lags[window][np.argmax(xc[window])])
    y = y[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag, dtype=np.float32), y])
    return _fit(y, x.size)


@dataclass(frozen=True)
class Codec(Impairment):
    """Lossy codec round trip through ffmpeg, ``Codec(codec, bitrate)``: "opus" (6-510 kbit/s; 6-32 is the speech range),
    "mp3" (8-64 kbit/s at 16 kHz), "gsm" (full rate, 13 kbit/s only), "amr-nb" (one of
    ``AMR_NB_KBPS``). AMR-NB uses ffmpeg's libopencore_amrnb encoder when ffmpeg has it and
    SoX's amr-nb format otherwise (Debian's ffmpeg can decode AMR but not encode it).

    ``bitrate`` is in kbit/s (None: the codec's default). The output is resampled to 16 kHz,
    aligned to the input (codec delay removed by cross-correlation) and cut to its length.
    Raises ``CodecUnavailableError`` when the tool is missing.
    """

    codec: str = "opus"
    bitrate: float | None = None

    def __post_init__(self):
        if self.codec not in _FFMPEG_CODECS:
            raise ValueError(f"unknown codec {self.codec!r}; choose one of {', '.join(_FFMPEG_CODECS)}")
        kbps = self.kbps
        ok = {
            "opus": 6 <= kbps <= 510,
            "mp3": 8 <= kbps <= 64,
            "gsm": kbps == 13,
            "amr-nb": kbps in AMR_NB_KBPS,
        }[self.codec]
        if not ok:
            raise ValueError(f"bitrate {kbps} kbit/s is not valid for {self.codec}; see the Codec docstring")

    @property
    def kbps(self) -> float:
        return float(self.bitrate if self.bitrate is not None else _FFMPEG_CODECS[self.codec][3])

    def __call__(self, x, rng):
        x = _mono(x)
        if x.size == 0:
            return x.copy()
        with tempfile.TemporaryDirectory(prefix="jsqa-codec-") as tmp:
            tmp = Path(tmp)
            raw_in, raw_out = tmp / "in.f32", tmp / "out.f32"
            np.clip(x, -1, 1).astype("<f4").tofile(raw_in)
            rate = self._round_trip(raw_in, raw_out, tmp)
            y = np.fromfile(raw_out, dtype="<f4")
        return _align(resample(y, rate, SAMPLE_RATE), x)

    def _round_trip(self, raw_in: Path, raw_out: Path, tmp: Path) -> int:
        """Encode raw_in, decode to raw_out (float32); return raw_out's sample rate."""
        suffix, options, rate, _ = _FFMPEG_CODECS[self.codec]
        ffmpeg = shutil.which("ffmpeg")
        if self.codec == "amr-nb" and not _amr_via_ffmpeg(ffmpeg):
            return self._sox_amr(raw_in, raw_out, tmp)
        if ffmpeg is None:
            raise CodecUnavailableError(f"ffmpeg not found on PATH: the {self.codec} codec needs it; {_INSTALL_HINT}")
        coded = tmp / f"coded.{suffix}"
        raw = ["-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1"]
        bitrate = [] if self.codec == "gsm" else ["-b:a", f"{self.kbps:g}k"]
        quiet = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y"]
        _run([*quiet, *raw, "-i", str(raw_in), "-ar", str(rate), *options, *bitrate, str(coded)])
        _run([*quiet, "-i", str(coded), "-f", "f32le", "-ac", "1", "-ar", str(rate), str(raw_out)])
        return rate

    def _sox_amr(self, raw_in: Path, raw_out: Path, tmp: Path) -> int:
        sox = shutil.which("sox")
        if sox is None or "amr-nb" not in _sox_formats(sox):
            raise CodecUnavailableError(
                "AMR-NB needs ffmpeg built with libopencore_amrnb or sox with its amr-nb format, "
                f"and neither was found on PATH; {_INSTALL_HINT}"
            )
        coded = tmp / "coded.amr-nb"
        raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1"]
        mode = AMR_NB_KBPS.index(self.kbps)
        # -D: SoX dithers with fresh random noise whenever it cuts the bit depth, so a clip
        # would not re-render bit-identically from its recipe.
        _run([sox, "-q", "-D", *raw, "-r", str(SAMPLE_RATE), str(raw_in), "-r", "8000", "-C", str(mode), str(coded)])
        _run([sox, "-q", "-D", str(coded), *raw, "-r", "8000", str(raw_out)])
        return 8000


@dataclass(frozen=True)
class PacketLoss(Impairment):
    """Lose ``frame_ms`` packets with a two-state Gilbert-Elliott channel.

    Every frame in the good state arrives and every frame in the bad state is lost (the
    Gilbert case of the model), so losses come in bursts of mean length ``burst`` frames
    (geometric) and the long-run loss rate is ``rate``: P(good->bad) = rate / (burst (1 - rate)),
    P(bad->good) = 1 / burst. ``burst=1`` makes every loss a single frame;
    ``burst = 1 / (1 - rate)`` is independent (Bernoulli) loss. ``concealment``: "zero"
    inserts silence; "repeat" repeats the last received frame, fading by ``fade`` per frame
    (a simple packet-loss concealment).
    """

    rate: float
    burst: float = 1.0
    concealment: str = "zero"
    frame_ms: float = 20.0
    fade: float = 0.5

    def __post_init__(self):
        if not 0 <= self.rate < 1:
            raise ValueError(f"loss rate must be in [0, 1), got {self.rate}")
        if self.burst < 1:
            raise ValueError(f"mean burst length must be >= 1 frame, got {self.burst}")
        if self.rate / (self.burst * (1 - self.rate)) > 1:
            raise ValueError(f"rate {self.rate} needs bursts longer than {self.burst} frames")
        if self.concealment not in ("zero", "repeat"):
            raise ValueError(f"concealment must be 'zero' or 'repeat', not {self.concealment!r}")

    def loss_mask(self, n_frames: int, rng: np.random.Generator) -> np.ndarray:
        """Boolean array, True for each lost frame."""
        mask = np.zeros(n_frames, dtype=bool)
        if self.rate == 0 or n_frames == 0:
            return mask
        p_loss = self.rate / (self.burst * (1 - self.rate))
        p_recover = 1.0 / self.burst
        lost = bool(rng.random() < self.rate)  # start in the stationary distribution
        pos = 0
        while pos < n_frames:
            run = int(rng.geometric(p_recover if lost else p_loss))
            if lost:
                mask[pos : pos + run] = True
            pos += run
            lost = not lost
        return mask

    def __call__(self, x, rng):
        x = _mono(x)
        frame = int(round(self.frame_ms * SAMPLE_RATE / 1000))
        n_frames = -(-x.size // frame)
        mask = self.loss_mask(n_frames, rng)
        frames = _fit(x, n_frames * frame).reshape(n_frames, frame)
        out = frames.copy()
        out[mask] = 0.0
        if self.concealment == "repeat":
            ramp = np.linspace(0.0, 1.0, frame, endpoint=False, dtype=np.float32)
            last, k = None, 0
            for i in range(n_frames):
                if not mask[i]:
                    last, k = frames[i], 0
                    continue
                k += 1
                if last is not None:
                    start, end = self.fade ** (k - 1), self.fade**k
                    out[i] = last * (start + (end - start) * ramp)
        return out.reshape(-1)[: x.size].copy()


@dataclass(frozen=True)
class Clipping(Impairment):
    """Hard clipping. Give ``threshold`` (the clip level, as a fraction of full scale) or
    ``ratio`` (the fraction of samples to clip: the level is that quantile of |x|)."""

    threshold: float | None = None
    ratio: float | None = None

    def __post_init__(self):
        if (self.threshold is None) == (self.ratio is None):
            raise ValueError("give exactly one of threshold and ratio")
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.ratio is not None and not 0 <= self.ratio < 1:
            raise ValueError(f"ratio must be in [0, 1), got {self.ratio}")

    def level(self, x: np.ndarray) -> float:
        """The clip level this transform uses for x."""
        if self.threshold is not None:
            return float(self.threshold)
        return float(np.quantile(np.abs(x), 1 - self.ratio)) if self.ratio > 0 else math.inf

    def __call__(self, x, rng):
        x = _mono(x)
        level = min(self.level(x), 1.0)
        return np.clip(x, -level, level).astype(np.float32)


@dataclass(frozen=True)
class Gain(Impairment):
    """Change the level by ``db``; samples beyond full scale saturate, as in a real device."""

    db: float

    def __call__(self, x, rng):
        x = _mono(x)
        return np.clip(x * 10 ** (self.db / 20), -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Reverb(Impairment):
    """Convolve with a synthetic room impulse response: a direct path, then Gaussian noise
    whose envelope falls 60 dB in ``rt60`` seconds, the two ``drr_db`` apart in energy.
    The RIR has unit energy, so the level stays about the same."""

    rt60: float
    drr_db: float = 0.0
    predelay_ms: float = 2.0

    def __post_init__(self):
        if self.rt60 <= 0:
            raise ValueError(f"rt60 must be positive, got {self.rt60}")

    def rir(self, rng: np.random.Generator) -> np.ndarray:
        """The impulse response (float64, direct path at index 0)."""
        gap = int(round(self.predelay_ms * SAMPLE_RATE / 1000))
        length = int(math.ceil(1.2 * self.rt60 * SAMPLE_RATE))
        t = np.arange(length) / SAMPLE_RATE
        tail = rng.standard_normal(length) * 10 ** (-3 * t / self.rt60)  # -60 dB at rt60
        tail *= math.sqrt(10 ** (-self.drr_db / 10) / np.sum(tail**2))
        h = np.concatenate([[1.0], np.zeros(gap), tail])
        return h / math.sqrt(np.sum(h**2))

    def __call__(self, x, rng):
        x = _mono(x)
        y = fftconvolve(x.astype(np.float64), self.rir(rng))[: x.size]
        return _guard_peak(y).astype(np.float32)


@dataclass(frozen=True)
class Echo(Impairment):
    """Add one copy of the signal ``delay_ms`` later and ``attenuation_db`` quieter."""

    delay_ms: float
    attenuation_db: float

    def __call__(self, x, rng):
        x = _mono(x)
        delay = int(round(self.delay_ms * SAMPLE_RATE / 1000))
        y = x.astype(np.float64)
        if 0 < delay < x.size:
            y[delay:] += 10 ** (-self.attenuation_db / 20) * x[:-delay]
        return _guard_peak(y).astype(np.float32)


@dataclass(frozen=True)
class Chain(Impairment):
    """Apply ``steps`` in order, all drawing from the same rng."""

    steps: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "steps", tuple(self.steps))

    def __call__(self, x, rng):
        y = _mono(x)
        for step in self.steps:
            y = step(y, rng)
        return y.copy() if y is x else y

    def params(self) -> dict:
        return {"name": "Chain", "steps": [step.params() for step in self.steps]}


@dataclass(frozen=True)
class MNRU(Impairment):
    """Modulated noise reference unit (ITU-T P.810): speech-correlated noise
    ``y = x (1 + 10^(-Q/20) n)``, n white Gaussian noise of unit variance; ``q_db`` is the
    ratio of speech to modulated noise (Q 0 dB: noise as loud as the speech)."""

    q_db: float

    def __call__(self, x, rng):
        x = _mono(x)
        n = rng.standard_normal(x.size)
        y = x.astype(np.float64) * (1.0 + 10 ** (-self.q_db / 20) * n)
        return _guard_peak(y).astype(np.float32)


@dataclass(frozen=True)
class Chops(Impairment):
    """Segments of ``min_ms``-``max_ms`` lost at ``rate_hz`` a second (Poisson), as a jitter
    buffer or a bad link loses them: ``mode`` "zero" silences them in place, "drop" removes
    them and closes the gap (the remainder is refilled from the start so the length stays)."""

    rate_hz: float
    min_ms: float = 10.0
    max_ms: float = 80.0
    mode: str = "zero"

    def __post_init__(self):
        if self.mode not in ("zero", "drop"):
            raise ValueError(f"chop mode must be 'zero' or 'drop', not {self.mode!r}")
        if not 0 < self.min_ms <= self.max_ms:
            raise ValueError(f"need 0 < min_ms <= max_ms, got {self.min_ms}, {self.max_ms}")

    def segments(self, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """The (start, end) sample ranges lost in n samples."""
        count = int(rng.poisson(self.rate_hz * n / SAMPLE_RATE))
        starts = np.sort(rng.integers(0, max(n, 1), size=count))
        lengths = rng.uniform(self.min_ms, self.max_ms, size=count) * SAMPLE_RATE / 1000
        return [(int(s), min(n, int(s + m))) for s, m in zip(starts, lengths)]

    def __call__(self, x, rng):
        x = _mono(x)
        keep = np.ones(x.size, dtype=bool)
        for start, end in self.segments(x.size, rng):
            keep[start:end] = False
        if self.mode == "zero":
            return np.where(keep, x, 0.0).astype(np.float32)
        kept = x[keep]
        return np.resize(kept, x.size).astype(np.float32) if kept.size else np.zeros_like(x)


@dataclass(frozen=True)
class Overdrive(Impairment):
    """Clipping as a hot input stage makes it: ``gain_db`` above the clip's own peak into a
    hard (``soft=False``) or tanh (``soft=True``) limiter at full scale, then back to the
    input's RMS, so the distortion changes and the loudness does not."""

    gain_db: float
    soft: bool = False

    def __call__(self, x, rng):
        x = _mono(x)
        peak = float(np.max(np.abs(x), initial=0.0))
        if peak == 0.0:
            return x.copy()
        driven = x.astype(np.float64) * (10 ** (self.gain_db / 20) / peak)
        y = np.tanh(driven) if self.soft else np.clip(driven, -1.0, 1.0)
        rms_in, rms_out = np.sqrt(np.mean(x.astype(np.float64) ** 2)), np.sqrt(np.mean(y**2))
        return _guard_peak(y * (rms_in / max(rms_out, 1e-12))).astype(np.float32)


@dataclass(frozen=True)
class Level(Impairment):
    """Set the P.56 active speech level to ``dbfs``; what passes full scale saturates, as an
    overdriven device does."""

    dbfs: float

    def __call__(self, x, rng):
        x = _mono(x)
        level = active_speech_level(x)
        if level <= -100:
            return x.copy()
        return np.clip(x * 10 ** ((self.dbfs - level) / 20), -1.0, 1.0).astype(np.float32)


RESYNTH_FFT = 512  # 32 ms frames every 8 ms: a speech vocoder's analysis resolution


def _band_interpolation(bands: int, bins: int) -> np.ndarray:
    """``[bands, bins]`` triangles centred on ``bands`` points evenly spaced in mel from 0 Hz to
    Nyquist; each bin's weights sum to 1, so ``W.T @ band_values`` interpolates between centres."""
    centres = mel_to_hz(np.linspace(0.0, hz_to_mel(SAMPLE_RATE / 2), bands))
    freqs = np.linspace(0.0, SAMPLE_RATE / 2, bins)
    eye = np.eye(bands)
    return np.stack([np.interp(freqs, centres, eye[b]) for b in range(bands)])


@dataclass(frozen=True)
class Resynthesis(Impairment):
    """What a low-rate vocoder or neural codec does to speech: the short-time magnitude survives
    only as an envelope on ``bands`` mel bands (the harmonic detail between them is lost); the
    phase is the input's (``iterations=None``, mild) or rebuilt from random phase by that many
    Griffin-Lim iterations (harsh). The RMS is kept, and the output stays wideband, so
    bandwidth alone does not give it away."""

    bands: int
    iterations: int | None = None

    def __post_init__(self):
        if self.bands < 2 or (self.iterations is not None and self.iterations < 0):
            raise ValueError(f"need bands >= 2 and iterations >= 0 or None, got {self.bands}, {self.iterations}")

    def __call__(self, x, rng):
        x = _mono(x)
        rms_in = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
        if rms_in == 0.0:
            return x.copy()
        frames = {"fs": SAMPLE_RATE, "nperseg": RESYNTH_FFT, "noverlap": RESYNTH_FFT * 3 // 4}
        _, _, spec = stft(x.astype(np.float64), **frames)
        weights = _band_interpolation(self.bands, spec.shape[0])
        band_mean = (weights @ np.abs(spec)) / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
        envelope = weights.T @ band_mean
        if self.iterations is None:
            phase = np.exp(1j * np.angle(spec))
        else:
            phase = np.exp(2j * np.pi * rng.random(spec.shape))
            for _ in range(self.iterations):
                _, y = istft(envelope * phase, **frames)
                _, _, rebuilt = stft(_fit(y, x.size).astype(np.float64), **frames)
                phase = np.exp(1j * np.angle(rebuilt))
        _, y = istft(envelope * phase, **frames)
        y = _fit(y, x.size).astype(np.float64)
        rms_out = float(np.sqrt(np.mean(y**2)))
        return _guard_peak(y * (rms_in / max(rms_out, 1e-12))).astype(np.float32)
