"""Signal levels: ITU-T P.56 active speech level, RMS dBFS, a light energy VAD, clipping.

dB values are relative to full scale amplitude 1.0 (a full-scale sine is -3.01 dBFS RMS).
Silence gives ``SILENCE_DB`` instead of minus infinity, so levels stay JSON-able.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE

SILENCE_DB = -120.0

# P.56 method B constants: envelope time constant, hangover, margin, and 16 thresholds
# one octave (6.02 dB) apart, from one 16-bit LSB (2**-15) up to full scale.
P56_TIME_CONSTANT = 0.03
P56_HANGOVER = 0.2
P56_MARGIN_DB = 15.9
P56_THRESHOLDS = 2.0 ** np.arange(-15, 1)


def level_dbfs(x: np.ndarray) -> float:
    """RMS level of the whole signal in dBFS."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return SILENCE_DB
    return power_dbfs(float(np.mean(x * x)))


def power_dbfs(power: float) -> float:
    """A mean-square power in dBFS (``SILENCE_DB`` for none)."""
    return 10.0 * np.log10(power) if power > 0 else SILENCE_DB


def p56_activity_counts(x: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Samples counted as active at each of the 16 P.56 thresholds (with hangover).

    Vectorised form of the P.56 sample loop: the twice-smoothed envelope ``q`` is a pair of
    one-pole filters; a sample counts at threshold c when q >= c or when it lies at most
    ``P56_HANGOVER`` seconds after the last sample with q >= c.
    """
    # Imported here: scipy.signal takes over a second to import, and the monitor's VAD never needs it.
    from scipy.signal import lfilter

    x = np.asarray(x, dtype=np.float64)
    g = np.exp(-1.0 / (sr * P56_TIME_CONSTANT))
    p = lfilter([1.0 - g], [1.0, -g], np.abs(x))
    q = lfilter([1.0 - g], [1.0, -g], p)
    hangover = int(round(P56_HANGOVER * sr))
    index = np.arange(x.size)
    counts = np.empty(P56_THRESHOLDS.size, dtype=np.int64)
    for j, c in enumerate(P56_THRESHOLDS):
        above = q >= c
        last_above = np.maximum.accumulate(np.where(above, index, -1))
        counted = above | ((last_above >= 0) & (index - last_above <= hangover))
        counts[j] = int(np.count_nonzero(counted))
    return counts


def active_speech_level(x: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Active speech level in dB (ITU-T P.56 method B).

    The level is the energy over the samples active at the threshold c where the level
    A(c) lies ``P56_MARGIN_DB`` above c; A - C is interpolated linearly in dB between the
    two thresholds that bracket the margin (P.56 bisects to 0.5 dB; linear is closer).
    """
    x = np.asarray(x, dtype=np.float64)
    energy = float(np.sum(x * x))
    counts = p56_activity_counts(x, sr)
    if energy <= 0 or counts[0] == 0:
        return SILENCE_DB
    thresholds_db = 20.0 * np.log10(P56_THRESHOLDS)
    prev_level = prev_delta = None
    for count, c_db in zip(counts, thresholds_db):
        if count == 0:
            break
        level = 10.0 * np.log10(energy / count)
        delta = level - c_db
        if delta <= P56_MARGIN_DB:
            if prev_delta is None:
                return float(level)
            frac = (prev_delta - P56_MARGIN_DB) / (prev_delta - delta)
            return float(prev_level + frac * (level - prev_level))
        prev_level, prev_delta = level, delta
    # The margin was never reached (very loud, barely active signal): use the last level.
    return float(prev_level)


def frame_energies_db(x: np.ndarray, sr: int = SAMPLE_RATE, frame_s: float = 0.02) -> np.ndarray:
    """Mean-square level in dB of consecutive non-overlapping frames (a short tail is dropped)."""
    x = np.asarray(x, dtype=np.float64)
    n = int(round(frame_s * sr))
    frames = x[: x.size // n * n].reshape(-1, n)
    power = np.mean(frames * frames, axis=1)
    return 10.0 * np.log10(np.maximum(power, 10 ** (SILENCE_DB / 10)))


# A window with less speech than this is reported as no speech, not scored: a MOS of
# silence or of pure noise would mean nothing (jsqa-score and the monitor alike).
MIN_SPEECH_RATIO = 0.2
SPEECH_BAND_HZ = (300.0, 3400.0)
# The VAD band-limits audio in blocks this long: the engine's hop, so each hop is measured once.
VAD_BLOCK_SECONDS = 1.0
CLIP_LEVEL = 0.999  # magnitude counted as clipped


def has_speech(x: np.ndarray, sr: int = SAMPLE_RATE) -> bool:
    return speech_ratio(x, sr) >= MIN_SPEECH_RATIO


def speech_ratio(
    x: np.ndarray,
    sr: int = SAMPLE_RATE,
    floor_db: float = -55.0,
    rise_db: float = 10.0,
) -> float:
    """Fraction of 20 ms frames a light energy VAD calls speech.

    Frame levels are taken in the telephone band (300-3400 Hz), where speech has most of its
    energy and wind, rain, traffic and hum have little, so speech under such noise at 0 dB
    SNR still stands out (measured on the shared noises, 3 s windows, with ``rise_db`` 10: 72 %
    of windows of speech at 0 dB SNR detected against 48 % full-band at 9 dB, and 28 % of
    windows of noise alone against 29 %). A frame is speech when its level is
    above ``floor_db`` (silence, hiss) and at least ``rise_db`` above the window's noise floor
    (its 5th-percentile frame level), so a steady noise of any level is not speech while
    speech over that noise is. The band is taken block by block (``VAD_BLOCK_SECONDS``).
    """
    return ratio_from_levels(band_levels(x, sr), floor_db, rise_db)


def ratio_from_levels(levels: np.ndarray, floor_db: float = -55.0, rise_db: float = 10.0) -> float:
    """:func:`speech_ratio` from the window's speech-band frame levels."""
    if levels.size == 0:
        return 0.0
    threshold = max(floor_db, float(np.percentile(levels, 5)) + rise_db)
    return float(np.mean(levels > threshold))


def band_levels(x: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Speech-band level in dB of each 20 ms frame, band-limited one block at a time: a
    stream cut into blocks measures each block once, and its windows reuse the blocks."""
    x = np.asarray(x, dtype=np.float64)
    block = round(VAD_BLOCK_SECONDS * sr)
    parts = [frame_energies_db(_speech_band(x[i : i + block], sr), sr) for i in range(0, x.size, block)]
    return np.concatenate(parts) if parts else np.empty(0)


@dataclass(frozen=True)
class BlockLevels:
    """What the VAD and the level and clipping meters need of one block of audio, so a
    window's figures come from its blocks' (:func:`window_levels`) without reading it again."""

    band: np.ndarray  # speech-band frame levels, dB
    power_sum: float
    clipped: int
    samples: int

    @classmethod
    def measure(cls, x: np.ndarray, sr: int = SAMPLE_RATE) -> BlockLevels:
        x64 = np.asarray(x, dtype=np.float64)
        return cls(band_levels(x64, sr), float(np.dot(x64, x64)), int(np.count_nonzero(np.abs(x64) >= CLIP_LEVEL)),
                   x64.size)


def window_levels(blocks: list[BlockLevels]) -> tuple[float, float, float]:
    """``(speech_ratio, level_dbfs, clipping_ratio)`` of the window made of ``blocks``."""
    samples = sum(b.samples for b in blocks)
    if samples == 0:
        return 0.0, SILENCE_DB, 0.0
    level = power_dbfs(sum(b.power_sum for b in blocks) / samples)
    ratio = ratio_from_levels(np.concatenate([b.band for b in blocks]))
    return ratio, float(level), sum(b.clipped for b in blocks) / samples


def _speech_band(x: np.ndarray, sr: int) -> np.ndarray:
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1 / sr)
    spectrum[(freqs < SPEECH_BAND_HZ[0]) | (freqs > SPEECH_BAND_HZ[1])] = 0.0
    return np.fft.irfft(spectrum, x.size)


def clipping_ratio(x: np.ndarray, threshold: float = CLIP_LEVEL) -> float:
    """Fraction of samples whose magnitude reaches ``threshold``."""
    x = np.asarray(x)
    if x.size == 0:
        return 0.0
    return float(np.mean(np.abs(x) >= threshold))
