"""How well each teacher, and the label their mean makes, tracks listeners on the rated dev
sets that ship clean references (``jsqa-train label --check-dev``).

Teacher scores only: no model is involved and nothing is trained, so the dev sets stay
validation data. This is how a change to a teacher's MOS scale (``teachers.FLOOR_LIFT``) is
judged before a corpus is relabelled with it. Raw RMSE is reported beside Pearson because
alerts fire on an absolute threshold.
"""

from __future__ import annotations

import numpy as np
from rich.progress import Progress

from jsqa import metrics
from jsqa.audio import load_audio

from . import teachers as teach
from .datasets import RATED_SETS, read_rated, reference_of

LABEL = "label"


def check_dev(names=RATED_SETS, teacher_names=teach.DEFAULT_TEACHERS, progress: bool = True) -> dict:
    """``{set: {teacher or "label": {n, pearson, spearman, rmse_raw, mean, true_mean}}}``."""
    teachers = teach.make_teachers(teacher_names)
    out = {}
    with Progress(disable=not progress) as bar:
        for name in names:
            refs = reference_of(name)
            items = [it for it in read_rated(name) if it.path in refs]
            true, scores = [], {t.name: [] for t in teachers}
            for it in bar.track(items, description=name):
                ref, deg = load_audio(refs[it.path]), load_audio(it.path)
                m = min(ref.size, deg.size)  # PESQ-WB compares sample by sample
                for t in teachers:
                    scores[t.name].append(t(ref[:m], deg[:m]))
                true.append(it.mos)
            mos = {t.name: np.array([t.to_mos(v) for v in scores[t.name]]) for t in teachers}
            mos[LABEL] = np.array([teach.label({t.name: scores[t.name][i] for t in teachers}, teachers)
                                   for i in range(len(items))])
            out[name] = {key: _agreement(pred, np.asarray(true)) for key, pred in mos.items()}
    return out


def _agreement(pred: np.ndarray, true: np.ndarray) -> dict:
    ok = np.isfinite(pred)
    p, t = pred[ok], true[ok]
    return {"n": int(ok.sum()), "pearson": metrics.pearson(p, t), "spearman": metrics.spearman(p, t),
            "rmse_raw": metrics.rmse(p, t), "mean": float(p.mean()), "true_mean": float(t.mean())}
