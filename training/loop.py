"""The training loop both stages share: optimisation, DDP, checkpoints, exact resume, logs.

* One process trains as is; under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1)
  the model is wrapped in DistributedDataParallel (gloo on CPU, NCCL on GPUs). Each rank
  draws its own batches from a sampler seeded ``seed + rank``; rank 0 alone logs, validates
  and writes checkpoints, which carry every rank's sampler and RNG state.
* ``last.ckpt`` is written atomically every ``checkpoint_every`` steps and at the end;
  ``resume=True`` reloads model, optimizer, LR schedule, step, the torch / numpy / Python
  RNG states and the sampler state, so a run killed with SIGKILL continues exactly where
  the checkpoint left it. ``final.ckpt`` (weights and summary only) is what the next stage
  or ``jsqa-export`` reads.
* ``metrics.jsonl`` gets one JSON object per logged step (loss, lr, step/s, CPU time,
  validation, and in stage 1 the positive / negative similarity); ``loss.png`` plots it.
* ``stop`` (e.g. :class:`jsqa.training.plateau.Plateau`) ends a run before ``steps`` once it
  says so; it sees every logged record, and on resume the kept records are replayed into it,
  so a stopped run stays stopped and an interrupted one stops where it would have.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from jsqa.model import JSQAModel, save_checkpoint


class BatchSource(Protocol):
    def next(self) -> tuple[torch.Tensor, ...]: ...
    def state(self) -> dict: ...
    def set_state(self, state: dict) -> None: ...
    def close(self) -> None: ...


@dataclass
class LoopSpec:
    out_dir: Path
    steps: int
    lr: float
    head_lr_scale: float = 1.0
    warmup_steps: int = 0
    weight_decay: float = 0.01
    grad_clip: float = 5.0
    checkpoint_every: int = 50
    log_every: int = 5
    validate_every: int = 0
    summary: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, config, out_dir, steps: int, lr: float, summary: dict, **stage) -> "LoopSpec":
        """The settings both stages take from a ``TrainConfig``; ``stage`` holds their own."""
        return cls(
            out_dir=Path(out_dir), steps=steps, lr=lr, summary=summary,
            warmup_steps=config.warmup_steps, weight_decay=config.weight_decay, grad_clip=config.grad_clip,
            checkpoint_every=config.checkpoint_every, log_every=config.log_every, **stage,
        )


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)``, initialising the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank() if world > 1 else 0), world


def device_for(rank: int) -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def cpu_time() -> float:
    """CPU seconds of this process (all threads) and of its finished children: the codec
    subprocesses the JND sampler and the degradations run."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def seed_everything(seed: int) -> None:
    """Seed torch, numpy's global generator (HuBERT's SpecAugment masks draw from it) and random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _param_groups(model: JSQAModel, task: nn.Module, spec: LoopSpec) -> list[dict]:
    """Heads learn ``head_lr_scale`` times faster than the encoder (they start from scratch);
    so do the task's own parameters (a training-only head)."""
    heads = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    encoder = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    known = {id(p) for p in model.parameters()}
    heads += [p for p in task.parameters() if id(p) not in known]
    return [
        {"params": encoder, "lr": spec.lr},
        {"params": heads, "lr": spec.lr * spec.head_lr_scale},
    ]


def _own_state(task: nn.Module) -> dict:
    """The task's state beyond the model's (a training-only head), which a resume needs."""
    return getattr(task, "own_state", dict)()


