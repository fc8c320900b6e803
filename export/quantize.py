"""Dynamic int8 quantisation of an exported model, and its effect on accuracy.

Only MatMul and Gemm (the transformer) are quantised: quantising the convolutions of the
waveform front-end as well made the small model about 1.7x slower than fp32 on the 2-core
development CPU, because ONNX Runtime's integer convolutions are slower than its float ones.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx
from jsqa.rated import load_rated_set, rated_set_path
from onnxruntime.quantization import QuantType, quantize_dynamic

from jsqa.audio import load_audio
from jsqa.metrics import pearson
from jsqa.scorer import Scorer


def quantize_int8(source: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write the int8 (dynamic, MatMul/Gemm only) version of ``source``, metadata kept."""
    output = Path(output)
    # quantize_dynamic logs a generic "consider pre-processing" warning on the root logger;
    # MatMul/Gemm-only dynamic quantisation works without that step (parity is checked after).
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            Path(source), output, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8
        )
    finally:
        root.setLevel(level)
    # Make sure the contract's metadata survives, and say what was done.
    metadata = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    metadata["quantization"] = "int8 dynamic (MatMul, Gemm)"
    proto = onnx.load(str(output))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(output))
    return output


def score_files(model: str | os.PathLike, files: list[Path]) -> np.ndarray:
    scorer = Scorer(model, providers=["CPUExecutionProvider"])
    return np.array([scorer.score(load_audio(f, scorer.sample_rate)).mos for f in files])


def pearson_change(
    fp32: str | os.PathLike, quantized: str | os.PathLike, labels: str | os.PathLike | None = None
) -> dict | None:
    """Pearson of both models against a rating CSV (default: rated codec_mushra, if present)."""
    labels = Path(labels) if labels else rated_set_path("codec_mushra")
    if labels is None:
        return None
    rated = load_rated_set(labels)
    r_fp32 = pearson(score_files(fp32, rated.files), rated.mos)
    r_q = pearson(score_files(quantized, rated.files), rated.mos)
    return {"set": rated.name, "n": len(rated.files), "fp32": r_fp32, "quantized": r_q, "delta": r_q - r_fp32}
