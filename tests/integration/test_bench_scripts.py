"""The serving benchmarks measure the service as it is: they call its current entry points and
state layout (a moved method and a renamed state folder each broke a benchmark unnoticed)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def test_in_process_costs_run_against_the_current_service(
    serving_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    import bench_serving

    row, window = bench_serving.request_inputs()
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
