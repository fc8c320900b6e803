"""The weight average of fine-tuned checkpoints of one network (a "model soup", Wortsman et
al. 2022): runs that share an ancestor sit in one basin, and their mean often scores better
than either on unseen data, at no cost at run time."""

from __future__ import annotations

from pathlib import Path

import torch

from jsqa.model import load_checkpoint, save_checkpoint


def average_checkpoints(paths: list[str | Path], out: str | Path) -> Path:
    """Write the equal-weight mean of ``paths``' weights to ``out``; the training summary
    lists the averaged checkpoints with their own summaries, so the history stays whole."""
    if len(paths) < 2:
        raise ValueError("give at least two checkpoints to average")
    loaded = [load_checkpoint(p) for p in paths]
    if any(m.pooling == "attention" for m, _ in loaded):
        # A mean-pooled network is the attention-pooled one with zero attention weights.
        loaded = [(m, c) if m.pooling == "attention" else load_checkpoint(p, pooling="attention")
                  for p, (m, c) in zip(paths, loaded)]
    models, ckpts = zip(*loaded)
    first = ckpts[0]
    for p, c in zip(paths[1:], ckpts[1:]):
        if c.get("preset") != first.get("preset") or c["config"] != first["config"]:
            raise ValueError(f"{p}: another network than {paths[0]}; only one network's runs can be averaged")
    states = [m.state_dict() for m in models]
    mean = {k: torch.stack([s[k] for s in states]).mean(dim=0) if v.is_floating_point() else v
            for k, v in states[0].items()}
    model = models[0]
    model.load_state_dict(mean)
    save_checkpoint(out, model, training={
        "stage": "average", "averaged": [{"checkpoint": str(p), "training": c["training"]} for p, c in zip(paths, ckpts)],
    })
    return Path(out)
