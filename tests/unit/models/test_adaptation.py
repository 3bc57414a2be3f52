"""The drift helpers: onset from the champion's errors, the recent holdout, recency weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rps.models.adaptation import (
    estimate_onset,
    is_drift_reason,
    recency_weights,
    recent_holdout,
)
from rps.models.splits import prepare_data


def hourly(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC")


@pytest.mark.parametrize(
    ("reason", "drift"),
    [
        ("DataDriftDetected: input drift", True),
        ("LiveAccuracyDegraded", True),
        ("drift", True),
        ("schedule", False),
        ("manual", False),
        ("ServiceUnhealthy: down", False),
    ],
)
def test_a_drift_alert_as_reason_makes_a_run_adapt(reason: str, drift: bool) -> None:
    assert is_drift_reason(reason) is drift


def test_the_onset_is_where_the_errors_step_up() -> None:
    rng = np.random.default_rng(0)
    times = hourly(500)
    errors = rng.exponential(1.0, 500)
    errors[380:] += 6.0
    assert estimate_onset(times, errors) == times[380]


def test_no_onset_when_the_errors_do_not_rise() -> None:
    times = hourly(300)
    errors = np.r_[np.full(150, 4.0), np.full(150, 1.0)]  # the errors fell
    assert estimate_onset(times, errors) is None
    assert estimate_onset(times[:10], np.ones(10)) is None  # too short to tell


def test_recent_holdout_is_at_most_half_the_post_onset_rows_and_keeps_the_gap() -> None:
    index = hourly(2000)
    onset = index[1700]  # 300 rows after the onset
    train, holdout = recent_holdout(index, onset, window_hours=168, gap_hours=6)
    assert len(holdout) == 150 and holdout[-1] == 1999
    assert index[train[-1]] <= index[holdout[0]] - pd.Timedelta(hours=6)
    assert (index[train] >= onset).sum() > 100  # the rest of the new regime is trained on
    _, long_after = recent_holdout(index, index[100], window_hours=168, gap_hours=6)
    assert len(long_after) == 168
    _, fresh = recent_holdout(index, index[1990], window_hours=168, gap_hours=6)
    assert len(fresh) == 48  # never fewer than the minimum, reaching back before the onset


def test_recency_weights_give_the_new_regime_its_share() -> None:
    index = hourly(1000)
    weights = recency_weights(index, index[900], 0.5)
    assert weights[:900].sum() == pytest.approx(weights[900:].sum())
    assert (weights[:900] == 1).all()
    assert (recency_weights(index, index[0], 0.5) == 1).all()  # nothing before: equal


def test_prepare_data_with_an_onset_holds_out_the_present(small_obs, spec, params) -> None:
    plain = prepare_data(small_obs, spec, params.train)
    onset = plain.index[-400]
    adapted = prepare_data(small_obs, spec, params.train, onset=onset)
    assert adapted.index[adapted.holdout_pos[0]] >= onset
    assert len(adapted.holdout_pos) == 168
    assert adapted.train_weights is not None and plain.train_weights is None
    recent = adapted.index[adapted.train_pos] >= onset
    share = adapted.train_weights[recent].sum() / adapted.train_weights.sum()
    assert share == pytest.approx(params.train.adaptation.recent_weight_share)
