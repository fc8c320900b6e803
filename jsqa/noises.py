"""Background noises: generated (white, pink, brown, speech-shaped, babble, of random spectrum
and swell, crackle) and recorded files.

Every noise comes out as float32 at 16 kHz with an RMS level of ``NOISE_DBFS``, so the
mixing code only ever sets a relative level (an SNR). A noise source is anything callable
as ``source(n, rng) -> np.ndarray`` of n samples; the classes here also have ``params()``
(a JSON-able description) so impairment labels can be cached.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import welch

from .audio import SAMPLE_RATE, load_audio
from .data import list_audio
from .levels import active_speech_level, level_dbfs

NOISE_DBFS = -20.0
COLORS = ("white", "pink", "brown")

# Brown and pink noise have unbounded power at 0 Hz; below this the spectrum is flat.
_LOW_CUTOFF_HZ = 20.0


def set_level(x: np.ndarray, target_dbfs: float = NOISE_DBFS) -> np.ndarray:
    """Scale ``x`` to an RMS level of ``target_dbfs`` (silence stays silence)."""
    x = np.asarray(x, dtype=np.float32)
    level = level_dbfs(x)
    if not np.isfinite(level) or np.max(np.abs(x), initial=0.0) == 0.0:
        return x
    return (x * 10 ** ((target_dbfs - level) / 20)).astype(np.float32)


def excerpt(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of ``x`` from a random offset; a short ``x`` is looped (game loops are made for it)."""
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        raise ValueError("cannot take an excerpt of an empty signal")
    if x.size >= n:
        start = int(rng.integers(x.size - n + 1))
        return x[start : start + n].copy()
    return np.resize(np.roll(x, -int(rng.integers(x.size))), n)


