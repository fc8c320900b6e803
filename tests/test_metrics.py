"""Metrics against scipy and against the P.1401 mapping's defining properties."""

import numpy as np
import pytest
from scipy import stats

from jsqa import metrics


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    true = rng.uniform(1, 5, 60)
    pred = 1 + 0.15 * (true - 1) ** 2 + rng.normal(0, 0.3, 60)
    return pred, true


def test_correlations_match_scipy(scores):
    pred, true = scores
    assert metrics.pearson(pred, true) == pytest.approx(stats.pearsonr(pred, true)[0], abs=1e-12)
    assert metrics.spearman(pred, true) == pytest.approx(stats.spearmanr(pred, true)[0], abs=1e-12)
    assert metrics.kendall(pred, true) == pytest.approx(stats.kendalltau(pred, true)[0], abs=1e-12)


def test_errors_match_their_definitions(scores):
    pred, true = scores
    assert metrics.rmse(pred, true) == pytest.approx(np.sqrt(np.mean((pred - true) ** 2)))
    assert metrics.mae(pred, true) == pytest.approx(np.mean(np.abs(pred - true)))
    assert metrics.rmse([1, 2, 3], [1, 2, 3]) == 0.0


def test_first_order_mapping_is_linear_regression_with_dof_correction(scores):
    pred, true = scores
    fit = stats.linregress(pred, true)
    residual = true - (fit.intercept + fit.slope * pred)
    expected = np.sqrt(np.sum(residual**2) / (len(pred) - 2))
    assert metrics.rmse_mapped(pred, true, order=1) == pytest.approx(expected, rel=1e-9)


def test_third_order_mapping_removes_a_monotonic_cubic_distortion():
    pred = np.linspace(1, 5, 40)
    true = 0.05 * pred**3 - 0.1 * pred + 1  # monotonic over [1, 5]
    assert metrics.rmse_mapped(pred, true, order=3) < 1e-6
    assert metrics.rmse_mapped(pred, true, order=1) > 0.05
    assert metrics.rmse(pred, true) > 0.5


def test_third_order_mapping_stays_monotonic():
    pred = np.linspace(0, 1, 50)
    true = np.sin(2 * np.pi * pred) + 1.5 * pred  # the free cubic fit rises, falls and rises
    free = np.poly1d(np.polyfit(pred, true, 3))
    grid = np.linspace(0, 1, 500)
    assert free.deriv()(grid).min() < 0
    mapping = metrics.fit_monotonic_polynomial(pred, true, order=3)
    assert mapping.deriv()(grid).min() >= -1e-4
    # Constrained optimum: no worse than the best line (itself a monotonic cubic), no better than the free cubic.
    sse = np.sum((mapping(pred) - true) ** 2)
    line = stats.linregress(pred, true)
    assert sse <= np.sum((line.intercept + line.slope * pred - true) ** 2) + 1e-9
    assert sse >= np.sum((free(pred) - true) ** 2) - 1e-9


def test_per_condition_means():
    pred = [1.0, 2.0, 3.0, 5.0, 4.0]
    true = [2.0, 2.0, 4.0, 4.0, 1.0]
    cp, ct, names = metrics.per_condition(pred, true, ["a", "a", "b", "b", "c"])
    assert names == ["a", "b", "c"]
    np.testing.assert_allclose(cp, [1.5, 4.0, 4.0])
    np.testing.assert_allclose(ct, [2.0, 4.0, 1.0])


def test_summary_has_every_metric(scores):
    pred, true = scores
    conditions = np.repeat(np.arange(6), 10)
    out = metrics.summary(pred, true, conditions)
    for key in ("pearson", "spearman", "kendall", "rmse", "mae", "rmse_mapped_1", "rmse_mapped_3"):
        assert np.isfinite(out[key])
    assert out["n"] == 60 and out["n_conditions"] == 6
    assert out["condition_pearson"] == pytest.approx(
        stats.pearsonr(*[m for m in metrics.per_condition(pred, true, conditions)[:2]])[0]
    )
    assert out["rmse_mapped_3"] <= out["rmse_mapped_1"] + 1e-9 < out["rmse"]


def test_input_errors():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.pearson([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="order must be 1 or 3"):
        metrics.rmse_mapped([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], order=2)
