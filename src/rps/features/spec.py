"""The feature specification: which columns a model reads (no pandas, so serving stays lean)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rps.params import FeatureParams

TARGET = "target"
TARGET_TIME = "target_time"
_STATS = ("mean", "std", "min", "max")
#: the feature holding the forecast's lead time (a spec with ``horizon_features``)
HORIZON = "horizon_hours"
#: the target at the target's hour of day, on the latest day observed and the day before
SAME_HOUR = ("target_same_hour_d1", "target_same_hour_d2")
#: hours of day-to-day target changes whose root mean square is the ``_change24_rms`` feature
CHANGE_RMS_HOURS = 72
#: the temperature the dew point and relative humidity imply (Magnus formula) minus the measured
#: one: about 0 while the sensors agree; a drifted temperature sensor's error when they do not
HUMIDITY_GAP = "temperature_humidity_gap"
_HUMIDITY_TRIO = ("temperature_2m", "dew_point_2m", "relative_humidity_2m")


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
    # the lead time and what depends on it as features, so one model reads every horizon
    # (False: a spec stored before trajectories, whose rows lack these columns)
    horizon_features: bool = False
    # the humidity gap feature (False: a spec stored before it)
    humidity_features: bool = False

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
            horizon_features=True,
            humidity_features=True,
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
            horizon_features=bool(data.get("horizon_features", False)),
            humidity_features=bool(data.get("humidity_features", False)),
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
            "horizon_features": self.horizon_features,
            "humidity_features": self.humidity_features,
        }

    def at_horizon(self, horizon_hours: int) -> FeatureSpec:
        """The same features for another lead time (the columns and their order are equal)."""
        return replace(self, horizon_hours=int(horizon_hours))

    @property
    def rolling_variables(self) -> tuple[str, ...]:
        return tuple(v for v in (self.target, "dew_point_2m") if v in self.variables)

    @property
    def window_hours(self) -> int:
        """Observations the newest row needs (the online window length)."""
        longest = max(*self.lags, *self.rolling_windows, self.pressure_tendency_hours)
        if self.horizon_features:  # the same hour two days back; 24 h changes over 72 h
            longest = max(longest, 47, CHANGE_RMS_HOURS + 23)
        return longest + 1

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
        return names + self.horizon_names

    @property
    def horizon_names(self) -> list[str]:
        """The columns that describe the lead time (empty without ``horizon_features``)."""
        if not self.horizon_features:
            return []
        return [HORIZON, *SAME_HOUR, self.change_rms_name]

    @property
    def change_rms_name(self) -> str:
        """Root mean square of the target's 24 h changes over the last 72 h (weather regime)."""
        return f"{self.target}_change24_rms{CHANGE_RMS_HOURS}"

    def _domain_names(self) -> list[str]:
        names = []
        if {"temperature_2m", "dew_point_2m"} <= set(self.variables):
            names.append("dewpoint_depression")
        if self.humidity_features and set(_HUMIDITY_TRIO) <= set(self.variables):
            names.append(HUMIDITY_GAP)
        if "surface_pressure" in self.variables:
            names.append(f"pressure_tendency_{self.pressure_tendency_hours}h")
        if {"wind_speed_10m", "wind_direction_10m"} <= set(self.variables):
            names += ["wind_u", "wind_v"]
        return names
