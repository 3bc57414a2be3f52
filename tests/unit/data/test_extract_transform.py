"""Raw files are stored atomically and never overwritten; cleaning regularises the series."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rps.data.extract import extract, store_raw
from rps.data.sources.base import FetchResult
from rps.data.transform import clean_observations
from tests.conftest import FIXED_NOW


def test_extract_names_file_by_collection_time_and_is_idempotent(replay_source, tmp_path):
    start = FIXED_NOW - pd.Timedelta(days=2)
    first = extract(replay_source, tmp_path, start=start, end=FIXED_NOW, collected_at=FIXED_NOW)
    again = extract(replay_source, tmp_path, start=start, end=FIXED_NOW, collected_at=FIXED_NOW)
    assert first.path.name == "raw_data_20260615_120000.csv"
    assert again.path == first.path
    assert sorted(p.name for p in tmp_path.glob("raw_data_*.csv")) == [first.path.name]
    assert first.meta_path.exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_different_content_at_same_time_never_overwrites(replay_source, tmp_path):
    frame = replay_source.fetch(FIXED_NOW - pd.Timedelta(days=1), FIXED_NOW).frame
    one = store_raw(
        FetchResult(frame, "t"), tmp_path, collected_at=FIXED_NOW, start=FIXED_NOW, end=FIXED_NOW
    )
    original = one.path.read_bytes()
    changed = frame.assign(temperature_2m=frame["temperature_2m"] + 1)
    two = store_raw(
        FetchResult(changed, "t"), tmp_path, collected_at=FIXED_NOW, start=FIXED_NOW, end=FIXED_NOW
    )
    assert two.path != one.path
    assert one.path.read_bytes() == original
    assert two.path.name == "raw_data_20260615_120000_1.csv"


def test_raw_file_holds_values_unmodified(replay_source, tmp_path):
    frame = replay_source.fetch(FIXED_NOW - pd.Timedelta(hours=30), FIXED_NOW).frame
    frame.loc[3, "temperature_2m"] = np.nan  # raw keeps gaps; cleaning happens later
    art = store_raw(
        FetchResult(frame, "t"), tmp_path, collected_at=FIXED_NOW, start=FIXED_NOW, end=FIXED_NOW
    )
    back = pd.read_csv(art.path)
    assert back["temperature_2m"].isna().sum() == 1
    np.testing.assert_allclose(back["surface_pressure"], frame["surface_pressure"])


def test_cleaning_reindexes_interpolates_short_gaps_and_removes_spikes(observations, params):
    frame = observations.tail(24 * 10).reset_index(drop=True).copy()
    frame = frame.drop(index=[50, 51])  # a 2 h gap: interpolated
    frame = frame.drop(index=range(100, 110))  # a 10 h gap: stays missing
    frame.loc[150, "temperature_2m"] += 25.0  # a one-hour spike
    frame = pd.concat([frame, frame.iloc[[5]]])  # a duplicate row
    cleaned, summary = clean_observations(frame, params)
    assert len(cleaned) == 24 * 10
    assert pd.Series(cleaned["time"]).diff().dropna().eq(pd.Timedelta(hours=1)).all()
    assert summary.duplicates_dropped == 1
    assert summary.outliers_removed >= 1
    assert not cleaned.loc[[50, 51, 150], "temperature_2m"].isna().any()
    assert (
        abs(cleaned.loc[150, "temperature_2m"] - observations.tail(240)["temperature_2m"].iloc[150])
        < 3
    )
    assert cleaned.loc[100:109, "temperature_2m"].isna().sum() >= 4


def test_wind_direction_interpolates_across_north(params):
    times = pd.date_range(FIXED_NOW - pd.Timedelta(hours=2), FIXED_NOW, freq="h")
    frame = pd.DataFrame({"time": times, **dict.fromkeys(params.data.variables, 10.0)})
    frame["wind_direction_10m"] = [350.0, np.nan, 10.0]
    cleaned, _ = clean_observations(frame, params)
    value = cleaned["wind_direction_10m"].iloc[1]
    assert min(value, 360 - value) < 1.0
