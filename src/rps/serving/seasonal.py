"""The seasonal drift reference: what a served feature row should look like at its hour and date.

Weather features move with the time of year and the hour of day, so a window of a few days
always differs from a whole training year. The reference therefore describes each feature
*conditioned on the calendar*, and the live checks run on what is left (anomalies):

* **climatology**: per tracked feature, a least-squares harmonic fit of the level on the
  target time's day of year and hour (2 annual and 2 daily harmonics plus their first-order
  interaction, 13 terms) and of the typical absolute deviation (5 terms), so
  ``z = (x - level(t)) / scale(t)`` is an anomaly in local standard deviations;
* **humidity consistency**: the dew point implied by temperature and relative humidity
  (Magnus formula) minus the measured dew point, at each row's hour; the check is the median
  over the window (one storm hour cannot move it). Weather moves the three sensors together;
  a biased, stuck or delayed sensor breaks it.

* **humidity change** (:func:`humidity_change_path`): a one-sided CUSUM of how far the
  humidity residual above moved from its own median over the previous
  :attr:`HumidityChangeTest.baseline_hours` (24) rows, ``g = max(0, g + min(|r - median|,
  cap) - allowance)``, over its threshold. The level check above must clear the offsets the
  residual keeps for days in clean weather (the recording's dew point below 0 degC is a
  frost point, about 10 % of its value above the implied dew point; the splices between the
  recording's months), so it misses a drift that moves the residual by 1-2 degC; measured
  against its own recent past, that offset cancels, and the sum adds up a drift that is too
  small for any single window (a temperature ramping up by 5 degC a day, a doubled daily
  swing whose sign changes twice a day, which a window median averages away). Its
  parameters are serving-time tunables (``drift.humidity_*`` in params.yaml), in degC of
  residual, not calibrated per bundle.

* **stuck sensor** (:func:`stuck_hours`, not a drift check: it feeds its own alert): the
  hours the temperature (the target's sensor) has been unchanged, counted only once the
  humidity residual above moved by :data:`STUCK_MIN_MOVE` degC or more over those hours. A
  plain flatline ("unchanged for N hours while another variable moves") cannot tell a stuck
  sensor from calm weather in the replayed recording, which is gap-filled with constant runs
  of up to 16 h: temperature alone fires 24 times a year at N = 6 and 58 at N = 4. When
  temperature is really constant, the humidity moves with the dew point and the residual stays
  put; when the temperature sensor is stuck, the residual follows the real temperature it
  misses. Dew point and humidity are not watched: a drifted temperature moves the residual
  while they sit still for hours, so their flat runs would raise the alert in real drift
  (and hold back the retraining it needs); a stuck one still moves the residual, so a real
  temperature plateau can then count. At 4 h: about 1 start on the clean replay year; a
  stuck temperature shows within 6 h at every onset of ``bench/bench_drift.py``.

Each check's limit is calibrated on the training rows (in time order) as a margin (1.5 for
the anomalies, 1.2 for the humidity gap) times the largest value the check reached over any
window of ``window`` rows, so the training period itself never crosses it. The builder is a
pure function of the training feature frame; the result is a JSON-ready dict stored in the
bundle's ``reference_stats`` under :data:`SEASONAL_KEY`. Serving needs numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rps.features.humidity import implied_dew_point
from rps.serving.cusum import CusumTest, cusum_path

if TYPE_CHECKING:
    import pandas as pd

SEASONAL_KEY = "_seasonal"
"""The key of the seasonal reference inside a bundle's ``reference_stats``."""
CALENDAR_COLUMNS = ("target_doy_sin", "target_doy_cos", "target_hour_sin", "target_hour_cos")
HUMIDITY = ("temperature_2m", "dew_point_2m", "relative_humidity_2m")
_SQRT_HALF_PI = math.sqrt(math.pi / 2)  # mean |N(0, s)| = s * sqrt(2 / pi)
STUCK_MIN_MOVE = 1.0
"""Humidity-residual range (degC) over a run of equal values that makes the run count."""


