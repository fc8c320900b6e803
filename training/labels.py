"""Proxy-labelled corpus: clean speech x impairment chains at graded severities, scored
against the clean reference with PESQ-WB (ITU-T P.862.2, the ``pesq`` package).

Why PESQ-WB alone: measured against human MOS on real VoIP recordings (per-file Pearson)
PESQ-WB 0.90, PESQ-NB 0.86, ViSQOL v3 0.82, ESTOI 0.22; nothing else earned a place.
``check_dev`` measures it again on the rated dev set (``codec_mushra``, which ships its
references) before we rely on it.

Mapping to 1-5: P.862.2's MOS-LQO spans 1.04 (worst) to 4.64 (identical to the
reference); it is stretched linearly onto the 1-5 MOS scale,
``mos = 1 + 4 * (lqo - 1.04) / 3.60``, so an unimpaired clip is 5 and the worst PESQ is 1,
matching the dev set's MUSHRA 0-100 -> 1-5 (hidden references score ~4.8 there).

Each clip: a 3 s crop of one talker; with probability ``clean_fraction`` nothing, else 1-2
impairment families (noise most often), each at a uniformly drawn severity, applied in a
fixed physical order: acoustics (reverb, echo, competing talker) -> background noise ->
clipping -> channel (telephone band / G.711 / codec) -> packet loss.

The corpus is a folder of FLAC files plus ``labels.csv`` (``path,mos,condition,pesq_wb,
params``; it reads as a plain path,mos CSV for ``finetune``) and ``corpus.json`` with the
parameters that made it. Building again with the same parameters reuses the cache and
resumes a partial build.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.progress import Progress

from jsqa import impairments as imp
from jsqa.audio import SAMPLE_RATE, load_audio, write_audio
from jsqa.jnd import NoiseBank, SpeechPool

from .datasets import GENERATED_NOISES, noise_files, reference_of, read_rated, speech_files

LQO_MIN, LQO_MAX = 1.04, 4.64
LABEL_VERSION = 1

FAMILY_WEIGHTS = {
    "noise": 3.0, "talker": 1.0, "reverb": 1.0, "echo": 1.0, "clipping": 1.0,
    "narrowband": 1.0, "codec": 1.5, "packet_loss": 1.5,
}
ORDER = ("reverb", "echo", "talker", "noise", "clipping", "narrowband", "codec", "packet_loss")
CODECS = (("opus", 6), ("opus", 8), ("opus", 12), ("opus", 16), ("opus", 24), ("opus", 32),
          ("amr-nb", 4.75), ("amr-nb", 7.95), ("amr-nb", 12.2), ("gsm", 13), ("mp3", 16), ("mp3", 32))


def pesq_to_mos(lqo: float) -> float:
    return float(np.clip(1.0 + 4.0 * (lqo - LQO_MIN) / (LQO_MAX - LQO_MIN), 1.0, 5.0))


def pesq_wb(ref: np.ndarray, deg: np.ndarray) -> float:
    from pesq import pesq

    return float(pesq(SAMPLE_RATE, ref.astype(np.float64), deg.astype(np.float64), "wb"))


@dataclass(frozen=True)
class CorpusSpec:
    split: str = "train"
    n_clips: int = 2000
    seconds: float = 3.0
    seed: int = 0
    clean_fraction: float = 0.08
    max_families: int = 2
    version: int = LABEL_VERSION


def draw_chain(rng: np.random.Generator, spec: CorpusSpec) -> list[dict]:
    """Impairment families and severities for one clip (empty: clean)."""
    if rng.random() < spec.clean_fraction:
        return []
    names = list(FAMILY_WEIGHTS)
    w = np.asarray([FAMILY_WEIGHTS[n] for n in names])
    k = int(rng.integers(1, spec.max_families + 1))
    chosen = set(rng.choice(len(names), size=k, replace=False, p=w / w.sum()).tolist())
    steps = []
    for name in ORDER:
        if names.index(name) not in chosen:
            continue
        if name == "noise":
            steps.append({"kind": name, "snr_db": round(float(rng.uniform(0, 45)), 2)})
        elif name == "talker":
            steps.append({"kind": name, "sir_db": round(float(rng.uniform(5, 35)), 2)})
        elif name == "reverb":
            steps.append({"kind": name, "rt60": round(float(rng.uniform(0.1, 0.9)), 3)})
        elif name == "echo":
            steps.append({"kind": name, "delay_ms": round(float(rng.uniform(20, 250)), 1),
                          "attenuation_db": round(float(rng.uniform(6, 35)), 2)})
        elif name == "clipping":
            steps.append({"kind": name, "threshold_db": round(float(rng.uniform(-15, -0.5)), 2)})
        elif name == "narrowband":
            steps.append({"kind": name, "mode": ["bandpass", "mulaw", "alaw"][int(rng.integers(3))]})
        elif name == "codec":
            c = CODECS[int(rng.integers(len(CODECS)))]
            steps.append({"kind": name, "codec": c[0], "bitrate": c[1]})
        elif name == "packet_loss":
            steps.append({"kind": name, "rate": round(float(2 ** rng.uniform(math.log2(0.005), math.log2(0.2))), 4),
                          "burst": float(rng.choice([1.0, 2.0, 3.0])),
                          "concealment": ["zero", "repeat"][int(rng.integers(2))]})
    return steps


def apply_chain(x: np.ndarray, chain: list[dict], rng: np.random.Generator, speech: SpeechPool,
                noise: NoiseBank) -> np.ndarray:
    """Render a drawn chain on ``x`` (records the noise recording used in its step)."""
    steps = []
    for s in chain:
        k = s["kind"]
        if k == "noise":
            name, seg = noise.segment(x.size, rng)
            s["noise"] = name
            steps.append(imp.AddNoise(snr_db=s["snr_db"], noise=seg))
        elif k == "talker":
            steps.append(imp.CompetingTalker(sir_db=s["sir_db"], talker=speech.crop(x.size, rng)))
        elif k == "reverb":
            steps.append(imp.Reverb(rt60=s["rt60"]))
        elif k == "echo":
            steps.append(imp.Echo(delay_ms=s["delay_ms"], attenuation_db=s["attenuation_db"]))
        elif k == "clipping":
            steps.append(imp.Clipping(threshold=float(10 ** (s["threshold_db"] / 20) * max(np.abs(x).max(), 1e-4))))
        elif k == "narrowband":
            steps.append(imp.Narrowband() if s["mode"] == "bandpass" else imp.G711(law=s["mode"]))
        elif k == "codec":
            steps.append(imp.Codec(codec=s["codec"], bitrate=s["bitrate"]))
        elif k == "packet_loss":
            steps.append(imp.PacketLoss(rate=s["rate"], burst=s["burst"], concealment=s["concealment"]))
    y = imp.Chain(tuple(steps))(x, rng) if steps else x.copy()
    y = np.asarray(y, dtype=np.float32)[: x.size]
    return np.pad(y, (0, x.size - y.size))


def condition_name(chain: list[dict]) -> str:
    return "+".join(s["kind"] for s in chain) or "clean"


def build_corpus(out_dir: str | Path, spec: CorpusSpec, speech: str | None = None,
                 noise: str | None = None, progress: bool = True) -> Path:
    """Build (or resume, or reuse) a proxy-labelled corpus; returns its ``labels.csv``."""
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    meta_path, labels_path = out / "corpus.json", out / "labels.csv"
    meta = {**asdict(spec), "speech": str(speech or "shared/speech"), "noise": str(noise or "shared/noise"),
            "label": "PESQ-WB (P.862.2) MOS-LQO mapped linearly 1.04..4.64 -> 1..5"}
    if meta_path.exists() and json.loads(meta_path.read_text()) != meta:
        raise ValueError(f"{out} holds a corpus built with other parameters; use another --out")
    meta_path.write_text(json.dumps(meta, indent=1))
    done = 0
    if labels_path.exists():
        done = sum(1 for _ in open(labels_path)) - 1
    if done >= spec.n_clips:
        return labels_path
    talkers = speech_files(speech, spec.split)
    speech_pool = SpeechPool(talkers)
    # The test split uses only the held-out recordings: generated noises are seen in training.
    noise_bank = NoiseBank(noise_files(noise, spec.split), GENERATED_NOISES if spec.split == "train" else (),
                           babble_talkers=talkers)
    n = int(spec.seconds * SAMPLE_RATE)
    new = not labels_path.exists() or done < 0
    with open(labels_path, "a", newline="") as fh, Progress(disable=not progress) as bar:
        writer = csv.writer(fh)
        if new:
            writer.writerow(["path", "mos", "condition", "pesq_wb", "params"])
            done = 0
        task = bar.add_task(f"labelling {spec.split}", total=spec.n_clips, completed=done)
        for i in range(done, spec.n_clips):
            # One generator per clip: any clip can be rebuilt alone, builds resume exactly.
            rng = np.random.default_rng([spec.seed, i, 0 if spec.split == "train" else 1])
            clean = speech_pool.crop(n, rng)
            chain = draw_chain(rng, spec)
            deg = apply_chain(clean, chain, rng, speech_pool, noise_bank)
            peak = float(np.abs(deg).max())
            if peak > 1.0:
                deg = deg / peak
            try:
                lqo = pesq_wb(clean, deg)
            except Exception as e:  # pesq refuses signals it finds no speech in
                lqo, chain = float("nan"), chain + [{"error": str(e)[:80]}]
            rel = Path("clips") / f"{i:06d}.flac"
            write_audio(out / rel, deg)
            mos = pesq_to_mos(lqo) if math.isfinite(lqo) else 1.0
            writer.writerow([rel.as_posix(), f"{mos:.4f}", condition_name(chain), f"{lqo:.4f}",
                             json.dumps(chain)])
            fh.flush()
            bar.update(task, completed=i + 1)
    return labels_path


def check_dev(name: str = "codec_mushra") -> dict:
    """How well the PESQ-WB label tracks the human ratings of a rated set with references."""
    from jsqa import metrics

    items = read_rated(name)
    refs = reference_of(name)
    lqo, true = [], []
    for it in items:
        ref, deg = load_audio(refs[it.path]), load_audio(it.path)
        m = min(ref.size, deg.size)
        lqo.append(pesq_wb(ref[:m], deg[:m]))
        true.append(it.mos)
    mapped = np.asarray([pesq_to_mos(v) for v in lqo])
    true = np.asarray(true)
    return {
        "set": name, "n": len(items),
        "pearson": metrics.pearson(mapped, true), "spearman": metrics.spearman(mapped, true),
        "rmse_mapped_label": metrics.rmse(mapped, true), "rmse_raw_lqo": metrics.rmse(np.asarray(lqo), true),
    }
