"""Shared fixtures: the real recordings in ../shared/data."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from jsqa.data import find_data_root  # noqa: E402


@pytest.fixture(scope="session")
def data_root():
    try:
        return find_data_root()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def speech_dir(data_root):
    return data_root / "speech"


@pytest.fixture(scope="session")
def noise_dir(data_root):
    return data_root / "noise"


@pytest.fixture(scope="session")
def speech_path(speech_dir):
    """A 15 s LibriSpeech utterance (16 kHz mono FLAC)."""
    return speech_dir / "librispeech_examples" / "5703-47212-0000.flac"


@pytest.fixture(scope="session")
def clean_speech(speech_path) -> np.ndarray:
    x, sr = sf.read(speech_path, dtype="float32")
    assert sr == 16000
    return x
