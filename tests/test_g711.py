"""G.711: bit-exact against the G.711 tables and the ITU-T G.191 reference code."""

import numpy as np
import pytest

from jsqa.g711 import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode

PCM16 = np.arange(-32768, 32768, dtype=np.int64)


def _g191_ulaw_compress(s):
    """Scalar transliteration of ulaw_compress() in ITU-T G.191 g711.c."""
    absno = ((~s) >> 2) + 33 if s < 0 else (s >> 2) + 33
    absno = min(absno, 0x1FFF)
    i, segno = absno >> 6, 1
    while i != 0:
        segno += 1
        i >>= 1
    code = ((8 - segno) << 4) | (0xF - ((absno >> segno) & 0xF))
    return code | 0x80 if s >= 0 else code


def _g191_alaw_compress(s):
    """Scalar transliteration of alaw_compress() in ITU-T G.191 g711.c."""
    ix = (~s) >> 4 if s < 0 else s >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix = ix - 16 + (iexp << 4)
    if s >= 0:
        ix |= 0x80
    return ix ^ 0x55


@pytest.mark.parametrize(
    ("sample", "code"),
    [
        (0, 0xFF),  # mu-law zero is all ones on the wire
        (32767, 0x80),  # positive full scale
        (-32768, 0x00),  # negative full scale
        (-1, 0x7F),  # one LSB below zero: negative zero
        (8, 0xFE),  # first step of segment 0
        (32124, 0x80),  # top decision level
        (-32124, 0x00),
    ],
)
def test_mulaw_known_code_words(sample, code):
    assert mulaw_encode(np.array([sample / 32768.0]))[0] == code


@pytest.mark.parametrize(
    ("sample", "code"),
    [
        (0, 0xD5),  # A-law +0 is 0x80 XOR 0x55
        (-1, 0x55),  # -0
        (32767, 0xAA),  # positive full scale: 0xFF XOR 0x55
        (-32768, 0x2A),  # negative full scale: 0x7F XOR 0x55
        (16, 0xD4),  # 0x81 XOR 0x55
        (-17, 0x54),
    ],
)
def test_alaw_known_code_words(sample, code):
    assert alaw_encode(np.array([sample / 32768.0]))[0] == code


@pytest.mark.parametrize(
    ("code", "sample"),
    [(0xFF, 0), (0x7F, 0), (0x80, 32124), (0x00, -32124), (0xFE, 8), (0xEF, 132), (0xDF, 396)],
)
def test_mulaw_decode_table(code, sample):
    assert mulaw_decode(np.array([code], dtype=np.uint8))[0] * 32768 == sample


@pytest.mark.parametrize(
    ("code", "sample"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0xC5, 264)],
)
def test_alaw_decode_table(code, sample):
    assert alaw_decode(np.array([code], dtype=np.uint8))[0] * 32768 == sample


def test_encoders_match_g191_for_every_16_bit_sample():
    x = PCM16 / 32768.0
    mu = mulaw_encode(x)
    al = alaw_encode(x)
    assert mu.dtype == np.uint8 and al.dtype == np.uint8
    # Every 8th sample keeps the check fast and still hits every code word.
    for s in PCM16[::8].tolist() + [-1, 1, 32767]:
        i = s + 32768
        assert mu[i] == _g191_ulaw_compress(s), s
        assert al[i] == _g191_alaw_compress(s), s


def test_decode_then_encode_returns_the_code():
    codes = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(alaw_encode(alaw_decode(codes)), codes)
    mu = mulaw_encode(mulaw_decode(codes))
    # 0x7F (negative zero) decodes to 0, which encodes as 0xFF (positive zero).
    expected = codes.copy()
    expected[0x7F] = 0xFF
    np.testing.assert_array_equal(mu, expected)


def test_decoded_values_are_monotonic_in_magnitude():
    codes = np.arange(256, dtype=np.uint8)
    positive_mu = mulaw_decode(codes[0x80:])  # 0x80 is the largest, 0xFF zero
    assert np.all(np.diff(positive_mu) < 0)
    positive_al = alaw_decode(np.arange(0x80, 0x100, dtype=np.uint8) ^ np.uint8(0x55))
    assert np.all(np.diff(positive_al) > 0)


def test_shapes_preserved():
    x = np.zeros((3, 5), dtype=np.float32)
    for encode, decode in ((mulaw_encode, mulaw_decode), (alaw_encode, alaw_decode)):
        codes = encode(x)
        assert codes.shape == (3, 5)
        y = decode(codes)
        assert y.shape == (3, 5) and y.dtype == np.float32


@pytest.mark.parametrize(("encode", "decode"), [(mulaw_encode, mulaw_decode), (alaw_encode, alaw_decode)])
def test_round_trip_snr_on_real_speech(clean_speech, encode, decode):
    x = clean_speech[: 3 * 16000]
    y = decode(encode(x))
    snr = 10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2))
    # G.711 gives about 35-38 dB SNR on speech at a normal level.
    assert 30 < snr < 45
