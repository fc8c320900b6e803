"""JND pair sampler: contrastive batches of degraded speech whose quality differs by more
or less than a just-noticeable difference (JND).

Definition (the JSQA paper's stage 1, extended):

* Every item is a crop of clean speech passed through one impairment family of
  :data:`jsqa.degrade.FAMILIES` at one parameter value. The default family is additive
  noise, parameter = SNR in dB against the active speech level (ITU-T P.56), whose JND is
  ``jnd_db`` (default 3 dB, the median SNR JND for speech in noise, McShefferty, Whitmer &
  Akeroyd 2015, Trends in Hearing 19). The other families' JND axes and steps are declared
  with the families (see :mod:`jsqa.degrade.families`).
* Two items are **positives** when they share the family (and its variant, e.g. the
  concealment of packet loss) and their JND parameters differ by less than one step,
  whatever their speech content, talker or noise recording: they sound equally degraded,
  so the embedding must ignore the words and keep the quality.
* Every other pair is a **negative**: a parameter differs by at least one JND step, or the
  impairments differ in kind.

A batch holds ``groups`` groups of ``per_group`` items. Each group draws a family and a
centre; its members draw *independent* speech crops, noise segments and talkers, with the
JND parameter jittered within +-0.45 steps of the centre, so every pair inside a group is a
positive. Positives across groups count too (the mask is computed pairwise from the drawn
parameters, never from group ids).

With ``impairments="all"`` (the paper's open question 1) a group may carry any family;
non-noise groups have background noise half the time (noise is then compared as well).

The sampler is deterministic for a seed (one ``numpy.random.Generator`` drives every
draw; its state can be saved and restored for exact resumption) and can append a JSON
line per batch describing every item it drew (``manifest``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE
from .degrade import FAMILIES, TalkerPool, build_chain
from .degrade.families import same_quality

JND_SNR_DB = 3.0
_JITTER = 0.45  # of a JND step: members of a group stay within one step of each other


@dataclass
class JNDBatch:
    """``audio [B, T]`` float32, ``params`` (one dict per item), ``positives [B, B]`` bool
    (diagonal False), ``groups [B]`` int."""

    audio: np.ndarray
    params: list[dict]
    positives: np.ndarray
    groups: np.ndarray


def positive_mask(params: list[dict], jnd_db: float = JND_SNR_DB) -> np.ndarray:
    """Pairwise positives from drawn parameters (see the module docstring)."""
    n = len(params)
    mask = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(i + 1, n):
            mask[i, j] = mask[j, i] = _same_quality(params[i], params[j], jnd_db)
    return mask


def _same_quality(a: dict, b: dict, jnd_db: float) -> bool:
    if a["kind"] != b["kind"]:
        return False
    # Noise accompanies any item (snr None = no noise); it is compared in all kinds.
    if (a["snr_db"] is None) != (b["snr_db"] is None):
        return False
    if a["snr_db"] is not None and abs(a["snr_db"] - b["snr_db"]) >= jnd_db:
        return False
    return a["kind"] == "noise" or same_quality(_step(a), _step(b))


def _step(p: dict) -> dict:
    """The family step of an item (its parameters without the accompanying noise)."""
    return {k: v for k, v in p.items() if k not in ("snr_db", "noise")}


class NoiseBank:
    """Noise recordings (:class:`jsqa.noises.NoisePool`) plus generated noises
    (``white``, ``pink``, ``brown``, ``speech_shaped``, and ``babble`` built from
    ``babble_talkers``); a generated one is drawn ``generated_fraction`` of the time."""

    def __init__(self, files: list[Path], generated: tuple[str, ...] = (),
                 babble_talkers: list[Path] | None = None, generated_fraction: float = 0.25):
        from . import noises

        self.pool = noises.NoisePool(list(files)) if files else None
        self.generated = {}
        for name in generated:
            if name == "babble":
                if not babble_talkers:
                    raise ValueError("babble noise needs talker recordings (babble_talkers)")
                self.generated[name] = noises.Babble(list(babble_talkers))
            else:
                self.generated[name] = noises.NAMED_NOISES[name]
        if self.pool is None and not self.generated:
            raise ValueError("no noise: give noise files or generated noise names")
        self.generated_fraction = generated_fraction if self.pool is not None else 1.0
        self.names = sorted(self.generated)

    def segment(self, n: int, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        """``(name, n samples)`` of one noise at the noise module's fixed RMS level."""
        if self.generated and rng.random() < self.generated_fraction:
            name = self.names[int(rng.integers(len(self.names)))]
            return name, self.generated[name](n, rng)
        path, x = self.pool.sample(n, rng)
        return f"{Path(path).parent.name}/{Path(path).stem}", x


