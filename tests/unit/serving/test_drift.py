"""Drift statistics and the sliding window, in-process (no server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rps.data.sources.synthetic import DriftKind, DriftSpec
from rps.params import DriftParams, load_params
from rps.serving.drift import (
    DriftMonitor,
    DriftSnapshot,
    ReferenceProfile,
    ks_statistic,
    psi,
    training_bounds,
)

PARAMS_FILE = Path(__file__).resolve().parents[3] / "params.yaml"
QUANTILES = (0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95)


def _stats(matrix: np.ndarray, names: list[str]) -> dict[str, dict[str, object]]:
    return {
        name: {
            "mean": float(matrix[:, j].mean()),
            "std": float(matrix[:, j].std(ddof=1)),
            "min": float(matrix[:, j].min()),
            "max": float(matrix[:, j].max()),
            "quantiles": {str(q): float(np.quantile(matrix[:, j], q)) for q in QUANTILES},
        }
        for j, name in enumerate(names)
    }


def _profile(reference: np.ndarray, names: list[str]) -> ReferenceProfile:
    return ReferenceProfile.build(names, _stats(reference, names), reference)


def test_ks_statistic_equals_scipy() -> None:
    """The KS statistic equals scipy's two-sample statistic, ties included."""
    rng = np.random.default_rng(0)
    a = np.sort(np.round(rng.normal(0, 1, 700), 1))
    b = np.sort(np.round(rng.normal(0.3, 1.2, 150), 1))
    assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


def test_psi_is_zero_for_equal_shares_and_grows_with_difference() -> None:
    """PSI is 0 for identical distributions and larger for a bigger shift."""
    expected = np.full(10, 0.1)
    assert psi(expected, expected) == pytest.approx(0.0)
    small = np.array([0.12, 0.08, *[0.1] * 8])
    large = np.array([0.5, 0.0, *[0.0625] * 8])
    assert 0 < psi(expected, small) < psi(expected, large)


def test_training_bounds_default_to_infinite_when_unknown() -> None:
    """Features without min/max never count as out of range."""
    lower, upper = training_bounds(["a", "b"], {"a": {"min": -1.0, "max": 2.0}})
    assert lower.tolist() == [-1.0, -np.inf]
    assert upper.tolist() == [2.0, np.inf]


def test_calendar_features_are_left_out_of_the_statistics() -> None:
    """target_* features are range-checked but get no mean shift, KS or PSI."""
    rng = np.random.default_rng(1)
    names = ["temperature_2m", "target_hour", "target_month"]
    profile = _profile(rng.normal(size=(500, 3)), names)
    assert profile.names == ["temperature_2m"]


def test_tied_deciles_of_a_discrete_feature_give_a_finite_small_psi() -> None:
    """A feature with many equal values (cloud cover at 0) does not fake drift."""
    rng = np.random.default_rng(2)
    reference = np.where(rng.random((2000, 1)) < 0.6, 0.0, rng.uniform(0, 100, (2000, 1)))
    monitor = DriftMonitor(_profile(reference, ["cloud_cover"]), n_features=1, window_size=500)
    window = reference[rng.choice(2000, 500, replace=False)]
    monitor.observe(window, np.zeros(500, dtype=bool), np.zeros(500))
    snapshot = monitor.compute()
    assert np.isfinite(snapshot.psi["cloud_cover"])
    assert snapshot.psi["cloud_cover"] < 0.05


def test_window_keeps_only_the_newest_rows() -> None:
    """The ring buffer holds the last window_size rows, in any batch sizes."""
    names = ["x"]
    profile = _profile(np.arange(100.0).reshape(-1, 1), names)
    monitor = DriftMonitor(profile, n_features=1, window_size=10, min_samples=1)
    for start in range(0, 25, 3):
        rows = np.arange(start, min(start + 3, 25), dtype=float).reshape(-1, 1)
        monitor.observe(rows, np.zeros(len(rows), dtype=bool), rows[:, 0])
    snapshot = monitor.compute()
    assert snapshot.samples == 10
    assert snapshot.prediction_variance == pytest.approx(np.var(np.arange(15.0, 25.0)))
    big = np.arange(100.0, 130.0).reshape(-1, 1)
    monitor.observe(big, np.ones(30, dtype=bool), big[:, 0])
    assert monitor.compute().ood_ratio == 1.0
    assert monitor.compute().prediction_variance == pytest.approx(np.var(np.arange(120.0, 130.0)))


def test_statistics_are_recomputed_every_n_rows_not_per_request() -> None:
    """One row per request: the window is recomputed every recompute_every rows only."""
    rng = np.random.default_rng(3)
    profile = _profile(rng.normal(size=(500, 2)), ["a", "b"])
    now = [0.0]

    def clock() -> float:
        now[0] += 0.5  # two requests per second
        return now[0]

    monitor = DriftMonitor(
        profile,
        n_features=2,
        window_size=100,
        recompute_every=10,
        min_interval_seconds=0.0,
        clock=clock,
    )
    computed = sum(
        monitor.observe(rng.normal(size=(1, 2)), np.zeros(1, dtype=bool), np.zeros(1)) is not None
        for _ in range(300)
    )
    assert monitor.min_samples == 100
    assert computed == 1 + (300 - 100) // 10  # first at min_samples, then every 10 rows


