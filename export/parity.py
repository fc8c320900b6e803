"""Parity check: the exported ONNX graph must score real audio like the torch model.

Every export runs it and prints the table. Cases cover several lengths (shorter than,
equal to and longer than the window, a length that is not a multiple of the conv stride)
and a batch of several windows, because the dynamic time and batch axes are what
exports most often get wrong. A model exported split (per-chunk encoder plus window
head) is checked as the engine uses it: chunks encoded once, windows scored from their
shared embeddings, against the whole torch model on the same windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile as sf
import torch

from jsqa.data import find_data_root

FP32_TOLERANCE = 1e-4
PARITY_SPEECH = Path("speech") / "librispeech_examples" / "5703-47212-0000.flac"


class ParityError(RuntimeError):
    """The ONNX graph and the torch model disagree beyond the tolerance."""


@dataclass
class ParityCase:
    name: str
    shape: tuple[int, int]
    max_abs_diff: float


@dataclass
class ParityResult:
    source: str
    cases: list[ParityCase] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max(c.max_abs_diff for c in self.cases)

    def table(self) -> str:
        lines = [f"parity on {self.source}", f"{'case':<28}{'shape':>16}{'max |diff|':>14}"]
        lines += [f"{c.name:<28}{c.shape!s:>16}{c.max_abs_diff:>14.2e}" for c in self.cases]
        return "\n".join(lines)


def parity_audio(sample_rate: int = 16000) -> tuple[np.ndarray, str]:
    """A real 15 s LibriSpeech utterance from the data folder, with its name.

    Without the data folder, a deterministic synthetic voiced signal stands in (and the
    report says so), so export still works on a machine without the data.
    """
    try:
        path = find_data_root() / PARITY_SPEECH
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        if sr == sample_rate:
            return x.mean(axis=1), str(path)
    except (FileNotFoundError, sf.LibsndfileError):
        pass
    t = np.arange(15 * sample_rate) / sample_rate
    rng = np.random.default_rng(0)
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / sample_rate) / k for k in range(1, 12))
    x = 0.1 * voiced * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)
    return x.astype(np.float32), "synthetic voiced signal (data folder not found)"


def parity_cases(audio: np.ndarray, sample_rate: int, window_seconds: float) -> dict[str, np.ndarray]:
    window = round(window_seconds * sample_rate)
    cases = {
        "1.0 s": audio[None, :sample_rate],
        "one window": audio[None, :window],
        "odd length (window + 1237)": audio[None, 1000 : 1000 + window + 1237],
        "12 s": audio[None, : 12 * sample_rate],
        "batch of 4 windows": np.stack([audio[i * sample_rate : i * sample_rate + window] for i in range(4)]),
    }
    return {name: np.ascontiguousarray(x, dtype=np.float32) for name, x in cases.items()}


def check_parity(
    model: torch.nn.Module,
    onnx_path: str | Path,
    sample_rate: int = 16000,
    window_seconds: float = 3.0,
    tolerance: float | None = FP32_TOLERANCE,
) -> ParityResult:
    """Compare ONNX Runtime (CPU) and torch; raise ParityError above ``tolerance`` (None: report only)."""
    audio, source = parity_audio(sample_rate)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    result = ParityResult(source)
    model.eval()
    for name, x in parity_cases(audio, sample_rate, window_seconds).items():
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = session.run(["mos"], {"audio": x})[0]
        if got.shape != expected.shape:
            raise ParityError(f"{onnx_path}: case {name}: ONNX output shape {got.shape} != torch {expected.shape}")
        result.cases.append(ParityCase(name, tuple(x.shape), float(np.abs(got - expected).max())))
    return _within(result, tolerance, f"{onnx_path}: ONNX and torch")


def _within(result: ParityResult, tolerance: float | None, what: str) -> ParityResult:
    """``result``, or ParityError when its largest difference passes ``tolerance`` (None: report only)."""
    if tolerance is not None and result.max_abs_diff > tolerance:
        raise ParityError(f"{what} differ by {result.max_abs_diff:.2e} > {tolerance:.0e}\n{result.table()}")
    return result


def split_cases(window_chunks: int) -> dict[str, tuple[int, list[int], int]]:
    """name -> (chunks encoded, first chunk of each window, chunks per window)."""
    return {
        "one chunk": (1, [0], 1),
        "one window": (window_chunks, [0], window_chunks),
        "4 windows sharing chunks": (window_chunks + 3, [0, 1, 2, 3], window_chunks),
        "12 s": (12, [0], 12),
    }


def check_split_parity(
    model: torch.nn.Module,
    encoder_path: str | Path,
    head_path: str | Path,
    sample_rate: int = 16000,
    window_seconds: float = 3.0,
    tolerance: float | None = FP32_TOLERANCE,
) -> ParityResult:
    """MOS of windows scored through the parts (each chunk encoded once) vs the whole
    torch model on the same windows; raise ParityError above ``tolerance`` (None: report only)."""
    audio, source = parity_audio(sample_rate)
    chunk = model.chunk_samples
    encoder = ort.InferenceSession(str(encoder_path), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(head_path), providers=["CPUExecutionProvider"])
    result = ParityResult(f"{source} (split parts)")
    model.eval()
    for name, (n_chunks, firsts, per_window) in split_cases(round(window_seconds * sample_rate) // chunk).items():
        chunks = np.ascontiguousarray(audio[: n_chunks * chunk].reshape(n_chunks, chunk))
        embeddings = encoder.run(["embedding"], {"audio": chunks})[0]
        windows = np.stack([embeddings[f : f + per_window] for f in firsts])
        got = head.run(["mos"], {"embeddings": windows})[0]
        audio_windows = np.stack([audio[f * chunk : (f + per_window) * chunk] for f in firsts])
        with torch.no_grad():
            expected = model(torch.from_numpy(np.ascontiguousarray(audio_windows))).numpy()
        if got.shape != expected.shape:
            raise ParityError(f"{head_path}: case {name}: output shape {got.shape} != torch {expected.shape}")
        result.cases.append(ParityCase(name, tuple(windows.shape), float(np.abs(got - expected).max())))
    return _within(result, tolerance, f"split parts of {encoder_path} and torch")
