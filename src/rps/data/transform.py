"""Cleaning: gate-passed raw observations -> a regular, plausible hourly series.

Steps: drop duplicate timestamps (last wins), reindex to every hour, turn single-hour sensor
spikes into gaps (robust z-score of the hourly changes), then fill gaps of at most
``transform.max_interpolate_hours`` by time interpolation (wind direction through its vector
components, so 350 deg and 10 deg average to 0 deg, not 180 deg). Longer gaps stay missing;
training drops the feature rows they touch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rps.data.schema import TIME
from rps.params import Params

logger = logging.getLogger(__name__)
_MAD_TO_STD = 1.4826


@dataclass(frozen=True)
class CleaningSummary:
    rows_in: int
    rows_out: int
    duplicates_dropped: int
    hours_added: int
    outliers_removed: int
    values_interpolated: int
    values_missing: int


_DESPIKED = ("temperature_2m", "dew_point_2m", "relative_humidity_2m", "surface_pressure")


def _despike(series: pd.Series, zscore: float) -> pd.Series:
    """Blank single-hour spikes: a value far from both neighbours, in the same direction.

    "Far" is ``zscore`` robust standard deviations of the series' hourly changes. Real
    weather moves fast (fronts), but it does not jump and return within one hour.
    """
    rise = series - series.shift(1)
    fall = series - series.shift(-1)
    # floor: sensors report in steps (1 hPa, 1 %), which makes the median change zero
    scale = max(_MAD_TO_STD * float((rise - rise.median()).abs().median()), 0.5)
    spike = (np.sign(rise) == np.sign(fall)) & (np.minimum(rise.abs(), fall.abs()) > zscore * scale)
    return series.mask(spike)


def clean_observations(frame: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, CleaningSummary]:
    """Clean gate-passed observations into a regular hourly frame (``time`` + variables)."""
    variables = list(params.data.variables)
    data = frame[[TIME, *variables]].copy()
    data[TIME] = pd.to_datetime(data[TIME], utc=True)
    rows_in = len(data)
    data = data.sort_values(TIME).drop_duplicates(TIME, keep="last")
    duplicates = rows_in - len(data)
    data = data.set_index(TIME)
    index = pd.date_range(data.index.min().floor("h"), data.index.max().floor("h"), freq="h")
    data = data.reindex(index)
    hours_added = len(index) - (rows_in - duplicates)

    outliers = 0
    for column in variables:
        if column not in _DESPIKED:  # cloud cover and wind legitimately jump
            continue
        despiked = _despike(data[column], params.transform.outlier_zscore)
        outliers += int(despiked.isna().sum() - data[column].isna().sum())
        data[column] = despiked

    missing_before = int(data.isna().sum().sum())
    limit = params.transform.max_interpolate_hours
    if limit:
        has_wind = {"wind_speed_10m", "wind_direction_10m"} <= set(variables)
        if has_wind:
            radians = np.deg2rad(data["wind_direction_10m"])
            east = np.sin(radians).interpolate("time", limit=limit, limit_area="inside")
            north = np.cos(radians).interpolate("time", limit=limit, limit_area="inside")
            data["wind_direction_10m"] = np.rad2deg(np.arctan2(east, north)) % 360.0
        for column in variables:
            if column == "wind_direction_10m" and has_wind:
                continue
            data[column] = data[column].interpolate("time", limit=limit, limit_area="inside")
    missing_after = int(data.isna().sum().sum())
    data.index.name = TIME
    cleaned = data.reset_index()
    summary = CleaningSummary(
        rows_in=rows_in,
        rows_out=len(cleaned),
        duplicates_dropped=duplicates,
        hours_added=max(hours_added, 0),
        outliers_removed=outliers,
        values_interpolated=missing_before - missing_after,
        values_missing=missing_after,
    )
    logger.info("cleaned observations: %s", summary)
    return cleaned, summary
