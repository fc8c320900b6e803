"""Score speech with an exported JSQA model through ONNX Runtime (no torch).

Everything the scorer needs (sample rate, window, hop, score range) is read from the
model file's metadata. Audio of any length is cut into windows of the model's length at
the model's hop; when the hop does not land on the end, one more window aligned to the
end covers the tail. The overall score is the mean of the window scores. Audio shorter
than one window is scored whole, as one window (no padding, which would change the
per-window normalisation); clips under 25 ms (the conv front-end's receptive field) are
zero-padded to 25 ms.

When the model was exported split (``jsqa.split_scorer``), ``Scorer.split`` holds its
parts for the streaming engine; scoring here always uses the whole model.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from jsqa.levels import has_speech
from jsqa.split_scorer import SplitModelError, SplitScorer, split_paths

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "jsqa-small.onnx"
MIN_SAMPLES = 400
REQUIRED_METADATA = ("sample_rate", "window_seconds", "hop_seconds", "score_min", "score_max")


class ModelError(RuntimeError):
    """A model file is missing, unreadable or not a JSQA model."""


@dataclass(frozen=True)
class WindowScore:
    """``speech`` is False for a window with too little speech to score (``MIN_SPEECH_RATIO``);
    its ``mos`` is then the model's number, not a quality score."""

    t_start: float
    t_end: float
    mos: float
    speech: bool = True


@dataclass(frozen=True)
class ScoreResult:
    """``mos``: the mean over the windows with speech; None when no window has speech."""

    mos: float | None
    windows: list[WindowScore]

    @property
    def model_mean(self) -> float:
        """The mean over every window, speech or not (for evaluation on labelled sets)."""
        return float(np.mean([w.mos for w in self.windows]))


