"""Replay and synthetic sources: real recorded weather on any calendar; drift on demand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rps.data.sources import SourceError, make_source
from rps.data.sources.replay import ReplayClock, ReplaySource, hour_of_year, read_tmy3
from rps.data.sources.scenarios import DriftScenarioError, apply_drift
from rps.data.sources.synthetic import SyntheticSource
from rps.params import DriftScenario, Params
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


ONSET = pd.Timestamp("2026-03-10 00:00", tz="UTC")


def _hourly(days: int = 6) -> pd.DataFrame:
    """A clean frame: a daily temperature cycle and a slowly rising pressure, from 3 days
    before :data:`ONSET`."""
    times = pd.date_range(ONSET - pd.Timedelta(days=3), periods=24 * days, freq="h")
    hours = np.arange(len(times))
    return pd.DataFrame(
        {
            "time": times,
            "temperature_2m": 10.0 + 5.0 * np.sin(2 * np.pi * hours / 24),
            "surface_pressure": 1000.0 + 0.01 * hours,
        }
    )


def _scenario(kind: str, **extra: object) -> DriftScenario:
    return DriftScenario.model_validate(
        {"kind": kind, "start": ONSET.isoformat(), "variables": ["temperature_2m"], **extra}
    )


def _split(frame: pd.DataFrame, scenario: DriftScenario) -> tuple[pd.DataFrame, pd.DataFrame]:
    drifted = apply_drift(frame, scenario)
    after = frame["time"] >= ONSET
    # nothing before the onset and no untouched variable changes
    pd.testing.assert_frame_equal(drifted[~after], frame[~after])
    pd.testing.assert_series_equal(drifted["surface_pressure"], frame["surface_pressure"])
    return frame[after], drifted[after]


def test_bias_adds_the_magnitude_from_the_onset():
    clean, drifted = _split(_hourly(), _scenario("bias", magnitude=3.0))
    assert np.allclose(drifted["temperature_2m"] - clean["temperature_2m"], 3.0)


def test_mean_shift_ramps_to_the_magnitude():
    clean, drifted = _split(_hourly(), _scenario("mean_shift", magnitude=4.0, ramp_hours=8))
    added = (drifted["temperature_2m"] - clean["temperature_2m"]).to_numpy()
    assert added[0] == pytest.approx(0.5) and added[3] == pytest.approx(2.0)
    assert np.allclose(added[7:], 4.0)


def test_variance_scales_deviations_from_the_trailing_daily_mean():
    clean, drifted = _split(_hourly(), _scenario("variance", magnitude=2.0))
    # a full sine period averages to 10: deviations from it double
    assert np.allclose(drifted["temperature_2m"] - 10.0, 2.0 * (clean["temperature_2m"] - 10.0))


def test_daily_cycle_delays_the_series_by_whole_hours():
    frame = _hourly()
    _, drifted = _split(frame, _scenario("daily_cycle", magnitude=6))
    expected = frame.set_index("time")["temperature_2m"].shift(6)
    assert np.allclose(drifted["temperature_2m"], expected.loc[drifted["time"]].to_numpy())


def test_stuck_sensor_repeats_its_value_at_the_onset():
    frame = _hourly()
    at_onset = frame.loc[frame["time"] == ONSET, "temperature_2m"].item()
    _, drifted = _split(frame, _scenario("stuck"))
    assert (drifted["temperature_2m"] == at_onset).all()


def test_missing_blanks_bursts_and_an_end_closes_the_scenario():
    end = ONSET + pd.Timedelta(days=2)
    _, drifted = _split(_hourly(), _scenario("missing", burst_hours=4, every_hours=12, end=end))
    blank = drifted["temperature_2m"].isna().to_numpy()
    inside = (drifted["time"] < end).to_numpy()
    assert blank[inside].mean() == pytest.approx(4 / 12)
    assert not blank[~inside].any()
    assert blank[:4].all() and not blank[4:12].any()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kind": "bias"}, "needs a magnitude"),
        ({"kind": "tilt", "magnitude": 1.0}, "kind"),
        ({"kind": "variance", "magnitude": -1.0}, "magnitude >= 0"),
        ({"kind": "daily_cycle", "magnitude": 2.5}, "1..23 whole hours"),
        ({"kind": "missing", "burst_hours": 30}, "burst_hours exceeds"),
        ({"kind": "bias", "magnitude": 1.0, "variables": []}, "variables"),
        ({"kind": "bias", "magnitude": 1.0, "end": "2026-03-01T00:00Z"}, "end must be after"),
    ],
)
def test_a_bad_scenario_is_refused_with_the_problem_named(config, message):
    with pytest.raises(ValueError, match=message):
        DriftScenario.model_validate(
            {"start": ONSET.isoformat(), "variables": ["temperature_2m"], **config}
        )


def test_a_scenario_on_an_unknown_variable_is_refused(params, settings):
    scenario = _scenario("bias", magnitude=1.0).model_copy(update={"variables": ("snow",)})
    with pytest.raises(DriftScenarioError, match="unknown variable"):
        apply_drift(_hourly(), scenario)
    bad = Params.model_validate(
        {**params.model_dump(), "drift": {"scenario": scenario.model_dump()}}
    )
    for name in ("replay", "synthetic"):
        with pytest.raises(SourceError, match="snow"):
            make_source(settings, bad, name)


@pytest.mark.parametrize("name", ["replay", "synthetic"])
def test_sources_drift_by_configuration_whatever_the_range_asked(name, params, settings):
    """The configured scenario changes the fetched rows from its start; a fetch that begins
    after the onset returns the same drifted values as one that spans it."""
    start = FIXED_NOW - pd.Timedelta(days=2)
    scenario = DriftScenario(kind="stuck", start=start.to_pydatetime(), variables=("cloud_cover",))
    drifted_params = params.model_copy(
        update={"drift": params.drift.model_copy(update={"scenario": scenario})}
    )
    clean = make_source(settings, params, name)
    drifted = make_source(settings, drifted_params, name)
    for source in (clean, drifted):  # the replay clock: frozen at FIXED_NOW
        if isinstance(source, ReplaySource):
            source.clock = ReplayClock(wall_now=lambda: FIXED_NOW, anchor=FIXED_NOW)
        else:
            source._now = lambda: FIXED_NOW  # type: ignore[attr-defined]
    span = (start - pd.Timedelta(days=1), FIXED_NOW)
    a = clean.fetch(*span).frame.set_index("time")
    b = drifted.fetch(*span).frame.set_index("time")
    after = b.index >= start
    pd.testing.assert_frame_equal(a[~after], b[~after])
    assert b.loc[after, "cloud_cover"].nunique() == 1
    assert a.loc[after, "cloud_cover"].nunique() > 1
    later = drifted.fetch(FIXED_NOW - pd.Timedelta(hours=5), FIXED_NOW).frame.set_index("time")
    pd.testing.assert_frame_equal(later, b.loc[later.index])


def test_synthetic_is_deterministic(params):
    one = SyntheticSource(variables=params.data.variables, now=lambda: FIXED_NOW)
    two = SyntheticSource(variables=params.data.variables, now=lambda: FIXED_NOW)
    span = (FIXED_NOW - pd.Timedelta(days=30), FIXED_NOW)
    pd.testing.assert_frame_equal(one.fetch(*span).frame, two.fetch(*span).frame)
    assert one.fetch(*span).frame["relative_humidity_2m"].between(0, 100).all()


def test_read_tmy3_rejects_missing_file(tmp_path):
    with pytest.raises(SourceError):
        read_tmy3(tmp_path / "missing.csv")
