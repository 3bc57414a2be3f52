"""The serving benchmarks measure the service as it is: they call its current entry points and
state layout (a moved method and a renamed state folder each broke a benchmark unnoticed)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.conftest_serving import (
    TRAIN_END,
    feature_rows,
    feature_spec,
    observation_window,
    replay_observations,
)

pytestmark = pytest.mark.slow

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def test_in_process_costs_run_against_the_current_service(
    serving_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rps.features.build import build_features

    monkeypatch.syspath_prepend(str(BENCH_DIR))
    import bench_serving

    spec = feature_spec()
    frame = replay_observations(TRAIN_END, TRAIN_END + pd.Timedelta(days=10))
    features = build_features(frame, spec).dropna(subset=spec.feature_names)
    row = feature_rows(features.tail(1), spec.feature_names)[0]
    window = observation_window(frame.tail(spec.window_hours))

    costs = bench_serving.in_process(serving_bundle, row, window)

    assert set(costs) == {
        "booster_predict_1_row_us",
        "bundle_predict_with_interval_us",
        "service_rows_path_us",
        "build_feature_row_array_us",
        "observations_to_row_us",
        "service_observations_path_us",
    }
    assert all(math.isfinite(v) and v > 0 for v in costs.values())
    # the whole observations path contains building the row from the observations
    assert costs["service_observations_path_us"] > costs["build_feature_row_array_us"]


def test_forecast_benchmark_serves_the_stored_trajectory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    import bench_forecast

    assert bench_forecast.main(["--rate", "20", "--duration", "1", "--no-write"]) == 0
    report = capsys.readouterr().out
    [row] = [line for line in report.splitlines() if line.startswith("| 20 req/s |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[5] == "0", row  # every request of the open loop was answered (200)
