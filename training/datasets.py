"""Data for training: the train/test split of speech and noise, and labelled (rated) sets.

The held-out test of the shipped model uses a talker and language never seen in any
training stage (``asterisk_ru``) and noise recordings never seen either
(``HELD_OUT_NOISE``); both are excluded here from everything the trainer reads.

Labelled sets come as CSV:

* NISQA corpus format: columns ``filepath_deg`` and ``mos`` (optionally ``con`` /
  ``condition``), paths relative to the CSV's folder;
* plain ``path,mos`` (header optional; optional third column ``condition``);
* the shared rated sets by name: ``codec_mushra`` (MUSHRA 0-100 mapped linearly to 1-5)
  and ``warpq`` (MOS 1-5).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from jsqa.audio import SAMPLE_RATE, load_audio
from jsqa.data import find_data_root, list_audio
from jsqa.rated import load_rated_set, rated_set_path

from .configs import LABEL_MIXES

HELD_OUT_SPEECH = ("asterisk_ru",)
# Clean speech used only to check that clean speech scores high, never trained on.
CLEAN_CHECK_SPEECH = ("cmu_arctic", "librispeech_examples", "pocketsphinx", "codec2")
SPEECHOCEAN = "speechocean762"
HELD_OUT_NOISE = (
    "scratch_crowd", "scratch_street", "opensfx_wind", "minetest_water", "minetest_fire",
    "stormbaan_car", "sonicpi_machinery",
)
GENERATED_NOISES = ("white", "pink", "brown", "speech_shaped", "babble")
RATED_SETS = ("p835_refcond", "codec_mushra", "warpq")


def speech_files(folder: str | os.PathLike | None = None, split: str = "train") -> list[Path]:
    """Clean speech for ``split`` "train" or "test" (held-out talkers), all talkers' files."""
    return [f for files in talkers(folder, split).values() for f in files]


def talkers(folder: str | os.PathLike | None = None, split: str = "train") -> dict[str, list[Path]]:
    """Talker -> files for ``split``. A talker is a file's folder (an IVR voice, a VCTK or
    speechocean762 speaker). "test" holds ``HELD_OUT_SPEECH`` and the speechocean762 talkers
    of that corpus's own test split; the ``CLEAN_CHECK_SPEECH`` folders are in neither."""
    folder = Path(folder) if folder else find_data_root() / "speech"
    files = [f for f in list_audio(folder) if not any(p in f.parts for p in CLEAN_CHECK_SPEECH)]
    held = set(_speechocean_test_talkers(folder))
    out: dict[str, list[Path]] = {}
    for f in files:
        is_test = any(p in f.parts for p in HELD_OUT_SPEECH) or f.parent.name in held
        if is_test == (split == "test"):
            out.setdefault(f.parent.name, []).append(f)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return out


def _speechocean_test_talkers(folder: Path) -> list[str]:
    table = folder / SPEECHOCEAN / "speakers.csv"
    if not table.is_file():
        return []
    with open(table, newline="") as fh:
        return sorted({f"SPEAKER{r['speaker']}" for r in csv.DictReader(fh) if r["split_in_source"] == "test"})


def noise_files(folder: str | os.PathLike | None = None, split: str = "train") -> list[Path]:
    """Noise recordings for ``split`` "train" or "test" (the held-out recordings)."""
    folder = Path(folder) if folder else find_data_root() / "noise"
    return _split(list_audio(folder), HELD_OUT_NOISE, split)


def _split(files: list[Path], held_out: tuple[str, ...], split: str) -> list[Path]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    is_held = [any(part in f.parts for part in held_out) for f in files]
    return [f for f, h in zip(files, is_held) if h == (split == "test")]


@dataclass(frozen=True)
class Rated:
    path: Path
    mos: float
    condition: str = ""


def read_rated(spec: str | os.PathLike) -> list[Rated]:
    """A labelled set from a CSV path (NISQA or path,mos) or a shared rated set's name."""
    if str(spec) in RATED_SETS:
        return _read_shared(str(spec))
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"{spec}: no such CSV; give a CSV file (NISQA or path,mos) or one of {', '.join(RATED_SETS)}"
        )
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"{path}: empty CSV")
    header = [h.strip().lower() for h in rows[0]]
    base = path.parent
    if "filepath_deg" in header or ("mos" in header and "path" in header):
        col_path = header.index("filepath_deg" if "filepath_deg" in header else "path")
        col_mos = header.index("mos")
        col_con = next((header.index(c) for c in ("condition", "con") if c in header), None)
        body = rows[1:]
    else:
        try:
            float(rows[0][1])
        except (IndexError, ValueError):
            raise ValueError(
                f"{path}: need columns filepath_deg,mos (NISQA) or path,mos; header was {rows[0]}"
            ) from None
        col_path, col_mos, col_con, body = 0, 1, (2 if len(rows[0]) > 2 else None), rows
    items = []
    for row in body:
        if not row:
            continue
        p = Path(row[col_path])
        items.append(Rated(
            path=p if p.is_absolute() else base / p,
            mos=float(row[col_mos]),
            condition=row[col_con] if col_con is not None else "",
        ))
    return items


def _read_shared(name: str) -> list[Rated]:
    rated = load_rated_set(rated_set_path(name))
    return [Rated(f, float(m), c) for f, m, c in zip(rated.files, rated.mos, rated.conditions)]


def reference_of(name: str) -> dict[Path, Path]:
    """Degraded file -> clean reference file, for the shared rated sets (label checks)."""
    rated = load_rated_set(rated_set_path(name))
    return {f: r for f, r in zip(rated.files, rated.references) if r is not None}


