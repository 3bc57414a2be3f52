"""Time-series features for forecasting ``target`` ``horizon`` hours ahead.

A row is indexed by its *issue time* ``t``: the newest observation it may use. Every feature
uses observations at or before ``t`` only; the label is the target variable at ``t + horizon``.

Two paths compute the same numbers:

* :func:`build_features` (offline, pandas): every row of a cleaned hourly history, for training.
* :func:`build_feature_row` (online, NumPy): the row for the newest hour of a short window of
  recent observations, for the prediction service. A parity test holds them equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from rps.data.schema import TIME
from rps.params import FeatureParams

TARGET = "target"
TARGET_TIME = "target_time"
_STATS = ("mean", "std", "min", "max")
_HOUR_NS = pd.Timedelta(hours=1).value


class FeatureError(ValueError):
    """Observations cannot yield the requested features (too short, gaps, missing columns)."""


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that decides the feature columns; stored with every model."""

    variables: tuple[str, ...]
    target: str
    horizon_hours: int
    lags: tuple[int, ...]
    rolling_windows: tuple[int, ...]
    lag_variables: tuple[str, ...]
    pressure_tendency_hours: int

    @classmethod
    def from_params(cls, variables: Sequence[str], target: str, fp: FeatureParams) -> FeatureSpec:
        lags = set(fp.lags)
        if fp.horizon_hours < 24:
            lags.add(24 - fp.horizon_hours)  # the seasonal-naive baseline reads this lag
        return cls(
            variables=tuple(variables),
            target=target,
            horizon_hours=fp.horizon_hours,
            lags=tuple(sorted(lags)),
            rolling_windows=tuple(fp.rolling_windows),
            lag_variables=tuple(fp.lag_variables),
            pressure_tendency_hours=fp.pressure_tendency_hours,
        )

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FeatureSpec:
        def ints(key: str) -> tuple[int, ...]:
            return tuple(int(v) for v in data[key])  # type: ignore[attr-defined]

        def strs(key: str) -> tuple[str, ...]:
            return tuple(str(v) for v in data[key])  # type: ignore[attr-defined]

        return cls(
            variables=strs("variables"),
            target=str(data["target"]),
            horizon_hours=int(data["horizon_hours"]),  # type: ignore[call-overload]
            lags=ints("lags"),
            rolling_windows=ints("rolling_windows"),
            lag_variables=strs("lag_variables"),
            pressure_tendency_hours=int(data["pressure_tendency_hours"]),  # type: ignore[call-overload]
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "variables": list(self.variables),
            "target": self.target,
            "horizon_hours": self.horizon_hours,
            "lags": list(self.lags),
            "rolling_windows": list(self.rolling_windows),
            "lag_variables": list(self.lag_variables),
            "pressure_tendency_hours": self.pressure_tendency_hours,
        }

    @property
    def rolling_variables(self) -> tuple[str, ...]:
        return tuple(v for v in (self.target, "dew_point_2m") if v in self.variables)

    @property
    def window_hours(self) -> int:
        """Observations the newest row needs (the online window length)."""
        return max(*self.lags, *self.rolling_windows, self.pressure_tendency_hours) + 1

    @property
    def feature_names(self) -> list[str]:
        names = [f"{v}" for v in self.variables]
        names += [f"{v}_lag{lag}" for v in self.lag_variables for lag in self.lags]
        names += [
            f"{v}_roll{w}_{stat}"
            for v in self.rolling_variables
            for w in self.rolling_windows
            for stat in _STATS
        ]
        names += self._domain_names()
        names += [
            "target_hour",
            "target_dayofweek",
            "target_month",
            "target_hour_sin",
            "target_hour_cos",
            "target_doy_sin",
            "target_doy_cos",
        ]
        return names

    def _domain_names(self) -> list[str]:
        names = []
        if {"temperature_2m", "dew_point_2m"} <= set(self.variables):
            names.append("dewpoint_depression")
        if "surface_pressure" in self.variables:
            names.append(f"pressure_tendency_{self.pressure_tendency_hours}h")
        if {"wind_speed_10m", "wind_direction_10m"} <= set(self.variables):
            names += ["wind_u", "wind_v"]
        return names


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


