"""A deterministic weather generator with controllable drift, for drift tests and demos.

Values depend only on the timestamp and the seed, so the same range always gives the same
rows. Drift kinds start at a given time: ``mean_shift`` (add ``magnitude``), ``variance``
(scale deviations from the seasonal mean by ``magnitude``), ``stuck`` (the sensor repeats its
value at the drift start) and ``missing`` (values become NaN in bursts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from rps.data.schema import TIME
from rps.data.sources.base import FetchResult

DriftKind = Literal["mean_shift", "variance", "stuck", "missing"]
_PERIOD_HOURS = 24 * 7 * 53  # noise repeats after about a year; long enough for any test
_ORIGIN = pd.Timestamp("2000-01-01", tz="UTC")


@dataclass(frozen=True)
class DriftSpec:
    """One injected change in the data-generating process."""

    kind: DriftKind
    start: pd.Timestamp
    magnitude: float = 5.0
    variables: tuple[str, ...] = ("temperature_2m",)


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    shocks = rng.normal(0.0, sigma, n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):  # one pass at construction only
        acc = phi * acc + shocks[i]
        out[i] = acc
    return out


class SyntheticSource:
    """Seasonal + diurnal weather with AR(1) noise; optional drift from a given time."""

    name = "synthetic"

    def __init__(
        self,
        *,
        variables: Sequence[str],
        seed: int = 7,
        drifts: Sequence[DriftSpec] = (),
        now: Callable[[], pd.Timestamp] | None = None,
    ) -> None:
        self.variables = list(variables)
        self.drifts = list(drifts)
        self._now = now or (lambda: pd.Timestamp.now(tz="UTC"))
        rng = np.random.default_rng(seed)
        self._noise = {
            "temperature_2m": _ar1(rng, _PERIOD_HOURS, 0.9, 0.8),
            "dew_point_2m": _ar1(rng, _PERIOD_HOURS, 0.9, 0.6),
            "surface_pressure": _ar1(rng, _PERIOD_HOURS, 0.98, 0.4),
            "wind_speed_10m": _ar1(rng, _PERIOD_HOURS, 0.8, 2.0),
            "wind_direction_10m": _ar1(rng, _PERIOD_HOURS, 0.95, 12.0),
            "cloud_cover": _ar1(rng, _PERIOD_HOURS, 0.9, 8.0),
        }
        self._burst_rng_seed = seed

    def _base(self, times: pd.DatetimeIndex) -> dict[str, np.ndarray]:
        hours = ((times - _ORIGIN) // pd.Timedelta(hours=1)).to_numpy()
        idx = hours % _PERIOD_HOURS
        doy = times.dayofyear.to_numpy()
        hod = times.hour.to_numpy()
        seasonal = 14.0 - 10.0 * np.cos(2 * np.pi * (doy - 15) / 365.25)
        diurnal = -5.0 * np.cos(2 * np.pi * (hod - 3) / 24)  # minimum near 09 UTC (dawn, UTC-5)
        temperature = seasonal + diurnal + self._noise["temperature_2m"][idx]
        depression = np.clip(
            6.0 + 3.0 * np.sin(2 * np.pi * hod / 24) + self._noise["dew_point_2m"][idx], 0.2, None
        )
        dew_point = temperature - depression

        # Magnus formula: humidity consistent with temperature and dew point
        def es(t: np.ndarray) -> np.ndarray:
            return np.exp(17.625 * t / (243.04 + t))

        humidity = np.clip(100.0 * es(dew_point) / es(temperature), 0, 100)
        return {
            "temperature_2m": temperature,
            "dew_point_2m": dew_point,
            "relative_humidity_2m": humidity,
            "surface_pressure": 1000.0 + 3 * self._noise["surface_pressure"][idx],
            "wind_speed_10m": np.abs(10.0 + self._noise["wind_speed_10m"][idx]),
            "wind_direction_10m": (200.0 + self._noise["wind_direction_10m"][idx]) % 360.0,
            "cloud_cover": np.clip(50.0 + 3 * self._noise["cloud_cover"][idx], 0, 100),
        }

    def generate(self, times: pd.DatetimeIndex) -> pd.DataFrame:
        """The rows for ``times`` (UTC hours), drift applied."""
        values = self._base(times)
        frame = pd.DataFrame({name: values[name] for name in self.variables})
        for drift in self.drifts:
            active = times >= drift.start
            if not active.any():
                continue
            for column in drift.variables:
                if column not in frame.columns:
                    continue
                series = frame[column].to_numpy(copy=True)
                if drift.kind == "mean_shift":
                    series[active] += drift.magnitude
                elif drift.kind == "variance":
                    centre = np.nanmean(series[active])
                    series[active] = centre + (series[active] - centre) * drift.magnitude
                elif drift.kind == "stuck":
                    series[active] = self._base(pd.DatetimeIndex([drift.start]))[column][0]
                elif drift.kind == "missing":
                    hours = ((times - drift.start) // pd.Timedelta(hours=1)).to_numpy()
                    # bursts of 6 h every 24 h, plus the magnitude-controlled extra share
                    burst = (hours % 24) < max(1, min(24, int(drift.magnitude)))
                    series[active & burst] = np.nan
                frame[column] = series
        frame.insert(0, TIME, times)
        return frame

    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> FetchResult:
        start = pd.Timestamp(start).tz_convert("UTC").ceil("h")
        end = min(pd.Timestamp(end).tz_convert("UTC"), self._now()).floor("h")
        times = (
            pd.date_range(start, end, freq="h") if start <= end else pd.DatetimeIndex([], tz="UTC")
        )
        return FetchResult(frame=self.generate(times), source=self.name)
