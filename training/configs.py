"""Training presets (plain Python). Command-line flags override any field.

``tiny``: tests (seconds). ``small``: this project's 2-core CPU budget (the shipped model).
``paper``: the paper's scale (26 M parameters, 30 s clips were theirs; 3 s here because the
runtime scores 3 s windows), for GPUs: one GPU, or several under ``torchrun``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

# The training label: the corpus CSVs' own (the teachers' mean), or recomputed from their
# teachers' columns with DistillMOS rescaled per talker (teachers.talker_normalised).
LABEL_MIXES = ("mean", "talker-normalised")



@dataclass(frozen=True)
class TrainConfig:
    model: str | dict = "small"
    # stage 1
    pretrain_steps: int = 1000
    crop_seconds: float = 2.0
    groups: int = 4
    per_group: int = 4
    temperature: float = 0.1
    center: bool = True
    jnd_db: float = 3.0
    impairments: str = "all"
    pretrain_lr: float = 5e-4
    # with until_flat, pretrain_steps is a cap: stop once the moving average (over flat_window
    # steps) of the contrastive loss has not fallen by the fraction flat_delta for
    # flat_patience steps (see plateau.py)
    until_flat: bool = False
    flat_window: int = 200
    flat_patience: int = 500
    flat_delta: float = 0.01
    # stage 2
    finetune_steps: int = 600
    finetune_crop_seconds: float = 3.0
    batch_size: int = 16
    finetune_lr: float = 2e-4
    head_lr_scale: float = 5.0
    balance: bool = True
    speed_perturb: float = 0.0
    chunk_loss: float = 0.0
    # weight of matching DistillMOS's relations between the batch's clips (training/teacher_features.py)
    teacher_relation: float = 0.0
    # weight of predicting DistillMOS's embedding through a training-only linear head (a hint)
    teacher_hint: float = 0.0
    # frame pooling of the fine-tuned network ("mean" or "attention"); None keeps the init's
    pooling: str | None = None
    label: str = "mean"  # one of LABEL_MIXES
    refresh_every: int = 0
    # both
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 5.0
    checkpoint_every: int = 50
    log_every: int = 5
    validate_every: int = 100
    threads: int = 2

    def to_dict(self) -> dict:
        return asdict(self)

    def override(self, **changes) -> "TrainConfig":
        names = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in changes.items() if k in names and v is not None})


PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(
        model="tiny", pretrain_steps=6, crop_seconds=0.5, groups=2, per_group=2,
        impairments="noise", finetune_steps=6, finetune_crop_seconds=0.5, batch_size=4,
        warmup_steps=1, checkpoint_every=2, log_every=1, validate_every=0, threads=1,
    ),
    # The shipped model's recipe on a 2-core CPU (see the model card): the log-mel "small"
    # encoder, batches of 16 x 3 s crops of the teacher-labelled corpus.
    "small": TrainConfig(
        model="small", threads=2, pretrain_steps=2000, crop_seconds=2.0, pretrain_lr=3e-4,
        finetune_steps=3000, batch_size=16, finetune_lr=5e-4, warmup_steps=150, checkpoint_every=100,
        log_every=10, validate_every=500,
    ),
    "paper": TrainConfig(
        model="paper", pretrain_steps=50000, crop_seconds=3.0, groups=16, per_group=4,
        pretrain_lr=3e-4, finetune_steps=20000, batch_size=32, finetune_lr=1e-4,
        warmup_steps=1000, checkpoint_every=1000, log_every=20, validate_every=1000, threads=8,
    ),
}


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown config {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]
