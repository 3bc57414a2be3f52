"""Time-series features for forecasting ``target`` ``horizon`` hours ahead.

A row is indexed by its *issue time* ``t``: the newest observation it may use. Every feature
uses observations at or before ``t`` only; the label is the target variable at ``t + horizon``.

Two paths compute the same numbers:

* :func:`build_features` (offline, pandas, this module): every row of a cleaned hourly
  history, for training.
* :func:`rps.features.online.build_feature_row` (online, NumPy): the row for the newest hour
  of a short window of recent observations, for the prediction service. A parity test holds
  them equal. The spec lives in :mod:`rps.features.spec`; both are re-exported here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rps.data.schema import TIME
from rps.features.online import _wind_components, build_feature_row
from rps.features.spec import TARGET, TARGET_TIME, FeatureError, FeatureSpec

__all__ = [
    "TARGET",
    "TARGET_TIME",
    "FeatureError",
    "FeatureSpec",
    "build_feature_row",
    "build_features",
]


def _time_features(target_times: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    hour = target_times.hour.to_numpy().astype(float)
    doy = target_times.dayofyear.to_numpy().astype(float)
    return {
        "target_hour": hour,
        "target_dayofweek": target_times.dayofweek.to_numpy().astype(float),
        "target_month": target_times.month.to_numpy().astype(float),
        "target_hour_sin": np.sin(2 * np.pi * hour / 24),
        "target_hour_cos": np.cos(2 * np.pi * hour / 24),
        "target_doy_sin": np.sin(2 * np.pi * doy / 365.25),
        "target_doy_cos": np.cos(2 * np.pi * doy / 365.25),
    }


def _hourly(observations: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    missing = sorted({TIME, *spec.variables} - set(observations.columns))
    if missing:
        raise FeatureError(f"observations lack columns {missing}")
    frame = observations.set_index(TIME)[list(spec.variables)].astype(float)
    index = pd.DatetimeIndex(frame.index)
    if index.tz is None:
        index = index.tz_localize("UTC")
    frame.index = index
    if not index.is_monotonic_increasing or index.has_duplicates:
        raise FeatureError("observation times must be strictly increasing")
    return frame


def build_features(
    observations: pd.DataFrame, spec: FeatureSpec, *, with_target: bool = True
) -> pd.DataFrame:
    """All feature rows of a cleaned hourly history (offline path).

    Args:
        observations: ``time`` plus ``spec.variables``; hourly, gaps allowed (they give NaN).
        spec: the feature configuration.
        with_target: add ``target`` (value at ``t + horizon``) and ``target_time`` columns.

    Returns:
        One row per hour of the reindexed history, indexed by issue time, columns
        ``spec.feature_names`` (plus the label columns). Rows lacking history hold NaN.
    """
    hourly = _hourly(observations, spec)
    full = pd.date_range(hourly.index.min(), hourly.index.max(), freq="h")
    hourly = hourly.reindex(full)
    columns: dict[str, pd.Series | np.ndarray] = {v: hourly[v] for v in spec.variables}
    for v in spec.lag_variables:
        for lag in spec.lags:
            columns[f"{v}_lag{lag}"] = hourly[v].shift(lag)
    for v in spec.rolling_variables:
        for w in spec.rolling_windows:
            roll = hourly[v].rolling(w, min_periods=w)
            columns[f"{v}_roll{w}_mean"] = roll.mean()
            columns[f"{v}_roll{w}_std"] = roll.std()
            columns[f"{v}_roll{w}_min"] = roll.min()
            columns[f"{v}_roll{w}_max"] = roll.max()
    names = spec._domain_names()
    if "dewpoint_depression" in names:
        columns["dewpoint_depression"] = hourly["temperature_2m"] - hourly["dew_point_2m"]
    k = spec.pressure_tendency_hours
    if f"pressure_tendency_{k}h" in names:
        columns[f"pressure_tendency_{k}h"] = hourly["surface_pressure"].diff(k)
    if "wind_u" in names:
        u, v_ = _wind_components(
            hourly["wind_speed_10m"].to_numpy(), hourly["wind_direction_10m"].to_numpy()
        )
        columns["wind_u"], columns["wind_v"] = u, v_
    target_times = full + pd.Timedelta(hours=spec.horizon_hours)
    columns.update(_time_features(target_times))
    features = pd.DataFrame(columns, index=full)[spec.feature_names]
    # the first rows lack the history their lags and windows need
    features.iloc[: spec.window_hours - 1] = np.nan
    features.index.name = TIME
    if with_target:
        features[TARGET] = hourly[spec.target].shift(-spec.horizon_hours)
        features[TARGET_TIME] = target_times
    return features