class SeasonalReferenceError(ValueError):
    """A seasonal reference cannot be built or read (missing calendar columns, bad JSON)."""


def design(calendar: np.ndarray) -> np.ndarray:
    """The 13 harmonic terms of the level fit from ``(n, 4)`` doy/hour sine and cosine."""
    ds, dc, hs, hc = calendar.T
    return np.column_stack(
        [
            np.ones(len(calendar)),
            ds,
            dc,
            2 * ds * dc,
            dc * dc - ds * ds,
            hs,
            hc,
            2 * hs * hc,
            hc * hc - hs * hs,
            ds * hs,
            ds * hc,
            dc * hs,
            dc * hc,
        ]
    )


def scale_design(calendar: np.ndarray) -> np.ndarray:
    """The 5 harmonic terms of the deviation fit (one annual and one daily harmonic)."""
    ds, dc, hs, hc = calendar.T
    return np.column_stack([np.ones(len(calendar)), ds, dc, hs, hc])


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean over the last ``window`` rows (fewer at the start), along axis 0."""
    cumulative = np.cumsum(np.concatenate([np.zeros((1, *values.shape[1:])), values]), axis=0)
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    counts = (ends - starts).reshape(-1, *([1] * (values.ndim - 1)))
    result: np.ndarray = (cumulative[ends] - cumulative[starts]) / counts
    return result


def trailing_median(values: np.ndarray, window: int) -> np.ndarray:
    """``(n,)`` median over the last ``window`` values (fewer at the start)."""
    padded = np.concatenate([np.full(window - 1, np.nan), values])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)
    result: np.ndarray = np.nanmedian(windows, axis=1)
    return result


def stuck_hours(values: np.ndarray, residual: np.ndarray, min_move: float = STUCK_MIN_MOVE) -> int:
    """Trailing steps over which ``values`` did not change, if ``residual`` moved meanwhile.

    Args:
        values: ``(n,)`` one variable in arrival order (one row an hour in production).
        residual: ``(n,)`` the humidity residual of the same rows (degC).
        min_move: Range of ``residual`` over the run (its first row included) that makes it
            count.

    Returns:
        The number of newest rows equal to the row before them, or 0 when there are none or
        ``residual`` ranged less than ``min_move`` over them.
    """
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or not np.isfinite(values[-1]):
        return 0
    changed = np.flatnonzero(values[1:] != values[:-1])
    run = len(values) - 1 - (int(changed[-1]) + 1 if changed.size else 0)
    if run == 0:
        return 0
    moved = residual[-run - 1 :]
    moved = moved[np.isfinite(moved)]
    return run if moved.size and float(moved.max() - moved.min()) >= min_move else 0


@dataclass(frozen=True)
class HumidityChangeTest(CusumTest):
    """The humidity-change CUSUM's parameters (``drift.humidity_*`` in params.yaml).

    The evidence of a row is its move from the baseline (degC): ``allowance`` is tolerated per
    row, ``cap`` keeps one glitch hour from firing it, and ``threshold`` is in degC x rows.

    Attributes:
        baseline_hours: Rows before each row whose median residual is its baseline.
        span_hours: The CUSUM runs over the newest this many rows (each with its baseline
            before it): a week, as the forecast-error CUSUM's window; a sum still above 0
            after a week has crossed long before.
    """

    baseline_hours: int
    span_hours: int


def humidity_change_path(
    residual: np.ndarray, *, baseline_hours: int, allowance: float, cap: float
) -> np.ndarray:
    """The humidity-change CUSUM after each row that has a full baseline before it.

    ``g = max(0, g + min(|r_t - median(r_{t-b} .. r_{t-1})|, cap) - allowance)`` with
    ``b = baseline_hours``, starting at 0 on row ``b``.

    Args:
        residual: ``(n,)`` humidity residuals (degC) of consecutive rows.
        baseline_hours: Rows in each baseline.
        allowance: Move tolerated per row (degC).
        cap: Largest move counted per row (degC).

    Returns:
        ``(max(0, n - b),)`` the path for rows ``b .. n-1`` (empty while there are ``b`` rows
        or fewer).
    """
    residual = np.asarray(residual, dtype=float)
    if len(residual) <= baseline_hours:
        return np.zeros(0)
    history = np.lib.stride_tricks.sliding_window_view(residual[:-1], baseline_hours)
    baseline = np.median(history, axis=1)
    moved = np.minimum(np.abs(residual[baseline_hours:] - baseline), cap)
    return cusum_path(moved - allowance)


@dataclass(frozen=True)
class SeasonalReference:
    """The seasonal reference, prepared for serving (see the module docstring).

    Attributes:
        names: Tracked feature names.
        columns: Their indices in the model's feature order.
        calendar: Indices of :data:`CALENDAR_COLUMNS` in the feature order.
        level: ``(13, d)`` level coefficients.
        scale: ``(5, d)`` deviation coefficients.
        scale_floor: ``(d,)`` smallest scale used.
        anomaly_limit: ``(d,)`` limit of ``|window mean z|`` per feature.
        humidity: Indices of temperature, dew point and humidity, or an empty array when the
            features lack them.
        humidity_limit: Limit of ``|window median residual|`` (degC).
        window: Rows per window.
    """

    names: list[str]
    columns: np.ndarray
    calendar: np.ndarray
    level: np.ndarray
    scale: np.ndarray
    scale_floor: np.ndarray
    anomaly_limit: np.ndarray
    humidity: np.ndarray
    humidity_limit: float
    window: int

    @classmethod
    def from_json(cls, feature_names: Sequence[str], data: Mapping[str, Any]) -> SeasonalReference:
        """Read the stored reference against the model's feature order.

        Raises:
            SeasonalReferenceError: a named feature is not among ``feature_names`` or a field is
                missing or has the wrong shape.
        """
        index = {name: i for i, name in enumerate(feature_names)}
        try:
            names = list(data["features"])
            missing = [n for n in [*names, *CALENDAR_COLUMNS] if n not in index]
            if missing:
                raise SeasonalReferenceError(
                    f"seasonal reference names unknown features {missing[:5]}"
                )
            d = len(names)
            level = np.asarray(data["level"], dtype=float).reshape(13, d)
            scale = np.asarray(data["scale"], dtype=float).reshape(5, d)
            humidity = np.asarray(
                [index[v] for v in HUMIDITY] if data["humidity_limit"] is not None else [],
                dtype=int,
            )
            return cls(
                names=names,
                columns=np.asarray([index[n] for n in names], dtype=int),
                calendar=np.asarray([index[c] for c in CALENDAR_COLUMNS], dtype=int),
                level=level,
                scale=scale,
                scale_floor=np.asarray(data["scale_floor"], dtype=float).reshape(d),
                anomaly_limit=np.asarray(data["anomaly_limit"], dtype=float).reshape(d),
                humidity=humidity,
                humidity_limit=float(data["humidity_limit"] or math.inf),
                window=int(data["window"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SeasonalReferenceError):
                raise
            raise SeasonalReferenceError(f"seasonal reference is malformed: {exc!r}") from exc

    def anomalies(self, rows: np.ndarray) -> np.ndarray:
        """``(n, d)`` anomalies of ``(n, n_features)`` rows, in local standard deviations."""
        calendar = rows[:, self.calendar]
        level = design(calendar) @ self.level
        scale = np.maximum(scale_design(calendar) @ self.scale, self.scale_floor)
        result: np.ndarray = (rows[:, self.columns] - level) / scale
        return result

    def stuck(self, rows: np.ndarray) -> dict[str, int]:
        """:func:`stuck_hours` of the temperature in consecutive rows, keyed by its name
        (empty without the humidity variables)."""
        if not self.humidity.size:
            return {}
        temperature = HUMIDITY[0]
        return {temperature: stuck_hours(rows[:, self.humidity[0]], self.humidity_residual(rows))}

    def humidity_change(self, rows: np.ndarray, test: HumidityChangeTest) -> float | None:
        """The humidity-change CUSUM over the newest ``test.span_hours`` of consecutive rows,
        over its threshold, now (above 1: drift); None without the humidity variables or with
        ``test.baseline_hours`` rows or fewer."""
        if not self.humidity.size:
            return None
        path = humidity_change_path(
            self.humidity_residual(rows[-(test.baseline_hours + test.span_hours) :]),
            baseline_hours=test.baseline_hours,
            allowance=test.allowance,
            cap=test.cap,
        )
        return float(path[-1]) / test.threshold if path.size else None

    def humidity_residual(self, rows: np.ndarray) -> np.ndarray:
        """``(n,)`` implied minus measured dew point of each row's hour (degC)."""
        if not self.humidity.size:
            return np.zeros(len(rows))
        t, td, rh = (rows[:, k] for k in self.humidity)
        result: np.ndarray = implied_dew_point(t, rh) - td
        return result


