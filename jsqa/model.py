"""The JSQA network: an encoder with a contrastive projection head and a MOS head.

Two front-ends feed the transformer body of `transformers`' HuBERT (built from a
``HubertConfig``, randomly initialised; nothing is ever downloaded):

* ``mel`` (the CPU presets ``tiny`` and ``small``): a log-mel spectrogram computed inside
  the graph (the STFT as a fixed convolution, so torch and ONNX compute the same thing),
  floored 8 decades below the window's maximum as Whisper does, so exact digital zeros
  are an ordinary input, not an extreme one; then a strided convolutional stem to 25
  frames a second and ``HubertEncoder``. The log power is absolute, not relative to the
  window's maximum: a call's level (too quiet, overdriven) is part of its quality.
* ``waveform`` (the ``paper`` preset, the paper's network, for GPUs): ``HubertModel``'s
  convolutional waveform front-end on the window normalised to zero mean, unit variance.

Frames are pooled into one embedding per window, by their mean or (``pooling:
"attention"``) by weights the network learns, so pauses and what was said need not count as
much as the sound of the line; ``project`` maps the embedding to an L2-normalised vector for
the contrastive stage and ``forward`` to a MOS in [1, 5].

This is the only module of the ``jsqa`` package that imports torch.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from torch import nn
from transformers import HubertConfig, HubertModel
from transformers.models.hubert.modeling_hubert import HubertEncoder

from .audio import SAMPLE_RATE, hz_to_mel, mel_to_hz

WINDOW_SECONDS = 3.0
HOP_SECONDS = 1.0
SCORE_MIN = 1.0
SCORE_MAX = 5.0
NORM_EPS = 1e-7
# Log-mel front-end: 25 ms windows every 10 ms, floored LOG_FLOOR_DECADES below the maximum.
N_FFT = 400
MEL_HOP = 160
LOG_FLOOR_DECADES = 8.0
POWER_EPS = 1e-10

# Keys that are ours, not HubertConfig's.
_HEAD_KEYS = ("projection_dim", "head_dropout", "frontend", "n_mels", "stem_stride", "chunk_seconds", "pooling")
POOLINGS = ("mean", "attention")

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

# Mel encoders see one CHUNK_SECONDS chunk at a time and a window is the mean of its chunks'
# embeddings, so a stream can encode each hop once and score windows from cached chunks.
_MEL = {**_BASE, "frontend": "mel", "n_mels": 64, "stem_stride": (2, 2), "mask_time_prob": 0.0,
        "chunk_seconds": 1.0}

PRESETS: dict[str, dict] = {
    # For tests: well under 1 M parameters, runs in milliseconds.
    "tiny": {
        **_MEL,
        "n_mels": 32,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "projection_dim": 32,
    },
    # The default CPU encoder: 64 log-mel bands at 25 frames/s, 4 layers x 256.
    "small": {
        **_MEL,
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "num_conv_pos_embeddings": 32,
    },
    # The paper's raw-waveform HuBERT, about its 26 M parameters, for GPUs.
    "paper": {
        **_BASE,
        "frontend": "waveform",
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
        if key in kwargs:
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


def mel_filterbank(n_mels: int, n_fft: int = N_FFT, sr: int = SAMPLE_RATE, fmin: float = 20.0) -> torch.Tensor:
    """Triangular filters on the HTK mel scale, ``[n_mels, n_fft // 2 + 1]``, each of unit area
    (Slaney normalisation) so wide high bands do not dominate."""
    edges = torch.from_numpy(mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(sr / 2), n_mels + 2)))
    freqs = torch.linspace(0, sr / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = torch.clamp(torch.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), min=0.0)
    return (tri * (2.0 / (hi - lo))).float()


class LogMel(nn.Module):
    """``[B, T]`` audio -> ``[B, n_mels, frames]`` log10 mel power floored
    ``LOG_FLOOR_DECADES`` below the clip's maximum and scaled as Whisper does, ``(x + 4) / 4``
    (speech at -26 dBFS spans about -1 to 1). The level stays in the features: pauses of
    digital zeros sit on the floor and room noise just above it. The STFT is a fixed
    convolution (Hann window, no padding) so the exported graph needs no STFT operator."""

    def __init__(self, n_mels: int):
        super().__init__()
        n_freq = N_FFT // 2 + 1
        t = torch.arange(N_FFT, dtype=torch.float64)
        window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64)
        k = torch.arange(n_freq, dtype=torch.float64)[:, None]
        phase = 2 * torch.pi * k * t / N_FFT
        basis = torch.cat([torch.cos(phase) * window, -torch.sin(phase) * window])
        self.register_buffer("basis", basis.float()[:, None, :], persistent=False)
        self.register_buffer("filters", mel_filterbank(n_mels), persistent=False)
        self.n_freq = n_freq

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = nn.functional.conv1d(audio[:, None, :], self.basis, stride=MEL_HOP)
        power = spec[:, : self.n_freq] ** 2 + spec[:, self.n_freq :] ** 2
        # A clamp, not "+ eps": ONNX graph optimisers fold "x + 1e-10" into x, and log(0) of a
        # silent chunk would then be -inf in the exported model.
        logmel = torch.log10(torch.clamp(torch.matmul(self.filters, power), min=POWER_EPS))
        floor = logmel.amax(dim=(1, 2), keepdim=True) - LOG_FLOOR_DECADES
        return (torch.maximum(logmel, floor) + 4.0) / 4.0


class MelEncoder(nn.Module):
    """Log-mel -> strided 1-D convolutions (to 25 frames/s) -> HuBERT's transformer body."""

    def __init__(self, config: dict, attn_implementation: str = "sdpa"):
        super().__init__()
        hidden, n_mels = config["hidden_size"], config["n_mels"]
        self.logmel = LogMel(n_mels)
        layers, channels = [], n_mels
        for stride in config["stem_stride"]:
            layers += [nn.Conv1d(channels, hidden, kernel_size=2 * stride + 1, stride=stride, padding=stride),
                       nn.GELU()]
            channels = hidden
        self.stem = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(hidden)
        self.config = hubert_config(config, attn_implementation)
        self.body = HubertEncoder(self.config)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        frames = self.stem(self.logmel(audio)).transpose(1, 2)
        return self.body(self.norm(frames)).last_hidden_state


class WaveformEncoder(nn.Module):
    """The paper's encoder: ``HubertModel`` on the normalised waveform."""

    def __init__(self, config: dict, attn_implementation: str = "sdpa"):
        super().__init__()
        self.hubert = HubertModel(hubert_config(config, attn_implementation))
        self.config = self.hubert.config

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.hubert(normalise_windows(audio)).last_hidden_state


class JSQAModel(nn.Module):
    """``forward(audio [B, T]) -> mos [B]`` in [1, 5]; ``embed``; ``project``."""

    def __init__(self, preset_or_config: str | dict = "small", attn_implementation: str = "sdpa"):
        super().__init__()
        self.preset, self.config = resolve_config(preset_or_config)
        frontend = self.config.get("frontend", "waveform")
        if frontend not in ("mel", "waveform"):
            raise ValueError(f"frontend must be 'mel' or 'waveform', got {frontend!r}")
        encoder = MelEncoder if frontend == "mel" else WaveformEncoder
        self.encoder = encoder(self.config, attn_implementation)
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
        self.pooling = self.config.get("pooling", "mean")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.pooling == "attention":
            # Zero weights pool as the mean does, so a mean-pooled network carries over unchanged.
            self.frame_score = nn.Linear(hidden, 1)
            nn.init.zeros_(self.frame_score.weight)
            nn.init.zeros_(self.frame_score.bias)

    def set_attn_implementation(self, name: str) -> None:
        """Switch attention kernels ("eager" exports most reliably; "sdpa" trains faster)."""
        self.encoder.config._attn_implementation = name

    @property
    def chunk_samples(self) -> int:
        """Samples per independently encoded chunk (0: the whole window at once)."""
        return int(round((self.config.get("chunk_seconds") or 0) * SAMPLE_RATE))

    @property
    def chunk_embedding_size(self) -> int:
        """Width of a chunk embedding: the pooled frames, plus with attention pooling the
        log of the chunk's total attention, which weighs it against the window's other chunks."""
        return self.config["hidden_size"] + (self.pooling == "attention")

    def pool_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``[N, frames, hidden]`` -> ``[N, chunk_embedding_size]``."""
        if self.pooling == "mean":
            return frames.mean(dim=1)
        scores = self.frame_score(frames)
        pooled = (torch.softmax(scores, dim=1) * frames).sum(dim=1)
        return torch.cat([pooled, torch.logsumexp(scores, dim=1)], dim=-1)

    def pool_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        """``[..., n, chunk_embedding_size]`` -> ``[..., hidden]``. With attention this is
        exactly attention over all the window's frames, so a stream can pool cached chunks."""
        if self.pooling == "mean":
            return chunks.mean(dim=-2)
        weights = torch.softmax(chunks[..., -1:], dim=-2)
        return (weights * chunks[..., :-1]).sum(dim=-2)

    def encode_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        """``[N, chunk_samples]`` -> one embedding per chunk, ``[N, chunk_embedding_size]``."""
        return self.pool_frames(self.encoder(chunks))

    def chunk_embeddings(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``[B, chunks, chunk_embedding_size]``, one embedding per chunk (a last
        partial chunk is zero-padded, like a pause); without chunks, one for the whole window."""
        size = self.chunk_samples
        if not size:
            return self.pool_frames(self.encoder(audio))[:, None]
        batch = audio.shape[0]
        padded = nn.functional.pad(audio, (0, (size - audio.shape[1] % size) % size))
        chunks = self.encode_chunks(padded.reshape(-1, size))
        return chunks.reshape(batch, -1, chunks.shape[-1])

    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``[B, hidden]``: the chunk embeddings pooled."""
        return self.pool_chunks(self.chunk_embeddings(audio))

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


def load_checkpoint(
    path: str | os.PathLike, attn_implementation: str = "sdpa", pooling: str | None = None
) -> tuple[JSQAModel, dict]:
    """Rebuild the model from a checkpoint; returns ``(model in eval mode, checkpoint dict)``.
    ``pooling="attention"`` loads a mean-pooled network into attention pooling (which starts
    as the mean, so it scores the same); the other way would drop trained weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    # Checkpoints carry optimizer and RNG state, which need full unpickling.
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path}: not a JSQA checkpoint (needs 'config' and 'state_dict')")
    config = {**ckpt["config"], "preset": ckpt.get("preset", "custom")}
    saved = config.get("pooling", "mean")
    if pooling and pooling != saved:
        if saved != "mean":
            raise ValueError(f"{path}: has {saved} pooling, which cannot be turned into {pooling} pooling")
        config["pooling"] = pooling
    model = JSQAModel(config, attn_implementation=attn_implementation)
    converted = model.pooling != saved
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=not converted)
    if converted:
        # The attention weights are the only new ones; they start at zero, which is the mean.
        if unexpected or not all(k.startswith("frame_score.") for k in missing):
            raise ValueError(f"{path}: weights do not match its config (missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)})")
        ckpt["config"] = {**ckpt["config"], "pooling": model.pooling}
    model.eval()
    return model, ckpt
