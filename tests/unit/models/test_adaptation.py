"""The drift helpers: onset from the champion's errors, the recent holdout, recency weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rps.models import evaluation as ev
from rps.models.adaptation import (
    detector_onset,
    estimate_onset,
    inherits,
    is_drift_reason,
    recency_weights,
    recent_holdout,
    refit_with_holdout,
)
from rps.models.candidates import fit_candidate
from rps.models.horizons import fit_trajectory
from rps.models.selection import CandidateResult
from rps.models.splits import prepare_data
from rps.models.tuning import CVOutcome
from rps.params import HorizonParams
from rps.serving.accuracy import ErrorTest


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


TEST = ErrorTest(allowance=1.0, cap=16.0, threshold=30.0)


def onset_of(ratios: np.ndarray, errors: np.ndarray, times: pd.DatetimeIndex) -> pd.Timestamp:
    found = detector_onset(
        times, ratios, errors, window=6, horizon_hours=6, error_test=TEST, error_scale=1.0
    )
    assert found is not None
    return found


def test_the_detector_onset_is_the_first_row_of_the_first_window_over_its_limit() -> None:
    times = hourly(400)
    ratios = np.full(400, 0.5)
    ratios[303:] = 2.0  # the window ending at 303 is the first over its limit
    errors = np.zeros(400)
    assert onset_of(ratios, errors, times) == times[303 - 5]


def test_the_detector_onset_is_where_the_error_cusum_last_stood_at_zero() -> None:
    times = hourly(400)
    ratios = np.full(400, 0.5)
    errors = np.ones(400)  # at training accuracy: the CUSUM stays at 0
    errors[250:] = 3.0  # 9 - 2 = 7 a step: crosses 30 on the 5th error
    # errors are realised 6 h after their issue hour: the evidence starts at 250's target hour
    assert onset_of(ratios, errors, times) == times[250] + pd.Timedelta(hours=6)


def test_the_detector_onset_belongs_to_the_last_episode_of_crossings() -> None:
    times = hourly(400)
    ratios = np.full(400, 0.5)
    ratios[100:104] = 1.5  # a blip, more than a day before the drift: another episode
    ratios[300:] = 1.5
    ratios[320:330] = 0.8  # a lull of hours inside the episode does not split it
    errors = np.full(400, np.nan)  # nothing realised yet
    assert onset_of(ratios, errors, times) == times[300 - 5]


def test_an_episode_that_is_over_places_no_onset() -> None:
    """Errors that crossed days ago and calmed down are not the incident the inputs show now."""
    times = hourly(400)
    ratios = np.full(400, 0.5)
    ratios[390:] = 2.0  # the present drift: input evidence from 385
    errors = np.ones(400)
    errors[100:110] = 3.0  # a past episode of large errors, over for days
    errors[388:] = np.nan  # the present's errors are not realised yet
    assert onset_of(ratios, errors, times) == times[385]


def test_a_check_over_its_limit_from_the_start_places_no_onset() -> None:
    """A reference that does not fit the season: crossing all along, nothing changed."""
    times = hourly(400)
    ratios = np.full(400, 5.0)
    ratios[:5] = np.nan  # the first window fills at hour 5
    errors = np.ones(400)
    errors[250:] = 3.0  # ... while the errors do show when something changed
    assert onset_of(ratios, errors, times) == times[250] + pd.Timedelta(hours=6)


def test_the_onset_is_the_earliest_start_of_the_kinds_of_check() -> None:
    times = hourly(400)
    ratios = np.full(400, 0.5)
    ratios[280:] = 2.0  # input evidence from 275
    errors = np.ones(400)
    errors[250:] = 3.0  # error evidence from 250 + 6 h
    assert onset_of(ratios, errors, times) == times[256]
    errors[250:270] = 1.0  # error evidence from 270 + 6 h
    assert onset_of(ratios, errors, times) == times[275]


def test_no_detector_onset_when_no_check_crossed() -> None:
    times = hourly(200)
    found = detector_onset(
        times,
        np.full(200, np.nan),
        np.ones(200),
        window=6,
        horizon_hours=6,
        error_test=TEST,
        error_scale=1.0,
    )
    assert found is None


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


def test_a_scheduled_run_inherits_the_onset_while_its_holdout_would_reach_before_it() -> None:
    times = pd.Series(pd.date_range("2025-01-01", periods=1000, freq="h", tz="UTC"))
    # 100 rows after the onset, a scheduled holdout of 200: it would mix both regimes
    assert inherits(times, times[900], holdout_fraction=0.2)
    # 250 rows after it: a scheduled holdout lies wholly in the new regime
    assert not inherits(times, times[750], holdout_fraction=0.2)
    assert not inherits(times, times.iloc[-1] + pd.Timedelta(hours=1), holdout_fraction=0.2)


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


HP = HorizonParams(max_hours=12, group_starts=(1, 4), interval_folds=3)
HYPER = {"num_leaves": 15, "learning_rate": 0.1, "n_estimators": 30}


def chosen_result(name: str, predictor, data, trajectory=None) -> CandidateResult:
    pred = predictor.predict(data.x[data.holdout_pos])
    cv = CVOutcome(rmse=1.0, fold_rmse=[1.0], residuals=np.zeros(1))
    kind = "lightgbm_horizons" if trajectory is not None else "linear"
    return CandidateResult(name, kind, dict(HYPER), predictor, cv, pred, {}, {}, None, trajectory)


def test_the_refit_learns_the_holdout_and_keeps_the_evidence(small_obs, spec, params) -> None:
    """The served model has seen the holdout; the recorded forecasts (the gate's) have not."""
    onset = prepare_data(small_obs, spec, params.train).index[-400]
    data = prepare_data(small_obs, spec, params.train, onset=onset, hp=HP)
    fit = fit_trajectory(data.horizons, "lightgbm", HYPER, alpha=0.1, seed=0)
    before = fit.predictor
    chosen = chosen_result("lightgbm", before, data, fit)
    recorded = chosen.holdout_pred.copy()
    refit_with_holdout(chosen, data, params.train)
    assert chosen.predictor is not before
    assert chosen.trajectory is fit and fit.predictor is chosen.predictor  # served as refit
    assert chosen.predictor.fallback == before.fallback
    hold = data.horizons.holdout
    refit_rmse = ev.rmse(hold.y, chosen.predictor.predict(hold.x))
    assert refit_rmse < ev.rmse(hold.y, before.predict(hold.x))
    assert np.array_equal(chosen.holdout_pred, recorded)


def test_a_refit_single_horizon_model_trains_on_the_holdout_rows(small_obs, spec, params) -> None:
    onset = prepare_data(small_obs, spec, params.train).index[-400]
    data = prepare_data(small_obs, spec, params.train, onset=onset)
    x_tr, y_tr = data.x[data.train_pos], data.y[data.train_pos]
    ridge, _ = fit_candidate(
        "ridge", x_tr, y_tr, spec, {"alpha": 1.0}, sample_weight=data.train_weights
    )
    chosen = chosen_result("ridge", ridge, data)
    refit_with_holdout(chosen, data, params.train)
    x_ho, y_ho = data.x[data.holdout_pos], data.y[data.holdout_pos]
    assert ev.rmse(y_ho, chosen.predictor.predict(x_ho)) < ev.rmse(y_ho, chosen.holdout_pred)
    with pytest.raises(ValueError, match="drift run"):
        refit_with_holdout(chosen, prepare_data(small_obs, spec, params.train), params.train)


def test_a_refit_regime_ridge_learns_the_new_regime_from_the_rows_after_the_onset(
    small_obs, spec, params
) -> None:
    """The refit passes the post-onset rows: the served ridge has the new regime's coefficients."""
    onset = prepare_data(small_obs, spec, params.train).index[-400]
    data = prepare_data(small_obs, spec, params.train, onset=onset)
    assert prepare_data(small_obs, spec, params.train).regime(data.train_pos) is None
    hyper = {"alpha": 1.0, "regime_alpha": params.train.adaptation.regime_alpha}
    x_tr, y_tr = data.x[data.train_pos], data.y[data.train_pos]
    ridge, _ = fit_candidate("ridge", x_tr, y_tr, spec, hyper, sample_weight=data.train_weights)
    chosen = chosen_result("ridge", ridge, data)
    chosen.hyper = hyper
    refit_with_holdout(chosen, data, params.train)
    keep = np.concatenate([data.train_pos, data.holdout_pos])
    weights = recency_weights(data.index[keep], onset, params.train.adaptation.recent_weight_share)
    args = ("ridge", data.x[keep], data.y[keep], spec, hyper)
    per_regime, _ = fit_candidate(*args, sample_weight=weights, regime=data.regime(keep))
    one_set, _ = fit_candidate(*args, sample_weight=weights)
    rows = data.x[data.holdout_pos]
    np.testing.assert_allclose(chosen.predictor.predict(rows), per_regime.predict(rows))
    assert not np.allclose(chosen.predictor.predict(rows), one_set.predict(rows))