class _Sources:
    def __init__(self, speech: TalkerPool, noise: NoiseBank, item: dict):
        self.speech, self.bank, self.item = speech, noise, item

    def noise(self, n, rng):
        name, seg = self.bank.segment(n, rng)
        self.item["noise"] = name
        return name, seg

    def talker(self, n, rng):
        return self.speech.crop(n, rng)


@dataclass
class JNDSampler:
    """Draws :class:`JNDBatch` es on the fly (see the module docstring for the definition).

    ``impairments`` is ``"noise"`` (the paper) or ``"all"``. ``kind_weights`` sets how often
    each family is drawn in ``all`` mode (default: noise alone half the time).
    """

    speech: TalkerPool
    noise: NoiseBank
    crop_seconds: float = 2.0
    groups: int = 4
    per_group: int = 4
    jnd_db: float = JND_SNR_DB
    impairments: str = "noise"
    seed: int = 0
    manifest: str | os.PathLike | None = None
    kind_weights: dict | None = None
    rng: np.random.Generator = field(init=False)

    def __post_init__(self):
        if self.impairments not in ("noise", "all"):
            raise ValueError(f"impairments must be 'noise' or 'all', got {self.impairments!r}")
        self.rng = np.random.default_rng(self.seed)
        if self.impairments == "noise":
            self.kind_weights = {"noise": 1.0}
        elif self.kind_weights is None:
            others = [k for k in FAMILIES if k != "noise"]
            self.kind_weights = {"noise": 0.5, **{k: 0.5 / len(others) for k in others}}
        unknown = set(self.kind_weights) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown impairment families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")

    # -- state, for exact resumption
    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def __iter__(self):
        while True:
            yield self.batch()

    def batch(self) -> JNDBatch:
        n = int(round(self.crop_seconds * SAMPLE_RATE))
        audio, params, groups = [], [], []
        for g in range(self.groups):
            centre = self._centre()
            for _ in range(self.per_group):
                p = self._jitter(centre)
                audio.append(self.render(p, n))
                params.append(p)
                groups.append(g)
        batch = JNDBatch(
            audio=np.stack(audio).astype(np.float32),
            params=params,
            positives=positive_mask(params, self.jnd_db),
            groups=np.asarray(groups),
        )
        if self.manifest is not None:
            with open(self.manifest, "a") as fh:
                fh.write(json.dumps({"items": params}) + "\n")
        return batch

    def _centre(self) -> dict:
        kinds = list(self.kind_weights)
        weights = np.asarray([self.kind_weights[k] for k in kinds], dtype=float)
        kind = kinds[self.rng.choice(len(kinds), p=weights / weights.sum())]
        snr = FAMILIES["noise"].params["snr_db"]
        # Non-noise groups are noise-free half the time, so their own impairment shows.
        with_noise = kind == "noise" or self.rng.random() < 0.5
        centre = {"kind": kind, "snr_db": snr.draw(self.rng) if with_noise else None}
        if kind != "noise":
            centre.update(FAMILIES[kind].draw(self.rng))
        return centre

    def _jitter(self, centre: dict) -> dict:
        p = dict(centre)
        if p["snr_db"] is not None:
            p["snr_db"] = round(p["snr_db"] + float(self.rng.uniform(-_JITTER, _JITTER)) * self.jnd_db, 3)
        if p["kind"] != "noise":
            fam = FAMILIES[p["kind"]]
            name, step = fam.jnd
            param = fam.params[name]
            if step is not None:
                shift = float(self.rng.uniform(-_JITTER, _JITTER)) * step
                p[name] = round(2 ** (np.log2(p[name]) + shift) if param.log else p[name] + shift, 4)
        return p

    def render(self, p: dict, n: int) -> np.ndarray:
        """One item: a fresh speech crop through the impairment the parameters describe."""
        rng = self.rng
        x = self.speech.crop(n, rng)
        recipe = [] if p["kind"] == "noise" else [_step(p)]
        if p["snr_db"] is not None:
            recipe.append({"kind": "noise", "snr_db": p["snr_db"]})
        order = list(FAMILIES)
        recipe.sort(key=lambda step: order.index(step["kind"]))
        y = build_chain(recipe, n, rng, _Sources(self.speech, self.noise, p))(x, rng) if recipe else x
        return _fit(np.asarray(y, dtype=np.float32), n)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Guard against an impairment returning a sample more or less (codec padding)."""
    if x.size >= n:
        return x[:n]
    return np.pad(x, (0, n - x.size))
