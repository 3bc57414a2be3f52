"""The trajectory: stacked rows, direct group models, fallbacks, the conditional interval.

Small settings throughout (60 days, horizons 1..12 in two groups, 30 boosting rounds).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rps.features.spec import HORIZON
from rps.models import evaluation as ev
from rps.models.bundle import ModelBundle, load_bundle
from rps.models.candidates import fit_candidate
from rps.models.forecasters import ForecasterError, HorizonForecaster
from rps.models.gate import check_horizons
from rps.models.horizons import (
    HorizonRows,
    choose_fallback,
    fit_trajectory,
    metrics_by_horizon,
    out_of_fold,
    stopping_rows,
)
from rps.models.intervals import IntervalError, fit_horizon_interval
from rps.models.splits import prepare_data
from rps.params import HorizonParams

HP = HorizonParams(max_hours=12, group_starts=(1, 4), interval_folds=3)
HYPER = {"num_leaves": 15, "learning_rate": 0.1, "n_estimators": 30}


@pytest.fixture(scope="module")
def data(small_obs, spec, params):
    return prepare_data(small_obs, spec, params.train, hp=HP)


@pytest.fixture(scope="module")
def trajectory(data):
    return fit_trajectory(data.horizons, "lightgbm", HYPER, alpha=0.1, seed=0)


def test_training_rows_never_hold_a_label_of_the_holdout_period(data):
    hd = data.horizons
    train = hd.train
    labels = train.issue_times + pd.to_timedelta(train.horizons, unit="h")
    assert labels.max() <= hd.holdout.issue_times.min()
    # one row per training issue time and group, its horizon drawn inside the group
    groups = np.searchsorted([1, 4], train.horizons, side="right")
    pairs = pd.DataFrame({"t": train.issue_times, "g": groups})
    assert not pairs.duplicated().any()
    assert set(np.unique(train.horizons)) <= set(range(1, 13))
    # the holdout forecasts every horizon of every holdout issue time with a known label
    first = hd.holdout.issue_times[hd.holdout.horizons == 12].min()
    assert set(hd.holdout.horizons[hd.holdout.issue_times == first]) == set(range(1, 13))


def test_each_row_goes_to_the_model_of_its_horizon_group(data, spec):
    train = data.horizons.train
    model, info = fit_candidate(
        "lightgbm", train.x, train.y, spec, {**HYPER, "group_starts": [1, 4], "max_horizon": 12}
    )
    assert isinstance(model, HorizonForecaster) and set(model.boosters) == {1, 4}
    assert set(info["best_iterations"]) == {1, 4}
    rows = data.horizons.holdout.x[:40]
    horizons = rows[:, spec.feature_names.index(HORIZON)]
    now = rows[:, spec.feature_names.index(spec.target)]
    for start, members in ((1, horizons < 4), (4, horizons >= 4)):
        expected = now[members] + model.boosters[start].predict(rows[members])
        np.testing.assert_allclose(model.predict(rows)[members], expected)
    beyond = rows[:1].copy()
    beyond[0, spec.feature_names.index(HORIZON)] = 13
    with pytest.raises(ForecasterError, match=r"horizons 1\.\.12"):
        model.predict(beyond)


def test_a_baseline_serves_the_horizons_where_it_beat_the_model(data, spec):
    rows = data.horizons.holdout.take(np.arange(600))
    persistence = rows.baseline("persistence", spec)
    good = rows.y + 0.1
    pred = np.where(rows.horizons == 2, persistence + 50.0, good)  # hopeless at +2 h only
    at = rows.horizons == 2
    errors = {
        b: ev.rmse(rows.y[at], rows.baseline(b, spec)[at])
        for b in ("persistence", "seasonal_naive")
    }
    assert choose_fallback(rows, pred, spec, 12) == {2: min(errors, key=lambda b: errors[b])}


def test_the_fitted_trajectory_serves_its_fallbacks_and_round_trips_in_a_bundle(
    trajectory, data, spec, tmp_path
):
    model = trajectory.predictor
    assert isinstance(model, HorizonForecaster)
    assert model.fallback == trajectory.fallback
    rows = data.horizons.holdout
    for horizon, baseline in trajectory.fallback.items():
        at = rows.horizons == horizon
        np.testing.assert_array_equal(model.predict(rows.x[at]), rows.baseline(baseline, spec)[at])
    bundle = ModelBundle(
        predictor=model,
        feature_spec=spec,
        interval={"alpha": 0.1, "lower": -1.0, "upper": 1.0},
        reference_stats={},
        reference_sample=rows.x[:50],
        horizon_interval=trajectory.interval,
        metrics_by_horizon=[{"horizon_hours": 1.0, "rmse": 1.0}],
    )
    bundle.save(tmp_path / "b")
    loaded = load_bundle(tmp_path / "b")
    assert loaded.max_horizon_hours == 12 and loaded.metrics_by_horizon == bundle.metrics_by_horizon
    point, lower, upper = loaded.predict_with_interval(rows.x[:200])
    np.testing.assert_allclose(point, model.predict(rows.x[:200]))
    expected = trajectory.interval.bounds(rows.x[:200], point, spec.feature_names)
    np.testing.assert_allclose(lower, expected[0])
    np.testing.assert_allclose(upper, expected[1])
    assert np.all(lower < point) and np.all(point < upper)


def test_out_of_fold_forecasts_cover_every_horizon_of_every_block(data):
    oof = out_of_fold(data.horizons, "persistence", {}, seed=0)
    assert set(np.unique(oof.fold)) == {0, 1, 2}
    assert set(np.unique(oof.rows.horizons)) == set(range(1, 13))
    np.testing.assert_array_equal(
        oof.pred, oof.rows.x[:, data.spec.feature_names.index(data.spec.target)]
    )
    assert oof.rows.issue_times.max() < data.horizons.holdout.issue_times.min()


def test_early_stopping_rows_hold_one_drawn_horizon_per_issue_time_and_group(data):
    grid = data.horizons.grid(data.horizons.train.issue_times.unique()[:40], training=True)
    stop = stopping_rows(grid, HP, seed=3)
    picked = grid.take(stop)
    groups = np.searchsorted(np.asarray(HP.group_starts), picked.horizons, side="right") - 1
    pairs = list(zip(picked.issue_times.asi8, groups, strict=True))
    assert len(pairs) == len(set(pairs)) == 40 * len(HP.group_starts)
    assert np.all(np.diff(stop) > 0)  # positions of the grid, in its order
    assert len(set(picked.horizons[groups == 1])) > 1  # drawn, not always the same horizon
    np.testing.assert_array_equal(stop, stopping_rows(grid, HP, seed=3))


def test_metrics_by_horizon_score_the_trajectory_against_both_baselines(trajectory, data, spec):
    rows = data.horizons.holdout
    pred = trajectory.predictor.predict(rows.x)
    lower, upper = trajectory.interval.bounds(rows.x, pred, spec.feature_names)
    scores = metrics_by_horizon(rows, pred, lower, upper, spec, alpha=0.1)
    assert [int(s["horizon_hours"]) for s in scores] == list(range(1, 13))
    assert check_horizons(scores) is None  # a baseline serves where the model lost
    six = scores[5]
    at = rows.horizons == 6
    assert six["rmse"] == pytest.approx(ev.rmse(rows.y[at], pred[at]))
    assert six["persistence_rmse"] == pytest.approx(
        ev.rmse(rows.y[at], rows.baseline("persistence", spec)[at])
    )
    assert six["rmse"] < six["persistence_rmse"]  # spring weather: the model has skill at +6 h
    assert 0.6 < six["coverage"] <= 1.0 and six["mean_width"] > 0
    assert six["interval_score"] >= six["mean_width"]


def _synthetic(n: int, seed: int, spec):  # type: ignore[no-untyped-def]
    """Rows whose error size grows with the horizon and the recent variability."""
    rng = np.random.default_rng(seed)
    names = spec.feature_names
    x = np.zeros((n, len(names)))
    horizon = rng.integers(1, 7, n)
    variability = rng.uniform(0.5, 4.0, n)
    x[:, names.index(HORIZON)] = horizon
    x[:, names.index("target_hour")] = rng.integers(0, 24, n)
    x[:, names.index(spec.change_rms_name)] = variability
    errors = rng.normal(0, 1, n) * np.sqrt(horizon) * variability
    return x, errors


def test_the_interval_covers_90_percent_and_widens_where_errors_are_larger(spec):
    x, errors = _synthetic(30_000, 0, spec)
    folds = np.arange(len(errors)) % 4
    interval = fit_horizon_interval(x, errors, folds, spec, alpha=0.1, max_hours=6)
    fresh, fresh_errors = _synthetic(30_000, 1, spec)
    lower, upper = interval.bounds(fresh, np.zeros(len(fresh)), spec.feature_names)
    horizons = fresh[:, spec.feature_names.index(HORIZON)]
    calm = fresh[:, spec.feature_names.index(spec.change_rms_name)] < 1.0
    for h in range(1, 7):
        at = horizons == h
        assert 0.87 <= ev.interval_coverage(fresh_errors[at], lower[at], upper[at]) <= 0.93
        assert np.mean((upper - lower)[at & calm]) < 0.5 * np.mean((upper - lower)[at & ~calm])
    wide = (upper - lower)[horizons == 6].mean()
    assert wide > 2 * (upper - lower)[horizons == 1].mean()


def test_the_interval_refuses_too_few_errors_and_unknown_horizons(spec):
    x, errors = _synthetic(200, 0, spec)
    with pytest.raises(IntervalError, match="too few"):
        fit_horizon_interval(x, errors, np.arange(200) % 2, spec, alpha=0.01, max_hours=6)
    with pytest.raises(IntervalError, match="two folds"):
        fit_horizon_interval(x, errors, np.zeros(200, dtype=int), spec, alpha=0.1, max_hours=6)
    interval = fit_horizon_interval(x, errors, np.arange(200) % 2, spec, alpha=0.2, max_hours=6)
    beyond = x[:1].copy()
    beyond[0, spec.feature_names.index(HORIZON)] = 7
    with pytest.raises(IntervalError, match=r"1\.\.6"):
        interval.bounds(beyond, np.zeros(1), spec.feature_names)


def test_horizon_rows_baselines_read_the_target_now_and_the_same_hour_a_day_before(data, spec):
    rows: HorizonRows = data.horizons.holdout
    series = data.features[spec.target]
    t, h = rows.issue_times[100], int(rows.horizons[100])
    assert rows.baseline("persistence", spec)[100] == series.loc[t]
    same_hour = t + pd.Timedelta(hours=h - 24 * int(np.ceil(h / 24)))
    assert rows.baseline("seasonal_naive", spec)[100] == series.loc[same_hour]


def test_too_little_data_for_the_interval_is_a_named_training_error(small_obs, spec, params):
    from rps.models.errors import InsufficientDataError

    hp = HorizonParams(max_hours=12, group_starts=(1, 4), interval_folds=2)
    data = prepare_data(small_obs.iloc[-30 * 24 :], spec, params.train, hp=hp)
    with pytest.raises(InsufficientDataError, match="interval"):
        fit_trajectory(data.horizons, "persistence", {}, alpha=0.002, seed=0)


def test_a_drift_run_trains_every_horizon_after_the_onset_at_the_issue_times_weight(
    small_obs, spec, params
):
    onset = prepare_data(small_obs, spec, params.train).index[-400]
    data = prepare_data(small_obs, spec, params.train, onset=onset, hp=HP)
    train = data.horizons.train
    rows = pd.DataFrame(
        {
            "t": train.issue_times,
            "g": np.searchsorted([1, 4], train.horizons, side="right"),
            "w": train.weights,
        }
    )
    per_pair = rows.groupby(["t", "g"]).size()
    times = per_pair.index.get_level_values("t")
    assert (per_pair[times < onset] == 1).all()  # one drawn horizon per group before
    # every horizon of both groups after it (but the last issue times, whose labels run out)
    assert per_pair[times >= onset].groupby(level="g").max().tolist() == [3, 9]
    issue_weight = pd.Series(data.train_weights, index=data.index[data.train_pos])
    sums = rows.groupby(["t", "g"])["w"].sum()
    expected = issue_weight.reindex(sums.index.get_level_values("t")).to_numpy()
    assert sums.to_numpy() == pytest.approx(expected)
    assert issue_weight[issue_weight.index >= onset].min() > 1.0  # the new regime weighs more
