"""The impairment families, declared once each: parameter ranges, the JND axis, and how
to build the transform. The label corpus, the JND sampler and the tests iterate
``FAMILIES``; adding a family is one entry here.

``FAMILIES`` is in physical order (acoustics, then background noise, then the capture
chain, then the network), and a chain of several families is applied in that order.

JND steps (used by stage 1 to decide which pairs sound alike):

=============  =====================  ===========  ===========================================
family         JND parameter          step         why
=============  =====================  ===========  ===========================================
noise          SNR (dB)               3 dB         McShefferty et al. 2015
talker         SIR (dB)               3 dB         a competing talker is a masker: SNR JND
echo           attenuation (dB)       3 dB         echo-to-speech ratio, treated as an SNR
reverb         RT60 (log2 s)          0.07 (5 %)   ISO 3382-1 Annex A
mnru           Q (dB)                 3 dB         Q is a speech-to-noise ratio: SNR JND
clipping       drive (dB)             1.5 dB       assumption (no published JND)
level          active level (dB)      3 dB         assumption
chops          rate (log2 /s)         0.5          assumption: half an octave
packet_loss    rate (log2)            0.5          assumption: half an octave
vocoder        mel bands (log2)       0.25         assumption: a fifth fewer bands
codec, narrowband                     discrete     each setting is its own level
=============  =====================  ===========  ===========================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from .. import impairments as imp


@dataclass(frozen=True)
class Param:
    """A range ``low..high`` (uniform, or log-uniform with ``log``) or discrete ``choices``."""

    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple = ()

    def draw(self, rng: np.random.Generator):
        if self.choices:
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.log:
            return round(float(2 ** rng.uniform(math.log2(self.low), math.log2(self.high))), 4)
        return round(float(rng.uniform(self.low, self.high)), 3)

    def axis_value(self, value) -> float:
        """Where a value lies on the JND axis (log2 for log ranges)."""
        return math.log2(value) if self.log else float(value)


class Sources(Protocol):
    """What building a chain draws from: noise recordings and other talkers."""

    def noise(self, n: int, rng: np.random.Generator) -> tuple[str, np.ndarray]: ...

    def talker(self, n: int, rng: np.random.Generator) -> np.ndarray: ...


@dataclass(frozen=True)
class Family:
    """One kind of impairment. ``jnd`` names the parameter on the JND axis and its step
    (``None`` step: discrete, equal values only); ``variant`` names parameters that must be
    equal for two items to sound alike; ``weight`` is how often the corpus draws it."""

    name: str
    params: dict[str, Param]
    build: Callable[[dict, int, np.random.Generator, Sources], imp.Impairment]
    jnd: tuple[str, float | None]
    variant: tuple[str, ...] = ()
    weight: float = 1.0

    def draw(self, rng: np.random.Generator) -> dict:
        return {"kind": self.name, **{k: p.draw(rng) for k, p in self.params.items()}}


def _noise(p, n, rng, src):
    name, seg = src.noise(n, rng)
    p["noise"] = name
    return imp.AddNoise(snr_db=p["snr_db"], noise=seg)


def _codec(p, n, rng, src):
    codec, kbps = p["codec"]
    return imp.Codec(codec=codec, bitrate=kbps)


def _narrowband(p, n, rng, src):
    return imp.Narrowband() if p["mode"] == "bandpass" else imp.G711(law=p["mode"])


CODECS = (("opus", 6), ("opus", 8), ("opus", 12), ("opus", 16), ("opus", 24), ("opus", 32),
          ("amr-nb", 4.75), ("amr-nb", 7.95), ("amr-nb", 12.2), ("gsm", 13), ("mp3", 16), ("mp3", 32))

_LIST = (
    Family("reverb", {"rt60": Param(0.1, 1.5, log=True), "drr_db": Param(-6, 12)},
           lambda p, n, rng, src: imp.Reverb(rt60=p["rt60"], drr_db=p["drr_db"]),
           jnd=("rt60", math.log2(1.05))),
    Family("echo", {"delay_ms": Param(20, 300), "attenuation_db": Param(3, 35)},
           lambda p, n, rng, src: imp.Echo(delay_ms=p["delay_ms"], attenuation_db=p["attenuation_db"]),
           jnd=("attenuation_db", 3.0)),
    Family("talker", {"sir_db": Param(0, 35)},
           lambda p, n, rng, src: imp.CompetingTalker(sir_db=p["sir_db"], talker=src.talker(n, rng)),
           jnd=("sir_db", 3.0)),
    Family("noise", {"snr_db": Param(-5, 40)}, _noise, jnd=("snr_db", 3.0), weight=2.5),
    Family("mnru", {"q_db": Param(0, 45)}, lambda p, n, rng, src: imp.MNRU(q_db=p["q_db"]),
           jnd=("q_db", 3.0)),
    Family("clipping", {"drive_db": Param(0, 40), "soft": Param(choices=(False, True))},
           lambda p, n, rng, src: imp.Overdrive(gain_db=p["drive_db"], soft=p["soft"]),
           jnd=("drive_db", 1.5), variant=("soft",)),
    Family("level", {"dbfs": Param(-50, 0)}, lambda p, n, rng, src: imp.Level(dbfs=p["dbfs"]),
           jnd=("dbfs", 3.0), weight=0.5),
    Family("narrowband", {"mode": Param(choices=("bandpass", "mulaw", "alaw"))}, _narrowband,
           jnd=("mode", None)),
    Family("codec", {"codec": Param(choices=CODECS)}, _codec, jnd=("codec", None), weight=1.5),
    Family("vocoder", {"bands": Param(12, 128, log=True), "iterations": Param(choices=(None, 4, 32))},
           lambda p, n, rng, src: imp.Resynthesis(bands=round(p["bands"]), iterations=p["iterations"]),
           jnd=("bands", 0.25), variant=("iterations",), weight=1.5),
    Family("chops", {"rate_hz": Param(1, 10, log=True), "mode": Param(choices=("zero", "drop"))},
           lambda p, n, rng, src: imp.Chops(rate_hz=p["rate_hz"], mode=p["mode"]),
           jnd=("rate_hz", 0.5), variant=("mode",)),
    Family("packet_loss", {"rate": Param(0.005, 0.3, log=True), "burst": Param(choices=(1.0, 2.0, 3.0)),
                           "concealment": Param(choices=("zero", "repeat"))},
           lambda p, n, rng, src: imp.PacketLoss(rate=p["rate"], burst=p["burst"], concealment=p["concealment"]),
           jnd=("rate", 0.5), variant=("burst", "concealment"), weight=1.5),
)
FAMILIES: dict[str, Family] = {f.name: f for f in _LIST}


def draw_recipe(rng: np.random.Generator, clean_fraction: float = 0.1,
                family_counts: tuple[float, ...] = (0.5, 0.35, 0.15), only: str | None = None,
                families: tuple[str, ...] | None = None) -> list[dict]:
    """The families and parameters of one clip, in physical order (empty: clean).

    ``family_counts[k]``: the chance of k + 1 families. ``only``: exactly that family.
    ``families``: draw only from these (default all), as an older corpus did.
    """
    if only is not None:
        return [FAMILIES[only].draw(rng)]
    if rng.random() < clean_fraction:
        return []
    names = [n for n in FAMILIES if families is None or n in families]
    weights = np.asarray([FAMILIES[n].weight for n in names])
    k = 1 + int(rng.choice(len(family_counts), p=np.asarray(family_counts) / sum(family_counts)))
    chosen = set(rng.choice(len(names), size=k, replace=False, p=weights / weights.sum()).tolist())
    return [FAMILIES[names[i]].draw(rng) for i in range(len(names)) if i in chosen]


def build_chain(recipe: list[dict], n: int, rng: np.random.Generator, sources: Sources) -> imp.Chain:
    """The transform of a recipe (records the noise recording a noise step used)."""
    return imp.Chain(tuple(FAMILIES[step["kind"]].build(step, n, rng, sources) for step in recipe))


def same_quality(a: dict, b: dict) -> bool:
    """Whether two single-family steps lie within one JND of each other (stage 1 positives)."""
    if a["kind"] != b["kind"]:
        return False
    fam = FAMILIES[a["kind"]]
    if any(a[v] != b[v] for v in fam.variant):
        return False
    name, step = fam.jnd
    if step is None:
        return a[name] == b[name]
    param = fam.params[name]
    return abs(param.axis_value(a[name]) - param.axis_value(b[name])) < step