def _schedule(spec: LoopSpec) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 5 % of the peak."""
    def factor(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        span = max(1, spec.steps - spec.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - spec.warmup_steps) / span)))
    return factor


def _atomic_save(path: Path, model: JSQAModel, **extra) -> None:
    tmp = path.with_suffix(".tmp")
    save_checkpoint(tmp, model, **extra)
    os.replace(tmp, path)


def train(
    model: JSQAModel,
    task: nn.Module,
    source: BatchSource,
    spec: LoopSpec,
    resume: bool = False,
    validate: Callable[[JSQAModel], dict] | None = None,
    device: torch.device | None = None,
    stop: Callable[[dict], bool] | None = None,
) -> dict:
    """Run the loop; returns the last logged record. ``task(*batch) -> (loss, stats)``.

    ``elapsed_s`` is the wall time of the training steps; ``cpu_s`` the CPU time
    (:func:`cpu_time`) over whole iterations, checkpoints and validation included: what a run
    costs on a shared machine."""
    rank, world = dist_info()
    device = device or device_for(rank)
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_path, metrics_path = out / "last.ckpt", out / "metrics.jsonl"
    task.to(device)  # the model with it
    optimizer = torch.optim.AdamW(_param_groups(model, task, spec), weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(spec))
    start, elapsed, cpu = 0, 0.0, 0.0
    if resume and last_path.is_file():
        ckpt = torch.load(last_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["state_dict"])
        own = _own_state(task)
        for k, v in ckpt.get("task_state", {}).items():
            own[k].copy_(v)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start, elapsed, cpu = int(ckpt["step"]), float(ckpt.get("elapsed_s", 0.0)), float(ckpt.get("cpu_s", 0.0))
        states = ckpt["rank_states"]
        if len(states) != world:
            raise RuntimeError(f"{last_path} was written by {len(states)} processes; resume with as many")
        _set_rng_state(states[rank]["rng"])
        source.set_state(states[rank]["source"])
        if rank == 0:
            _truncate_metrics(metrics_path, start)
    elif rank == 0 and metrics_path.exists():
        metrics_path.unlink()
    flat = False
    if stop is not None and rank == 0 and metrics_path.exists():
        for r in read_metrics(metrics_path):  # replaying every record rebuilds the rule's state
            flat = stop(r)
    stopped = _from_rank0(flat, world)
    net = nn.parallel.DistributedDataParallel(task, find_unused_parameters=True) if world > 1 else task
    net.to(device)
    net.train()

    record: dict = {}
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.2f} step/s"),
        TimeRemainingColumn(), disable=rank != 0,
    )
    tick, tick_step = time.time(), start
    done = start
    try:
        with progress:
            bar = progress.add_task(spec.summary.get("stage", "train"), total=spec.steps, completed=start,
                                    loss=float("nan"), rate=0.0)
            for step in range(start, spec.steps):
                if stopped:
                    break
                t0, c0 = time.time(), cpu_time()
                batch = [b.to(device) for b in source.next()]
                loss, stats = net(*batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip))
                optimizer.step()
                scheduler.step()
                elapsed += time.time() - t0
                done = step + 1
                loss_value = _mean_over_ranks(loss.detach(), world)
                rate = (done - tick_step) / max(1e-9, time.time() - tick)
                progress.update(bar, completed=done, loss=loss_value, rate=rate)
                if done % spec.log_every == 0 or done == spec.steps:
                    record = {"step": done, "loss": loss_value, "lr": scheduler.get_last_lr()[0],
                              "grad_norm": grad_norm, "steps_per_s": rate, "elapsed_s": elapsed,
                              "cpu_s": cpu + cpu_time() - c0,
                              **{k: float(v) for k, v in stats.items()}}
                    tick, tick_step = time.time(), done
                if validate and spec.validate_every and (done % spec.validate_every == 0 or done == spec.steps):
                    if rank == 0:
                        model.eval()
                        record = {**record, "step": done, **{f"val_{k}": v for k, v in validate(model).items()}}
                        model.train()
                if rank == 0 and record.get("step") == done:
                    with open(metrics_path, "a") as fh:
                        fh.write(json.dumps(record) + "\n")
                    flat = stop is not None and stop(record)
                if stop is not None:
                    stopped = _from_rank0(flat, world)
                if done % spec.checkpoint_every == 0 or done == spec.steps or stopped:
                    states = _gather({"rng": _rng_state(), "source": source.state()}, world)
                    cpu += cpu_time() - c0
                    c0 = cpu_time()
                    if rank == 0:
                        _atomic_save(last_path, model, optimizer=optimizer.state_dict(),
                                     scheduler=scheduler.state_dict(), step=done, elapsed_s=elapsed,
                                     cpu_s=cpu, rank_states=states,
                                     task_state=_own_state(task),
                                     training=_summary(spec, done, elapsed, cpu, world, stopped))
                        plot_metrics(metrics_path, out / "loss.png")
                    if world > 1:
                        dist.barrier()
                cpu += cpu_time() - c0
    finally:
        source.close()
    if rank == 0:
        _atomic_save(out / "final.ckpt", model, training=_summary(spec, done, elapsed, cpu, world, stopped),
                     metrics={k: v for k, v in record.items() if k.startswith("val_")})
    if world > 1:
        dist.barrier()
    return record


def _summary(spec: LoopSpec, step: int, elapsed: float, cpu: float, world: int, stopped: bool) -> dict:
    return {**spec.summary, "steps": step, "stopped_early": stopped, "wall_s": round(elapsed, 1),
            "cpu_s": round(cpu, 1), "processes": world}


def _from_rank0(flag: bool, world: int) -> bool:
    """Rank 0's decision on every rank (each rank's logged stats are its own batch's)."""
    if world == 1:
        return flag
    box = [flag]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def _mean_over_ranks(x: torch.Tensor, world: int) -> float:
    if world > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= world
    return float(x)


def _gather(obj, world: int) -> list:
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records written after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def read_metrics(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_metrics(metrics_path: Path, png: Path) -> None:
    """Loss (and validation Pearson, when logged) against step; in stage 1 a second panel
    holds the contrastive curve: mean positive and negative cosine similarity, and their gap."""
    if not metrics_path.exists():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    if not rows:
        return
    sims = [r for r in rows if "sim_pos" in r]
    fig, axes = plt.subplots(2 if sims else 1, 1, figsize=(6, 6 if sims else 3.5), sharex=True, squeeze=False)
    ax = axes[0, 0]
    ax.plot([r["step"] for r in rows if "loss" in r], [r["loss"] for r in rows if "loss" in r], label="loss")
    ax.set_ylabel("loss")
    val = [r for r in rows if "val_pearson" in r]
    if val:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in val], [r["val_pearson"] for r in val], "o-", color="tab:orange",
                 label="dev Pearson")
        ax2.set_ylabel("dev Pearson")
    ax.set_title(png.parent.name)
    if sims:
        steps = [r["step"] for r in sims]
        ax = axes[1, 0]
        ax.plot(steps, [r["sim_pos"] for r in sims], label="positives", lw=0.8)
        ax.plot(steps, [r["sim_neg"] for r in sims], label="negatives", lw=0.8)
        ax.plot(steps, [r["sim_pos"] - r["sim_neg"] for r in sims], label="gap", color="k")
        ax.set_ylabel("mean cosine similarity")
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
