"""ITU-T G.711 mu-law and A-law, vectorised and bit-exact with the ITU-T G.191 reference (g711.c).

Float audio in [-1, 1] maps to 16-bit linear PCM (x * 32768, rounded, clipped); G.711 uses
the top 14 (mu-law) or 13 (A-law) bits of that. Codes are the transmitted octets: mu-law is
bit-inverted, A-law has its even bits inverted (XOR 0x55), as on the wire.
"""

from __future__ import annotations

import numpy as np

# bit_length(i) for 0 <= i < 128: picks the segment without a Python loop.
_BIT_LENGTH = np.array([int(i).bit_length() for i in range(128)], dtype=np.int32)


def _to_pcm16(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int32)


def mulaw_encode(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> mu-law octets (uint8), same shape."""
    pcm = _to_pcm16(x)
    # G.191 takes the one's complement of negatives, so -1 LSB encodes as negative zero.
    absno = np.where(pcm < 0, ~pcm, pcm) >> 2
    absno = np.minimum(absno + 33, 0x1FFF)
    segno = _BIT_LENGTH[absno >> 6] + 1
    high = 8 - segno
    low = 0xF - ((absno >> segno) & 0xF)
    code = (high << 4) | low
    return np.where(pcm >= 0, code | 0x80, code).astype(np.uint8)


def _mulaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32)
    sign = np.where(codes < 0x80, -1, 1)
    inv = ~codes & 0xFF
    exponent = (inv >> 4) & 0x7
    mantissa = inv & 0xF
    step = 4 << (exponent + 1)
    return (sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)).astype(np.int16)


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32)
    ix = (codes ^ 0x55) & 0x7F
    exponent = ix >> 4
    mant = ix & 0xF
    mant = np.where(exponent > 0, mant + 16, mant)
    mant = (mant << 4) + 8
    mant = np.where(exponent > 1, mant << np.maximum(exponent - 1, 0), mant)
    return np.where(codes > 127, mant, -mant).astype(np.int16)


MULAW_TO_PCM16 = _mulaw_table()
ALAW_TO_PCM16 = _alaw_table()


def mulaw_decode(codes: np.ndarray) -> np.ndarray:
    """mu-law octets -> float32 samples in [-1, 1], same shape."""
    codes = np.asarray(codes, dtype=np.uint8)
    return MULAW_TO_PCM16[codes].astype(np.float32) / 32768.0


def alaw_encode(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> A-law octets (uint8, even bits inverted), same shape."""
    pcm = _to_pcm16(x)
    ix = np.where(pcm < 0, ~pcm, pcm) >> 4  # 12-bit magnitude
    exponent = np.maximum(_BIT_LENGTH[np.minimum(ix >> 4, 127)], 0)  # 0 for ix <= 15
    # Segments >= 1 drop the leading one and keep 4 mantissa bits.
    seg_code = ((ix >> np.maximum(exponent - 1, 0)) - 16) + (exponent << 4)
    code = np.where(exponent > 0, seg_code, ix)
    code = np.where(pcm >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


def alaw_decode(codes: np.ndarray) -> np.ndarray:
    """A-law octets -> float32 samples in [-1, 1], same shape."""
    codes = np.asarray(codes, dtype=np.uint8)
    return ALAW_TO_PCM16[codes].astype(np.float32) / 32768.0
