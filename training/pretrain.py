"""Stage 1: perceptual contrastive pretraining on JND batches drawn on the fly.

The encoder and projection head learn from :class:`jsqa.jnd.JNDSampler` batches with the
supervised-contrastive loss of :mod:`jsqa.training.losses`. Speech and noise default to the
shared data's training split (the held-out talker and noise recordings are never read).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from jsqa.degrade import TalkerPool
from jsqa.jnd import JNDSampler, NoiseBank
from jsqa.model import JSQAModel, count_parameters

from .configs import TrainConfig
from .datasets import GENERATED_NOISES, noise_files, speech_files
from .loop import LoopSpec, dist_info, seed_everything, train
from .plateau import Plateau
from .tasks import ContrastiveTask, JNDSource


def model_spec(name_or_json: str | dict) -> str | dict:
    """A model preset name, a config dict, or a JSON file / string holding a custom config."""
    if isinstance(name_or_json, dict):
        return name_or_json
    if name_or_json.endswith(".json"):
        return json.loads(Path(name_or_json).read_text())
    if name_or_json.lstrip().startswith("{"):
        return json.loads(name_or_json)
    return name_or_json


def pretrain(
    out_dir: str | Path,
    config: TrainConfig,
    speech: str | None = None,
    noise: str | None = None,
    generated: tuple[str, ...] = GENERATED_NOISES,
    seed: int = 0,
    resume: bool = False,
    manifest: str | None = None,
) -> Path:
    """Train stage 1; returns the path of ``final.ckpt``. With ``config.until_flat`` it stops
    early once the contrastive gap flattens (``config.pretrain_steps`` is then a cap)."""
    rank, _ = dist_info()
    torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    model = JSQAModel(model_spec(config.model))
    seed_everything(seed + rank)
    speech_list = speech_files(speech, "train")
    noise_list = noise_files(noise, "train")
    sampler = JNDSampler(
        TalkerPool.from_files(speech_list), NoiseBank(noise_list, generated, babble_talkers=speech_list),
        crop_seconds=config.crop_seconds, groups=config.groups, per_group=config.per_group,
        jnd_db=config.jnd_db, impairments=config.impairments, seed=seed + 1000 * rank,
        manifest=manifest if rank == 0 else None,
    )
    spec = LoopSpec.from_config(
        config, out_dir, config.pretrain_steps, config.pretrain_lr,
        summary={
            "stage": "pretrain", "config": config.to_dict(), "seed": seed,
            "parameters": count_parameters(model), "speech_files": len(speech_list),
            "noise_files": len(noise_list), "generated_noises": list(generated),
            "objective": f"SupCon over JND positives (JND {config.jnd_db} dB SNR), t={config.temperature}",
        },
    )
    stop = Plateau(config.flat_window, config.flat_patience, config.flat_delta) if config.until_flat else None
    train(model, ContrastiveTask(model, config.temperature, config.center), JNDSource(sampler), spec,
          resume=resume, stop=stop)
    return Path(out_dir) / "final.ckpt"
