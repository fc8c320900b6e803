"""Speech-quality metrics: correlations, errors, and RMSE after ITU-T P.1401 mapping.

Objective scores are often on a slightly different scale than the listening test, so
P.1401 compares them after a monotonic mapping fitted per test: first order (linear) or
third order (cubic). Here the cubic ``a0 + a1 x + a2 x^2 + a3 x^3`` is fitted by least
squares subject to being non-decreasing over the range of the predictions (checked on a
dense grid); when the unconstrained fit is already monotonic it is used as is. The RMSE
after mapping uses P.1401's degrees-of-freedom correction,
``sqrt(sum(err^2) / (N - d))`` with ``d = order + 1`` mapping parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(true, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"pred and true differ in length ({p.size} vs {t.size})")
    if p.size < 2:
        raise ValueError("need at least 2 scores")
    return p, t


def pearson(pred, true) -> float:
    p, t = _pair(pred, true)
    return float(stats.pearsonr(p, t).statistic)


def spearman(pred, true) -> float:
    p, t = _pair(pred, true)
    return float(stats.spearmanr(p, t).statistic)


def kendall(pred, true) -> float:
    p, t = _pair(pred, true)
    return float(stats.kendalltau(p, t).statistic)


def rmse(pred, true) -> float:
    p, t = _pair(pred, true)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mae(pred, true) -> float:
    p, t = _pair(pred, true)
    return float(np.mean(np.abs(p - t)))


def _is_non_decreasing(poly: np.poly1d, grid: np.ndarray) -> bool:
    return bool(np.all(poly.deriv()(grid) >= -1e-12))


def fit_monotonic_polynomial(pred, true, order: int = 3) -> np.poly1d:
    """Least-squares polynomial ``true ~ f(pred)``, non-decreasing over the range of ``pred``."""
    if order not in (1, 3):
        raise ValueError("order must be 1 or 3 (ITU-T P.1401)")
    p, t = _pair(pred, true)
    if np.ptp(p) == 0:
        return np.poly1d([t.mean()])
    poly = np.poly1d(np.polyfit(p, t, order))
    grid = np.linspace(p.min(), p.max(), 1000)
    if order == 1:
        return poly if poly.coeffs[0] >= 0 else np.poly1d([t.mean()])
    if _is_non_decreasing(poly, grid):
        return poly

    # Fit on a centred, scaled axis so the problem is well conditioned.
    centre, scale = p.mean(), p.std()
    z, zgrid = (p - centre) / scale, (grid - centre) / scale
    design = np.vander(z, 4)
    dgrid = np.stack([3 * zgrid**2, 2 * zgrid, np.ones_like(zgrid), np.zeros_like(zgrid)], axis=1)
    start = np.array([0.0, 0.0, max(np.polyfit(z, t, 1)[0], 0.0), t.mean()])
    result = optimize.minimize(
        lambda c: np.sum((design @ c - t) ** 2),
        start,
        jac=lambda c: 2 * design.T @ (design @ c - t),
        constraints=[{"type": "ineq", "fun": lambda c: dgrid @ c, "jac": lambda c: dgrid}],
        method="SLSQP",
    )
    scaled = np.poly1d(result.x)
    return np.poly1d(np.polyval(np.poly1d(scaled), np.poly1d([1 / scale, -centre / scale])).coeffs)


def rmse_mapped(pred, true, order: int = 3) -> float:
    """RMSE after a monotonic polynomial mapping of ``pred`` onto ``true`` (P.1401)."""
    p, t = _pair(pred, true)
    mapping = fit_monotonic_polynomial(p, t, order)
    dof = p.size - (order + 1)
    if dof <= 0:
        raise ValueError(f"need more than {order + 1} scores for an order-{order} mapping")
    return float(np.sqrt(np.sum((mapping(p) - t) ** 2) / dof))


def per_condition(pred, true, conditions: Sequence) -> tuple[np.ndarray, np.ndarray, list]:
    """Mean predicted and true score per condition: ``(pred_means, true_means, condition names)``."""
    p, t = _pair(pred, true)
    conditions = list(conditions)
    if len(conditions) != p.size:
        raise ValueError(f"{len(conditions)} conditions for {p.size} scores")
    names = list(dict.fromkeys(conditions))
    index = np.array([names.index(c) for c in conditions])
    counts = np.bincount(index, minlength=len(names))
    return (
        np.bincount(index, weights=p, minlength=len(names)) / counts,
        np.bincount(index, weights=t, minlength=len(names)) / counts,
        names,
    )


def summary(pred, true, conditions: Sequence | None = None) -> dict[str, float]:
    """All metrics per file; with ``conditions``, also Pearson, Spearman and RMSE per condition."""
    p, t = _pair(pred, true)
    out = {
        "n": int(p.size),
        "pearson": pearson(p, t),
        "spearman": spearman(p, t),
        "kendall": kendall(p, t),
        "rmse": rmse(p, t),
        "mae": mae(p, t),
    }
    if p.size > 2:
        out["rmse_mapped_1"] = rmse_mapped(p, t, order=1)
    if p.size > 4:
        out["rmse_mapped_3"] = rmse_mapped(p, t, order=3)
    if conditions is not None:
        cp, ct, names = per_condition(p, t, conditions)
        out["n_conditions"] = len(names)
        if len(names) > 1:
            out["condition_pearson"] = pearson(cp, ct)
            out["condition_spearman"] = spearman(cp, ct)
            out["condition_rmse"] = rmse(cp, ct)
    return out
