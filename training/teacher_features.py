"""DistillMOS's quality embedding of every clip of a labelled corpus, for fine-tuning to
learn how that teacher relates clips to one another (``--teacher-relation``) or to predict
the embedding itself (``--teacher-hint``), not only the score it gives each.

The embeddings sit beside the corpus's ``labels.csv`` in ``distillmos_features/``, in
chunks of ``CHUNK`` rows (``index``, ``features``), so extraction resumes where it stopped.
They are not committed: ``jsqa-train features`` rebuilds them from the rendered clips
(about 0.25 s a clip on one core).
"""

from __future__ import annotations

import csv
import multiprocessing as mp
from functools import partial
from pathlib import Path

import numpy as np
from rich.progress import Progress

from jsqa.audio import load_audio

FOLDER = "distillmos_features"
CHUNK = 500

_WORKER: dict = {}


def _init_worker(teacher=None) -> None:
    import torch

    from .teachers import DistillMOS

    torch.set_num_threads(1)
    _WORKER["teacher"] = teacher or DistillMOS()


def _embed(path: str) -> np.ndarray:
    return _WORKER["teacher"].embedding(load_audio(path))


def _rows(labels_csv: Path) -> list[dict]:
    with open(labels_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"index", "path"} <= set(rows[0]):
        raise ValueError(f"{labels_csv}: not a corpus made by jsqa-train label (needs 'index' and 'path' columns)")
    return rows


def extract(labels_csv: str | Path, workers: int = 2, progress: bool = True, teacher=None) -> Path:
    """Embed every clip of ``labels_csv`` (resumable); returns the features folder.
    ``teacher``: an object with ``embedding(audio)`` in place of DistillMOS; it needs
    ``workers=0`` (in process)."""
    if teacher is not None and workers:
        raise ValueError("a stand-in teacher runs in process only: pass workers=0")
    labels_csv = Path(labels_csv)
    rows = _rows(labels_csv)
    out = labels_csv.parent / FOLDER
    out.mkdir(exist_ok=True)
    starts = [s for s in range(0, len(rows), CHUNK) if not (out / f"{s:06d}.npz").exists()]
    if not starts:
        return out
    pool = mp.get_context("spawn").Pool(workers, _init_worker) if workers else None
    if pool is None:
        _init_worker(teacher)
    embed = partial(pool.imap, chunksize=8) if pool else map
    try:
        with Progress(disable=not progress) as bar:
            task = bar.add_task("DistillMOS embeddings", total=len(rows),
                                completed=len(rows) - sum(len(rows[s : s + CHUNK]) for s in starts))
            for s in starts:
                chunk = rows[s : s + CHUNK]
                features = []
                for f in embed(_embed, [str(labels_csv.parent / r["path"]) for r in chunk]):
                    features.append(f)
                    bar.advance(task)
                tmp = out / f"{s:06d}.tmp.npz"
                np.savez(tmp, index=np.array([int(r["index"]) for r in chunk]), features=np.stack(features))
                tmp.replace(out / f"{s:06d}.npz")
    finally:
        if pool:
            pool.close()
            pool.join()
    return out


def load(labels_csv: str | Path) -> dict[Path, np.ndarray]:
    """Clip path -> embedding, for the clips of ``labels_csv`` extracted so far (none: {})."""
    labels_csv = Path(labels_csv)
    folder = labels_csv.parent / FOLDER
    if not folder.is_dir():
        return {}
    paths = {int(r["index"]): labels_csv.parent / r["path"] for r in _rows(labels_csv)}
    out = {}
    for chunk in sorted(folder.glob("[0-9][0-9][0-9][0-9][0-9][0-9].npz")):
        with np.load(chunk) as z:
            out.update({paths[int(i)]: f for i, f in zip(z["index"], z["features"]) if int(i) in paths})
    return out
