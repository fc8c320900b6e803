"""Stage 2: MOS fine-tuning of the encoder plus MOS head (dropout 0.1) on labelled clips.

``init`` is a stage-1 checkpoint (JSQA) or ``"scratch"`` (the same network, randomly
initialised: the ablation's baseline). ``limit`` keeps a seeded random subset of the
labelled clips, the "limited labelled budget" of the paper's comparison.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from jsqa.model import JSQAModel, count_parameters, load_checkpoint, resolve_config

from .configs import TrainConfig
from .datasets import ClipBank, load_items, read_rated, select
from .evaluate import evaluate_model
from .loop import LoopSpec, dist_info, seed_everything, train
from .pretrain import model_spec
from .tasks import ClipSource, MOSTask


def finetune(
    out_dir: str | Path,
    config: TrainConfig,
    data: list[str],
    init: str = "scratch",
    seed: int = 0,
    limit: int | None = None,
    resume: bool = False,
    validate_on: str | None = None,
) -> Path:
    """Train stage 2; returns the path of ``final.ckpt``."""
    rank, _ = dist_info()
    torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    if init == "scratch":
        spec = model_spec(config.model)
        if config.pooling:
            name, full = resolve_config(spec)
            spec = {**full, "preset": name, "pooling": config.pooling}
        model = JSQAModel(spec)
        init_summary = "scratch"
    else:
        model, ckpt = load_checkpoint(init, pooling=config.pooling)
        # The init's own summary nests here, so a model carries its whole training history.
        init_summary = {"checkpoint": str(init), "training": ckpt["training"]}
    seed_everything(seed + rank)
    items = select(load_items(data, config.label), limit, seed)
    features = _teacher_features(data) if config.teacher_relation or config.teacher_hint else None
    bank = ClipBank(items, config.finetune_crop_seconds, balance=config.balance, sources=list(data),
                    limit=limit, seed=seed, speed_perturb=config.speed_perturb, label=config.label,
                    features=features)
    validate = None
    if validate_on:
        dev = read_rated(validate_on)

        def validate(m):
            report = evaluate_model(m, dev)["overall"]
            return {k: report[k] for k in ("pearson", "spearman", "rmse")}

    spec = LoopSpec.from_config(
        config, out_dir, config.finetune_steps, config.finetune_lr,
        head_lr_scale=config.head_lr_scale, validate_every=config.validate_every if validate_on else 0,
        summary={
            "stage": "finetune", "config": config.to_dict(), "seed": seed, "init": init_summary,
            "parameters": count_parameters(model), "labelled_clips": len(items),
            "data": [str(d) for d in data], "validated_on": validate_on,
            "clips_with_teacher_features": sum(it.path in features for it in items) if features else 0,
        },
    )
    source = ClipSource(bank, config.batch_size, seed + 1000 * rank, config.refresh_every)
    # Only the hint standardises the teacher's embedding, so only it pays for the statistics.
    known = np.stack(list(features.values())) if config.teacher_hint else None
    task = MOSTask(model, config.chunk_loss, config.teacher_relation, config.teacher_hint,
                   teacher_mean=known.mean(axis=0) if known is not None else None,
                   teacher_std=known.std(axis=0) + 1e-6 if known is not None else None)
    train(model, task, source, spec,
          resume=resume, validate=validate)
    return Path(out_dir) / "final.ckpt"


def _teacher_features(data: list[str]) -> dict:
    from .teacher_features import load

    features = {path: f for spec in data for path, f in load(spec).items()}
    if not features:
        raise ValueError("--teacher-relation and --teacher-hint need DistillMOS embeddings beside the --data CSVs: "
                         f"run jsqa-train features {' '.join(data)}")
    return features
