"""Labelled (rated) sets: a rating CSV read into file paths, MOS and conditions.

A rating CSV has a ``file`` column (paths relative to the CSV) and one of ``mos`` (1-5),
``mos_ovrl`` (P.835 overall, 1-5) or ``mushra_mean`` (MUSHRA 0-100, mapped linearly onto
1-5); a ``condition`` (or ``codec``) column is optional, and ``ref_file`` names the clean
reference. The shared ``rated/p835_refcond``, ``rated/codec_mushra`` and ``rated/warpq``
sets follow this layout. This is the one reader of that format (torch-free, so the
benchmarks can use it too).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jsqa.data import find_data_root


@dataclass
class RatedSet:
    name: str
    files: list[Path]
    mos: np.ndarray
    conditions: list[str]
    references: list[Path | None]


def mushra_to_mos(mushra) -> np.ndarray:
    """MUSHRA 0-100 onto the MOS scale 1-5, linearly."""
    return 1.0 + 4.0 * np.asarray(mushra, dtype=np.float64) / 100.0


def load_rated_set(csv_path: str | os.PathLike) -> RatedSet:
    csv_path = Path(csv_path)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "file" not in rows[0]:
        raise ValueError(f"{csv_path}: needs a 'file' column and a 'mos', 'mos_ovrl' or 'mushra_mean' column")
    score_key = next((k for k in ("mos", "mos_ovrl") if k in rows[0]), None)
    if score_key:
        mos = np.array([float(r[score_key]) for r in rows])
    elif "mushra_mean" in rows[0]:
        mos = mushra_to_mos([float(r["mushra_mean"]) for r in rows])
    else:
        raise ValueError(f"{csv_path}: needs a 'mos', 'mos_ovrl' or 'mushra_mean' column")
    condition_key = next((k for k in ("condition", "codec") if k in rows[0]), None)
    return RatedSet(
        name=csv_path.parent.name,
        files=[csv_path.parent / r["file"] for r in rows],
        mos=mos,
        conditions=[r[condition_key] if condition_key else "all" for r in rows],
        references=[csv_path.parent / r["ref_file"] if r.get("ref_file") else None for r in rows],
    )


def rated_set_path(name: str) -> Path | None:
    """``rated/<name>/ratings.csv`` in the data folder, or None when it is not there."""
    try:
        path = find_data_root() / "rated" / name / "ratings.csv"
    except FileNotFoundError:
        return None
    return path if path.is_file() else None
