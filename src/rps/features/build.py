"""Time-series features for forecasting ``target`` ``horizon`` hours ahead.

A row is indexed by its *issue time* ``t``: the newest observation it may use. Every feature
uses observations at or before ``t`` only; the label is the target variable at ``t + horizon``.

Two paths compute the same numbers:

* :func:`build_features` (offline, pandas, this module): every row of a cleaned hourly
  history, for training.
* :func:`rps.features.online.build_feature_row` (online, NumPy): the row for the newest hour
  of a short window of recent observations, for the prediction service. A parity test holds
  them equal. The spec lives in :mod:`rps.features.spec`; both are re-exported here.

A spec with ``horizon_features`` adds the lead time and what depends on it (the target at the
target's hour of day, a day and two days back) plus the recent day-to-day variability of the
target, so one model can read rows of every horizon. :func:`build_horizon_features` stacks the
rows of chosen ``(issue time, horizon)`` pairs (offline, for trajectory models) and
:func:`rps.features.online.build_horizon_rows` builds the rows of a whole trajectory online.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rps.data.schema import TIME
from rps.features.humidity import implied_temperature
from rps.features.online import _wind_components, build_feature_row, build_horizon_rows
from rps.features.spec import (
    CHANGE_RMS_HOURS,
    HORIZON,
    HUMIDITY_GAP,
    SAME_HOUR,
    TARGET,
    TARGET_TIME,
    FeatureError,
    FeatureSpec,
)

__all__ = [
    "TARGET",
    "TARGET_TIME",
    "FeatureError",
    "FeatureSpec",
    "build_feature_row",
    "build_features",
    "build_horizon_features",
    "build_horizon_rows",
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
    if HUMIDITY_GAP in names:
        columns[HUMIDITY_GAP] = implied_temperature(
            hourly["dew_point_2m"].to_numpy(dtype=float),
            hourly["relative_humidity_2m"].to_numpy(dtype=float),
        ) - hourly["temperature_2m"].to_numpy(dtype=float)
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
    if spec.horizon_features:
        target = hourly[spec.target].to_numpy()
        horizons = np.full(len(full), spec.horizon_hours)
        columns.update(_horizon_columns(target, np.arange(len(full)), horizons))
        columns[spec.change_rms_name] = _change_rms(hourly[spec.target])
    features = pd.DataFrame(columns, index=full)[spec.feature_names]
    # the first rows lack the history their lags and windows need
    features.iloc[: spec.window_hours - 1] = np.nan
    features.index.name = TIME
    if with_target:
        features[TARGET] = hourly[spec.target].shift(-spec.horizon_hours)
        features[TARGET_TIME] = target_times
    return features


def _horizon_columns(
    target: np.ndarray, positions: np.ndarray, horizons: np.ndarray
) -> dict[str, np.ndarray]:
    """The lead time and the target at the target's hour of day (a day and two days back)."""
    lag = (-horizons) % 24
    return {
        HORIZON: horizons.astype(float),
        SAME_HOUR[0]: _take(target, positions - lag),
        SAME_HOUR[1]: _take(target, positions - lag - 24),
    }


def _change_rms(target: pd.Series) -> pd.Series:
    change = target - target.shift(24)
    rms: pd.Series = np.sqrt((change**2).rolling(CHANGE_RMS_HOURS).mean())
    return rms


def _take(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``values[positions]``, NaN where a position falls outside the array."""
    inside = (positions >= 0) & (positions < len(values))
    out = np.full(len(positions), np.nan)
    out[inside] = values[positions[inside]]
    return out


def build_horizon_features(
    observations: pd.DataFrame,
    spec: FeatureSpec,
    issue_times: pd.DatetimeIndex,
    horizons: np.ndarray,
) -> pd.DataFrame:
    """Feature rows of ``(issue time, horizon)`` pairs, with their labels (offline path).

    Row ``i`` equals the row of ``build_features(observations, spec.at_horizon(horizons[i]))``
    at ``issue_times[i]``; the issue-time features are computed once for all pairs.

    Args:
        observations: as for :func:`build_features`.
        spec: a spec with ``horizon_features``.
        issue_times: one issue time per row (hours of the observations' range).
        horizons: one lead time per row, in hours.

    Returns:
        One row per pair, indexed by issue time: ``spec.feature_names`` plus ``target`` (NaN
        where the target time lies beyond the observations) and ``target_time``.

    Raises:
        FeatureError: the spec has no horizon features, or an issue time is not an hour of
            the observations' range.
    """
    if not spec.horizon_features:
        raise FeatureError("stacking several horizons needs a spec with horizon_features")
    horizons = np.asarray(horizons, dtype=int)
    issue_times = pd.DatetimeIndex(issue_times)
    if len(horizons) != len(issue_times):
        raise FeatureError(f"{len(issue_times)} issue times but {len(horizons)} horizons")
    hourly = _hourly(observations, spec)
    full = pd.date_range(hourly.index.min(), hourly.index.max(), freq="h")
    positions = full.get_indexer(issue_times)
    if (positions < 0).any():
        raise FeatureError("issue times must be hours within the observations' range")
    base = build_features(observations, spec, with_target=False)
    frame = base.iloc[positions].copy()
    target_times = issue_times + pd.to_timedelta(horizons, unit="h")
    target = hourly[spec.target].reindex(full).to_numpy()
    for name, values in {
        **_time_features(target_times),
        **_horizon_columns(target, positions, horizons),
    }.items():
        frame[name] = values
    frame[TARGET] = _take(target, positions + horizons)
    frame[TARGET_TIME] = target_times
    return frame