def test_recomputation_is_rate_limited_under_load_and_refreshed_on_demand() -> None:
    """Many rows within one second cause one recomputation; refresh() catches up."""
    rng = np.random.default_rng(7)
    profile = _profile(rng.normal(size=(500, 2)), ["a", "b"])
    monitor = DriftMonitor(profile, n_features=2, window_size=100, clock=lambda: 0.0)
    computed = sum(
        monitor.observe(rng.normal(size=(1, 2)), np.zeros(1, dtype=bool), np.zeros(1)) is not None
        for _ in range(1000)
    )
    assert computed == 1
    refreshed = monitor.refresh()
    assert refreshed is not None and refreshed.samples == 100
    assert monitor.refresh() is None  # nothing new since


def test_statistics_are_recomputed_after_recompute_seconds() -> None:
    """A trickle of rows still refreshes the statistics after recompute_seconds."""
    now = [0.0]
    rng = np.random.default_rng(4)
    profile = _profile(rng.normal(size=(300, 1)), ["a"])
    monitor = DriftMonitor(
        profile,
        n_features=1,
        window_size=50,
        recompute_every=40,
        recompute_seconds=5.0,
        clock=lambda: now[0],
    )
    monitor.observe(rng.normal(size=(50, 1)), np.zeros(50, dtype=bool), np.zeros(50))
    assert monitor.observe(rng.normal(size=(1, 1)), np.zeros(1, dtype=bool), np.zeros(1)) is None
    now[0] = 6.0
    assert monitor.observe(rng.normal(size=(1, 1)), np.zeros(1, dtype=bool), np.zeros(1))


def test_seed_from_carries_the_window_over_a_model_swap() -> None:
    """A new monitor on the same features starts from the old window."""
    rng = np.random.default_rng(5)
    profile = _profile(rng.normal(size=(300, 1)), ["a"])
    old = DriftMonitor(profile, n_features=1, window_size=20, min_samples=1)
    rows = np.arange(30.0).reshape(-1, 1)
    old.observe(rows, np.zeros(30, dtype=bool), rows[:, 0])
    new = DriftMonitor(profile, n_features=1, window_size=20, min_samples=1)
    new.seed_from(old)
    assert new.compute().prediction_variance == pytest.approx(np.var(np.arange(10.0, 30.0)))


# the synthetic source's drift injection against a synthetic reference ----------------------
@pytest.fixture(scope="module")
def synthetic() -> tuple[list[str], DriftParams, pd.Timestamp]:
    params = load_params(PARAMS_FILE)
    return list(params.data.variables), params.drift, pd.Timestamp("2023-01-01", tz="UTC")


def _synthetic_features(
    variables: list[str], times: pd.DatetimeIndex, drifts: list[object]
) -> pd.DataFrame:
    from rps.data.sources.synthetic import SyntheticSource
    from rps.features.build import FeatureSpec, build_features

    params = load_params(PARAMS_FILE)
    spec = FeatureSpec.from_params(variables, params.data.target, params.features)
    frame = SyntheticSource(variables=variables, drifts=drifts).generate(times)
    return build_features(frame, spec).dropna(subset=spec.feature_names)[spec.feature_names]


@pytest.mark.parametrize(
    ("kind", "magnitude", "fired"),
    [
        ("mean_shift", 6.0, {"mean_shift", "ks", "psi"}),
        ("variance", 3.0, {"ks", "psi"}),
    ],
)
def test_injected_drift_moves_past_thresholds_and_undrifted_data_stays_below(
    synthetic: tuple[list[str], DriftParams, pd.Timestamp],
    kind: DriftKind,
    magnitude: float,
    fired: set[str],
) -> None:
    """Against a reference from the same synthetic period, undrifted rows breach nothing and the
    injected drift breaches the expected statistics on the temperature."""
    variables, thresholds, start = synthetic
    times = pd.date_range(start, start + pd.Timedelta(days=90), freq="h")
    clean = _synthetic_features(variables, times, [])
    reference = clean.to_numpy()
    names = list(clean.columns)
    profile = ReferenceProfile.build(names, _stats(reference, names), reference[::2])
    lower, upper = training_bounds(names, _stats(reference, names))
    rng = np.random.default_rng(6)

    def snapshot(rows: np.ndarray) -> DriftSnapshot:
        monitor = DriftMonitor(profile, n_features=len(names), window_size=len(rows))
        ood = ((rows < lower) | (rows > upper)).any(axis=1)
        monitor.observe(rows, ood, np.zeros(len(rows)))
        return monitor.compute()

    quiet = snapshot(reference[rng.choice(len(reference), 500, replace=False)])
    assert quiet.breaches(thresholds) == {}

    drift = DriftSpec(kind, start, magnitude=magnitude)
    drifted_rows = _synthetic_features(variables, times, [drift]).to_numpy()
    loud = snapshot(drifted_rows[rng.choice(len(drifted_rows), 500, replace=False)])
    breached = {k for k, v in loud.breaches(thresholds).items() if "temperature_2m" in v}
    assert fired <= breached
    untouched = "surface_pressure"
    assert loud.ks[untouched] < thresholds.ks_threshold
