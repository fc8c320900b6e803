"""Evaluate a checkpoint or an exported ONNX model on a labelled set.

Clips are scored the way the runtime scores them (:class:`jsqa.scorer.Scorer`): windows of
the model's length at its hop, the last one aligned to the end, averaged; a clip shorter
than one window is scored whole. Reported per file and per condition: RMSE, MAE, Pearson,
Spearman, Kendall and RMSE after first/third-order monotonic mapping (ITU-T P.1401), plus
the condition-level correlations; a predicted-vs-true scatter is written as PNG.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from jsqa import metrics
from jsqa.audio import load_audio
from jsqa.levels import has_speech
from jsqa.model import JSQAModel, load_checkpoint

from .datasets import Rated


def window_starts(n: int, window: int, hop: int) -> list[int]:
    if n <= window:
        return [0]
    last = n - window
    starts = list(range(0, last + 1, hop))
    if starts[-1] != last:
        starts.append(last)
    return starts


@torch.no_grad()
def predict_torch(model: JSQAModel, signals: list[np.ndarray], window_s: float = 3.0,
                  hop_s: float = 1.0, batch: int = 16) -> np.ndarray:
    """Per-clip MOS from a torch model (eval mode), windowed like the runtime."""
    was_training = model.training
    model.eval()
    window, hop = int(window_s * 16000), int(hop_s * 16000)
    groups: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for i, x in enumerate(signals):
        for s in window_starts(x.size, window, hop):
            groups[min(window, x.size)].append((i, s))
    # Scored as jsqa-score scores: the mean over windows with speech (over all when none has).
    sums, counts = np.zeros((2, len(signals))), np.zeros((2, len(signals)))
    for length, keys in groups.items():
        for b in range(0, len(keys), batch):
            chunk = keys[b : b + batch]
            audio = np.stack([signals[i][s : s + length] for i, s in chunk])
            for (i, _), x, m in zip(chunk, audio, model(torch.from_numpy(audio)).tolist()):
                speech = int(has_speech(x))
                sums[:, i] += (m, m * speech)
                counts[:, i] += (1, speech)
    model.train(was_training)
    return np.where(counts[1] > 0, sums[1] / np.maximum(counts[1], 1), sums[0] / counts[0])


def predict_path(model_path: str | Path, signals: list[np.ndarray]) -> np.ndarray:
    """Per-clip MOS from a ``.onnx`` file (ONNX Runtime) or a checkpoint (torch)."""
    model_path = Path(model_path)
    if model_path.suffix == ".onnx":
        from jsqa.scorer import Scorer

        # A clip the VAD finds no speech in (speech under noise near 0 dB SNR) still gets the
        # model's number here: labelled sets are all speech.
        return np.asarray([r.mos if r.mos is not None else r.model_mean
                           for r in Scorer(model_path).score_many(signals)])
    model, ckpt = load_checkpoint(model_path)
    return predict_torch(model, signals, ckpt.get("window_seconds", 3.0), ckpt.get("hop_seconds", 1.0))


def report(pred: np.ndarray, items: list[Rated]) -> dict:
    """Metrics overall (per file, with condition-level correlations) and per condition."""
    true = np.asarray([it.mos for it in items])
    conditions = [it.condition or "all" for it in items]
    out = {"overall": metrics.summary(pred, true, conditions if len(set(conditions)) > 1 else None),
           "per_condition": {}}
    for name in dict.fromkeys(conditions):
        idx = [i for i, c in enumerate(conditions) if c == name]
        p, t = pred[idx], true[idx]
        row = {"n": len(idx), "true_mean": float(t.mean()), "pred_mean": float(p.mean()),
               "rmse": metrics.rmse(p, t) if len(idx) > 1 else float(abs(p - t).mean()),
               "mae": float(np.mean(np.abs(p - t)))}
        if len(idx) > 2 and np.ptp(p) > 0 and np.ptp(t) > 0:
            row.update(pearson=metrics.pearson(p, t), spearman=metrics.spearman(p, t))
        if len(idx) > 4 and np.ptp(p) > 0:
            row["rmse_mapped_3"] = metrics.rmse_mapped(p, t, order=3)
        out["per_condition"][name] = row
    return out


def evaluate_model(model: JSQAModel, items: list[Rated], signals: list[np.ndarray] | None = None) -> dict:
    signals = signals if signals is not None else [load_audio(it.path) for it in items]
    return report(predict_torch(model, signals), items)


def evaluate_path(model_path: str | Path, items: list[Rated]) -> tuple[dict, np.ndarray]:
    signals = [load_audio(it.path) for it in items]
    pred = predict_path(model_path, signals)
    return report(pred, items), pred


def scatter_png(pred: np.ndarray, items: list[Rated], png: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true = np.asarray([it.mos for it in items])
    conditions = [it.condition or "all" for it in items]
    fig, ax = plt.subplots(figsize=(5, 5))
    names = list(dict.fromkeys(conditions))
    for name in names if len(names) <= 12 else [None]:
        idx = [i for i, c in enumerate(conditions) if name is None or c == name]
        ax.scatter(true[idx], pred[idx], s=12, alpha=0.7, label=name)
    ax.plot([1, 5], [1, 5], "k--", lw=0.8)
    ax.set_xlim(1, 5)
    ax.set_ylim(1, 5)
    ax.set_xlabel("true MOS")
    ax.set_ylabel("predicted MOS")
    ax.set_title(title)
    if len(names) <= 12:
        ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def format_report(rep: dict, name: str) -> str:
    o = rep["overall"]
    keys = ("rmse", "mae", "pearson", "spearman", "kendall", "rmse_mapped_3")
    lines = [f"{name}: {o['n']} files"]
    lines.append("  overall   " + "  ".join(f"{k} {o[k]:.3f}" for k in keys if k in o))
    if "condition_pearson" in o:
        lines.append(f"  condition-level  pearson {o['condition_pearson']:.3f}  spearman "
                     f"{o['condition_spearman']:.3f}  rmse {o['condition_rmse']:.3f}  ({o['n_conditions']} conditions)")
    for cname, row in rep["per_condition"].items():
        extra = "  ".join(f"{k} {row[k]:.3f}" for k in ("pearson", "spearman", "rmse_mapped_3") if k in row)
        lines.append(f"  {cname[:28]:28s} n={row['n']:3d}  true {row['true_mean']:.2f}  pred "
                     f"{row['pred_mean']:.2f}  rmse {row['rmse']:.3f}  mae {row['mae']:.3f}  {extra}")
    return "\n".join(lines)


def attach_metrics(ckpt_path: str | Path, name: str, overall: dict) -> None:
    """Add ``overall`` under ``name`` to a checkpoint's ``metrics`` (rewritten atomically)."""
    path = Path(ckpt_path)
    if path.suffix == ".onnx":
        raise ValueError("--attach needs a checkpoint; metrics reach the ONNX file when it is exported")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    ckpt.setdefault("metrics", {})[name] = {k: round(float(v), 4) for k, v in overall.items()}
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def save_json(obj, path: str | Path) -> None:
    Path(path).write_text(json.dumps(obj, indent=1, default=float))
