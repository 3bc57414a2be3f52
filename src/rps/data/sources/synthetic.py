"""A deterministic weather generator with controllable drift, for drift tests and demos.

Values depend only on the timestamp and the seed, so the same range always gives the same
rows. Drift scenarios (:class:`~rps.params.DriftScenario`, applied by
:mod:`rps.data.sources.scenarios`) change given variables from a given time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from rps.data.schema import TIME
from rps.data.sources.base import FetchResult, SourceError
from rps.data.sources.scenarios import check_scenario, drifted_range
from rps.params import DriftScenario

_PERIOD_HOURS = 24 * 7 * 53  # noise repeats after about a year; long enough for any test
_ORIGIN = pd.Timestamp("2000-01-01", tz="UTC")


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
        drifts: Sequence[DriftScenario] = (),
        now: Callable[[], pd.Timestamp] | None = None,
    ) -> None:
        """Prepare the noise of about a year.

        Args:
            variables: Columns to generate.
            seed: Noise seed.
            drifts: Scenarios applied in order.
            now: The source's clock (hours after it are not served).

        Raises:
            SourceError: a scenario names a variable that is not generated.
        """
        self.variables = list(variables)
        self.drifts = list(drifts)
        for drift in self.drifts:
            try:
                check_scenario(drift, self.variables)
            except ValueError as exc:
                raise SourceError(str(exc)) from exc
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

    def _clean(self, times: pd.DatetimeIndex) -> pd.DataFrame:
        values = self._base(times)
        frame = pd.DataFrame({name: values[name] for name in self.variables})
        frame.insert(0, TIME, times)
        return frame

    def generate(self, times: pd.DatetimeIndex) -> pd.DataFrame:
        """The rows for ``times`` (UTC hours), drift applied."""
        if not self.drifts or not len(times):
            return self._clean(times)
        hourly = drifted_range(self._clean, times.min(), times.max(), self.drifts)
        frame = hourly.set_index(TIME).reindex(times).reset_index(names=TIME)
        return frame[[TIME, *self.variables]]

    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> FetchResult:
        start = pd.Timestamp(start).tz_convert("UTC").ceil("h")
        end = min(pd.Timestamp(end).tz_convert("UTC"), self._now()).floor("h")
        times = (
            pd.date_range(start, end, freq="h") if start <= end else pd.DatetimeIndex([], tz="UTC")
        )
        return FetchResult(frame=self.generate(times), source=self.name)
