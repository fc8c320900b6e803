"""The ablation's figures: every run's fine-tuning curves on one figure, and the
predicted-vs-true scatter of the best arm on every test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .ablate import display_name, run_dir
from .datasets import read_rated
from .loop import read_metrics

COLOURS = {"scratch": "tab:grey", "jsqa-noise": "tab:blue", "jsqa-all": "tab:red"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _smooth(values: list[float], n: int = 10) -> np.ndarray:
    """Moving average: a logged loss is one batch's, too noisy to compare arms by eye (short
    curves are averaged over fewer points, so a line remains)."""
    v = np.asarray(values, dtype=float)
    n = max(1, min(n, v.size // 4))
    return np.convolve(v, np.ones(n) / n, mode="valid")


def curves_png(out: Path, runs: list[dict], arms: list[str], budgets: list[str], png: Path) -> None:
    """One row per budget: training loss (moving average) and, when the runs validated, the
    validation PCC; one colour per arm, one line per seed."""
    runs = sorted(runs, key=lambda r: (arms.index(r["arm"]), r["seed"]))
    logs = {(r["budget"], r["arm"], r["seed"]): read_metrics(run_dir(out, r["budget"], r["arm"], r["seed"])
                                                             / "metrics.jsonl") for r in runs}
    validated = any("val_pearson" in row for rows in logs.values() for row in rows)
    plt = _pyplot()
    cols = 2 if validated else 1
    fig, axes = plt.subplots(len(budgets), cols, figsize=(5.5 * cols, 3.2 * len(budgets)), squeeze=False)
    for i, budget in enumerate(budgets):
        for (b, arm, seed), rows in logs.items():
            if b != budget:
                continue
            label = arm if seed == min(s for bb, a, s in logs if bb == b and a == arm) else None
            loss = [r for r in rows if "loss" in r]
            smooth = _smooth([r["loss"] for r in loss])
            axes[i, 0].plot([r["step"] for r in loss][len(loss) - smooth.size:], smooth,
                            color=COLOURS[arm], lw=1, alpha=0.8, label=label)
            if validated:
                val = [r for r in rows if "val_pearson" in r]
                axes[i, 1].plot([r["step"] for r in val], [r["val_pearson"] for r in val], "o-",
                                color=COLOURS[arm], lw=1, ms=3, alpha=0.8, label=label)
        axes[i, 0].set_title(f"budget {budget}: training loss (MSE, moving average)", fontsize=9)
        axes[i, 0].legend(fontsize=7)
        if validated:
            axes[i, 1].set_title(f"budget {budget}: validation PCC", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("fine-tune step")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def scatter_png(runs: list[dict], best: dict, png: Path) -> None:
    """Predicted vs true MOS of the best arm's shown seed, one panel per test set."""
    run = next(r for r in runs if (r["arm"], r["budget"], r["seed"]) == (best["arm"], best["budget"], best["seed"]))
    plt = _pyplot()
    n = len(run["tests"])
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False)
    for ax, (spec, rep) in zip(axes.flat, run["tests"].items()):
        true = np.asarray([it.mos for it in read_rated(spec)])
        pred = np.asarray(rep["pred"])
        if true.size != pred.size:
            raise ValueError(f"{spec} has {true.size} clips now, {pred.size} when the run was evaluated")
        o = rep["overall"]
        ax.scatter(true, pred, s=8, alpha=0.6, color=COLOURS[run["arm"]])
        ax.plot([1, 5], [1, 5], "k--", lw=0.8)
        ax.set(xlim=(1, 5), ylim=(1, 5), xlabel="true MOS", ylabel="predicted MOS")
        ax.set_title(f"{display_name(spec)}\nPCC {o['pearson']:.2f}  RMSE {o['rmse']:.2f}", fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{run['arm']}, budget {run['budget']}, seed {run['seed']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
