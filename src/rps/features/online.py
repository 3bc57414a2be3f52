"""The online feature path: the rows for the newest hour of a short observation window.

:func:`build_feature_row` gives the row at the spec's horizon; :func:`build_horizon_rows`
the rows of a whole trajectory (one per lead time) from the same window.

NumPy only at import time (the prediction service imports it); a DataFrame window is
accepted too and converted with pandas, imported on that path only. A parity test holds it
equal to the offline path (:func:`rps.features.build.build_features`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from rps.features.humidity import implied_temperature
from rps.features.spec import CHANGE_RMS_HOURS, HUMIDITY_GAP, FeatureError, FeatureSpec

if TYPE_CHECKING:
    import pandas as pd

_HOUR_NS = 3_600_000_000_000


def _time_features(issue_time: Any, horizons: np.ndarray) -> np.ndarray:
    """The offline time features of the target times ``issue_time + horizons`` (UTC), as a
    ``(len(horizons), 7)`` array, without building a DatetimeIndex."""
    if isinstance(issue_time, datetime):
        ts = issue_time
    else:
        import pandas as pd

        ts = pd.Timestamp(issue_time).to_pydatetime()
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    seconds = math.floor(ts.timestamp()) + 3600 * np.asarray(horizons, dtype=np.int64)
    day = np.floor_divide(seconds, 86_400)
    hour = (np.floor_divide(seconds, 3600) % 24).astype(float)
    dates = day.astype("datetime64[D]")
    month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    doy = (dates - dates.astype("datetime64[Y]")).astype(np.int64) + 1.0
    return np.column_stack(
        [
            hour,
            ((day + 3) % 7).astype(float),  # 1970-01-01 was a Thursday (Monday = 0)
            month.astype(float),
            np.sin(2 * np.pi * hour / 24),
            np.cos(2 * np.pi * hour / 24),
            np.sin(2 * np.pi * doy / 365.25),
            np.cos(2 * np.pi * doy / 365.25),
        ]
    )


def _wind_components(speed: np.ndarray, direction_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # meteorological convention: direction the wind comes from
    radians = np.deg2rad(direction_deg)
    return -speed * np.sin(radians), -speed * np.cos(radians)


def build_feature_row(
    window: pd.DataFrame | np.ndarray, spec: FeatureSpec, *, issue_time: datetime | None = None
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
    rows: np.ndarray = build_horizon_rows(
        window, spec, (spec.horizon_hours,), issue_time=issue_time
    )[0]
    return rows


def build_horizon_rows(
    window: pd.DataFrame | np.ndarray,
    spec: FeatureSpec,
    horizons: Sequence[int],
    *,
    issue_time: datetime | None = None,
) -> np.ndarray:
    """The feature rows of the newest hour for several lead times (a forecast trajectory).

    Row ``i`` equals :func:`build_feature_row` with ``spec.at_horizon(horizons[i])``: the
    issue-time features are computed once, the target-time and horizon columns per horizon.

    Args:
        window: as for :func:`build_feature_row`.
        spec: the feature configuration.
        horizons: the lead times in hours (each >= 1).
        issue_time: the time of the window's last row (array input only).

    Returns:
        A ``(len(horizons), n_features)`` float array in ``spec.feature_names`` order.

    Raises:
        FeatureError: the window is too short, has gaps or NaN where features need values,
            or a horizon other than the spec's is asked of a spec without horizon features.
    """
    values, issue_time = _window_values(window, spec, issue_time)
    if not spec.horizon_features and any(h != spec.horizon_hours for h in horizons):
        raise FeatureError(
            f"this feature spec forecasts +{spec.horizon_hours} h only (no horizon features)"
        )
    base = _issue_features(values, spec)
    hours = np.asarray(horizons, dtype=np.int64)
    out = np.empty((len(hours), len(spec.feature_names)))
    out[:, : len(base)] = base
    out[:, len(base) : len(base) + 7] = _time_features(issue_time, hours)
    if spec.horizon_features:
        target = values[:, spec.variables.index(spec.target)]
        lag = (-hours) % 24
        out[:, len(base) + 7 :] = np.column_stack(
            [
                hours.astype(float),
                target[-1 - lag],
                target[-25 - lag],
                np.full(len(hours), _change_rms(target)),
            ]
        )
    if np.isnan(out).any():
        holed = np.flatnonzero(np.isnan(out).any(axis=0))
        bad = [spec.feature_names[j] for j in holed]
        raise FeatureError(f"observation window holds NaN needed by features {bad[:5]}")
    return out


def _change_rms(target: np.ndarray) -> float:
    """Root mean square of the 24 h changes of the target over the newest 72 hours."""
    k = CHANGE_RMS_HOURS
    change = target[-k:] - target[-k - 24 : -24]
    return float(np.sqrt(np.mean(change**2)))


def _window_values(
    window: pd.DataFrame | np.ndarray, spec: FeatureSpec, issue_time: Any
) -> tuple[np.ndarray, Any]:
    """The newest ``window_hours`` rows as an array, and the issue time."""
    need = spec.window_hours
    pandas = sys.modules.get("pandas")  # a DataFrame implies pandas is already imported
    if pandas is not None and isinstance(window, pandas.DataFrame):
        from rps.features.build import _hourly

        hourly = _hourly(window, spec)
        if len(hourly) < need:
            raise FeatureError(
                f"observation window has {len(hourly)} hours, the features need {need}"
            )
        hourly = hourly.iloc[-need:]
        if np.any(np.diff(pandas.DatetimeIndex(hourly.index).asi8) != _HOUR_NS):
            raise FeatureError("observation window must be consecutive hours without gaps")
        return hourly.to_numpy(dtype=float), pandas.Timestamp(hourly.index[-1])
    if issue_time is None:
        raise FeatureError("issue_time is required with an array window")
    values = np.asarray(window, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(spec.variables):
        raise FeatureError(f"window must have shape (n, {len(spec.variables)})")
    if values.shape[0] < need:
        raise FeatureError(
            f"observation window has {values.shape[0]} hours, the features need {need}"
        )
    return values[-need:], issue_time


def _issue_features(values: np.ndarray, spec: FeatureSpec) -> list[float]:
    """The features of the window's newest hour that do not depend on the lead time."""
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
    if HUMIDITY_GAP in names:
        implied = implied_temperature(
            np.array([last[col["dew_point_2m"]]]), np.array([last[col["relative_humidity_2m"]]])
        )
        out.append(float(implied[0]) - last[col["temperature_2m"]])
    k = spec.pressure_tendency_hours
    if f"pressure_tendency_{k}h" in names:
        pressure = values[:, col["surface_pressure"]]
        out.append(pressure[-1] - pressure[-1 - k])
    if "wind_u" in names:
        u, v_ = _wind_components(
            np.array([last[col["wind_speed_10m"]]]), np.array([last[col["wind_direction_10m"]]])
        )
        out.extend((float(u[0]), float(v_[0])))
    return [float(x) for x in out]
