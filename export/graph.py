"""A torch module to an ONNX graph: one input, one output, dynamic axes, either exporter.

The torch.export-based ("dynamo") exporter is the default; the legacy TorchScript
exporter is the fallback if a future torch breaks the dynamo path.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import torch

MIN_SAMPLES = 400
MAX_SAMPLES = 16000 * 3600

# Dynamic input axes of a graph: axis -> (name, min, max).
Axes = dict[int, tuple[str, int, int]]
WHOLE_AXES: Axes = {0: ("batch", 1, 4096), 1: ("samples", MIN_SAMPLES, MAX_SAMPLES)}


def export_graph(
    module: torch.nn.Module, example: torch.Tensor, opset: int, exporter: str,
    input_name: str = "audio", output_name: str = "mos", axes: Axes = WHOLE_AXES,
) -> onnx.ModelProto:
    """One input, one output; output axis 0 follows input axis 0 (the batch)."""
    if exporter == "dynamo":
        return _export_dynamo(module, example, opset, input_name, output_name, axes)
    return _export_legacy(module, example, opset, input_name, output_name, axes)


def _export_dynamo(module, example, opset, input_name, output_name, axes) -> onnx.ModelProto:
    dims = {axis: torch.export.Dim(name, min=lo, max=hi) for axis, (name, lo, hi) in axes.items()}
    program = torch.onnx.export(
        module,
        (example,),
        input_names=[input_name],
        output_names=[output_name],
        dynamic_shapes={input_name: dims},
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    return program.model_proto


def _export_legacy(module, example, opset, input_name, output_name, axes) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "legacy.onnx"
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {a: name for a, (name, _, _) in axes.items()}, output_name: {0: axes[0][0]}},
            opset_version=opset,
            dynamo=False,
        )
        return onnx.load(str(path))


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, str]) -> None:
    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
