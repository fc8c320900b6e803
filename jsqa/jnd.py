"""JND pair sampler: contrastive batches of degraded speech whose quality differs by more
or less than a just-noticeable difference (JND).

Definition (the JSQA paper's stage 1, extended):

* Every item is a crop of clean speech passed through one impairment *axis* at one
  parameter value. The default axis is additive noise, parameter = SNR in dB against the
  active speech level (ITU-T P.56). The JND of that axis is ``jnd_db`` (default 3 dB, the
  median SNR JND for speech in noise, McShefferty, Whitmer & Akeroyd 2015, Trends in
  Hearing 19).
* Two items are **positives** when they share the axis and every parameter differs by
  less than that axis's JND step (``|SNR_i - SNR_j| < jnd_db`` for noise), whatever their
  speech content, talker or noise recording: they sound equally degraded, so the
  embedding must ignore the words and keep the quality.
* Every other pair is a **negative**: a parameter differs by at least one JND step, or the
  impairments differ in kind.

A batch holds ``groups`` groups of ``per_group`` items. Each group draws an axis and a
centre value; its members draw *independent* speech crops, noise segments and talkers,
with parameters jittered within +-0.45 JND steps of the centre, so every pair inside a
group is a positive. Positives across groups count too (the mask is computed pairwise
from the drawn parameters, never from group ids).

With ``impairments="all"`` (the paper's open question 1) a group may instead, or in
addition to noise, carry a codec, G.711 narrowband telephony, packet loss, clipping,
reverberation, echo or a competing talker. The JND step of each parameter:

=================  ===================  ===========  =============================================
axis               parameter            JND step     why
=================  ===================  ===========  =============================================
noise              SNR (dB)             3 dB         McShefferty et al. 2015
competing talker   SIR (dB)             3 dB         a talker is a masker: same SNR JND
echo               attenuation (dB)     3 dB         echo-to-speech ratio, treated like an SNR
reverb             RT60 (log2 s)        0.07 (5 %)   ISO 3382-1 Annex A: JND of reverberation 5 %
clipping           level (dB re peak)   1.5 dB       assumption (no published JND)
packet loss        rate (log2)          0.5          assumption: half an octave of loss rate
                                                     (x1.41); no published JND
codec, narrowband  bitrate / on-off     discrete     each setting is its own level
=================  ===================  ===========  =============================================

Packet loss groups also draw a variant (burst length 1 or 3 frames, zero insertion or
repetition concealment); items are positives only within one variant.

The sampler is deterministic for a seed (one ``numpy.random.Generator`` drives every
draw; its state can be saved and restored for exact resumption) and can append a JSON
line per batch describing every item it drew (``manifest``).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import impairments as imp
from .audio import SAMPLE_RATE, load_audio

JND_SNR_DB = 3.0

NOISE_SNR_RANGE = (-5.0, 40.0)
_JITTER = 0.45  # of a JND step: members of a group stay within one step of each other
# Packet loss also varies in kind: (mean burst length in frames, concealment).
PACKET_LOSS_VARIANTS = ((1.0, "zero"), (1.0, "repeat"), (3.0, "zero"), (3.0, "repeat"))


@dataclass(frozen=True)
class Axis:
    """One impairment axis: a parameter range and its JND step (``None``: discrete values)."""

    name: str
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    values: tuple = ()


def default_axes(jnd_db: float = JND_SNR_DB) -> dict[str, Axis]:
    """The axes used with ``impairments="all"`` (``noise`` alone otherwise)."""
    return {
        "noise": Axis("noise", *NOISE_SNR_RANGE, step=jnd_db),
        "talker": Axis("talker", 0.0, 30.0, step=jnd_db),
        "echo": Axis("echo", 3.0, 30.0, step=jnd_db),
        "reverb": Axis("reverb", math.log2(0.2), math.log2(1.5), step=math.log2(1.05)),
        "clipping": Axis("clipping", -24.0, -1.0, step=1.5),
        "packet_loss": Axis("packet_loss", math.log2(0.01), math.log2(0.3), step=0.5),
        "narrowband": Axis("narrowband", values=("bandpass", "mulaw", "alaw")),
        "codec": Axis(
            "codec",
            values=(
                ("opus", 6), ("opus", 8), ("opus", 12), ("opus", 24),
                ("amr-nb", 4.75), ("amr-nb", 7.95), ("amr-nb", 12.2), ("gsm", 13), ("mp3", 16), ("mp3", 32),
            ),
        ),
    }


@dataclass
class JNDBatch:
    """``audio [B, T]`` float32, ``params`` (one dict per item), ``positives [B, B]`` bool
    (diagonal False), ``groups [B]`` int."""

    audio: np.ndarray
    params: list[dict]
    positives: np.ndarray
    groups: np.ndarray


def positive_mask(params: list[dict], axes: dict[str, Axis]) -> np.ndarray:
    """Pairwise positives from drawn parameters (see the module docstring)."""
    n = len(params)
    mask = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(i + 1, n):
            mask[i, j] = mask[j, i] = _same_quality(params[i], params[j], axes)
    return mask


def _same_quality(a: dict, b: dict, axes: dict[str, Axis]) -> bool:
    if a["kind"] != b["kind"] or a.get("variant") != b.get("variant"):
        return False
    # Noise accompanies every item (snr None = no noise); it is compared in all kinds.
    if (a["snr_db"] is None) != (b["snr_db"] is None):
        return False
    if a["snr_db"] is not None and abs(a["snr_db"] - b["snr_db"]) >= axes["noise"].step:
        return False
    if a["kind"] == "noise":
        return True
    axis = axes[a["kind"]]
    if axis.step is None:
        return a["value"] == b["value"]
    return abs(a["value"] - b["value"]) < axis.step


class SpeechPool:
    """Clean speech files grouped by talker (their folder); crops long enough by joining
    utterances of one talker."""

    def __init__(self, files: list[Path]):
        if not files:
            raise ValueError("no speech files: point --speech at a folder of clean speech")
        self.files = [Path(f) for f in files]
        self.by_talker: dict[str, list[Path]] = defaultdict(list)
        for f in self.files:
            self.by_talker[f.parent.name].append(f)
        self.talkers = sorted(self.by_talker)
        self._cache: dict[Path, np.ndarray] = {}

    def load(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            self._cache[path] = load_audio(path)
        return self._cache[path]

    def crop(self, n: int, rng: np.random.Generator, talker: str | None = None) -> np.ndarray:
        """``n`` samples of one talker (random if None), utterances joined by short pauses."""
        talker = talker or self.talkers[rng.integers(len(self.talkers))]
        files = self.by_talker[talker]
        parts, total = [], 0
        while total < n:
            x = self.load(files[rng.integers(len(files))])
            parts += [x, np.zeros(int(rng.integers(800, 4800)), np.float32)]
            total += x.size + parts[-1].size
        joined = np.concatenate(parts)
        start = int(rng.integers(0, joined.size - n + 1))
        return joined[start : start + n]


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


@dataclass
class JNDSampler:
    """Draws :class:`JNDBatch` es on the fly (see the module docstring for the definition).

    ``impairments`` is ``"noise"`` (the paper) or ``"all"``. ``kind_weights`` sets how often
    each axis is drawn in ``all`` mode (default: noise-only half the time).
    """

    speech: SpeechPool
    noise: NoiseBank
    crop_seconds: float = 2.0
    groups: int = 4
    per_group: int = 4
    jnd_db: float = JND_SNR_DB
    impairments: str = "noise"
    seed: int = 0
    manifest: str | os.PathLike | None = None
    kind_weights: dict | None = None
    axes: dict = field(init=False)
    rng: np.random.Generator = field(init=False)

    def __post_init__(self):
        if self.impairments not in ("noise", "all"):
            raise ValueError(f"impairments must be 'noise' or 'all', got {self.impairments!r}")
        self.axes = default_axes(self.jnd_db)
        self.rng = np.random.default_rng(self.seed)
        if self.impairments == "noise":
            self.kind_weights = {"noise": 1.0}
        elif self.kind_weights is None:
            others = [k for k in self.axes if k != "noise"]
            self.kind_weights = {"noise": 0.5, **{k: 0.5 / len(others) for k in others}}

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
        centres = self._centres()
        for g, (kind, snr_c, value_c, variant) in enumerate(centres):
            for _ in range(self.per_group):
                p = self._jitter(kind, snr_c, value_c)
                if variant is not None:
                    p["variant"] = variant
                audio.append(self.render(p, n))
                params.append(p)
                groups.append(g)
        batch = JNDBatch(
            audio=np.stack(audio).astype(np.float32),
            params=params,
            positives=positive_mask(params, self.axes),
            groups=np.asarray(groups),
        )
        if self.manifest is not None:
            with open(self.manifest, "a") as fh:
                fh.write(json.dumps({"items": params}) + "\n")
        return batch

    def _centres(self) -> list[tuple[str, float | None, object, object]]:
        kinds = list(self.kind_weights)
        weights = np.asarray([self.kind_weights[k] for k in kinds], dtype=float)
        out = []
        for _ in range(self.groups):
            kind = kinds[self.rng.choice(len(kinds), p=weights / weights.sum())]
            low, high = self.axes["noise"].low, self.axes["noise"].high
            # Non-noise groups are noise-free half the time, so their own impairment shows.
            with_noise = kind == "noise" or self.rng.random() < 0.5
            snr = float(self.rng.uniform(low, high)) if with_noise else None
            axis = self.axes[kind]
            if kind == "noise":
                value = None
            elif axis.step is None:
                value = axis.values[self.rng.integers(len(axis.values))]
            else:
                value = float(self.rng.uniform(axis.low, axis.high))
            variant = None
            if kind == "packet_loss":
                variant = PACKET_LOSS_VARIANTS[self.rng.integers(len(PACKET_LOSS_VARIANTS))]
            out.append((kind, snr, value, variant))
        return out

    def _jitter(self, kind: str, snr_c, value_c) -> dict:
        half = _JITTER * self.axes["noise"].step
        snr = None if snr_c is None else round(snr_c + float(self.rng.uniform(-half, half)), 3)
        value = value_c
        axis = self.axes[kind]
        if kind != "noise" and axis.step is not None:
            value = round(value_c + float(self.rng.uniform(-_JITTER, _JITTER)) * axis.step, 4)
        return {"kind": kind, "snr_db": snr, "value": value}

    def render(self, p: dict, n: int) -> np.ndarray:
        """One item: a fresh speech crop through the impairment the parameters describe."""
        rng = self.rng
        x = self.speech.crop(n, rng)
        steps = []
        kind, v = p["kind"], p["value"]
        if kind == "talker":
            steps.append(imp.CompetingTalker(sir_db=v, talker=self.speech.crop(n, rng)))
        elif kind == "echo":
            steps.append(imp.Echo(delay_ms=float(rng.uniform(40, 300)), attenuation_db=v))
        elif kind == "reverb":
            steps.append(imp.Reverb(rt60=float(2.0**v)))
        if p["snr_db"] is not None:
            name, seg = self.noise.segment(n, rng)
            p["noise"] = name
            steps.append(imp.AddNoise(snr_db=p["snr_db"], noise=seg))
        if kind == "clipping":
            steps.append(imp.Clipping(threshold=float(10 ** (v / 20) * max(np.abs(x).max(), 1e-4))))
        elif kind == "packet_loss":
            burst, concealment = p["variant"]
            steps.append(imp.PacketLoss(rate=float(2.0**v), burst=burst, concealment=concealment))
        elif kind == "narrowband":
            steps.append(imp.Narrowband() if v == "bandpass" else imp.G711(law=v))
        elif kind == "codec":
            steps.append(imp.Codec(codec=v[0], bitrate=v[1]))
        y = imp.Chain(tuple(steps))(x, rng) if steps else x
        return _fit(np.asarray(y, dtype=np.float32), n)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Guard against an impairment returning a sample more or less (codec padding)."""
    if x.size >= n:
        return x[:n]
    return np.pad(x, (0, n - x.size))
