"""The conditional interval's scale: its inputs and its stored form."""

from __future__ import annotations

import numpy as np
import pytest

from rps.features.spec import HORIZON
from rps.models import evaluation as ev
from rps.models.intervals import (
    DEW_POINT,
    HorizonInterval,
    IntervalError,
    fit_horizon_interval,
    scale_columns,
    scale_terms,
)


def _humid_and_dry(n: int, seed: int, spec):  # type: ignore[no-untyped-def]
    """Rows whose error size grows with the horizon and shrinks as the dew point rises."""
    rng = np.random.default_rng(seed)
    names = spec.feature_names
    x = np.zeros((n, len(names)))
    horizon = rng.integers(1, 5, n)
    dew = rng.uniform(-10.0, 22.0, n)
    x[:, names.index(HORIZON)] = horizon
    x[:, names.index("target_hour")] = rng.integers(0, 24, n)
    x[:, names.index(spec.change_rms_name)] = 3.0
    x[:, names.index(DEW_POINT)] = dew
    errors = 3 * rng.normal(0, 1, n) * np.sqrt(horizon) * np.exp(-0.04 * dew)  # degC-sized
    return x, errors


def test_the_scale_reads_the_dew_point_so_humid_hours_get_narrow_calibrated_intervals(spec):
    assert scale_columns(spec)["dew_point"] == DEW_POINT
    x, errors = _humid_and_dry(30_000, 0, spec)
    interval = fit_horizon_interval(
        x, errors, np.arange(len(errors)) % 4, spec, alpha=0.1, max_hours=4
    )
    fresh, fresh_errors = _humid_and_dry(30_000, 1, spec)
    lower, upper = interval.bounds(fresh, np.zeros(len(fresh)), spec.feature_names)
    dew = fresh[:, spec.feature_names.index(DEW_POINT)]
    humid, dry = dew > 15, dew < -3
    for part in (humid, dry):  # right in either air mass, not only on average
        assert 0.87 <= ev.interval_coverage(fresh_errors[part], lower[part], upper[part]) <= 0.93
    assert np.mean((upper - lower)[humid]) < 0.5 * np.mean((upper - lower)[dry])


def test_an_interval_stored_before_the_dew_point_loads_and_ignores_it(spec):
    """A bundle's JSON from before the dew point term: its columns and 13 coefficients."""
    columns = {k: v for k, v in scale_columns(spec).items() if k != "dew_point"}
    coef = [0.0] * scale_terms(columns)
    coef[1] = 0.5
    stored = {
        "alpha": 0.1,
        "columns": columns,
        "coef": coef,
        "lower": [-1.0] * 3,
        "upper": [2.0] * 3,
    }
    interval = HorizonInterval.from_dict(stored)
    assert len(interval.coef) == 13 and interval.to_dict() == stored
    rows = np.zeros((2, len(spec.feature_names)))
    rows[:, spec.feature_names.index(HORIZON)] = 3
    rows[:, spec.feature_names.index(DEW_POINT)] = [-10.0, 25.0]
    lower, upper = interval.bounds(rows, np.zeros(2), spec.feature_names)
    np.testing.assert_allclose(upper, 2.0 * np.sqrt(3))  # exp(0.5 log 3); the dew point unread
    np.testing.assert_allclose(lower, -np.sqrt(3))


def test_coefficients_that_do_not_match_the_scale_inputs_are_refused(spec):
    columns = scale_columns(spec)
    interval = HorizonInterval(
        alpha=0.1, columns=columns, coef=[0.0] * 13, lower=[-1.0], upper=[1.0]
    )
    rows = np.ones((1, len(spec.feature_names)))
    with pytest.raises(IntervalError, match="13 scale coefficients for 15 terms"):
        interval.bounds(rows, np.zeros(1), spec.feature_names)
