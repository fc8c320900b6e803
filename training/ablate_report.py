"""The ablation's report, from whatever runs have finished: the paper's table per test set
(and per impairment family of a test CSV), the CPU time of each arm, the figures, and the
same numbers as JSON for the model card.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from .ablate import ARMS, display_name
from .ablate_plots import curves_png, scatter_png
from .datasets import RATED_SETS
from .evaluate import save_json

METRICS = (("rmse", "RMSE", False), ("mae", "MAE", False), ("pearson", "PCC", True), ("spearman", "SRCC", True))
TITLES = {"scratch": "scratch", "jsqa-noise": "JSQA (noise JND)", "jsqa-all": "JSQA (all-family JND)"}


def collect(out_dir: str | Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("budget-*/*-seed*/eval.json"))]


def write_report(out_dir: str | Path) -> str:
    """Write ``ablation.md``, ``ablation.json``, ``curves.png`` and ``scatter.png``; returns the markdown."""
    out = Path(out_dir)
    runs = collect(out)
    if not runs:
        raise FileNotFoundError(f"no finished runs (budget-*/*-seed*/eval.json) in {out}")
    arms = [a for a in ARMS if any(r["arm"] == a for r in runs)]
    budgets = sorted({r["budget"] for r in runs}, key=lambda b: float("inf") if b == "all" else int(b))
    sections = scores(runs)
    best = best_arm(runs, sections, arms, budgets[-1])
    curves_png(out, runs, arms, budgets, out / "curves.png")
    scatter_png(runs, best, out / "scatter.png")
    cost = cpu_rows(runs, arms, budgets)
    text = "\n".join([
        "## JND pretraining ablation", "",
        "Mean ± sd over seeds; relative change vs scratch (absolute change, and whether it is better).", "",
        runs_line(runs, arms, budgets), "",
        *(paper_table(name, section, arms, budgets) for name, section in sections.items()),
        cpu_table(cost, budgets), "",
        (f"Best arm on the dev sets (mean PCC at budget {best['budget']}): **{TITLES[best['arm']]}**; "
         f"`scatter.png` shows its seed {best['seed']}. `curves.png`: fine-tuning curves of every run."), "",
    ])
    (out / "ablation.md").write_text(text)
    save_json({"arms": arms, "budgets": budgets, "best": best, "cpu": cost,
               "tests": {name: {"n": section["n"], **{
                   b: {a: {k: _stats(v) for k, v in m.items()} for a, m in per_arm.items()}
                   for b, per_arm in section["budgets"].items()}} for name, section in sections.items()}},
              out / "ablation.json")
    return text


def scores(runs: list[dict]) -> dict:
    """``{section: {"n": clips, "budgets": {budget: {arm: {metric: [one value per seed]}}}}}``;
    a test CSV also gets one section per condition (impairment family); the rated sets'
    conditions are too small for that."""
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    sizes = {}
    for r in runs:
        for spec, rep in r["tests"].items():
            rows = {display_name(spec): rep["overall"]}
            if spec not in RATED_SETS:
                rows |= {f"{display_name(spec)}: {cond}": row for cond, row in rep["per_condition"].items()}
            for name, row in rows.items():
                sizes[name] = row["n"]
                for key, _, _ in METRICS:
                    if key in row:
                        out[name][r["budget"]][r["arm"]][key].append(row[key])
    # plain dicts: reading a missing cell must not create it
    return {name: {"n": sizes[name], "budgets": json.loads(json.dumps(by_budget))} for name, by_budget in out.items()}


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def difference_ci(arm: dict, scratch: dict, level: float = 0.95) -> tuple[float, float] | None:
    """Welch's interval for ``arm mean - scratch mean`` over seeds; None with one seed."""
    from scipy.stats import t

    if arm["n"] < 2 or scratch["n"] < 2:
        return None
    va, vs = arm["sd"] ** 2 / arm["n"], scratch["sd"] ** 2 / scratch["n"]
    diff = arm["mean"] - scratch["mean"]
    if va + vs == 0:
        return diff, diff
    df = (va + vs) ** 2 / (va**2 / (arm["n"] - 1) + vs**2 / (scratch["n"] - 1))
    half = float(t.ppf(0.5 + level / 2, df)) * float(np.sqrt(va + vs))
    return diff - half, diff + half


def runs_line(runs: list[dict], arms: list[str], budgets: list[str]) -> str:
    parts = []
    for b in budgets:
        mine = [r for r in runs if r["budget"] == b]
        seeds = ", ".join(f"{TITLES[a]} {sum(r['arm'] == a for r in mine)}" for a in arms)
        # "all" grows between runs when the corpus is still being labelled: show it.
        clips = sorted({r["labelled_clips"] for r in mine})
        clips = f"{clips[0]}" if len(clips) == 1 else f"{clips[0]}–{clips[-1]} (differing between runs)"
        parts.append(f"budget {b} ({clips} labelled clips, {mine[0]['steps']} steps): seeds {seeds}")
    return "Runs: " + "; ".join(parts) + "."