def default_providers() -> list[str]:
    """CUDA first when onnxruntime-gpu is installed (it falls back to CPU without a GPU)."""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class Scorer:
    """An ONNX Runtime session over a JSQA model plus its windowing rules.

    ``score_windows`` is one ``run`` call and safe to call from many threads at once
    (ONNX Runtime sessions are); ``score_many`` packs the windows of many signals into
    as few calls as ``max_batch`` allows.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        providers: list[str] | None = None,
        intra_threads: int | None = None,
        inter_threads: int | None = None,
        max_batch: int = 32,
        split: bool = True,
    ):
        """``split``: load the model's split parts when they lie beside it (``self.split``;
        None when absent, unusable, or not asked for)."""
        self.model_path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        self.max_batch = max_batch
        if not self.model_path.is_file():
            hint = (
                "the shipped model is not installed; export one with"
                f" `jsqa-export onnx CHECKPOINT -o {self.model_path}` or pass a model file (--model FILE)"
                if model_path is None
                else "no such file"
            )
            raise ModelError(f"{self.model_path}: model file not found ({hint})")
        options = ort.SessionOptions()
        if intra_threads:
            options.intra_op_num_threads = intra_threads
        if inter_threads:
            options.inter_op_num_threads = inter_threads
        options.log_severity_level = 3
        # Idle pool threads that spin between calls take the cores the server's event loop
        # and the other calls need (measured: 100 live streams, p99 237 -> 138 ms, server CPU
        # 157 -> 87 %).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The arena keeps the memory of the largest batch ever run; a server must return to
        # its baseline after bursts (measured: 380 MB held vs 197 MB, at 1-3 % of speed).
        options.enable_cpu_mem_arena = False
        try:
            self.session = ort.InferenceSession(
                str(self.model_path), options, providers=providers or default_providers()
            )
        except Exception as e:  # noqa: BLE001 - ORT raises several unrelated types for bad files
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{self.model_path}: not a readable ONNX model ({reason})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self._check_contract()
        md = self.metadata
        self.name = md.get("name", self.model_path.stem)
        self.version = md.get("version", "")
        self.sample_rate = int(md["sample_rate"])
        self.window_seconds = float(md["window_seconds"])
        self.hop_seconds = float(md["hop_seconds"])
        self.score_min = float(md["score_min"])
        self.score_max = float(md["score_max"])
        self.training = json.loads(md.get("training", "{}") or "{}")
        self.metrics = json.loads(md.get("metrics", "{}") or "{}")
        self.window_samples = round(self.window_seconds * self.sample_rate)
        self.hop_samples = round(self.hop_seconds * self.sample_rate)
        self.providers = self.session.get_providers()
        self._lock = threading.Lock()
        self.run_calls = 0
        self.split = self._load_split(options) if split else None

    def _load_split(self, options: ort.SessionOptions) -> SplitScorer | None:
        encoder, head = split_paths(self.model_path)
        if not (encoder.is_file() and head.is_file()):
            return None
        try:
            return SplitScorer(encoder, head, self.metadata, options, self.providers)
        except SplitModelError as e:
            # the whole model still scores everything, only without the per-hop saving
            log.warning("split parts not used: %s", e)
            return None

    def _check_contract(self) -> None:
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != ["audio"] or "mos" not in outputs:
            raise ModelError(
                f"{self.model_path}: not a JSQA model (inputs {inputs}, outputs {outputs};"
                " expected input 'audio' and output 'mos')"
            )
        missing = [k for k in REQUIRED_METADATA if k not in self.metadata]
        if missing:
            raise ModelError(
                f"{self.model_path}: metadata lacks {', '.join(missing)}; re-export it with `jsqa-export onnx`"
            )

    def __repr__(self) -> str:
        return f"Scorer({str(self.model_path)!r}, name={self.name!r}, providers={self.providers})"

    def score_windows(self, windows: np.ndarray) -> np.ndarray:
        """Scores for ``windows`` ``[B, N]`` (float32, 16 kHz, equal lengths) in one run call."""
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        if windows.ndim != 2 or windows.shape[0] == 0:
            raise ValueError(f"windows must be a non-empty [batch, samples] array, got shape {windows.shape}")
        if windows.shape[1] < MIN_SAMPLES:
            windows = np.pad(windows, ((0, 0), (0, MIN_SAMPLES - windows.shape[1])))
        mos = self.session.run(["mos"], {"audio": windows})[0]
        with self._lock:
            self.run_calls += 1
        return mos.astype(np.float32)

    def window_starts(self, n_samples: int) -> list[int]:
        """Start samples of the windows that cover ``n_samples`` (``[0]`` when shorter than a window)."""
        if n_samples <= self.window_samples:
            return [0]
        last = n_samples - self.window_samples
        starts = list(range(0, last + 1, self.hop_samples))
        if starts[-1] != last:
            starts.append(last)
        return starts

    def _prepare(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono 1-D at {self.sample_rate} Hz, got shape {audio.shape}")
        if audio.size == 0:
            raise ValueError("audio is empty")
        return audio

    def score(self, audio: np.ndarray) -> ScoreResult:
        """Per-window and overall scores of one mono signal at the model's sample rate."""
        return self.score_many([audio])[0]

    def score_many(self, signals: list[np.ndarray]) -> list[ScoreResult]:
        """Score many signals, batching all their full windows into few run calls."""
        signals = [self._prepare(x) for x in signals]
        # Full-length windows share one batch; shorter clips are grouped by length.
        groups: dict[int, list[tuple[int, int]]] = {}
        for i, x in enumerate(signals):
            for start in self.window_starts(x.size):
                length = min(self.window_samples, x.size)
                groups.setdefault(length, []).append((i, start))
        scores: dict[tuple[int, int], float] = {}
        for length, keys in groups.items():
            for b in range(0, len(keys), self.max_batch):
                chunk = keys[b : b + self.max_batch]
                batch = np.stack([signals[i][s : s + length] for i, s in chunk])
                scores.update(zip(chunk, self.score_windows(batch).tolist()))
        results = []
        sr = self.sample_rate
        for i, x in enumerate(signals):
            windows = []
            for s in self.window_starts(x.size):
                end = min(s + self.window_samples, x.size)
                windows.append(WindowScore(s / sr, end / sr, scores[(i, s)], has_speech(x[s:end], sr)))
            voiced = [w.mos for w in windows if w.speech]
            results.append(ScoreResult(float(np.mean(voiced)) if voiced else None, windows))
        return results

    def score_file(self, path: str | os.PathLike) -> ScoreResult:
        """Read any file soundfile reads (mixed to mono, resampled) and score it."""
        from jsqa.audio import load_audio

        return self.score(load_audio(path, sr=self.sample_rate))
