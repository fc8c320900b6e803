"""Export a chunked model's split parts beside its whole-window file.

``X.encoder.onnx`` encodes ``audio [N, chunk_samples]`` to ``embedding [N, width]``;
``X.head.onnx`` scores ``embeddings [B, n, width]`` (the n chunks of B windows) to
``mos [B]`` as the whole model does: the chunks pooled, then the MOS head. Both
carry the whole model's metadata plus ``part`` and ``chunk_seconds``, and are checked
against torch (:func:`jsqa.export.parity.check_split_parity`) on every export.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from jsqa.export.graph import export_graph, set_metadata
from jsqa.export.parity import ParityResult, check_split_parity
from torch import nn

from jsqa.model import JSQAModel
from jsqa.split_scorer import split_paths


class ChunkEncoder(nn.Module):
    def __init__(self, model: JSQAModel):
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.model.encode_chunks(audio)


class WindowHead(nn.Module):
    def __init__(self, model: JSQAModel):
        super().__init__()
        self.model = model

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.model.mos_from_embedding(self.model.pool_chunks(embeddings))


@dataclass
class SplitReport:
    encoder: Path
    head: Path
    parity: ParityResult
    quantized_parity: ParityResult | None = None

    def summary(self) -> list[str]:
        sizes = f"{self.encoder.stat().st_size / 1e6:.1f} MB, {self.head.stat().st_size / 1e6:.2f} MB"
        lines = [f"split parts: {self.encoder.name}, {self.head.name} ({sizes})", self.parity.table()]
        if self.quantized_parity is not None:
            lines += ["quantised parts vs torch:", self.quantized_parity.table()]
        return lines


def export_split(
    model: JSQAModel,
    metadata: dict[str, str],
    output: Path,
    opset: int,
    exporter: str,
    quantize: str | None = None,
) -> SplitReport:
    """Write the parts of ``model`` (which must have chunks) beside ``output``.

    Raises ParityError when the fp32 parts differ from torch by more than 1e-4. With
    ``quantize="int8"`` the parts written are quantised like the whole file, so the
    engine's split scores stay those of the model it was given.
    """
    chunk = model.chunk_samples
    width = model.chunk_embedding_size
    sample_rate = int(metadata["sample_rate"])
    window_seconds = float(metadata["window_seconds"])
    generator = torch.Generator().manual_seed(0)
    parts = {
        "encoder": (
            ChunkEncoder(model).eval(),
            0.1 * torch.randn(3, chunk, generator=generator),
            ("audio", "embedding", {0: ("chunks", 1, 1 << 16)}),
        ),
        "head": (
            WindowHead(model).eval(),
            torch.randn(2, 3, width, generator=generator),
            ("embeddings", "mos", {0: ("batch", 1, 4096), 1: ("window_chunks", 1, 3600)}),
        ),
    }
    paths = dict(zip(parts, split_paths(output)))
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = {name: (paths[name] if quantize is None else Path(tmp) / f"{name}.onnx") for name in parts}
        for name, (module, example, (input_name, output_name, axes)) in parts.items():
            proto = export_graph(module, example, opset, exporter, input_name, output_name, axes)
            set_metadata(proto, {**metadata, "part": name, "chunk_seconds": str(chunk / sample_rate)})
            onnx.checker.check_model(proto, full_check=True)
            onnx.save(proto, str(fp32[name]))
        report = SplitReport(
            paths["encoder"], paths["head"],
            check_split_parity(model, fp32["encoder"], fp32["head"], sample_rate, window_seconds),
        )
        if quantize == "int8":
            from jsqa.export.quantize import quantize_int8

            for name in parts:
                quantize_int8(fp32[name], paths[name])
            report.quantized_parity = check_split_parity(
                model, paths["encoder"], paths["head"], sample_rate, window_seconds, tolerance=None
            )
    return report