def paper_table(name: str, section: dict, arms: list[str], budgets: list[str]) -> str:
    others = [a for a in arms if a != "scratch"] if "scratch" in arms else []
    by_budget = section["budgets"]
    lines = [f"### {name} ({section['n']} clips)", "",
             "| budget | metric | " + " | ".join(TITLES[a] for a in arms)
             + "".join(f" | {TITLES[a]} vs scratch" for a in others) + " |",
             "|---|---|" + "---|" * (len(arms) + len(others))]
    for b in budgets:
        for key, label, higher_better in METRICS:
            stats = {a: _stats(v) for a in arms if (v := by_budget.get(b, {}).get(a, {}).get(key))}
            if not stats:  # correlations of a condition whose labels or predictions do not vary
                continue
            cells = [f"{stats[a]['mean']:.3f} ± {stats[a]['sd']:.3f}" if a in stats else "–" for a in arms]
            cells += [_change(stats.get(a), stats.get("scratch"), higher_better) for a in others]
            lines.append(f"| {b} | {label} {'↑' if higher_better else '↓'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _change(arm: dict | None, scratch: dict | None, higher_better: bool) -> str:
    if not arm or not scratch or scratch["mean"] == 0:
        return "–"
    diff = arm["mean"] - scratch["mean"]
    ci = difference_ci(arm, scratch)
    # The absolute change too (relative changes of near-zero correlations mislead), and its
    # 95 % interval over seeds: an interval that holds 0 is no measured effect.
    interval = f", 95 % CI {ci[0]:+.3f} to {ci[1]:+.3f}" if ci else ""
    verdict = "better" if (diff > 0) == higher_better else "worse"
    return f"{100 * diff / abs(scratch['mean']):+.1f} % ({diff:+.3f}{interval}, {verdict})"


def best_arm(runs: list[dict], sections: dict, arms: list[str], budget: str) -> dict:
    """The arm with the highest mean PCC over the rated dev sets (over every test set when
    none was evaluated) at ``budget``, and the seed its scatter shows (its first)."""
    names = [display_name(spec) for spec in runs[0]["tests"]]
    names = [n for n in names if n in RATED_SETS] or names

    def score(arm):
        return np.mean([np.mean(sections[n]["budgets"].get(budget, {}).get(arm, {}).get("pearson") or [np.nan])
                        for n in names])

    arm = max(arms, key=lambda a: np.nan_to_num(score(a), nan=-np.inf))
    seed = min(r["seed"] for r in runs if r["arm"] == arm and r["budget"] == budget)
    return {"arm": arm, "budget": budget, "seed": seed, "mean_pcc": float(score(arm)), "sets": names}


def cpu_rows(runs: list[dict], arms: list[str], budgets: list[str]) -> dict:
    """Per arm: stage 1 (steps, audio hours, CPU s), mean fine-tune CPU s per run at each
    budget, the total of both, and the evaluation's CPU s (the same work for every arm)."""
    rows = {}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        stage1 = mine[0]["stage1"] or {}
        ft = {b: [_cost(r["finetune_cpu_s"], r["finetune_wall_s"]) for r in mine if r["budget"] == b]
              for b in budgets}
        s1 = _cost(stage1["cpu_s"], stage1["wall_s"]) if stage1 else 0.0
        rows[arm] = {
            "stage1_cpu_s": s1 if stage1 else None, "stage1_steps": stage1.get("steps"),
            "stage1_audio_hours": stage1.get("audio_hours"),
            "finetune_cpu_s_per_run": {b: float(np.mean(v)) if v else None for b, v in ft.items()},
            "total_cpu_s": s1 + sum(sum(v) for v in ft.values()),
            "eval_cpu_s": sum(r["eval_cpu_s"] for r in mine),
        }
    return rows


def _cost(cpu: float | None, wall: float | None) -> float:
    # Checkpoints from before CPU accounting carry only the wall time of their steps (one
    # thread: close to their CPU time).
    return float(cpu if cpu is not None else wall)


def cpu_table(cost: dict, budgets: list[str]) -> str:
    lines = ["### CPU time", "",
             "| arm | stage 1 | " + " | ".join(f"fine-tune per run, budget {b}" for b in budgets)
             + " | total (stage 1 + all fine-tunes) | evaluation |",
             "|---|---|" + "---|" * (len(budgets) + 2)]
    for arm, row in cost.items():
        stage1 = "–" if row["stage1_cpu_s"] is None else (
            f"{_hours(row['stage1_cpu_s'])} ({row['stage1_steps']} steps, {row['stage1_audio_hours']} h of audio)")
        per_run = [_hours(row["finetune_cpu_s_per_run"][b]) for b in budgets]
        lines.append(f"| {TITLES[arm]} | {stage1} | " + " | ".join(per_run)
                     + f" | {_hours(row['total_cpu_s'])} | {_hours(row['eval_cpu_s'])} |")
    return "\n".join(lines) + "\n"


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds / 3600:.2f} CPU h" if seconds >= 360 else f"{seconds:.1f} CPU s"
