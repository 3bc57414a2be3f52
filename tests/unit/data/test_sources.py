"""Replay and synthetic sources: real recorded weather on any calendar; drift on demand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rps.data.sources import SourceError, make_source
from rps.data.sources.replay import ReplayClock, ReplaySource, hour_of_year, read_tmy3
from rps.data.sources.synthetic import DriftSpec, SyntheticSource
from tests.conftest import FIXED_NOW


def test_tmy3_is_converted_to_open_meteo_units(recording):
    assert len(recording) == 8760
    assert recording["temperature_2m"].between(-30, 45).all()
    assert recording["surface_pressure"].between(900, 1050).all()  # hPa at 273 m
    assert recording["cloud_cover"].max() == 100.0  # tenths -> %
    assert recording["wind_speed_10m"].max() > 30  # m/s -> km/h
    assert "GREENSBORO" in recording.attrs["station"]


def test_replay_returns_hours_up_to_its_now_only(replay_source):
    frame = replay_source.fetch(
        FIXED_NOW - pd.Timedelta(hours=5), FIXED_NOW + pd.Timedelta(days=2)
    ).frame
    assert frame["time"].iloc[-1] == FIXED_NOW
    assert len(frame) == 6
    assert not frame.isna().any().any()


def test_replay_is_deterministic_per_timestamp(replay_source):
    a = replay_source.fetch(FIXED_NOW - pd.Timedelta(days=3), FIXED_NOW).frame
    b = replay_source.fetch(FIXED_NOW - pd.Timedelta(days=1), FIXED_NOW).frame
    pd.testing.assert_frame_equal(a.tail(25).reset_index(drop=True), b.reset_index(drop=True))


def test_replay_covers_a_leap_day_and_a_year_boundary(replay_source):
    frame = replay_source.fetch(
        pd.Timestamp("2024-02-28", tz="UTC"), pd.Timestamp("2024-03-01 23:00", tz="UTC")
    ).frame
    assert len(frame) == 72 and not frame.isna().any().any()
    hoy = hour_of_year(pd.DatetimeIndex(frame["time"]))
    assert hoy.min() >= 0 and hoy.max() < 8760


def test_accelerated_clock_runs_faster():
    start = pd.Timestamp("2026-01-01", tz="UTC")
    wall = [start]
    clock = ReplayClock(speed=60.0, wall_now=lambda: wall[0], anchor=start)
    wall[0] = start + pd.Timedelta(minutes=1)
    assert clock.now() == start + pd.Timedelta(hours=1)


def test_replay_accepts_another_tmy3_file_by_path(tmp_path, recording, params, settings):
    from rps.data.sources.replay import default_recording

    copy = tmp_path / "station.csv"
    copy.write_bytes(default_recording().read_bytes())
    source = make_source(settings.model_copy(update={"replay_file": copy}), params, "replay")
    assert isinstance(source, ReplaySource)


def test_replay_refuses_a_file_of_another_schema(tmp_path, params, settings):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(SourceError, match="TMY3"):
        make_source(settings.model_copy(update={"replay_file": bad}), params, "replay")
    with pytest.raises(SourceError, match="not found"):
        make_source(
            settings.model_copy(update={"replay_file": tmp_path / "nope.csv"}), params, "replay"
        )


def test_unknown_source_is_named(params, settings):
    with pytest.raises(SourceError, match="unknown source 'nope'"):
        make_source(settings, params, "nope")


@pytest.mark.parametrize("kind", ["mean_shift", "variance", "stuck", "missing"])
def test_synthetic_drift_kinds_change_data_after_start_only(kind, params):
    start = FIXED_NOW - pd.Timedelta(days=10)
    base = SyntheticSource(variables=params.data.variables, now=lambda: FIXED_NOW)
    drifted = SyntheticSource(
        variables=params.data.variables,
        now=lambda: FIXED_NOW,
        drifts=[DriftSpec(kind, start, magnitude=3.0)],
    )
    a = base.fetch(start - pd.Timedelta(days=10), FIXED_NOW).frame.set_index("time")
    b = drifted.fetch(start - pd.Timedelta(days=10), FIXED_NOW).frame.set_index("time")
    before, after = a.index < start, a.index >= start
    pd.testing.assert_frame_equal(a[before], b[before])
    t_a, t_b = a.loc[after, "temperature_2m"], b.loc[after, "temperature_2m"]
    if kind == "mean_shift":
        assert np.allclose(t_b - t_a, 3.0)
    elif kind == "variance":
        assert t_b.std() == pytest.approx(3.0 * t_a.std(), rel=1e-6)
    elif kind == "stuck":
        assert t_b.nunique() == 1
    else:
        assert t_b.isna().mean() == pytest.approx(3 / 24, abs=0.02)


def test_synthetic_is_deterministic(params):
    one = SyntheticSource(variables=params.data.variables, now=lambda: FIXED_NOW)
    two = SyntheticSource(variables=params.data.variables, now=lambda: FIXED_NOW)
    span = (FIXED_NOW - pd.Timedelta(days=30), FIXED_NOW)
    pd.testing.assert_frame_equal(one.fetch(*span).frame, two.fetch(*span).frame)
    assert one.fetch(*span).frame["relative_humidity_2m"].between(0, 100).all()


def test_read_tmy3_rejects_missing_file(tmp_path):
    with pytest.raises(SourceError):
        read_tmy3(tmp_path / "missing.csv")