class ClipBank:
    """Labelled clips held in memory (16-bit); draws fixed-length training batches.

    Clips longer than ``crop_seconds`` are cropped at random; shorter ones are padded with
    silence at the end. With ``balance`` clips are drawn with weights inverse to how common
    their label is (bins of ``BALANCE_BIN`` MOS), so every part of the scale is learnt
    alike. With ``speed_perturb`` = a, each drawn crop is played at a random speed in
    [1 - a, 1 + a] (tempo, pitch and formants together, as a vocal tract of another length
    would sound), so the few training talkers and noises stand for many; the label is kept,
    since the impairment moves with the speech. ``refresh`` adds clips that appeared in the
    CSVs since (a corpus still being labelled). ``features`` (clip path -> a teacher's
    embedding) makes each batch carry the embeddings of its clips too (NaN where a clip has
    none).
    """

    BALANCE_BIN = 0.25

    def __init__(self, items: list[Rated], crop_seconds: float = 3.0, sample_rate: int = SAMPLE_RATE,
                 balance: bool = False, sources: list[str] | None = None, limit: int | None = None,
                 seed: int = 0, speed_perturb: float = 0.0, label: str = "mean",
                 features: dict[Path, np.ndarray] | None = None):
        if not 0.0 <= speed_perturb < 0.5:
            raise ValueError(f"speed_perturb must be in [0, 0.5), got {speed_perturb}")
        self.n = int(round(crop_seconds * sample_rate))
        self.sample_rate = sample_rate
        self.balance = balance
        self.speed_perturb = speed_perturb
        self.sources, self.limit, self.seed, self.label = sources or [], limit, seed, label
        self.feature_map = features or {}
        # What a clip without an embedding carries, so the batch stays one array.
        self.no_feature = np.full(len(next(iter(features.values()))), np.nan, np.float32) if features else None
        self.items: list[Rated] = []
        self.audio: list[np.ndarray] = []
        self.features: list[np.ndarray] = []
        self._add(items)
        if not self.items:
            raise ValueError("no labelled clips")

    def _add(self, items: list[Rated]) -> None:
        for it in items:
            if not np.isfinite(it.mos):
                continue
            self.items.append(it)
            self.audio.append(np.round(load_audio(it.path) * 32767).astype(np.int16))
            if self.feature_map:
                self.features.append(self.feature_map.get(it.path, self.no_feature))
        self.mos = np.asarray([it.mos for it in self.items], dtype=np.float32)
        bins = np.floor(self.mos / self.BALANCE_BIN).astype(int)
        counts = np.bincount(bins - bins.min())[bins - bins.min()]
        w = 1.0 / counts if self.balance else np.ones(len(self.items))
        self.p = w / w.sum()

    def refresh(self) -> int:
        """Load clips added to the source CSVs since; returns how many."""
        known = {it.path for it in self.items}
        new = [it for it in select(load_items(self.sources, self.label), self.limit, self.seed) if it.path not in known]
        self._add(new)
        return len(new)

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """``(audio, mos)``, plus the clips' embeddings when the bank has ``features``."""
        idx = rng.choice(len(self.items), size=min(size, len(self.items)), replace=False, p=self.p)
        out = np.zeros((idx.size, self.n), dtype=np.float32)
        for row, i in enumerate(idx):
            speed = 1.0 + rng.uniform(-self.speed_perturb, self.speed_perturb) if self.speed_perturb else 1.0
            need = int(np.ceil(self.n * speed))
            x = self.audio[i]
            if x.size > need:
                start = int(rng.integers(0, x.size - need + 1))
                x = x[start : start + need]
            x = x / np.float32(32767.0)
            if speed != 1.0:
                # Read as if sampled at speed x the rate: played back faster and higher by `speed`.
                x = soxr.resample(x, self.sample_rate * speed, self.sample_rate, quality="MQ")[: self.n]
            out[row, : x.size] = x
        if self.features:
            return out, self.mos[idx], np.stack([self.features[i] for i in idx])
        return out, self.mos[idx]


def load_items(sources: list[str], label: str = "mean") -> list[Rated]:
    """The clips of every source; ``label="talker-normalised"`` relabels corpus CSVs from their
    teachers' columns (``teachers.talker_normalised``), over all the sources together."""
    if label not in LABEL_MIXES:
        raise ValueError(f"unknown label {label!r}; choose one of {', '.join(LABEL_MIXES)}")
    if label == "mean":
        return [it for spec in sources for it in read_rated(spec)]
    from .teachers import talker_normalised

    rows = [row for spec in sources for row in _corpus_rows(spec)]
    return [Rated(row["path"], mos, row["condition"]) for row, mos in zip(rows, talker_normalised(rows))]


def _corpus_rows(spec: str) -> list[dict]:
    path = Path(spec)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = {"path", "talker", "condition", "pesq_wb", "distillmos"}
    if rows and not need <= set(rows[0]):
        raise ValueError(f"{spec}: a talker-normalised label needs a corpus CSV made by jsqa-train label "
                         f"(columns {', '.join(sorted(need))})")
    for row in rows:
        p = Path(row["path"])
        row["path"] = p if p.is_absolute() else path.parent / p
    return rows


def select(items: list[Rated], limit: int | None, seed: int) -> list[Rated]:
    """A seeded random subset of ``limit`` items (all when None), in their original order."""
    if not limit:
        return items
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in sorted(order[:limit])]
