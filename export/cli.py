"""``jsqa-export``: turn a training checkpoint into the ONNX model the runtime uses."""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

from jsqa.cli_args import positive_int


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jsqa-export",
        description="Export a JSQA checkpoint. Every export runs onnx.checker and a torch vs ONNX Runtime "
        "parity check on real speech (max |diff| <= 1e-4 for fp32) and prints it.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    onnx = sub.add_parser(
        "onnx",
        help="export to one ONNX file with the model's metadata inside",
        description="Export CHECKPOINT to ONNX: input 'audio' float32 [batch, samples], output 'mos' [batch], "
        "both axes dynamic; sample rate, window, hop, score range, preset, training summary and metrics "
        "stored as metadata. A model that encodes 1 s chunks (the tiny and small presets) also gets its split "
        "parts for streaming beside the file: OUTPUT.encoder.onnx (audio [N, chunk] -> embedding) and "
        "OUTPUT.head.onnx (embeddings [B, n, width] -> mos), checked against torch too.",
    )
    onnx.add_argument("checkpoint", type=Path, help="checkpoint written by jsqa-train (torch .pt)")
    onnx.add_argument("-o", "--output", type=Path, help="ONNX file to write (default: CHECKPOINT with .onnx)")
    onnx.add_argument("--opset", type=positive_int, help="ONNX opset (default 20)")
    onnx.add_argument(
        "--quantize",
        choices=["int8"],
        help="write a dynamically quantised model (MatMul/Gemm only) and report its Pearson change",
    )
    onnx.add_argument(
        "--labels",
        type=Path,
        help="rating CSV (file + mos or mushra_mean) for the --quantize Pearson report "
        "(default: the rated codec_mushra set when the data folder has it)",
    )
    onnx.add_argument(
        "--exporter",
        choices=["dynamo", "legacy"],
        default="dynamo",
        help="torch exporter (default dynamo; legacy is the TorchScript fallback)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"{args.checkpoint}: checkpoint not found (train one with jsqa-train)")
    if args.labels is not None and not args.labels.is_file():
        parser.error(f"{args.labels}: label file not found")

    from jsqa.export.onnx_export import export_onnx
    from jsqa.export.parity import ParityError

    output = args.output or args.checkpoint.with_suffix(".onnx")
    try:
        report = export_onnx(
            args.checkpoint, output, opset=args.opset, quantize=args.quantize, exporter=args.exporter,
            labels=args.labels,
        )
    except ParityError as e:
        print(f"jsqa-export: parity check failed: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"jsqa-export: {e}", file=sys.stderr)
        return 1
    except (OSError, pickle.UnpicklingError, RuntimeError) as e:  # not a checkpoint, unwritable output, ...
        print(f"jsqa-export: cannot export {args.checkpoint}: {(str(e).strip() or type(e).__name__).splitlines()[0]}",
              file=sys.stderr)
        return 1
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