def _scalar_time_features(issue_time: pd.Timestamp | datetime, horizon_hours: int) -> list[float]:
    """:func:`_time_features` for one timestamp, without building a DatetimeIndex."""
    ts = issue_time if isinstance(issue_time, datetime) else pd.Timestamp(issue_time)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    target = (ts + timedelta(hours=horizon_hours)).astimezone(UTC)
    hour = float(target.hour)
    doy = float(target.timetuple().tm_yday)
    return [
        hour,
        float(target.weekday()),
        float(target.month),
        math.sin(2 * math.pi * hour / 24),
        math.cos(2 * math.pi * hour / 24),
        math.sin(2 * math.pi * doy / 365.25),
        math.cos(2 * math.pi * doy / 365.25),
    ]


def _wind_components(speed: np.ndarray, direction_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # meteorological convention: direction the wind comes from
    radians = np.deg2rad(direction_deg)
    return -speed * np.sin(radians), -speed * np.cos(radians)


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


def build_feature_row(
    window: pd.DataFrame | np.ndarray, spec: FeatureSpec, *, issue_time: pd.Timestamp | None = None
) -> np.ndarray:
    """The feature row for the newest hour of a window of recent observations (online path).

    Args:
        window: either a DataFrame with ``time`` and ``spec.variables`` covering at least
            ``spec.window_hours`` consecutive hours, or an array of shape
            ``(n >= window_hours, len(spec.variables))`` with ``issue_time`` given.
        spec: the feature configuration.
        issue_time: the time of the window's last row (array input only).

    Returns:
        A float array in ``spec.feature_names`` order.

    Raises:
        FeatureError: the window is too short, has gaps or NaN where features need values.
    """
    need = spec.window_hours
    if isinstance(window, pd.DataFrame):
        hourly = _hourly(window, spec)
        if len(hourly) < need:
            raise FeatureError(
                f"observation window has {len(hourly)} hours, the features need {need}"
            )
        hourly = hourly.iloc[-need:]
        if np.any(np.diff(pd.DatetimeIndex(hourly.index).asi8) != _HOUR_NS):
            raise FeatureError("observation window must be consecutive hours without gaps")
        values = hourly.to_numpy(dtype=float)
        issue_time = pd.Timestamp(hourly.index[-1])
    else:
        if issue_time is None:
            raise FeatureError("issue_time is required with an array window")
        values = np.asarray(window, dtype=float)
        if values.ndim != 2 or values.shape[1] != len(spec.variables):
            raise FeatureError(f"window must have shape (n, {len(spec.variables)})")
        if values.shape[0] < need:
            raise FeatureError(
                f"observation window has {values.shape[0]} hours, the features need {need}"
            )
        values = values[-need:]
    col = {v: i for i, v in enumerate(spec.variables)}
    last = values[-1]
    out: list[float] = list(last)
    for v in spec.lag_variables:
        series = values[:, col[v]]
        out.extend(series[-1 - lag] for lag in spec.lags)
    for v in spec.rolling_variables:
        series = values[:, col[v]]
        for w in spec.rolling_windows:
            tail = series[-w:]
            out.extend((tail.mean(), tail.std(ddof=1) if w > 1 else np.nan, tail.min(), tail.max()))
    names = spec._domain_names()
    if "dewpoint_depression" in names:
        out.append(last[col["temperature_2m"]] - last[col["dew_point_2m"]])
    k = spec.pressure_tendency_hours
    if f"pressure_tendency_{k}h" in names:
        pressure = values[:, col["surface_pressure"]]
        out.append(pressure[-1] - pressure[-1 - k])
    if "wind_u" in names:
        u, v_ = _wind_components(
            np.array([last[col["wind_speed_10m"]]]), np.array([last[col["wind_direction_10m"]]])
        )
        out.extend((float(u[0]), float(v_[0])))
    out.extend(_scalar_time_features(issue_time, spec.horizon_hours))
    row = np.asarray(out, dtype=float)
    if np.isnan(row).any():
        bad = [n for n, x in zip(spec.feature_names, row, strict=True) if np.isnan(x)]
        raise FeatureError(f"observation window holds NaN needed by features {bad[:5]}")
    return row
