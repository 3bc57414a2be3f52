"""Metrics, the Diebold-Mariano test, split-conformal offsets, reference statistics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rps.models import evaluation as ev


def test_point_metrics_on_known_values():
    y = np.array([10.0, 12.0, 8.0, 0.5])
    p = np.array([11.0, 12.0, 6.0, 0.5])
    now = np.array([9.0, 13.0, 8.0, 1.0])
    assert ev.rmse(y, p) == pytest.approx(math.sqrt((1 + 0 + 4 + 0) / 4))
    assert ev.mae(y, p) == pytest.approx(0.75)
    sst = np.sum((y - y.mean()) ** 2)
    assert ev.r2(y, p) == pytest.approx(1 - 5 / sst)
    # |y| < 1 is left out of MAPE
    assert ev.mape(y, p) == pytest.approx(np.mean([0.1, 0.0, 0.25]) * 100)
    assert ev.smape(y, p) == pytest.approx(np.mean([2 / 21, 0, 4 / 14, 0]) * 100)
    # sign of change from now: actual +1,-1,0(skipped),-0.5 ; forecast +2, -1, -, -0.5
    assert ev.directional_accuracy(y, p, now) == pytest.approx(1.0)
    assert ev.skill_score(1.0, 2.0) == pytest.approx(0.5)
    metrics = ev.point_metrics(y, p, now)
    assert metrics["skill_vs_persistence"] == pytest.approx(1 - ev.rmse(y, p) / ev.rmse(y, now))


def test_metric_edge_cases():
    assert math.isnan(ev.r2(np.ones(3), np.zeros(3)))
    assert math.isnan(ev.mape(np.zeros(3), np.ones(3)))
    assert ev.smape(np.zeros(2), np.zeros(2)) == 0.0
    with pytest.raises(ValueError, match="zero forecasts"):
        ev.rmse(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="y_true has"):
        ev.rmse(np.ones(2), np.ones(3))


def test_error_by_hour():
    hours = np.array([0, 0, 1, 25])
    out = ev.error_by_hour(np.array([1.0, 1, 1, 1]), np.array([0.0, 2, 1, 3]), hours)
    assert out == {0: pytest.approx(1.0), 1: pytest.approx(math.sqrt(2))}


def test_dm_identical_forecasts_have_no_evidence():
    e = np.random.default_rng(0).normal(size=200)
    result = ev.diebold_mariano(e, e, horizon=6)
    assert result.statistic == 0.0
    assert result.p_value_better == result.p_value_worse == 0.5


def test_dm_detects_a_better_forecast_and_is_symmetric():
    rng = np.random.default_rng(1)
    good = rng.normal(0, 1.0, 500)
    bad = rng.normal(0, 1.6, 500)
    ab = ev.diebold_mariano(good, bad, horizon=6)
    ba = ev.diebold_mariano(bad, good, horizon=6)
    assert ab.p_value_better < 0.001
    assert ab.p_value_better + ab.p_value_worse == pytest.approx(1.0)
    assert ba.p_value_worse == pytest.approx(ab.p_value_better)
    assert ab.mean_loss_diff < 0
    assert ab.lag == ev.default_dm_lag(500, 6) == 24


def test_dm_equal_accuracy_is_rarely_significant():
    """Under the null (same error distribution) the one-sided test rejects about alpha."""
    rng = np.random.default_rng(2)
    rejections = 0
    for _ in range(200):
        a, b = rng.normal(size=(2, 300))
        rejections += ev.diebold_mariano(a, b, horizon=1).p_value_better < 0.05
    assert rejections / 200 < 0.10


def test_dm_autocorrelated_errors_widen_the_test():
    """Errors correlated over hours make a naive (lag 0) test overconfident."""
    rng = np.random.default_rng(3)
    shocks = rng.normal(size=(2, 800))
    kernel = np.ones(24) / np.sqrt(24)
    a = np.convolve(shocks[0], kernel, mode="same")
    b = np.convolve(shocks[1], kernel, mode="same") * 1.05
    naive = ev.diebold_mariano(a, b, lag=0)
    robust = ev.diebold_mariano(a, b, horizon=6)
    assert abs(robust.statistic) < abs(naive.statistic)


def test_dm_constant_differential_and_bad_input():
    e = np.ones(10)
    result = ev.diebold_mariano(e * 0.5, e, horizon=1)
    assert result.p_value_better == 0.0
    assert result.p_value_worse == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        ev.diebold_mariano(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="at least 2"):
        ev.diebold_mariano(np.ones(1), np.ones(1))


@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_conformal_interval_covers_exchangeable_data(alpha):
    """Averaged over many calibration/test splits, coverage is >= 1 - alpha (and close)."""
    rng = np.random.default_rng(4)
    coverages = []
    for _ in range(200):
        calibration = rng.standard_t(df=4, size=300) + 0.3  # skewed location, heavy tails
        test = rng.standard_t(df=4, size=300) + 0.3
        offsets = ev.conformal_offsets(calibration, alpha)
        assert offsets["alpha"] == alpha
        assert offsets["lower"] < 0.3 < offsets["upper"]
        coverages.append(ev.interval_coverage(test, offsets["lower"], offsets["upper"]))
    assert np.mean(coverages) >= 1 - alpha - 0.005
    assert np.mean(coverages) <= 1 - alpha + 0.02


def test_conformal_uses_finite_sample_order_statistics():
    residuals = np.arange(1.0, 100.0)  # n = 99
    offsets = ev.conformal_offsets(residuals, 0.1)
    # k_hi = ceil(100 * 0.95) = 95, k_lo = floor(100 * 0.05) = 5
    assert offsets["upper"] == 95.0
    assert offsets["lower"] == 5.0
    with pytest.raises(ValueError, match="too few"):
        ev.conformal_offsets(np.arange(5.0), 0.1)


def test_reference_stats_holds_the_drift_contract():
    frame = pd.DataFrame(
        {"x": np.arange(1000, dtype=float), "cloud": np.r_[np.zeros(400), np.full(600, 100.0)]}
    )
    stats = ev.reference_stats(frame)
    x = stats["x"]
    assert x["count"] == 1000
    assert x["mean"] == pytest.approx(499.5)
    assert x["min"] == 0.0 and x["max"] == 999.0
    assert set(x["quantiles"]) == {f"{q:g}" for q in ev.REFERENCE_QUANTILES}
    assert x["quantiles"]["0.5"] == pytest.approx(499.5)
    assert len(x["bin_edges"]) == 9
    assert x["bin_fractions"] == pytest.approx([0.1] * 10)
    # ties: the bins still add up and reflect the real shares
    cloud = stats["cloud"]
    assert sum(cloud["bin_fractions"]) == pytest.approx(1.0)
    assert cloud["bin_fractions"][0] == pytest.approx(0.4)
