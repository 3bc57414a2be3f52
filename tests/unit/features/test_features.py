"""One feature implementation: the online row equals the offline row for the same hour."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rps.data.sources.scenarios import apply_drift
from rps.features import FeatureError, FeatureSpec, build_feature_row, build_features
from rps.features.build import (
    TARGET,
    TARGET_TIME,
    build_horizon_features,
    build_horizon_rows,
)
from rps.features.humidity import implied_dew_point, implied_temperature
from rps.features.spec import HORIZON, HUMIDITY_GAP, SAME_HOUR
from rps.params import DriftScenario


@pytest.fixture(scope="module")
def spec(params) -> FeatureSpec:
    return FeatureSpec.from_params(params.data.variables, params.data.target, params.features)


@pytest.fixture(scope="module")
def offline(observations, spec) -> pd.DataFrame:
    return build_features(observations, spec)


def test_feature_names_match_columns_and_include_the_seasonal_lag(offline, spec):
    assert list(offline.columns[:-2]) == spec.feature_names
    assert f"temperature_2m_lag{24 - spec.horizon_hours}" in spec.feature_names
    assert offline.columns[-2:].tolist() == [TARGET, TARGET_TIME]


@pytest.mark.parametrize("position", [200, 1000, 4321, -1])
def test_online_row_equals_offline_row(observations, offline, spec, position):
    issue = observations["time"].iloc[position]
    window = observations[observations["time"] <= issue].tail(spec.window_hours)
    online = build_feature_row(window, spec)
    np.testing.assert_allclose(
        online, offline.loc[issue, spec.feature_names].to_numpy(float), rtol=1e-9, atol=1e-9
    )
    as_array = build_feature_row(window[list(spec.variables)].to_numpy(), spec, issue_time=issue)
    np.testing.assert_allclose(as_array, online)


def test_target_is_the_value_horizon_hours_later(observations, offline, spec):
    issue = observations["time"].iloc[500]
    later = observations.set_index("time").loc[
        issue + pd.Timedelta(hours=spec.horizon_hours), spec.target
    ]
    assert offline.loc[issue, TARGET] == later
    assert offline.loc[issue, TARGET_TIME] == issue + pd.Timedelta(hours=spec.horizon_hours)


def test_features_never_read_the_future(observations, spec):
    """Changing observations after t leaves every feature of row t unchanged."""
    t = observations["time"].iloc[3000]
    changed = observations.copy()
    changed.loc[changed["time"] > t, spec.variables] += 50.0
    a = build_features(observations, spec).loc[t, spec.feature_names]
    b = build_features(changed, spec).loc[t, spec.feature_names]
    pd.testing.assert_series_equal(a, b)


def test_short_window_gap_and_nan_are_refused(observations, spec):
    window = observations.tail(spec.window_hours)
    with pytest.raises(FeatureError, match="the features need"):
        build_feature_row(window.tail(10), spec)
    with pytest.raises(FeatureError, match="gaps"):
        build_feature_row(
            pd.concat(
                [
                    observations.tail(spec.window_hours + 5).head(3),
                    window.tail(spec.window_hours - 3),
                ]
            ),
            spec,
        )
    holed = window.copy()
    holed.iloc[-1, holed.columns.get_loc("temperature_2m")] = np.nan
    with pytest.raises(FeatureError, match="NaN"):
        build_feature_row(holed, spec)
    with pytest.raises(FeatureError, match="lack columns"):
        build_feature_row(window.drop(columns=["cloud_cover"]), spec)


def test_spec_round_trips_through_dict(spec):
    assert FeatureSpec.from_dict(spec.to_dict()) == spec


HORIZONS = (1, 5, 6, 23, 24, 25, 47, 48)


@pytest.mark.parametrize("horizon", HORIZONS)
def test_online_trajectory_row_equals_offline_row_at_every_horizon(observations, spec, horizon):
    """One implementation per horizon: the online rows of a trajectory, the offline rows of
    the spec at that horizon and the stacked offline rows agree."""
    issue = observations["time"].iloc[4000]
    window = observations[observations["time"] <= issue].tail(spec.window_hours)
    at = spec.at_horizon(horizon)
    offline = build_features(observations, at).loc[issue, spec.feature_names].to_numpy(float)
    online = build_horizon_rows(window, spec, [2, horizon])[1]
    np.testing.assert_allclose(online, offline, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(build_feature_row(window, at), offline, rtol=1e-9, atol=1e-9)
    stacked = build_horizon_features(
        observations, spec, pd.DatetimeIndex([issue, issue]), np.array([3, horizon])
    )
    np.testing.assert_allclose(
        stacked[spec.feature_names].to_numpy(float)[1], offline, rtol=1e-9, atol=1e-9
    )
    later = observations.set_index("time").loc[issue + pd.Timedelta(hours=horizon), spec.target]
    assert stacked[TARGET].iloc[1] == later
    assert stacked[TARGET_TIME].iloc[1] == issue + pd.Timedelta(hours=horizon)


def test_horizon_features_hold_the_lead_time_and_the_same_hour_of_day(observations, spec):
    issue = observations["time"].iloc[3000]
    frame = build_horizon_features(
        observations, spec, pd.DatetimeIndex([issue] * 3), np.array([6, 24, 30])
    )
    series = observations.set_index("time")[spec.target]
    assert frame[HORIZON].tolist() == [6.0, 24.0, 30.0]
    # +6 h: the target hour was last observed 18 h ago; +24 h and +30 h: now and 18 h ago
    hours_back = [18, 0, 18]
    for row, back in zip(frame[SAME_HOUR[0]], hours_back, strict=True):
        assert row == series.loc[issue - pd.Timedelta(hours=back)]
    for row, back in zip(frame[SAME_HOUR[1]], hours_back, strict=True):
        assert row == series.loc[issue - pd.Timedelta(hours=back + 24)]
    change = series.loc[:issue].tail(72).to_numpy() - series.loc[:issue].iloc[-96:-24].to_numpy()
    assert frame[spec.change_rms_name].iloc[0] == pytest.approx(np.sqrt(np.mean(change**2)))


def test_a_spec_without_horizon_features_keeps_its_columns_and_refuses_other_horizons(
    observations, spec
):
    """A spec stored before trajectories (no ``horizon_features`` key) reads as it was."""
    stored = {k: v for k, v in spec.to_dict().items() if k != "horizon_features"}
    old = FeatureSpec.from_dict(stored)
    assert not old.horizon_features and HORIZON not in old.feature_names
    assert old.feature_names == spec.feature_names[: len(old.feature_names)]
    window = observations.tail(old.window_hours)
    assert build_feature_row(window, old).shape == (len(old.feature_names),)
    with pytest.raises(FeatureError, match=r"forecasts \+6 h only"):
        build_horizon_rows(window, old, [1, 2])
    with pytest.raises(FeatureError, match="horizon_features"):
        build_horizon_features(observations, old, pd.DatetimeIndex([window["time"].iloc[-1]]), [1])


@pytest.mark.parametrize(
    "issue", ["2023-12-31T22:00:00+00:00", "2024-02-28T05:00:00+00:00", "2025-03-01T23:00:00"]
)
def test_online_calendar_features_equal_pandas_across_year_ends_and_leap_days(issue):
    """The online target-time calendar (NumPy) equals the offline one (pandas) at every horizon."""
    from rps.features.build import _time_features as offline_time
    from rps.features.online import _time_features as online_time

    horizons = np.arange(1, 49)
    start = pd.Timestamp(issue)
    start = start.tz_localize("UTC") if start.tzinfo is None else start
    offline = offline_time(start + pd.to_timedelta(horizons, unit="h"))
    online = online_time(pd.Timestamp(issue).to_pydatetime(), horizons)
    np.testing.assert_allclose(online, np.column_stack(list(offline.values())), atol=1e-12)


def test_the_humidity_gap_is_near_zero_while_sensors_agree_and_shows_a_late_temperature(
    observations, spec
):
    """Dew point and humidity imply the temperature: a sensor 6 h late shows as T(t) - T(t-6)."""
    assert HUMIDITY_GAP in spec.feature_names
    agreed = build_features(observations, spec)[HUMIDITY_GAP].dropna()
    assert agreed.abs().median() < 0.3
    onset = pd.Timestamp(observations["time"].iloc[-200])
    late = apply_drift(
        observations,
        DriftScenario(kind="daily_cycle", start=onset, variables=("temperature_2m",), magnitude=6),
    )
    gap = build_features(late, spec)[HUMIDITY_GAP].loc[onset + pd.Timedelta(hours=6) :]
    true = observations.set_index("time")["temperature_2m"]
    missed = (true - true.shift(6)).reindex(gap.index)
    assert float(np.sqrt(np.mean((gap - missed) ** 2))) < 0.6
    assert float(missed.std()) > 2.0  # what the gap recovers is not small


def test_a_spec_stored_before_the_humidity_gap_keeps_its_columns(observations, spec):
    stored = {k: v for k, v in spec.to_dict().items() if k != "humidity_features"}
    old = FeatureSpec.from_dict(stored)
    assert HUMIDITY_GAP not in old.feature_names
    assert old.feature_names == [n for n in spec.feature_names if n != HUMIDITY_GAP]
    window = observations.tail(old.window_hours)
    assert build_feature_row(window, old).shape == (len(old.feature_names),)


def test_implied_temperature_inverts_the_implied_dew_point():
    temperature = np.array([-20.0, 0.0, 15.0, 35.0])
    humidity = np.array([90.0, 55.0, 70.0, 20.0])
    dew_point = implied_dew_point(temperature, humidity)
    assert implied_temperature(dew_point, humidity) == pytest.approx(temperature, abs=1e-9)
    assert implied_temperature(dew_point, np.full(4, 100.0)) == pytest.approx(dew_point)
