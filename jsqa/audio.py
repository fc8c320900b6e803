"""Audio I/O at the system's one internal format: float32 mono at 16 kHz in [-1, 1].

Everything else (stereo, 8 kHz or 48 kHz, integer samples) is converted here, once,
at the edge of the system.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000


def hz_to_mel(f):
    """The HTK mel scale (the model's front-end and the vocoder impairment share it)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average the channels of a (frames, channels) array; 1-D input is returned as float32."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise ValueError(f"expected 1-D or (frames, channels) audio, got shape {x.shape}")
    return x.mean(axis=1, dtype=np.float32)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono float audio with soxr (high quality); a no-op when the rates match."""
    x = np.asarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read any file soundfile can read as float32 mono at ``sr``."""
    x, file_sr = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    return resample(to_mono(x), file_sr, sr)


def write_audio(path: str | os.PathLike, x: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write mono audio; the format follows the suffix (.wav is 16-bit PCM, .flac 16-bit)."""
    x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    sf.write(os.fspath(path), x, sr, subtype="PCM_16")
