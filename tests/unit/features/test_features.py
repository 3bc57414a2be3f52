"""One feature implementation: the online row equals the offline row for the same hour."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rps.features import FeatureError, FeatureSpec, build_feature_row, build_features
from rps.features.build import TARGET, TARGET_TIME


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
