"""Recorded real weather played back as if live.

The recording is one year of hourly station observations in the TMY3 format (by default
pvlib's Greensboro NC file, station 723170). It is converted to Open-Meteo's variable names
and units and laid over any calendar year by hour of year, so an observation exists for
every past hour. A :class:`ReplayClock` maps wall-clock "now" onto the replay timeline
(``speed`` > 1 accelerates it for demos); a fetch returns only hours up to that "now".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rps.data.schema import TIME
from rps.data.sources.base import FetchResult, SourceError
from rps.data.sources.scenarios import check_scenario, drifted_range

if TYPE_CHECKING:
    from rps.params import DriftScenario, Params
    from rps.settings import Settings

HOURS_PER_YEAR = 8760


def default_recording() -> Path:
    """pvlib's TMY3 file for Greensboro Piedmont Triad International (NC, USA)."""
    import pvlib

    return Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"


def _utc_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


@dataclass
class ReplayClock:
    """Maps wall-clock time onto replay time: ``replay = origin + (wall - anchor) * speed``.

    ``origin`` defaults to ``anchor`` (replay time starts at wall time).
    """

    speed: float = 1.0
    wall_now: Callable[[], pd.Timestamp] = _utc_now
    anchor: pd.Timestamp = field(default_factory=_utc_now)
    origin: pd.Timestamp | None = None

    def now(self) -> pd.Timestamp:
        elapsed = self.wall_now() - self.anchor
        return (self.anchor if self.origin is None else self.origin) + elapsed * self.speed

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplayClock:
        """The clock every process of one deployment shares (``RPS_REPLAY_*``)."""
        anchor = (
            _utc_now()
            if settings.replay_anchor is None
            else _utc(pd.Timestamp(settings.replay_anchor))
        )
        origin = (
            None if settings.replay_origin is None else _utc(pd.Timestamp(settings.replay_origin))
        )
        return cls(speed=settings.replay_speed, anchor=anchor, origin=origin)


def current_time(settings: Settings) -> pd.Timestamp:
    """ "Now" for a data interval: the replay clock's time for the replay source, else wall time."""
    if settings.source == "replay":
        return ReplayClock.from_settings(settings).now()
    return _utc_now()


def read_tmy3(path: Path) -> pd.DataFrame:
    """Read a TMY3 station file into Open-Meteo variables, indexed by UTC time.

    Raises:
        SourceError: the file is missing or lacks a TMY3 column.
    """
    import pvlib

    try:
        data, meta = pvlib.iotools.read_tmy3(str(path), map_variables=True)
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise SourceError(f"replay file {path} is not a readable TMY3 file: {exc}") from exc
    needed = {"temp_air", "temp_dew", "relative_humidity", "pressure", "wind_speed"}
    needed |= {"wind_direction", "TotCld (tenths)"}
    missing = sorted(needed - set(data.columns))
    if missing:
        raise SourceError(f"replay file {path} lacks TMY3 columns {missing}")
    frame = pd.DataFrame(
        {
            "temperature_2m": data["temp_air"].astype(float),
            "relative_humidity_2m": data["relative_humidity"].astype(float),
            "dew_point_2m": data["temp_dew"].astype(float),
            "surface_pressure": data["pressure"].astype(float),  # mbar == hPa
            "wind_speed_10m": data["wind_speed"].astype(float) * 3.6,  # m/s -> km/h
            "wind_direction_10m": data["wind_direction"].astype(float),
            "cloud_cover": data["TotCld (tenths)"].astype(float) * 10.0,  # tenths -> %
        }
    )
    frame.index = pd.DatetimeIndex(data.index).tz_convert("UTC")
    # TMY months come from different years; row k is hour k+1 of the station's standard-time
    # year, so its UTC hour of year is fixed by the station's offset, whatever the month's year.
    offset = round(float(meta.get("TZ", 0.0)))
    frame["_hoy"] = (np.arange(len(frame)) + 1 - offset) % HOURS_PER_YEAR
    frame.attrs["station"] = f"{meta.get('USAF')} {str(meta.get('Name')).strip(chr(34))}"
    return frame


def hour_of_year(times: pd.DatetimeIndex) -> np.ndarray:
    """Hour of a 365-day year (Feb 29 replays Feb 28)."""
    day = times.dayofyear.to_numpy() - 1
    leap_after_feb = times.is_leap_year & (times.month > 2)
    day = day - leap_after_feb.astype(int)
    day = np.where(times.is_leap_year & (times.month == 2) & (times.day == 29), 58, day)
    hours: np.ndarray = day * 24 + times.hour.to_numpy()
    return hours


class ReplaySource:
    """Plays a recorded year back on any calendar, up to the replay clock's "now"."""

    name = "replay"

    def __init__(
        self,
        recording: pd.DataFrame,
        *,
        clock: ReplayClock | None = None,
        variables: Sequence[str] | None = None,
        scenario: DriftScenario | None = None,
    ) -> None:
        """Index the recording by hour of year.

        Args:
            recording: Hourly rows (a year) indexed by UTC time.
            clock: Maps wall-clock time onto replay time.
            variables: The columns to serve (default: all).
            scenario: A drift injected into the served rows (None: the recording as is).

        Raises:
            SourceError: the recording does not cover a year, lacks a variable, or the
                scenario names a variable that is not served.
        """
        by_hour = recording.copy()
        if "_hoy" not in by_hour.columns:
            by_hour["_hoy"] = hour_of_year(pd.DatetimeIndex(recording.index))
        by_hour = by_hour.groupby("_hoy").mean()
        if len(by_hour) != HOURS_PER_YEAR:
            raise SourceError(
                f"replay recording covers {len(by_hour)} hours of the year, needs {HOURS_PER_YEAR}"
            )
        columns = list(variables) if variables is not None else list(by_hour.columns)
        missing = sorted(set(columns) - set(by_hour.columns))
        if missing:
            raise SourceError(f"replay recording lacks variables {missing}")
        self._values = by_hour[columns].to_numpy(dtype=float)
        self._columns = columns
        if scenario is not None:
            try:
                check_scenario(scenario, columns)
            except ValueError as exc:
                raise SourceError(str(exc)) from exc
        self.scenario = scenario
        self.clock = clock or ReplayClock()
        self.station = str(recording.attrs.get("station", "unknown"))

    @classmethod
    def from_settings(cls, settings: Settings, params: Params) -> ReplaySource:
        path = settings.replay_file or default_recording()
        if not Path(path).exists():
            raise SourceError(f"replay file not found: {path}")
        return cls(
            read_tmy3(Path(path)),
            clock=ReplayClock.from_settings(settings),
            variables=params.data.variables,
            scenario=params.drift.scenario,
        )

    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> FetchResult:
        start, end = _utc(start).ceil("h"), _utc(end).floor("h")
        end = min(end, self.clock.now().floor("h"))
        scenarios = [self.scenario] if self.scenario is not None else []
        frame = drifted_range(self._rows, start, end, scenarios)
        return FetchResult(frame=frame, source=self.name)

    def _rows(self, times: pd.DatetimeIndex) -> pd.DataFrame:
        if not len(times):
            frame = pd.DataFrame(columns=self._columns, dtype=float)
        else:
            frame = pd.DataFrame(self._values[hour_of_year(times)], columns=self._columns)
        frame.insert(0, TIME, times)
        return frame


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
