"""The paper's comparison from one command: the same network, labels, fine-tune steps and
learning-rate schedule, trained from scratch and from two stage-1 encoders (JND pairs over
additive noise only, the paper's setting; and over all impairment families, its open
question 1), at several label budgets and seeds.

Everything lives under ``OUT`` and is reused when present, so a killed ablation continues
where it stopped and a rerun with more seeds or budgets runs only what is missing::

    pretrain-noise/  pretrain-all/    stage 1, unless given (--pretrained-noise / --pretrained-all)
    budget-<N|all>/<arm>-seed<k>/     a fine-tune run (resumed from last.ckpt) and its eval.json
    ablation.md  ablation.json  curves.png  scatter.png      the report (ablate_report.py)

Within a (budget, seed) every arm sees the same labelled subset.
"""

from __future__ import annotations

from pathlib import Path

import torch

from jsqa.audio import load_audio
from jsqa.model import load_checkpoint

from .configs import TrainConfig
from .datasets import read_rated
from .evaluate import predict_torch, report, save_json
from .finetune import finetune
from .loop import cpu_time
from .pretrain import pretrain

# arm -> the JND impairments of its stage-1 encoder (None: no stage 1)
ARMS = {"scratch": None, "jsqa-noise": "noise", "jsqa-all": "all"}


def parse_budgets(text: str) -> list[int | None]:
    """``"1000,all"`` -> ``[1000, None]`` (None: every labelled clip)."""
    budgets = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            budgets.append(None)
        elif part.isdigit() and int(part) > 0:
            budgets.append(int(part))
        else:
            raise ValueError(f"--budgets takes positive clip counts or 'all', got {part!r}")
    if not budgets:
        raise ValueError("--budgets is empty")
    return budgets


def budget_name(budget: int | None) -> str:
    return "all" if budget is None else str(budget)


def display_name(spec: str) -> str:
    """How a test set is named in the report: a CSV by its folder (the corpus), a rated set by name."""
    return Path(spec).parent.name if spec.endswith(".csv") else spec


def run_dir(out: Path, budget: str, arm: str, seed: int) -> Path:
    return Path(out) / f"budget-{budget}" / f"{arm}-seed{seed}"


def run_ablation(out_dir: str | Path, config: TrainConfig, data: list[str], tests: list[str],
                 budgets: list[int | None], seeds: list[int], arms: tuple[str, ...] = tuple(ARMS),
                 pretrained: dict[str, str] | None = None, validate_on: str | None = None) -> None:
    """Run (or finish) every missing stage-1, fine-tune and evaluation of the grid."""
    out = Path(out_dir)
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}")
    encoders = {imp: stage1(out, config, imp, (pretrained or {}).get(imp))
                for imp in dict.fromkeys(ARMS[a] for a in arms) if imp}
    sets = EvalSets(tests)
    for budget in budgets:
        for seed in seeds:
            for arm in arms:
                run = run_dir(out, budget_name(budget), arm, seed)
                if (run / "eval.json").exists():
                    continue
                ckpt = run / "final.ckpt"
                if not ckpt.exists():
                    finetune(run, config, data, init=encoders.get(ARMS[arm], "scratch"), seed=seed,
                             limit=budget, resume=True, validate_on=validate_on)
                result = {"arm": arm, "budget": budget_name(budget), "seed": seed, **evaluate_run(ckpt, sets)}
                save_json(result, run / "eval.json")


def stage1(out: Path, config: TrainConfig, impairments: str, given: str | None) -> str:
    """The stage-1 checkpoint for ``impairments``: the one given, else pretrained (or resumed)
    in ``OUT/pretrain-<impairments>`` with the config's stage-1 settings."""
    if given:
        if not Path(given).is_file():
            raise FileNotFoundError(f"--pretrained-{impairments} {given}: no such checkpoint")
        trained_on = torch.load(given, map_location="cpu", weights_only=False)["training"]["config"].get("impairments")
        if trained_on not in (None, impairments):
            raise ValueError(f"--pretrained-{impairments} {given} was pretrained on {trained_on!r} JND pairs")
        return str(given)
    run = out / f"pretrain-{impairments}"
    if (run / "final.ckpt").exists():
        return str(run / "final.ckpt")
    return str(pretrain(run, config.override(impairments=impairments), resume=True))


class EvalSets:
    """The test sets, read from disk the first time a run needs them."""

    def __init__(self, specs: list[str]):
        self.specs = specs
        self._loaded: dict[str, tuple[list, list]] | None = None

    def items(self):
        if self._loaded is None:
            self._loaded = {}
            for spec in self.specs:
                rated = read_rated(spec)
                self._loaded[spec] = (rated, [load_audio(it.path) for it in rated])
        return self._loaded.items()


def evaluate_run(ckpt: Path, sets: EvalSets) -> dict:
    """Metrics (overall and per condition) and predictions on every test set, with what the
    run cost: fine-tune CPU time from the checkpoint, stage 1's from the summary nested in it."""
    c0 = cpu_time()
    model, meta = load_checkpoint(ckpt)
    training = meta["training"]
    init = training["init"]
    result = {
        "labelled_clips": training["labelled_clips"], "steps": training["steps"],
        "finetune_cpu_s": training.get("cpu_s"), "finetune_wall_s": training.get("wall_s"),
        "stage1": None if init == "scratch" else {"checkpoint": init["checkpoint"], **_stage1_cost(init["training"])},
        "tests": {},
    }
    for spec, (items, signals) in sets.items():
        pred = predict_torch(model, signals, meta.get("window_seconds", 3.0), meta.get("hop_seconds", 1.0))
        rep = report(pred, items)
        result["tests"][spec] = {**rep, "pred": [round(float(p), 4) for p in pred]}
    result["eval_cpu_s"] = round(cpu_time() - c0, 1)
    return result


def _stage1_cost(summary: dict) -> dict:
    cfg = summary["config"]
    clips = summary["steps"] * cfg["groups"] * cfg["per_group"] * summary.get("processes", 1)
    return {"impairments": cfg.get("impairments"), "steps": summary["steps"],
            "audio_hours": round(clips * cfg["crop_seconds"] / 3600, 2),
            "cpu_s": summary.get("cpu_s"), "wall_s": summary.get("wall_s")}
