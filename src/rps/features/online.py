"""The online feature path: the row for the newest hour of a short observation window.

NumPy only at import time (the prediction service imports it); a DataFrame window is
accepted too and converted with pandas, imported on that path only. A parity test holds it
equal to the offline path (:func:`rps.features.build.build_features`).
"""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from rps.features.spec import FeatureError, FeatureSpec

if TYPE_CHECKING:
    import pandas as pd

_HOUR_NS = 3_600_000_000_000


def _scalar_time_features(issue_time: Any, horizon_hours: int) -> list[float]:
    """The offline time features for one timestamp, without building a DatetimeIndex."""
    if isinstance(issue_time, datetime):
        ts = issue_time
    else:
        import pandas as pd

        ts = pd.Timestamp(issue_time).to_pydatetime()
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
        values = hourly.to_numpy(dtype=float)
        issue_time = pandas.Timestamp(hourly.index[-1])
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