def _shaped(n: int, rng: np.random.Generator, power: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Gaussian noise whose power spectrum follows ``power`` sampled at ``freqs`` (Hz)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    bins = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    gain = np.sqrt(np.interp(bins, freqs, power))
    gain[0] = 0.0  # no DC offset
    return set_level(np.fft.irfft(spectrum * gain, n))


def colored(n: int, rng: np.random.Generator, color: str = "white") -> np.ndarray:
    """White (flat), pink (-3 dB/octave) or brown (-6 dB/octave) Gaussian noise."""
    if color not in COLORS:
        raise ValueError(f"unknown noise colour {color!r}; choose one of {', '.join(COLORS)}")
    exponent = COLORS.index(color)  # power ~ 1 / f**exponent
    freqs = np.fft.rfftfreq(max(n, 2), 1 / SAMPLE_RATE)
    power = 1.0 / np.maximum(freqs, _LOW_CUTOFF_HZ) ** exponent
    return _shaped(n, rng, power, freqs)


def white(n: int, rng: np.random.Generator) -> np.ndarray:
    return colored(n, rng, "white")


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    return colored(n, rng, "pink")


def brown(n: int, rng: np.random.Generator) -> np.ndarray:
    return colored(n, rng, "brown")


def long_term_spectrum(signals: list[np.ndarray], nperseg: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(freqs, power): the average power spectrum of the signals, each weighted by its length."""
    total = None
    weight = 0
    for x in signals:
        x = np.asarray(x, dtype=np.float64)
        if x.size < nperseg:
            continue
        freqs, p = welch(x, fs=SAMPLE_RATE, nperseg=nperseg)
        total = p * x.size if total is None else total + p * x.size
        weight += x.size
    if total is None:
        raise ValueError(f"need at least one signal of {nperseg} samples or more")
    return freqs, total / weight


def default_speech_spectrum() -> tuple[np.ndarray, np.ndarray]:
    """A smooth long-term average speech spectrum: rising below 100 Hz, flat to 500 Hz,
    then falling about 6 dB per octave (roughly the shape of Byrne et al. 1994)."""
    freqs = np.linspace(0, SAMPLE_RATE / 2, 257)
    f = np.maximum(freqs, 1.0)
    power = (f**2 / (f**2 + 100.0**2)) / (1 + (f / 500.0) ** 2)
    return freqs, power


def speech_shaped(n: int, rng: np.random.Generator, speech: list[np.ndarray] | None = None) -> np.ndarray:
    """Stationary noise with the long-term spectrum of ``speech`` (or a default speech spectrum)."""
    freqs, power = long_term_spectrum(speech) if speech else default_speech_spectrum()
    return _shaped(n, rng, power, freqs)


def babble(n: int, rng: np.random.Generator, talkers: list[np.ndarray], count: int = 6) -> np.ndarray:
    """Sum of ``count`` talkers (drawn from ``talkers`` without repeats when possible), each at
    the same active speech level and from a random offset."""
    if not talkers:
        raise ValueError("babble needs at least one talker recording")
    picks = rng.choice(len(talkers), size=count, replace=count > len(talkers))
    mix = np.zeros(n, dtype=np.float64)
    for i in picks:
        voice = excerpt(talkers[int(i)], n, rng)
        level = active_speech_level(voice)
        if level > -100:
            mix += voice * 10 ** ((NOISE_DBFS - level) / 20)
    return set_level(mix)


@functools.lru_cache(maxsize=256)
def _load_cached(path: str) -> np.ndarray:
    x = load_audio(path)
    x.setflags(write=False)
    return x


@functools.lru_cache(maxsize=16)
def _files_spectrum(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    return long_term_spectrum([load_audio(p) for p in files])


def _paths(source: str | os.PathLike | list, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    if isinstance(source, (str, os.PathLike)):
        files = list_audio(source, exclude=exclude)
    else:
        files = [Path(p) for p in source]
    if not files:
        raise FileNotFoundError(f"no audio files in {source}")
    return tuple(str(p) for p in files)


def modulated(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise of a random smooth spectrum (six random gains of ±12 dB at log-spaced points from
    50 Hz to 8 kHz) under a slow random swell (0.2-6 Hz, depth up to 90 %): water, wind, a
    fan or a street, none of them the recordings we have."""
    knots = np.geomspace(50.0, SAMPLE_RATE / 2, 6)
    freqs = np.fft.rfftfreq(max(n, 2), 1 / SAMPLE_RATE)
    gain_db = np.interp(np.log(np.maximum(freqs, 50.0)), np.log(knots), rng.uniform(-12.0, 12.0, knots.size))
    x = _shaped(n, rng, 10 ** (gain_db / 10), freqs)
    t = np.arange(n) / SAMPLE_RATE
    swell = sum(np.sin(2 * np.pi * rng.uniform(0.2, 6.0) * t + rng.uniform(0, 2 * np.pi)) for _ in range(2)) / 2
    return set_level(x * (1.0 + rng.uniform(0.0, 0.9) * swell))


def crackle(n: int, rng: np.random.Generator) -> np.ndarray:
    """Clicks at random (5-200 a second, log-normal sizes, each a 1-10 ms decaying burst) over
    a low pink bed: fire, rain on a surface, a rustling or crackling line."""
    clicks = np.zeros(n)
    count = rng.poisson(rng.uniform(5.0, 200.0) * n / SAMPLE_RATE)
    clicks[rng.integers(0, n, count)] = rng.lognormal(0.0, 1.0, count) * rng.choice([-1.0, 1.0], count)
    decay = np.exp(-np.arange(int(SAMPLE_RATE * 0.01)) / (SAMPLE_RATE * rng.uniform(0.001, 0.01) / 3))
    burst = np.convolve(clicks, decay * rng.standard_normal(decay.size))[:n]
    bed = pink(n, rng) * 10 ** (rng.uniform(-30.0, -10.0) / 20)
    return set_level(set_level(burst) + bed)


@dataclass(frozen=True)
class ColoredNoise:
    """A generated noise source: ``ColoredNoise("pink")(n, rng)``."""

    color: str = "white"

    def __post_init__(self):
        if self.color not in COLORS:
            raise ValueError(f"unknown noise colour {self.color!r}; choose one of {', '.join(COLORS)}")

    def __call__(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return colored(n, rng, self.color)

    def params(self) -> dict:
        return {"name": "ColoredNoise", "color": self.color}


@dataclass(frozen=True)
class SpeechShapedNoise:
    """Speech-shaped noise; with ``files`` (paths) the spectrum is measured from those recordings."""

    files: tuple[str, ...] = ()

    def __call__(self, n: int, rng: np.random.Generator) -> np.ndarray:
        freqs, power = _files_spectrum(self.files) if self.files else default_speech_spectrum()
        return _shaped(n, rng, power, freqs)

    def params(self) -> dict:
        return {"name": "SpeechShapedNoise", "files": len(self.files)}


class Babble:
    """Babble from recordings of other talkers: a folder or a list of files,
    ``count`` of them mixed at equal active speech level."""

    def __init__(self, source: str | os.PathLike | list, count: int = 6, exclude: tuple[str, ...] = ()):
        self.files = _paths(source, exclude)
        self.count = count

    def __call__(self, n: int, rng: np.random.Generator) -> np.ndarray:
        picks = rng.choice(len(self.files), size=min(self.count, len(self.files)), replace=False)
        talkers = [_load_cached(self.files[int(i)]) for i in picks]
        return babble(n, rng, talkers, self.count)

    def params(self) -> dict:
        return {"name": "Babble", "count": self.count, "files": len(self.files)}


class NoisePool:
    """Recorded noises from a folder (or a list of files), looped or cropped to length and
    set to ``NOISE_DBFS``. Files are decoded on first use and cached."""

    def __init__(self, source: str | os.PathLike | list, exclude: tuple[str, ...] = ()):
        self.files = _paths(source, exclude)
        self.root = str(source) if isinstance(source, (str, os.PathLike)) else ""

    def __len__(self) -> int:
        return len(self.files)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        """(path, n samples of a random file from a random offset, at ``NOISE_DBFS``)."""
        path = self.files[int(rng.integers(len(self.files)))]
        return path, set_level(excerpt(_load_cached(path), n, rng))

    def __call__(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.sample(n, rng)[1]

    def params(self) -> dict:
        return {"name": "NoisePool", "root": self.root, "files": len(self.files)}


NAMED_NOISES = {
    "white": ColoredNoise("white"),
    "pink": ColoredNoise("pink"),
    "brown": ColoredNoise("brown"),
    "speech_shaped": SpeechShapedNoise(),
    "modulated": modulated,
    "crackle": crackle,
}
