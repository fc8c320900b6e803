"""Teachers: the models whose mean score is the training label (we have no human-rated
training corpus). Each gives one CSV column in its own units and a mapping to MOS 1-5.

* ``pesq_wb``: ITU-T P.862.2 MOS-LQO against the clean source (intrusive); 1.04..4.64 is
  stretched linearly onto 1..5, so a clip identical to its source scores 5, and its floor is
  lifted (``FLOOR_LIFT``).
* ``distillmos``: DistillMOS v7 (Stahl & Gamper 2025, MIT; weights inside its wheel),
  non-intrusive, trained by its authors on human MOS: the best-calibrated teacher here.

The label is the plain mean of their MOS-scale scores (``label``), or, with
``talker_normalised``, the same mean after DistillMOS is rescaled per talker.

Teachers are the ``teachers`` extra, never a runtime dependency.
"""

from __future__ import annotations

import contextlib
import io
import sys
import types
from collections import defaultdict

import numpy as np

from jsqa.audio import SAMPLE_RATE

LQO_MIN, LQO_MAX = 1.04, 4.64

# P.862.2 saturates at its floor: from about 20 dB SNR down every clip reads 1.0-1.5, where
# listeners still hear 2-3 (the mean of the teachers read 0.86 MOS low on p835_refcond). Below
# the crossing at 3.0 the stretched score is replaced by DistillMOS's mean score at that
# PESQ-WB on the training corpora (train-v2 + train-v3, 32 000 clips; bins of +-0.125);
# above it the stretch stays, so a clip identical to its source still scores 5.
FLOOR_LIFT = ((1.0, 1.65), (1.25, 2.1), (1.5, 2.4), (1.75, 2.55), (2.0, 2.7), (2.5, 2.85), (3.0, 3.0))


def pesq_to_mos(lqo: float) -> float:
    stretched = float(np.clip(1.0 + 4.0 * (lqo - LQO_MIN) / (LQO_MAX - LQO_MIN), 1.0, 5.0))
    knots, lifted = zip(*FLOOR_LIFT)
    return max(stretched, float(np.interp(stretched, knots, lifted)))


class PesqWB:
    name = "pesq_wb"

    def __call__(self, clean: np.ndarray, degraded: np.ndarray) -> float:
        from pesq import pesq

        try:
            return float(pesq(SAMPLE_RATE, clean.astype(np.float64), degraded.astype(np.float64), "wb"))
        except Exception:  # pesq refuses signals it finds no speech in
            return float("nan")

    @staticmethod
    def to_mos(value: float) -> float:
        return pesq_to_mos(value)


class DistillMOS:
    name = "distillmos"

    def __init__(self):
        import torch

        # distillmos imports torchaudio for its command-line script only; torchaudio does
        # not load beside our torch, and we read and resample audio ourselves.
        sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
        try:
            import distillmos
        except ImportError as e:
            raise ImportError(
                "the distillmos teacher needs: pip install --no-deps distillmos xls-r-sqa") from e
        self.torch = torch
        # It prints where its weights lie on stdout, which would land inside reports and tables.
        with contextlib.redirect_stdout(io.StringIO()):
            self.model = distillmos.ConvTransformerSQAModel(load_weights=True).eval()

    def __call__(self, clean: np.ndarray, degraded: np.ndarray) -> float:
        if not np.any(degraded):
            return float("nan")
        with self.torch.inference_mode():
            return float(self.model(self.torch.from_numpy(degraded.astype(np.float32))[None]).item())

    def embedding(self, degraded: np.ndarray) -> np.ndarray:
        """The clip's attention-pooled quality embedding (200 numbers): what its last linear
        layer maps to the score."""
        pooled = []
        hook = self.model.transformer_pool_attn.pool.linear3.register_forward_hook(
            lambda module, inputs, output: pooled.append(inputs[0]))
        try:
            with self.torch.inference_mode():
                self.model(self.torch.from_numpy(degraded.astype(np.float32))[None])
        finally:
            hook.remove()
        # Inputs longer than 7.68 s are scored in several segments; their embeddings are averaged too.
        return pooled[0].mean(dim=0).numpy().astype(np.float32)

    @staticmethod
    def to_mos(value: float) -> float:
        return float(value)


TEACHERS = {"pesq_wb": PesqWB, "distillmos": DistillMOS}
DEFAULT_TEACHERS = ("pesq_wb", "distillmos")


def make_teachers(names) -> list:
    """Teacher instances for names (strings) or ready teacher objects (tests pass fakes)."""
    out = []
    for t in names:
        if isinstance(t, str):
            if t not in TEACHERS:
                raise ValueError(f"unknown teacher {t!r}; choose from {', '.join(TEACHERS)}")
            t = TEACHERS[t]()
        out.append(t)
    return out


def label(values: dict[str, float], teachers) -> float:
    """The plain mean of the teachers' MOS-scale scores (those that gave one)."""
    scores = [t.to_mos(values[t.name]) for t in teachers if np.isfinite(values.get(t.name, np.nan))]
    return float(np.mean(scores)) if scores else float("nan")


def label_of_row(row: dict) -> float:
    """The label of a labels-CSV row, from the teachers' columns it holds: a corpus keeps each
    teacher's raw output, so a change to a teacher's MOS scale relabels it without a rerun. A
    row without a known teacher's column keeps its label."""
    present = [TEACHERS[name] for name in row if name in TEACHERS]
    if not present:
        return float(row["mos"])
    return label({t.name: float(row[t.name]) for t in present}, present)


def talker_normalised(rows: list[dict]) -> list[float]:
    """Labels of corpus rows with DistillMOS rescaled about 1 per talker, so that every talker's
    clean clips average the same (the mean over all clean clips).

    DistillMOS rates the clean recordings of one talker apart from another's by as much as its
    impairment families apart (clean speechocean762 talkers 2.6-3.9, the Spanish IVR voice
    3.0, a VCTK talker 4.0). A student cannot learn that part of the label for a talker it
    has not heard, and a monitor should not flag a clean call for its talker. The rescaling
    keeps each clip's distance from the floor in proportion, so impairments rank as before.
    """
    clean = defaultdict(list)
    for row in rows:
        score = float(row["distillmos"])
        if row["condition"] == "clean" and np.isfinite(score):
            clean[row["talker"]].append(score)
    if not clean:
        raise ValueError("no clean clips to take each talker's reference from")
    target = float(np.mean([s for scores in clean.values() for s in scores]))
    reference = {t: float(np.mean(scores)) for t, scores in clean.items()}
    out = []
    for row in rows:
        score = float(row["distillmos"])
        scale = (target - 1.0) / (reference.get(row["talker"], target) - 1.0)
        rescaled = float(np.clip(1.0 + (score - 1.0) * scale, 1.0, 5.0))
        out.append(label_of_row({**row, "distillmos": rescaled}))
    return out
