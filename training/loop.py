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
* ``metrics.jsonl`` gets one JSON object per logged step (loss, lr, step/s, validation);
  ``loss.png`` plots it.
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


def _param_groups(model: JSQAModel, spec: LoopSpec) -> list[dict]:
    """Heads learn ``head_lr_scale`` times faster than the encoder (they start from scratch)."""
    heads = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    encoder = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    return [
        {"params": encoder, "lr": spec.lr},
        {"params": heads, "lr": spec.lr * spec.head_lr_scale},
    ]


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
) -> dict:
    """Run the loop; returns the last logged record. ``task(*batch) -> (loss, stats)``."""
    rank, world = dist_info()
    device = device or device_for(rank)
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_path, metrics_path = out / "last.ckpt", out / "metrics.jsonl"
    model.to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, spec), weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(spec))
    start, elapsed = 0, 0.0
    if resume and last_path.is_file():
        ckpt = torch.load(last_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start, elapsed = int(ckpt["step"]), float(ckpt.get("elapsed_s", 0.0))
        states = ckpt["rank_states"]
        if len(states) != world:
            raise RuntimeError(f"{last_path} was written by {len(states)} processes; resume with as many")
        _set_rng_state(states[rank]["rng"])
        source.set_state(states[rank]["source"])
        if rank == 0:
            _truncate_metrics(metrics_path, start)
    elif rank == 0 and metrics_path.exists():
        metrics_path.unlink()
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
    try:
        with progress:
            bar = progress.add_task(spec.summary.get("stage", "train"), total=spec.steps, completed=start,
                                    loss=float("nan"), rate=0.0)
            for step in range(start, spec.steps):
                t0 = time.time()
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
                if done % spec.checkpoint_every == 0 or done == spec.steps:
                    states = _gather({"rng": _rng_state(), "source": source.state()}, world)
                    if rank == 0:
                        _atomic_save(last_path, model, optimizer=optimizer.state_dict(),
                                     scheduler=scheduler.state_dict(), step=done, elapsed_s=elapsed,
                                     rank_states=states, training=_summary(spec, done, elapsed, world))
                        plot_metrics(metrics_path, out / "loss.png")
                    if world > 1:
                        dist.barrier()
    finally:
        source.close()
    if rank == 0:
        _atomic_save(out / "final.ckpt", model, training=_summary(spec, spec.steps, elapsed, world),
                     metrics={k: v for k, v in record.items() if k.startswith("val_")})
    if world > 1:
        dist.barrier()
    return record


def _summary(spec: LoopSpec, step: int, elapsed: float, world: int) -> dict:
    return {**spec.summary, "steps": step, "wall_s": round(elapsed, 1), "processes": world}


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
    """Loss (and validation Pearson, when logged) against step."""
    if not metrics_path.exists():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows if "loss" in r], [r["loss"] for r in rows if "loss" in r], label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    val = [r for r in rows if "val_pearson" in r]
    if val:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in val], [r["val_pearson"] for r in val], "o-", color="tab:orange",
                 label="dev Pearson")
        ax2.set_ylabel("dev Pearson")
    ax.set_title(png.parent.name)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
