"""The seasonal drift reference and the monitor's checks, in-process, on replayed real weather."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rps.data.sources.scenarios import apply_drift
from rps.features.build import FeatureSpec, build_features
from rps.features.humidity import implied_dew_point
from rps.params import DriftScenario, Params, load_params
from rps.serving.drift import DriftMonitor, ReferenceProfile, input_checks, training_bounds
from rps.serving.seasonal import (
    SEASONAL_KEY,
    HumidityChangeTest,
    SeasonalReference,
    SeasonalReferenceError,
    build_reference,
    humidity_change_path,
    trailing_mean,
    trailing_median,
)

PARAMS_FILE = Path(__file__).resolve().parents[3] / "params.yaml"
TRAIN_END = pd.Timestamp("2025-10-20", tz="UTC")  # as the trainer's 80 % split of 2025
ONSET = pd.Timestamp("2025-11-07 13:00", tz="UTC")  # 08:00 local: temperature rising


@pytest.fixture(scope="module")
def setup(recording: pd.DataFrame) -> tuple[Params, FeatureSpec, pd.DataFrame]:
    """Replayed observations of 2025 (real Greensboro weather)."""
    from rps.data.sources.replay import ReplayClock, ReplaySource

    params = load_params(PARAMS_FILE)
    end = pd.Timestamp("2025-12-31 23:00", tz="UTC")
    clock = ReplayClock(wall_now=lambda: end, anchor=end)
    source = ReplaySource(recording, clock=clock, variables=params.data.variables)
    observations = source.fetch(pd.Timestamp("2025-01-01", tz="UTC"), end).frame
    spec = FeatureSpec.from_params(params.data.variables, params.data.target, params.features)
    return params, spec, observations


@pytest.fixture(scope="module")
def reference(setup: tuple[Params, FeatureSpec, pd.DataFrame]) -> SeasonalReference:
    """The seasonal reference of January..October 19."""
    _, spec, observations = setup
    features = build_features(observations, spec).dropna(subset=spec.feature_names)
    train = features.loc[features.index < TRAIN_END, spec.feature_names]
    return SeasonalReference.from_json(spec.feature_names, build_reference(train))


def _rows(setup: tuple[Params, FeatureSpec, pd.DataFrame], scenario: DriftScenario | None):
    _, spec, observations = setup
    frame = observations if scenario is None else apply_drift(observations, scenario)
    features = build_features(frame, spec, with_target=False).dropna(subset=spec.feature_names)
    return features[spec.feature_names]


def _hourly_ratios(reference: SeasonalReference, rows: pd.DataFrame) -> pd.DataFrame:
    """Each check's ratio after each hourly row, as the monitor computes it."""
    matrix = rows.to_numpy(dtype=float)
    w = reference.window
    records = [
        input_checks(reference, matrix[i - w + 1 : i + 1])[0] for i in range(w - 1, len(matrix))
    ]
    return pd.DataFrame(records, index=rows.index[w - 1 :])


def test_the_reference_is_json_and_round_trips(setup, reference) -> None:
    """The builder's output survives JSON and tracks every non-calendar feature."""
    import json

    _, spec, _ = setup
    assert reference.window == 6
    assert not any(n.startswith("target_") for n in reference.names)
    assert "temperature_2m" in reference.names
    assert reference.humidity.shape == (3,)
    stats = {SEASONAL_KEY: json.loads(json.dumps(build_reference(_rows(setup, None)[:500])))}
    profile = ReferenceProfile.build(spec.feature_names, stats)
    assert profile.seasonal is not None and profile.seasonal.window == 6


def test_anomalies_are_seasonal_not_yearly(setup, reference) -> None:
    """A clean July and a clean January both have near-zero mean anomalies: the reference
    describes each hour and date, not the year's average."""
    rows = _rows(setup, None)
    for month in (1, 7):
        part = rows[rows.index.month == month].to_numpy(dtype=float)
        z = reference.anomalies(part)
        t = reference.names.index("temperature_2m")
        assert abs(z[:, t].mean()) < 0.5
        assert 0.5 < z[:, t].std() < 2.0


def test_checks_stay_quiet_on_clean_unseen_late_autumn(setup, reference) -> None:
    """October 20..December (after the reference period, 73 days): the seasonal anomalies
    never cross their limit, the humidity gap in at most one episode (under 1 per 30 days)."""
    rows = _rows(setup, None)
    ratios = _hourly_ratios(reference, rows[rows.index >= TRAIN_END])
    assert set(ratios.columns) == {"seasonal_anomaly", "humidity_consistency"}
    assert (ratios["seasonal_anomaly"] <= 1.0).all(), ratios.max()
    above = (ratios["humidity_consistency"] > 1.0).to_numpy()
    episodes = int(above[0]) + int(np.sum(above[1:] & ~above[:-1]))
    assert episodes <= 1, ratios["humidity_consistency"][above]


