"""Clean speech that sounds like many talkers in many rooms and phones.

Talkers are drawn evenly (not files: an IVR voice has hundreds of prompts, a read-speech
talker three), then a pseudo-talker is made of each draw: a speed/pitch change
(vocal-tract-length style), a random spectral tilt and presence peak, and a random level.
Utterances are joined by the pauses a call has, half of them exact digital zeros and half
low room noise, because VoIP endpoints send both and neither is a defect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, load_audio, resample
from ..noises import NOISE_DBFS, pink

PERTURB_CHANCE = 0.6
SPEED_RANGE = (0.87, 1.15)
TILT_DB_PER_OCTAVE = (-3.0, 3.0)
PEAK_DB = (-6.0, 6.0)
LEVEL_DBFS = (-36.0, -18.0)
PAUSE_SECONDS = (0.2, 2.0)
ROOM_NOISE_DBFS = (-75.0, -55.0)


class TalkerPool:
    """``talkers``: name -> list of files of that talker; ``weights``: name -> how often it
    is drawn (default: evenly)."""

    def __init__(self, talkers: dict[str, list[Path]], weights: dict[str, float] | None = None):
        self.talkers = {k: [Path(f) for f in v] for k, v in sorted(talkers.items()) if v}
        if not self.talkers:
            raise ValueError("no clean speech: give at least one talker with files")
        self.names = list(self.talkers)
        w = np.asarray([(weights or {}).get(k, 1.0) for k in self.names], dtype=float)
        self.p = w / w.sum()
        self._cache: dict[Path, np.ndarray] = {}

    @classmethod
    def from_files(cls, files: list) -> "TalkerPool":
        """One talker per folder (an IVR voice, a VCTK or speechocean762 speaker)."""
        talkers: dict[str, list[Path]] = {}
        for f in files:
            talkers.setdefault(Path(f).parent.name, []).append(Path(f))
        return cls(talkers)

    def load(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            self._cache[path] = load_audio(path)
        return self._cache[path]

    def utterance(self, talker: str, rng: np.random.Generator) -> np.ndarray:
        files = self.talkers[talker]
        return self.load(files[int(rng.integers(len(files)))])

    def clip(self, n: int, rng: np.random.Generator, perturb: bool = True) -> tuple[str, np.ndarray]:
        """``(talker, n samples)``: one talker's utterances with call-like pauses, as a
        pseudo-talker (when ``perturb``) at a random level."""
        talker = self.names[int(rng.choice(len(self.names), p=self.p))]
        speed = float(rng.uniform(*SPEED_RANGE)) if perturb and rng.random() < PERTURB_CHANCE else 1.0
        need = int(n * speed) + SAMPLE_RATE
        parts, gaps, total = [], [], 0
        while total < need:
            x = self.utterance(talker, rng)
            pause = int(rng.uniform(*PAUSE_SECONDS) * SAMPLE_RATE)
            parts += [x, np.zeros(pause, np.float32)]
            gaps += [np.zeros(x.size, bool), np.ones(pause, bool)]
            total += x.size + pause
        start = int(rng.integers(0, max(1, total - need)))
        y = np.concatenate(parts)[start : start + need]
        gap = np.concatenate(gaps)[start : start + need]
        if speed != 1.0:
            y = resample(y, int(round(SAMPLE_RATE * speed)), SAMPLE_RATE)
            gap = gap[np.minimum((np.arange(y.size) * gap.size) // max(y.size, 1), gap.size - 1)]
        y, gap = _fit(y, n), _fit(gap, n)
        if perturb:
            y = _colour(y, rng)
        # Filtering smears tiny values into the pauses; an endpoint sends exact zeros there.
        y = np.where(gap, 0.0, _set_rms_level(y, float(rng.uniform(*LEVEL_DBFS))))
        if rng.random() < 0.5:
            noise = pink(n, rng) * 10 ** ((float(rng.uniform(*ROOM_NOISE_DBFS)) - NOISE_DBFS) / 20)
            y = np.where(gap, noise, y)
        return talker, y.astype(np.float32)

    def crop(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n samples of some talker, unperturbed (a competing talker, babble)."""
        return self.clip(n, rng, perturb=False)[1]


def _colour(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A spectral tilt around 1 kHz and one broad peak or dip: microphones and rooms differ."""
    spec = np.fft.rfft(x.astype(np.float64))
    f = np.maximum(np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE), 50.0)
    octaves = np.log2(f / 1000.0)
    centre = float(rng.uniform(np.log2(0.3), np.log2(5.0)))
    gain_db = rng.uniform(*TILT_DB_PER_OCTAVE) * octaves + rng.uniform(*PEAK_DB) * np.exp(-((octaves - centre) ** 2) * 2)
    return np.fft.irfft(spec * 10 ** (gain_db / 20), x.size)


def _set_rms_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale so the loudest half of 20 ms frames sits at ``dbfs`` (a cheap active level)."""
    frames = x[: x.size // 320 * 320].reshape(-1, 320)
    energy = np.sort((frames.astype(np.float64) ** 2).mean(axis=1))[::-1]
    active = energy[: max(1, energy.size // 2)].mean()
    if active <= 0:
        return x
    y = x * 10 ** (dbfs / 20) / np.sqrt(active)
    peak = float(np.max(np.abs(y)))
    return y * (0.99 / peak) if peak > 0.99 else y


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if x.size >= n else np.pad(x, (0, n - x.size))
