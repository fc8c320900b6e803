"""Accuracy of JSQA and peer models on a rated set: Pearson, Spearman, RMSE after mapping.

    python bench/accuracy.py --set codec_mushra [--model FILE] [--labels CSV]

MUSHRA ratings (0-100) are mapped linearly onto 1-5. RMSE3 is the RMSE after a
third-order monotonic mapping per ITU-T P.1401 (see jsqa.metrics), which forgives a
model's scale; "cond. r" is Pearson over per-condition means. Peers are skipped with a
note when not installed (see bench/peers.py for their installation).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jsqa.rated import load_rated_set, rated_set_path
from peers import distillmos, dnsmos_scores, jsqa_onnx
from rich.console import Console
from rich.table import Table

from jsqa import metrics
from jsqa.audio import load_audio
from jsqa.scorer import DEFAULT_MODEL

MODELS = ("jsqa", "dnsmos", "distillmos")


def _rows(model: Path, key: str, threads: int):
    if key == "jsqa":
        jsqa = jsqa_onnx(model, threads)
        return lambda x: {f"JSQA ({model.name})": jsqa(x)}
    if key == "dnsmos":
        dns = dnsmos_scores(threads)

        def both(x):
            r = dns(x)
            return {"DNSMOS P.835 OVRL": r["ovrl_mos"], "DNSMOS P.808": r["p808_mos"]}

        return both
    distill = distillmos(threads)
    return lambda x: {"DistillMOS": distill(x)}


def predictors(model: Path, threads: int, only: list[str]) -> tuple[list, list[str]]:
    """Functions ``score(16 kHz array) -> {row name: MOS}`` for the models in ``only``."""
    found, notes = [], []
    for key in only:
        try:
            found.append(_rows(model, key, threads))
        except ImportError as e:
            notes.append(f"{key} skipped: {e}")
    return found, notes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="codec_mushra", help="rated set in the data folder (default codec_mushra)")
    parser.add_argument("--labels", type=Path, help="rating CSV instead of --set (file + mos or mushra_mean)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="JSQA ONNX model (default: shipped)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--only", nargs="+", choices=MODELS, default=list(MODELS), help="models to score (default: all)"
    )
    args = parser.parse_args(argv)

    labels = args.labels or rated_set_path(args.set)
    if labels is None:
        parser.error(f"rated set {args.set!r} not found in the data folder; pass --labels CSV")
    rated = load_rated_set(labels)
    audio = [load_audio(f) for f in rated.files]
    models, notes = predictors(args.model, args.threads, args.only)

    table = Table(title=f"{rated.name}: {len(audio)} files, {len(set(rated.conditions))} conditions")
    for column in ("model", "Pearson", "Spearman", "RMSE3", "RMSE", "cond. r"):
        table.add_column(column, justify="left" if column == "model" else "right")
    console = Console()
    predictions: dict[str, list[float]] = {}
    for score in models:
        with console.status("scoring"):
            for x in audio:
                for name, value in score(x).items():
                    predictions.setdefault(name, []).append(value)
    for name, pred in predictions.items():
        s = metrics.summary(pred, rated.mos, rated.conditions)
        table.add_row(
            name,
            f"{s['pearson']:.3f}",
            f"{s['spearman']:.3f}",
            f"{s['rmse_mapped_3']:.3f}",
            f"{s['rmse']:.3f}",
            f"{s.get('condition_pearson', float('nan')):.3f}",
        )
    console.print(f"labels: {labels}")
    console.print(table)
    for note in notes:
        console.print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
