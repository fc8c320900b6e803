"""The paper's comparison: the same network and labelled budget, fine-tuned from scratch
and from the JND-pretrained encoder, over several seeds.

Each (arm, seed) run lives in ``OUT/<arm>-seed<k>/`` with its checkpoint and ``eval.json``;
finished runs are reused, so seeds can run as separate processes in parallel and the
table can be re-printed at any time (``--report``). The labelled subset of a seed is the
same for both arms. ``arms`` runs one arm alone (the scratch arm needs no pretrained
checkpoint, so it can start while stage 1 is still running).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .configs import TrainConfig
from .datasets import read_rated
from .evaluate import evaluate_path, save_json
from .finetune import finetune

ARMS = ("scratch", "jsqa")
METRICS = (("rmse", "RMSE", False), ("mae", "MAE", False), ("pearson", "PCC", True), ("spearman", "SRCC", True))


def run_ablation(out_dir: str | Path, pretrained: str | None, data: list[str], test_sets: list[str],
                 budget: int, seeds: list[int], config: TrainConfig, arms: tuple[str, ...] = ARMS) -> None:
    out = Path(out_dir)
    tests = {name: read_rated(name) for name in test_sets}
    for seed in seeds:
        for arm in arms:
            run = out / f"{arm}-seed{seed}"
            if (run / "eval.json").exists():
                continue
            ckpt = run / "final.ckpt"
            if not ckpt.exists():
                finetune(run, config, data, init="scratch" if arm == "scratch" else pretrained,
                         seed=seed, limit=budget, resume=True)
            results = {"arm": arm, "seed": seed, "budget": budget, "steps": config.finetune_steps,
                       "pretrained": pretrained if arm == "jsqa" else None, "tests": {}}
            for name, items in tests.items():
                rep, _ = evaluate_path(ckpt, items)
                results["tests"][name] = rep["overall"]
            save_json(results, run / "eval.json")


def collect(out_dir: str | Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("*-seed*/eval.json"))]


def table(out_dir: str | Path) -> str:
    """Markdown table per test set: mean +- sd per arm, relative change JSQA vs scratch."""
    runs = collect(out_dir)
    if not runs:
        raise FileNotFoundError(f"no finished runs (*/eval.json) in {out_dir}")
    lines = []
    for name in dict.fromkeys(t for r in runs for t in r["tests"]):
        per_arm = {arm: [r["tests"][name] for r in runs if r["arm"] == arm and name in r["tests"]] for arm in ARMS}
        seeds = {arm: len(v) for arm, v in per_arm.items()}
        lines += [f"**{_title(name)}** (scratch n={seeds['scratch']} seeds, JSQA n={seeds['jsqa']} seeds)", "",
                  "| metric | scratch | JSQA (pretrained) | relative change |", "|---|---|---|---|"]
        for key, label, higher_better in METRICS:
            cells, means = [], {}
            for arm in ARMS:
                vals = np.asarray([m[key] for m in per_arm[arm]], dtype=float)
                if vals.size:
                    means[arm] = vals.mean()
                    cells.append(f"{vals.mean():.3f} ± {vals.std(ddof=1) if vals.size > 1 else 0.0:.3f}")
                else:
                    cells.append("–")
            change = "–"
            if len(means) == 2 and means["scratch"] != 0:
                diff = means["jsqa"] - means["scratch"]
                rel = 100.0 * diff / abs(means["scratch"])
                better = (diff > 0) == higher_better
                # The absolute change too: relative changes of near-zero correlations mislead.
                change = f"{rel:+.1f} % ({diff:+.3f}, {'better' if better else 'worse'})"
            lines.append(f"| {label} {'↑' if higher_better else '↓'} | {cells[0]} | {cells[1]} | {change} |")
        lines.append("")
    return "\n".join(lines)


def _title(name: str) -> str:
    return Path(name).parent.name if name.endswith(".csv") else name