@pytest.mark.parametrize(
    ("scenario", "check", "within_hours"),
    [
        ({"kind": "stuck", "variables": ["temperature_2m"]}, "humidity", 6),
        ({"kind": "bias", "variables": ["temperature_2m"], "magnitude": 3.0}, "humidity", 6),
        ({"kind": "daily_cycle", "variables": ["temperature_2m"], "magnitude": 6}, "humidity", 12),
    ],
)
def test_a_drifted_sensor_crosses_a_limit_soon_after_onset(
    setup, reference, scenario, check, within_hours
) -> None:
    """A stuck, biased or delayed temperature sensor is caught from the served rows alone."""
    drifted = DriftScenario.model_validate({**scenario, "start": ONSET.isoformat()})
    rows = _rows(setup, drifted)
    ratios = _hourly_ratios(reference, rows[rows.index >= ONSET - pd.Timedelta(hours=12)])
    before = ratios[ratios.index < ONSET]
    assert (before <= 1.0).all().all()
    after = ratios[ratios.index >= ONSET]
    crossed = after.index[(after.filter(like=check) > 1.0).any(axis=1)]
    assert len(crossed), after.max()
    assert crossed[0] - ONSET <= pd.Timedelta(hours=within_hours)


def test_the_monitor_publishes_checks_over_the_newest_window(setup, reference) -> None:
    """The monitor computes the checks of the newest ``window`` rows of its ring."""
    _, spec, _ = setup
    rows = _rows(setup, None).to_numpy(dtype=float)[:40]
    stats = {SEASONAL_KEY: build_reference(_rows(setup, None)[:800])}
    profile = ReferenceProfile.build(spec.feature_names, stats)
    monitor = DriftMonitor(profile, n_features=len(spec.feature_names), window_size=20)
    assert monitor.observe(rows[:5], np.zeros(5, bool), np.zeros(5)) is None  # < window
    snapshot = monitor.observe(rows[5:40], np.zeros(35, bool), np.arange(35.0))
    assert snapshot is not None and snapshot.window == 6 and snapshot.samples == 20
    expected, features = input_checks(profile.seasonal, rows[34:40])  # type: ignore[arg-type]
    assert snapshot.checks == pytest.approx(expected)
    assert snapshot.feature_anomaly == pytest.approx(features)
    assert snapshot.top_features(2)[0][1] == max(features.values())


def test_a_repeated_row_counts_once(setup, reference) -> None:
    """Polling clients repeat the same hour's row: the ring keeps distinct consecutive rows."""
    _, spec, _ = setup
    rows = _rows(setup, None).to_numpy(dtype=float)[:8]
    stats = {SEASONAL_KEY: build_reference(_rows(setup, None)[:800])}
    profile = ReferenceProfile.build(spec.feature_names, stats)
    monitor = DriftMonitor(profile, n_features=len(spec.feature_names), window_size=20)
    for row in rows[:3]:
        for _ in range(4):  # four requests in the same hour, one at a time
            monitor.observe(row[None, :], np.zeros(1, bool), np.zeros(1))
    assert monitor.samples == 3
    batch = np.vstack([rows[3], rows[3], rows[4], rows[3]])  # a repeat inside a batch
    monitor.observe(batch, np.zeros(4, bool), np.zeros(4))
    assert monitor.samples == 6  # rows 3, 4 and 3 again (not consecutive): all kept


def test_a_bundle_without_a_seasonal_reference_keeps_the_range_check(setup) -> None:
    """Old bundles (no seasonal reference) or a malformed one: OOD ratio only, no crash."""
    _, spec, _ = setup
    names = spec.feature_names
    for stats in ({}, {SEASONAL_KEY: {"features": ["nope"]}}, {SEASONAL_KEY: {"window": 6}}):
        profile = ReferenceProfile.build(names, stats)
        assert profile.seasonal is None
        monitor = DriftMonitor(profile, n_features=len(names), window_size=10)
        ood = np.array([True, False] * 5)
        rows = np.arange(10.0)[:, None].repeat(len(names), axis=1)  # ten distinct rows
        snapshot = monitor.observe(rows, ood, np.zeros(10))
        assert snapshot is not None and snapshot.checks == {} and snapshot.ood_ratio == 0.5


def test_the_builder_names_what_it_lacks(setup) -> None:
    """Missing calendar columns or too few rows are refused with the reason."""
    rows = _rows(setup, None)
    with pytest.raises(SeasonalReferenceError, match="calendar features"):
        build_reference(rows.drop(columns=["target_hour_sin"]))
    with pytest.raises(SeasonalReferenceError, match="at least 50"):
        build_reference(rows[:20])
    with pytest.raises(SeasonalReferenceError, match="unknown features"):
        SeasonalReference.from_json(["a"], {"features": ["a"]})


