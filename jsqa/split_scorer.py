"""The split parts of a chunked JSQA model: a per-chunk encoder and a window head.

A model whose encoder sees one chunk at a time (``chunk_seconds`` in its metadata)
scores a window as the MOS head over its chunks' embeddings pooled. Exported
split, a stream can encode each chunk of audio once and score every window that
contains it from the cached embeddings, instead of encoding each sample once per
overlapping window. The parts lie beside the whole model under the same name:
``X.onnx`` -> ``X.encoder.onnx`` (``audio [N, chunk]`` -> ``embedding [N, width]``)
and ``X.head.onnx`` (``embeddings [B, n, width]`` -> ``mos [B]``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

# Keys the parts add to the whole model's metadata; every other key must be equal, so
# parts left over from another export of the same name are never mixed with the model.
PART_KEYS = ("part", "chunk_seconds", "quantization")


class SplitModelError(RuntimeError):
    """Split parts that are unreadable or do not belong to their whole model."""


def split_paths(model_path: str | os.PathLike) -> tuple[Path, Path]:
    """``(encoder, head)`` paths of the parts beside ``model_path``."""
    path = Path(model_path)
    return path.with_suffix(".encoder.onnx"), path.with_suffix(".head.onnx")


class SplitScorer:
    """ONNX Runtime sessions over the two parts; one thread at a time (the engine's worker)."""

    def __init__(
        self,
        encoder_path: str | os.PathLike,
        head_path: str | os.PathLike,
        model_metadata: dict[str, str],
        options: ort.SessionOptions,
        providers: list[str],
    ):
        self.encoder = self._session(encoder_path, options, providers, ["audio"], "embedding", model_metadata)
        self.head = self._session(head_path, options, providers, ["embeddings"], "mos", model_metadata)
        metadata = dict(self.encoder.get_modelmeta().custom_metadata_map)
        self.sample_rate = int(metadata["sample_rate"])
        self.chunk_samples = round(float(metadata["chunk_seconds"]) * self.sample_rate)
        self.chunks_encoded = 0  # shows that streaming encodes each hop once

    @staticmethod
    def _session(path, options, providers, inputs, output, model_metadata) -> ort.InferenceSession:
        try:
            session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # noqa: BLE001 - ORT raises several unrelated types for bad files
            raise SplitModelError(f"{path}: not a readable ONNX model ({str(e).strip()[:200]})") from None
        got_inputs = [i.name for i in session.get_inputs()]
        got_outputs = [o.name for o in session.get_outputs()]
        if got_inputs != inputs or output not in got_outputs:
            raise SplitModelError(f"{path}: inputs {got_inputs}, outputs {got_outputs}; expected {inputs} -> {output}")
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        if "chunk_seconds" not in metadata:
            raise SplitModelError(f"{path}: metadata lacks chunk_seconds")
        differ = sorted(
            k for k in set(metadata) | set(model_metadata)
            if k not in PART_KEYS and metadata.get(k) != model_metadata.get(k)
        )
        if differ:
            raise SplitModelError(f"{path}: not a part of this model (metadata differs in {', '.join(differ)})")
        return session

    def streams(self, window: int, hop: int) -> bool:
        """Whether windows of ``window`` samples every ``hop`` can be scored from one
        encoding per hop: each hop is one chunk and each window whole chunks."""
        return hop == self.chunk_samples and window % hop == 0

    def encode_chunks(self, chunks: np.ndarray) -> np.ndarray:
        """``[N, chunk_samples]`` float32 -> ``[N, width]`` embeddings, one run call."""
        chunks = np.ascontiguousarray(chunks, dtype=np.float32)
        if chunks.ndim != 2 or chunks.shape[0] == 0 or chunks.shape[1] != self.chunk_samples:
            raise ValueError(f"chunks must be [N, {self.chunk_samples}], got shape {chunks.shape}")
        self.chunks_encoded += chunks.shape[0]
        return self.encoder.run(["embedding"], {"audio": chunks})[0]

    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """``[B, n, width]`` chunk embeddings of B windows -> ``[B]`` MOS, one run call."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 3 or 0 in embeddings.shape:
            raise ValueError(f"embeddings must be a non-empty [B, n, width] array, got shape {embeddings.shape}")
        return self.head.run(["mos"], {"embeddings": embeddings})[0].astype(np.float32)
