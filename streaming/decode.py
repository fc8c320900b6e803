"""Edge conversion: raw audio in any supported encoding and rate -> 16 kHz float32 mono.

Each stream gets one ``Decoder``; it keeps a streaming resampler so chunk boundaries
leave no clicks, and it rejects malformed input with a ``DecodeError`` a person can read.
"""

from __future__ import annotations

import numpy as np
import soxr

from jsqa.audio import SAMPLE_RATE, to_mono
from jsqa.g711 import alaw_decode, mulaw_decode

# bytes per sample of each accepted encoding
ENCODINGS = {"pcm_s16le": 2, "f32le": 4, "mulaw": 1, "alaw": 1}
RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
MIN_RATE, MAX_RATE = 1000, 384000  # what soxr resamples well; local files and devices may use any rate between
MAX_CHANNELS = 8


class DecodeError(ValueError):
    """Input that cannot be decoded; the message says what was wrong."""


def check_format(encoding: str, rate: int, channels: int = 1, rates=RATES) -> None:
    """Raise ``DecodeError`` unless the format is one we accept (network input sticks to
    the usual ``RATES``; local files and devices may use any rate soxr handles)."""
    if encoding not in ENCODINGS:
        raise DecodeError(f"unknown encoding {encoding!r}: use one of {', '.join(ENCODINGS)}")
    if rates is not None and rate not in rates:
        raise DecodeError(f"unsupported rate {rate}: use one of {', '.join(map(str, rates))} Hz")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise DecodeError(f"unsupported rate {rate}: use {MIN_RATE} to {MAX_RATE} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        raise DecodeError(f"unsupported channel count {channels}: use 1 to {MAX_CHANNELS}")


def _bytes_to_float(data: bytes, encoding: str) -> np.ndarray:
    if encoding == "pcm_s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if encoding == "f32le":
        x = np.frombuffer(data, dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise DecodeError("f32le frame holds NaN or infinite samples")
        return np.clip(x, -1.0, 1.0)
    codes = np.frombuffer(data, dtype=np.uint8)
    return mulaw_decode(codes) if encoding == "mulaw" else alaw_decode(codes)


class Decoder:
    """Turns a stream's byte frames (or float blocks) into 16 kHz float32 mono samples."""

    def __init__(self, encoding: str = "pcm_s16le", rate: int = SAMPLE_RATE, channels: int = 1, rates=RATES):
        check_format(encoding, rate, channels, rates)
        self.encoding = encoding
        self.rate = rate
        self.channels = channels
        self.frame_bytes = ENCODINGS[encoding] * channels
        self.samples_in = 0  # input frames seen, at the input rate
        self._resampler = (
            None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
        )

    @property
    def seconds_in(self) -> float:
        return self.samples_in / self.rate

    def decode(self, data: bytes) -> np.ndarray:
        """Decode one frame of bytes; its length must be a whole number of samples."""
        if len(data) % self.frame_bytes:
            raise DecodeError(
                f"frame of {len(data)} bytes is not a whole number of {self.encoding} samples "
                f"({self.frame_bytes} bytes each for {self.channels} channel(s))"
            )
        return self.convert(_bytes_to_float(data, self.encoding).reshape(-1, self.channels))

    def convert(self, frames: np.ndarray) -> np.ndarray:
        """Mix down and resample float frames (samples, or samples x channels)."""
        x = np.asarray(frames, dtype=np.float32)
        if x.ndim == 2:
            x = np.asarray(to_mono(x), dtype=np.float32)
        self.samples_in += len(x)
        if self._resampler is None:
            return np.ascontiguousarray(x)
        return self._resampler.resample_chunk(x)

    def flush(self) -> np.ndarray:
        """The resampler's last samples at the end of the stream."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