def test_implied_dew_point_and_trailing_mean() -> None:
    """Magnus inverts itself at saturation; the trailing mean averages the last w rows."""
    t = np.array([-10.0, 0.0, 25.0])
    assert implied_dew_point(t, np.full(3, 100.0)) == pytest.approx(t)
    assert implied_dew_point(np.array([20.0]), np.array([50.0]))[0] == pytest.approx(9.3, abs=0.1)
    assert trailing_mean(np.array([1.0, 2.0, 3.0, 4.0]), 2) == pytest.approx([1.0, 1.5, 2.5, 3.5])
    assert trailing_median(np.array([5.0, 1.0, 9.0, 2.0]), 3) == pytest.approx([5, 3, 5, 2])


def test_training_bounds_default_to_infinite_when_unknown() -> None:
    lower, upper = training_bounds(["a", "b"], {"a": {"min": 0.0, "max": 2.0}, "b": {}})
    assert lower.tolist() == [0.0, -np.inf] and upper.tolist() == [2.0, np.inf]


def _hourly_change(reference: SeasonalReference, rows: pd.DataFrame) -> pd.Series:
    """``humidity_change`` after each hourly row, from a monitor fed one row an hour (as the
    API's worker is by one forecast an hour); NaN while its ring holds no full baseline."""
    matrix = rows.to_numpy(dtype=float)
    profile = ReferenceProfile(n_features=matrix.shape[1], seasonal=reference)
    monitor = DriftMonitor(profile, n_features=matrix.shape[1], window_size=500)
    values = []
    for row in matrix:
        monitor.observe(row[None, :], np.zeros(1, bool), np.zeros(1))
        values.append(monitor.compute().checks.get("humidity_change", np.nan))
    return pd.Series(values, index=rows.index)


def test_humidity_change_stays_quiet_on_clean_unseen_late_autumn(setup, reference) -> None:
    """October 20..December (73 days, after the reference period): the humidity-change CUSUM
    crosses in at most 2 episodes (under 1 per 30 days) lasting 3 days in all (it was above 1
    for 46 h, one episode, on 2026-12-03), and is computed from the 25th row on."""
    rows = _rows(setup, None)
    change = _hourly_change(reference, rows[rows.index >= TRAIN_END])
    assert change.iloc[:24].isna().all() and change.iloc[24:].notna().all()
    above = (change.iloc[24:] > 1.0).to_numpy()
    episodes = int(above[0]) + int(np.sum(above[1:] & ~above[:-1]))
    assert episodes <= 2, change[change > 1.0]
    assert above.sum() <= 72, change[change > 1.0]


@pytest.mark.parametrize(
    ("scenario", "onset"),
    [
        ({"kind": "mean_shift", "variables": ["temperature_2m"], "magnitude": 5.0}, ONSET),
        ({"kind": "variance", "variables": ["temperature_2m"], "magnitude": 2.0}, ONSET),
        # a cloudy March day: the doubled swing stays within 1.5 degC for most of 12 h
        (
            {"kind": "variance", "variables": ["temperature_2m"], "magnitude": 2.0},
            pd.Timestamp("2025-03-15 14:00", tz="UTC"),
        ),
    ],
)
def test_humidity_change_catches_a_ramp_and_a_doubled_swing_within_12_hours(
    setup, reference, scenario, onset
) -> None:
    """A temperature ramping up 5 degC over a day and a doubled daily swing around the day's
    mean move the humidity residual too little or too briefly for the window checks; the
    CUSUM of its moves from its previous 24 h crosses within 12 h, and not before the onset."""
    drifted = DriftScenario.model_validate({**scenario, "start": onset.isoformat()})
    rows = _rows(setup, drifted)
    change = _hourly_change(reference, rows[rows.index >= onset - pd.Timedelta(days=3)])
    assert (change[change.index < onset].dropna() <= 1.0).all()
    after = change[change.index >= onset]
    crossed = after.index[after > 1.0]
    assert len(crossed), after.max()
    assert crossed[0] - onset <= pd.Timedelta(hours=12)
    windows = _hourly_ratios(reference, rows[rows.index >= onset - pd.Timedelta(hours=6)])
    early = windows[(windows.index >= onset) & (windows.index <= crossed[0])]
    assert (early <= 1.0).all().all()  # the window checks had not seen it yet


def test_humidity_change_runs_over_the_newest_span(setup, reference) -> None:
    """The CUSUM reads the newest ``span_hours`` rows (each with its baseline), so a ring of
    three weeks costs a week's medians; with fewer rows than a baseline there is no value."""
    rows = _rows(setup, None).to_numpy(dtype=float)[:500]
    # no allowance: the sum never falls back to 0, so it shows how many rows it covered
    test = HumidityChangeTest(
        baseline_hours=24, span_hours=48, allowance=0.0, cap=3.0, threshold=2.0
    )
    residual = reference.humidity_residual(rows)
    tail = humidity_change_path(residual[-72:], baseline_hours=24, allowance=0.0, cap=3.0)
    whole = humidity_change_path(residual, baseline_hours=24, allowance=0.0, cap=3.0)
    assert reference.humidity_change(rows, test) == pytest.approx(tail[-1] / 2.0)
    assert tail.size == 48 and whole[-1] > tail[-1] > 0
    assert reference.humidity_change(rows[:24], test) is None
