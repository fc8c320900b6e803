"""Stage 1 until the contrastive curve flattens, and ``jsqa-train ablate`` end to end with the
tiny preset: three arms x two budgets x seeds, killed and resumed, then the report."""

from __future__ import annotations

import csv
import json

import matplotlib.image
import pytest
import torch

from jsqa.training import ablate, cli, loop
from jsqa.training.loop import read_metrics
from jsqa.training.plateau import Plateau
from jsqa.training.tasks import ClipSource


@pytest.fixture(scope="module")
def pretrained_noise(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("pretrain-noise")
    assert cli.main(["pretrain", "--config", "tiny", "--impairments", "noise", "--out", str(out),
                     "--steps", "3"]) == 0
    return out / "final.ckpt"


def _records(losses, start=1, gaps=None):
    gaps = gaps or [0.0] * len(losses)
    return [{"step": start + i, "loss": v, "sim_pos": g, "sim_neg": 0.0} for i, (v, g) in enumerate(zip(losses, gaps))]


def test_plateau_waits_for_a_flat_loss():
    falling = Plateau(window=3, patience=4, delta=0.01)
    assert not any(falling(r) for r in _records([5.0 * 0.9**i for i in range(30)]))
    # a gap that narrows while the loss falls (embeddings leaving their first, alike state) is learning
    narrowing = Plateau(window=3, patience=4, delta=0.01)
    assert not any(narrowing(r) for r in _records([5.0 - 0.1 * i for i in range(30)], gaps=[0.4 - 0.01 * i for i in range(30)]))

    flat = Plateau(window=3, patience=4, delta=0.01)
    said = [flat(r) for r in _records([3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])]
    # The 3-step average is lowest from step 5 (1.0); 4 steps later, at step 9, it is flat.
    assert said == [False] * 8 + [True, True]
    assert flat({"step": 11, "loss": 0.0, "sim_pos": 0.0, "sim_neg": 0.0})  # once flat, stays flat

    diverging = Plateau(window=2, patience=3, delta=0.0)
    assert [diverging(r) for r in _records([1.0, 1.1, 1.2, 1.3, 1.4])] == [False, False, False, False, True]
    # A fall within delta is no improvement; records without similarities (validation) are skipped.
    noisy = Plateau(window=1, patience=2, delta=0.05)
    assert [noisy(r) for r in _records([1.0, 0.97, 0.99])] == [False, False, True]
    assert not Plateau(1, 2, 0.0)({"step": 1, "val_pearson": 0.5})
    with pytest.raises(ValueError, match="positive"):
        Plateau(window=0, patience=3, delta=0.0)


def test_pretrain_until_flat_stops_and_stays_stopped(tmp_path, data_root):
    out = tmp_path / "pt"
    # a fall of 1000 % can never happen: the best average is the first (step 2), flat at step 2 + 3.
    args = ["pretrain", "--config", "tiny", "--out", str(out), "--steps", "40", "--log-every", "1",
            "--until-flat", "--flat-window", "2", "--flat-patience", "3", "--flat-delta", "10"]
    assert cli.main(args) == 0
    summary = torch.load(out / "final.ckpt", weights_only=False)["training"]
    assert summary["steps"] == 5 and summary["stopped_early"] and summary["cpu_s"] > 0
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert all("sim_pos" in r and "sim_neg" in r and r["cpu_s"] > 0 for r in rows)
    # loss.png has the contrastive panel under the loss: twice the height of a loss-only plot.
    assert matplotlib.image.imread(out / "loss.png").shape[0] == 600
    # Resuming a stopped run replays the curve into the rule and trains no further.
    assert cli.main([*args, "--resume"]) == 0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert torch.load(out / "final.ckpt", weights_only=False)["training"]["steps"] == 5


def test_ablate_runs_resumes_and_reports(corpus, pretrained_noise, tmp_path, monkeypatch, capsys):
    out = tmp_path / "abl"
    base = ["ablate", "--config", "tiny", "--out", str(out), "--data", str(corpus), "--test", str(corpus),
            "--test", "warpq", "--budgets", "6,all", "--pretrained-noise", str(pretrained_noise),
            "--pretrain-steps", "3", "--steps", "4", "--checkpoint-every", "2"]

    # First pass with seed 0 only, killed in the last fine-tune right after its step-2 checkpoint.
    real_plot = loop.plot_metrics

    def kill_in_last_run(metrics_path, png):
        real_plot(metrics_path, png)
        if png.parent == out / "budget-all" / "jsqa-all-seed0":
            raise KeyboardInterrupt
    monkeypatch.setattr(loop, "plot_metrics", kill_in_last_run)
    with pytest.raises(KeyboardInterrupt):
        cli.main([*base, "--seeds", "0"])
    killed = out / "budget-all" / "jsqa-all-seed0"
    assert torch.load(killed / "last.ckpt", weights_only=False)["step"] == 2
    assert not (killed / "final.ckpt").exists()
    finished = sorted(out.glob("budget-*/*/eval.json"))
    assert len(finished) == 5
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    monkeypatch.setattr(loop, "plot_metrics", real_plot)

    # Second pass with seeds 0,1: only the killed run (2 steps left) and seed 1's six runs train.
    batches, stage1 = [], []
    real_next = ClipSource.next
    monkeypatch.setattr(ClipSource, "next", lambda self: batches.append(1) or real_next(self))
    monkeypatch.setattr(ablate, "pretrain", lambda *a, **k: stage1.append(a))
    assert cli.main([*base, "--seeds", "0,1"]) == 0
    assert len(batches) == 2 + 6 * 4 and not stage1
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert [r["step"] for r in read_metrics(killed / "metrics.jsonl")] == [1, 2, 3, 4]

    evals = [json.loads(p.read_text()) for p in out.glob("budget-*/*/eval.json")]
    runs = {(r["budget"], r["arm"], r["seed"]): r for r in evals}
    assert len(runs) == 12
    for (budget, arm, seed), r in runs.items():
        # Same labels and steps for every arm of a budget; each arm from its own encoder.
        assert r["labelled_clips"] == (6 if budget == "6" else 10) and r["steps"] == 4
        assert r["stage1"] is None if arm == "scratch" else r["stage1"]["impairments"] == arm.split("-")[1]
        assert set(r["tests"]) == {str(corpus), "warpq"} and len(r["tests"]["warpq"]["pred"]) == 8
    assert runs[("6", "jsqa-noise", 0)]["stage1"]["checkpoint"] == str(pretrained_noise)
    assert runs[("6", "jsqa-all", 0)]["stage1"]["checkpoint"] == str(out / "pretrain-all" / "final.ckpt")
    assert runs[("6", "jsqa-all", 0)]["stage1"]["steps"] == 3

    text = (out / "ablation.md").read_text()
    assert text in capsys.readouterr().out
    corpus_name = corpus.parent.name
    families = {row["condition"] for row in csv.DictReader(corpus.read_text().splitlines())}
    for section in (f"{corpus_name} (10 clips)", "warpq (8 clips)", *(f"{corpus_name}: {c} (" for c in families)):
        assert f"### {section}" in text
    for label in ("RMSE ↓", "MAE ↓", "PCC ↑", "SRCC ↑"):
        assert f"| 6 | {label} |" in text and f"| all | {label} |" in text
    assert "JSQA (noise JND) vs scratch" in text and "JSQA (all-family JND) vs scratch" in text
    assert "seeds scratch 2, JSQA (noise JND) 2, JSQA (all-family JND) 2" in text
    report = json.loads((out / "ablation.json").read_text())
    assert report["tests"]["warpq"]["n"] == 8
    warpq = report["tests"]["warpq"]["6"]
    assert {a: warpq[a]["rmse"]["n"] for a in warpq} == {"scratch": 2, "jsqa-noise": 2, "jsqa-all": 2}
    mean = sum(runs[("6", "scratch", s)]["tests"]["warpq"]["overall"]["rmse"] for s in (0, 1)) / 2
    assert warpq["scratch"]["rmse"]["mean"] == pytest.approx(mean)
    cpu = report["cpu"]
    assert cpu["scratch"]["stage1_cpu_s"] is None and cpu["jsqa-all"]["stage1_steps"] == 3
    assert all(row["total_cpu_s"] > 0 and row["finetune_cpu_s_per_run"]["all"] > 0 for row in cpu.values())
    assert report["best"]["sets"] == ["warpq"] and report["best"]["budget"] == "all"
    for png in ("curves.png", "scatter.png"):
        assert (out / png).stat().st_size > 5000
    # Two budgets, one row each.
    assert matplotlib.image.imread(out / "curves.png").shape[0] == 2 * 320

    # --report alone rewrites the report from the finished runs.
    (out / "ablation.md").unlink()
    assert cli.main(["ablate", "--out", str(out), "--report"]) == 0
    assert (out / "ablation.md").read_text() == text


def test_ablate_refuses_a_stage1_checkpoint_of_the_other_kind(corpus, pretrained_noise, tmp_path, capsys):
    assert cli.main(["ablate", "--config", "tiny", "--out", str(tmp_path / "a"), "--data", str(corpus),
                     "--test", str(corpus), "--pretrained-all", str(pretrained_noise), "--arms", "jsqa-all"]) == 2
    assert "pretrained on 'noise'" in capsys.readouterr().err
    assert cli.main(["ablate", "--out", str(tmp_path / "b"), "--data", str(corpus), "--test", str(corpus),
                     "--budgets", "10,few"]) == 2
    assert "--budgets" in capsys.readouterr().err


def test_change_vs_scratch_carries_welchs_interval_over_seeds():
    from scipy.stats import ttest_ind

    from jsqa.training.ablate_report import _change, _stats, difference_ci

    arm, scratch = [0.50, 0.55, 0.60], [0.40, 0.45, 0.42]
    low, high = difference_ci(_stats(arm), _stats(scratch))
    expected = ttest_ind(arm, scratch, equal_var=False).confidence_interval(0.95)
    assert (low, high) == pytest.approx((expected.low, expected.high))
    assert _change(_stats(arm), _stats(scratch), True) == "+29.9 % (+0.127, 95 % CI +0.023 to +0.230, better)"
    assert "CI" not in _change(_stats([0.5]), _stats([0.4]), True)  # one seed: no interval
