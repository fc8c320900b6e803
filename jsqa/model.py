"""The JSQA network: a HuBERT-style encoder with a contrastive projection head and a MOS head.

The encoder is `transformers`' ``HubertModel`` built from a ``HubertConfig`` (random
initialisation; nothing is ever downloaded). Frames are mean-pooled into one embedding
per window; ``project`` maps it to an L2-normalised vector for the contrastive stage and
``forward`` maps it to a MOS in [1, 5].

Each window is normalised (zero mean, unit variance) inside ``forward`` so that torch and
the exported ONNX graph see exactly the same computation.

This is the only module of the ``jsqa`` package that imports torch.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import nn
from transformers import HubertConfig, HubertModel

SAMPLE_RATE = 16000
WINDOW_SECONDS = 3.0
HOP_SECONDS = 1.0
SCORE_MIN = 1.0
SCORE_MAX = 5.0
NORM_EPS = 1e-7

# Keys that are ours, not HubertConfig's.
_HEAD_KEYS = ("projection_dim", "head_dropout")

_BASE = {
    "feat_extract_norm": "group",
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_bias": False,
    "hidden_act": "gelu",
    "hidden_dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "layerdrop": 0.0,
    "mask_time_prob": 0.05,
    "mask_feature_prob": 0.0,
    "num_conv_pos_embedding_groups": 16,
    "projection_dim": 128,
    "head_dropout": 0.1,
}

PRESETS: dict[str, dict] = {
    # For tests: well under 1 M parameters, runs in milliseconds.
    "tiny": {
        **_BASE,
        "conv_dim": (32,) * 7,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "projection_dim": 32,
    },
    # Trainable on a 2-core CPU: a 256-channel conv front-end costs about a third of 512.
    "small": {
        **_BASE,
        "conv_dim": (256,) * 7,
        "hidden_size": 256,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "num_conv_pos_embeddings": 128,
    },
    # About the paper's 26 M parameters, for GPUs.
    "paper": {
        **_BASE,
        "conv_dim": (512,) * 7,
        "hidden_size": 512,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "intermediate_size": 2048,
        "num_conv_pos_embeddings": 128,
    },
}


def resolve_config(preset_or_config: str | dict) -> tuple[str, dict]:
    """Return ``(preset name or "custom", full config dict)``."""
    if isinstance(preset_or_config, str):
        if preset_or_config not in PRESETS:
            raise ValueError(f"unknown preset {preset_or_config!r}; choose from {', '.join(PRESETS)}")
        return preset_or_config, copy.deepcopy(PRESETS[preset_or_config])
    config = copy.deepcopy(dict(preset_or_config))
    name = config.pop("preset", "custom")
    base = copy.deepcopy(PRESETS.get(name, _BASE))
    base.update(config)
    return name, base


def hubert_config(config: dict, attn_implementation: str = "sdpa") -> HubertConfig:
    kwargs = {k: v for k, v in config.items() if k not in _HEAD_KEYS}
    for key in ("conv_dim", "conv_kernel", "conv_stride"):
        kwargs[key] = list(kwargs[key])
    hc = HubertConfig(**kwargs)
    hc._attn_implementation = attn_implementation
    return hc


def normalise_windows(audio: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per row (the same in torch and ONNX)."""
    mean = audio.mean(dim=-1, keepdim=True)
    centred = audio - mean
    var = (centred * centred).mean(dim=-1, keepdim=True)
    return centred / torch.sqrt(var + NORM_EPS)


class JSQAModel(nn.Module):
    """``forward(audio [B, T]) -> mos [B]`` in [1, 5]; ``embed``; ``project``."""

    def __init__(self, preset_or_config: str | dict = "small", attn_implementation: str = "sdpa"):
        super().__init__()
        self.preset, self.config = resolve_config(preset_or_config)
        self.encoder = HubertModel(hubert_config(self.config, attn_implementation))
        hidden = self.config["hidden_size"]
        self.projection = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, self.config["projection_dim"])
        )
        self.mos_head = nn.Sequential(
            nn.Dropout(self.config["head_dropout"]),
            nn.Linear(hidden, hidden // 2),
            nn.GELU(),
            nn.Dropout(self.config["head_dropout"]),
            nn.Linear(hidden // 2, 1),
        )

    def set_attn_implementation(self, name: str) -> None:
        """Switch attention kernels ("eager" exports most reliably; "sdpa" trains faster)."""
        self.encoder.config._attn_implementation = name

    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        """Mean-pooled encoder frames, ``[B, hidden]``. Windows have fixed length, so no mask."""
        frames = self.encoder(normalise_windows(audio)).last_hidden_state
        return frames.mean(dim=1)

    def project(self, audio: torch.Tensor) -> torch.Tensor:
        """L2-normalised projection for the contrastive stage, ``[B, projection_dim]``."""
        return nn.functional.normalize(self.projection(self.embed(audio)), dim=-1)

    def mos_from_embedding(self, pooled: torch.Tensor) -> torch.Tensor:
        logit = self.mos_head(pooled).squeeze(-1)
        return SCORE_MIN + (SCORE_MAX - SCORE_MIN) * torch.sigmoid(logit)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.mos_from_embedding(self.embed(audio))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(path: str | os.PathLike, model: JSQAModel, **extra) -> None:
    """Write a checkpoint dict; ``extra`` adds or overrides keys (training, metrics, step...)."""
    ckpt = {
        "preset": model.preset,
        "config": copy.deepcopy(model.config),
        "state_dict": model.state_dict(),
        "sample_rate": SAMPLE_RATE,
        "window_seconds": WINDOW_SECONDS,
        "hop_seconds": HOP_SECONDS,
        "training": {},
        "metrics": {},
    }
    ckpt.update(extra)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)


def load_checkpoint(path: str | os.PathLike, attn_implementation: str = "sdpa") -> tuple[JSQAModel, dict]:
    """Rebuild the model from a checkpoint; returns ``(model in eval mode, checkpoint dict)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    # Checkpoints carry optimizer and RNG state, which need full unpickling.
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path}: not a JSQA checkpoint (needs 'config' and 'state_dict')")
    config = {**ckpt["config"], "preset": ckpt.get("preset", "custom")}
    model = JSQAModel(config, attn_implementation=attn_implementation)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