def build_reference(
    features: pd.DataFrame,
    *,
    window: int = 6,
    margin: float = 1.5,
    humidity_margin: float = 1.2,
    exclude_prefixes: Sequence[str] = ("target_",),
) -> dict[str, Any]:
    """The seasonal reference of training feature rows (see the module docstring).

    Args:
        features: Training feature rows in time order, one column per model feature
            (including the ``target_`` calendar columns).
        window: Rows per live window (one row an hour in production).
        margin: Anomaly limits are this many times the largest windowed ``|mean z|`` in
            training (headroom for weather the training year did not see).
        humidity_margin: The humidity limit is this many times the largest windowed
            ``|mean residual|`` in training (at least 1 degC).
        exclude_prefixes: Feature-name prefixes not tracked (deterministic calendar columns).

    Returns:
        A JSON-ready dict (store it under :data:`SEASONAL_KEY` in ``reference_stats``).

    Raises:
        SeasonalReferenceError: the calendar columns are missing or there are fewer than 50 rows.
    """
    columns = [str(c) for c in features.columns]
    missing = [c for c in CALENDAR_COLUMNS if c not in columns]
    if missing:
        raise SeasonalReferenceError(f"seasonal reference needs the calendar features {missing}")
    values = features.to_numpy(dtype=float)
    values = values[np.all(np.isfinite(values), axis=1)]
    if len(values) < 50:
        raise SeasonalReferenceError(
            f"seasonal reference needs at least 50 complete rows, got {len(values)}"
        )
    index = {name: i for i, name in enumerate(columns)}
    calendar = values[:, [index[c] for c in CALENDAR_COLUMNS]]
    tracked = [
        n
        for n in columns
        if not any(n.startswith(p) for p in exclude_prefixes) and np.std(values[:, index[n]]) > 0
    ]
    x = values[:, [index[n] for n in tracked]]
    level, *_ = np.linalg.lstsq(design(calendar), x, rcond=None)
    residual = x - design(calendar) @ level
    deviation, *_ = np.linalg.lstsq(scale_design(calendar), np.abs(residual), rcond=None)
    deviation *= _SQRT_HALF_PI
    floor = np.maximum(0.1 * residual.std(axis=0), 1e-6)
    z = residual / np.maximum(scale_design(calendar) @ deviation, floor)
    anomaly_limit = margin * np.abs(trailing_mean(z, window)).max(axis=0)

    humidity_limit: float | None = None
    if all(n in index for n in HUMIDITY):
        t, td, rh = (values[:, index[n]] for n in HUMIDITY)
        gap = implied_dew_point(t, rh) - td
        worst = float(np.abs(trailing_median(gap, window)).max())
        humidity_limit = max(1.0, humidity_margin * worst)

    return {
        "version": 1,
        "window": window,
        "margin": margin,
        "humidity_margin": humidity_margin,
        "features": tracked,
        "level": level.tolist(),
        "scale": deviation.tolist(),
        "scale_floor": floor.tolist(),
        "anomaly_limit": np.maximum(anomaly_limit, 1e-6).tolist(),
        "humidity_limit": humidity_limit,
    }
