"""The online rescale of the interval per horizon from its realised errors."""

from __future__ import annotations

import numpy as np
import pytest

from rps.models.interval_rescale import (
    Rescale,
    apply_factors,
    needed_factor,
    rolling_factor,
)


def test_needed_factor_is_the_error_over_the_offset_on_its_side() -> None:
    errors = np.array([1.0, -1.0, 4.0, -6.0, 0.0, 1.0])
    lower = np.array([-2.0, -2.0, -2.0, -2.0, -2.0, 0.5])  # the last: a wrong-signed offset
    upper = np.array([2.0, 2.0, 2.0, 2.0, 2.0, -0.5])
    assert needed_factor(errors, lower, upper).tolist() == [0.5, 0.5, 2.0, 3.0, 0.0, np.inf]


def test_fewer_joined_forecasts_than_min_samples_keep_the_calibrated_interval() -> None:
    """Negative case: a handful of small errors does not narrow the interval."""
    rescale = Rescale(window=50, min_samples=20)
    factor, samples = rolling_factor(np.full(19, 0.1), rescale)
    assert (factor, samples) == (1.0, 19)
    factor, samples = rolling_factor(np.full(20, 0.8), rescale)
    assert factor == pytest.approx(0.8) and samples == 20


def test_small_errors_narrow_and_large_errors_widen_to_cover_one_minus_alpha() -> None:
    rng = np.random.default_rng(0)
    rescale = Rescale(alpha=0.1, window=2000, min_samples=100)
    calm = np.abs(rng.normal(0, 0.3, 2000))
    stormy = np.abs(rng.normal(0, 1.0, 2000))  # its 90 % quantile: 1.64
    for needed in (calm, stormy):
        factor, _ = rolling_factor(needed, rescale)
        assert np.mean(needed <= factor) == pytest.approx(0.9, abs=0.01)
    assert rolling_factor(calm, rescale)[0] < 1 < rolling_factor(stormy, rescale)[0]


def test_the_factor_reads_the_newest_window_and_stays_within_its_bounds() -> None:
    rescale = Rescale(window=100, min_samples=10, min_factor=0.5, max_factor=2.0)
    old_then_new = np.concatenate([np.full(500, 5.0), np.full(100, 0.7)])
    assert rolling_factor(old_then_new, rescale)[0] == pytest.approx(0.7)
    assert rolling_factor(np.full(100, 0.01), rescale)[0] == 0.5
    assert rolling_factor(np.full(100, 9.0), rescale)[0] == 2.0
    assert rolling_factor(np.full(100, np.inf), rescale)[0] == 2.0


def test_apply_factors_scales_each_rows_offsets_and_keeps_unknown_horizons() -> None:
    point = np.array([10.0, 10.0, 10.0])
    lower, upper, f = apply_factors(
        point, point - 2, point + 4, np.array([1, 2, 9]), np.array([0.5, 1.5])
    )
    assert lower.tolist() == [9.0, 7.0, 8.0]
    assert upper.tolist() == [12.0, 16.0, 14.0]
    assert f.tolist() == [0.5, 1.5, 1.0]


@pytest.mark.parametrize(
    "kwargs",
    [{"alpha": 0.0}, {"window": 10, "min_samples": 11}, {"min_factor": 1.2}, {"max_factor": 0.9}],
)
def test_invalid_rescale_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="rescale"):
        Rescale(**kwargs)  # type: ignore[arg-type]
