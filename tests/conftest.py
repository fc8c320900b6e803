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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised "tiny" JSQA checkpoint (seeded).

    The last MOS layer is scaled up so that scores spread over the range instead of
    sitting near 3: parity and ordering checks on it can then fail.
    """
    torch = pytest.importorskip("torch")
    from jsqa.model import JSQAModel, save_checkpoint

    torch.manual_seed(0)
    model = JSQAModel("tiny")
    with torch.no_grad():
        model.mos_head[-1].weight.mul_(40.0)
    path = tmp_path_factory.mktemp("tiny_model") / "tiny.pt"
    save_checkpoint(path, model, training={"stage": "random init (tests)"}, metrics={})
    return path


@pytest.fixture(scope="session")
def tiny_onnx_model(tiny_checkpoint):
    """Path of the tiny checkpoint exported to ONNX (once per session, parity enforced)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from jsqa.export.onnx_export import export_onnx

    output = tiny_checkpoint.with_suffix(".onnx")
    export_onnx(tiny_checkpoint, output)
    return output


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, data_root):
    """A corpus of 10 one-second clips (real speech, noise, codecs) labelled by PESQ-WB alone."""
    import shutil

    from jsqa.training.labels import CorpusSpec, build_corpus

    if shutil.which("ffmpeg") is None:  # as the codec tests do: the corpus draws codec impairments
        pytest.skip("ffmpeg is not installed")
    out = tmp_path_factory.mktemp("labels")
    return build_corpus(out, CorpusSpec(n_clips=10, seconds=1.0, seed=4), teachers=["pesq_wb"], workers=0,
                        progress=False)
