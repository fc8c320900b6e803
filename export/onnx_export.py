"""Export a JSQA checkpoint to one self-contained ONNX file with its metadata inside.

The graph takes ``audio`` float32 ``[batch, samples]`` (both axes dynamic; at least 400
samples, the HuBERT conv front-end's receptive field) and returns ``mos`` float32
``[batch]``. The torch.export-based ("dynamo") exporter is used; the legacy TorchScript
exporter (``exporter="legacy"``) is the fallback if a future torch breaks the dynamo
path, and is also tried automatically when the dynamo export raises. Attention is
exported in its eager form, the one both exporters translate reliably.

Every export checks the file with ``onnx.checker`` and runs the parity check
(:mod:`jsqa.export.parity`) before returning. A model that encodes chunks also gets its
split parts written beside the file (:mod:`jsqa.export.split_export`), for streaming.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from jsqa.export.graph import export_graph, set_metadata
from jsqa.export.parity import FP32_TOLERANCE, ParityResult, check_parity
from jsqa.export.split_export import SplitReport, export_split

import jsqa
from jsqa.model import SCORE_MAX, SCORE_MIN, load_checkpoint
from jsqa.split_scorer import split_paths

# Opset 20 has a native Gelu; with it ONNX Runtime ran the small model about 10 % faster than with 18.
DEFAULT_OPSET = 20


@dataclass
class ExportReport:
    output: Path
    exporter: str
    opset: int
    metadata: dict[str, str]
    parity: ParityResult
    size_bytes: int
    quantize: str | None = None
    quantized_parity: ParityResult | None = None
    accuracy: dict | None = None
    split: SplitReport | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"wrote {self.output} ({self.size_bytes / 1e6:.1f} MB, {self.exporter} exporter, opset {self.opset}"
            + (f", {self.quantize}" if self.quantize else "")
            + ")",
            *self.notes,
            self.parity.table(),
            f"fp32 max |diff| {self.parity.max_abs_diff:.2e} (limit {FP32_TOLERANCE:.0e}): OK",
        ]
        if self.quantized_parity is not None:
            lines += [f"{self.quantize} vs torch:", self.quantized_parity.table()]
        if self.accuracy:
            a = self.accuracy
            lines.append(
                f"Pearson on {a['set']} ({a['n']} files): fp32 {a['fp32']:.4f}, {self.quantize} {a['quantized']:.4f},"
                f" change {a['delta']:+.4f}"
            )
        if self.split is not None:
            lines += self.split.summary()
        return "\n".join(lines)


def model_metadata(ckpt: dict, preset: str) -> dict[str, str]:
    """The ONNX ``metadata_props`` of the contract, all string values."""
    return {
        "name": str(ckpt.get("name", f"jsqa-{preset}")),
        "version": str(ckpt.get("version", jsqa.__version__)),
        "preset": preset,
        "sample_rate": str(int(ckpt.get("sample_rate", 16000))),
        "window_seconds": str(float(ckpt.get("window_seconds", 3.0))),
        "hop_seconds": str(float(ckpt.get("hop_seconds", 1.0))),
        "score_min": str(SCORE_MIN),
        "score_max": str(SCORE_MAX),
        "training": json.dumps(ckpt.get("training", {}), default=str, sort_keys=True),
        "metrics": json.dumps(ckpt.get("metrics", {}), default=str, sort_keys=True),
    }


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def _example_input(ckpt: dict) -> torch.Tensor:
    n = round(float(ckpt.get("window_seconds", 3.0)) * int(ckpt.get("sample_rate", 16000)))
    return 0.1 * torch.randn(2, n, generator=torch.Generator().manual_seed(0))


def export_onnx(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    opset: int | None = None,
    quantize: str | None = None,
    exporter: str = "dynamo",
    labels: str | os.PathLike | None = None,
) -> ExportReport:
    """Export ``checkpoint`` to ``output``; with ``quantize="int8"`` the file written is the int8 model.

    Raises ParityError when the fp32 graph differs from torch by more than 1e-4.
    ``labels`` (a rating CSV) is used to report the Pearson change of quantisation;
    without it the rated codec_mushra set is used when the data folder has it.
    """
    if quantize not in (None, "int8"):
        raise ValueError(f"unsupported quantisation {quantize!r}; use 'int8'")
    if exporter not in ("dynamo", "legacy"):
        raise ValueError(f"unknown exporter {exporter!r}; use 'dynamo' or 'legacy'")
    opset = opset or DEFAULT_OPSET
    output = Path(output)
    model, ckpt = load_checkpoint(checkpoint, attn_implementation="eager")
    example = _example_input(ckpt)
    notes = []
    if exporter == "dynamo":
        try:
            proto = export_graph(model, example, opset, exporter)
        except Exception as e:  # noqa: BLE001 - any exporter failure falls back to legacy
            notes.append(f"dynamo exporter failed ({type(e).__name__}: {e}); used the legacy exporter")
            exporter = "legacy"
    if exporter == "legacy":
        proto = export_graph(model, example, opset, exporter)

    metadata = model_metadata(ckpt, model.preset)
    set_metadata(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    sample_rate = int(metadata["sample_rate"])
    window_seconds = float(metadata["window_seconds"])

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = output if quantize is None else Path(tmp) / "fp32.onnx"
        onnx.save(proto, str(fp32_path))
        parity = check_parity(model, fp32_path, sample_rate, window_seconds)
        report = ExportReport(output, exporter, opset, metadata, parity, fp32_path.stat().st_size, notes=notes)
        if quantize == "int8":
            from jsqa.export.quantize import pearson_change, quantize_int8

            quantize_int8(fp32_path, output)
            report.quantize = "int8"
            report.size_bytes = output.stat().st_size
            report.quantized_parity = check_parity(model, output, sample_rate, window_seconds, tolerance=None)
            report.accuracy = pearson_change(fp32_path, output, labels)
    if model.chunk_samples:
        report.split = export_split(model, metadata, output, opset, exporter, quantize)
    else:
        # parts left from an earlier export under this name would not match this model
        for part in split_paths(output):
            part.unlink(missing_ok=True)
    return report
