"""The trajectory over HTTP: a real server with a trained trajectory bundle (every hour 1..48).

GET /forecast?hours=N and POST /predict with horizon_hours answer exactly what the offline
features and the bundle give for the same hours; the requests of before still work unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from rps.features.build import build_horizon_features
from rps.models.bundle import load_bundle
from tests.integration.conftest_serving import (
    TRAIN_END,
    ServerHandle,
    observation_window,
    parse_metrics,
    replay_observations,
    start_server,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stored() -> pd.DataFrame:
    return replay_observations(TRAIN_END, TRAIN_END + pd.Timedelta(days=9))


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, trajectory_bundle: Path, stored: pd.DataFrame
) -> Iterator[ServerHandle]:
    state = tmp_path_factory.mktemp("trajectory-state")
    processed = state / "data" / "processed"
    processed.mkdir(parents=True)
    stored.to_parquet(processed / "observations.parquet", index=False)
    handle = start_server(state_dir=state, model_dir=trajectory_bundle)
    try:
        yield handle
    finally:
        handle.stop()


def test_forecast_hours_48_is_the_offline_trajectory_with_its_intervals(
    server: ServerHandle, trajectory_bundle: Path, stored: pd.DataFrame
) -> None:
    client = server.client()
    body = client.get("/forecast", params={"hours": 48}).json()
    points = body["trajectory"]
    assert [p["horizon_hours"] for p in points] == list(range(1, 49))
    assert all(p["lower"] < p["prediction"] < p["upper"] for p in points)

    bundle = load_bundle(trajectory_bundle)
    issue = pd.Timestamp(stored["time"].iloc[-1])
    offline = build_horizon_features(
        stored, bundle.feature_spec, pd.DatetimeIndex([issue] * 48), np.arange(1, 49)
    )
    point, lower, upper = bundle.predict_with_interval(
        offline[bundle.feature_names].to_numpy(dtype=float)
    )
    np.testing.assert_allclose([p["prediction"] for p in points], point, rtol=1e-9)
    np.testing.assert_allclose([p["lower"] for p in points], lower, rtol=1e-9)
    np.testing.assert_allclose([p["upper"] for p in points], upper, rtol=1e-9)
    assert [pd.Timestamp(p["target_time"]) for p in points] == list(offline["target_time"])
    assert body["prediction"] == points[5]["prediction"]  # the model's own +6 h forecast

    assert client.get("/forecast", params={"hours": 49}).status_code == 422
    info = client.get("/model/info").json()
    assert info["max_horizon_hours"] == 48 and len(info["metrics_by_horizon"]) == 48


def test_predict_takes_horizon_hours_and_old_requests_are_unchanged(
    server: ServerHandle, stored: pd.DataFrame
) -> None:
    client = server.client()
    trajectory = client.get("/forecast", params={"hours": 24}).json()["trajectory"]
    window = {"observations": observation_window(stored.tail(169))}
    old = client.post("/predict", json=window).json()
    assert old["horizon_hours"] == 6
    assert old["predictions"][0]["prediction"] == trajectory[5]["prediction"]
    ahead = client.post("/predict", json={**window, "horizon_hours": 24}).json()
    assert ahead["horizon_hours"] == 24
    item = ahead["predictions"][0]
    expected = [trajectory[23][k] for k in ("prediction", "lower", "upper")]
    # one row against a batch of 25: the interval's matrix product may differ in the last bit
    assert [item[k] for k in ("prediction", "lower", "upper")] == pytest.approx(expected, rel=1e-12)
    assert client.post("/predict", json={**window, "horizon_hours": 49}).status_code == 422


def test_every_worker_publishes_the_trajectory_of_the_stored_observations(
    tmp_path: Path, trajectory_bundle: Path, stored: pd.DataFrame
) -> None:
    """Two workers: whichever answers the scrape, forecast_trajectory is the whole 48-hour
    GET /forecast?hours=48 answer (computed at scrape time, no per-worker gauge to merge)."""
    processed = tmp_path / "data" / "processed"
    processed.mkdir(parents=True)
    stored.to_parquet(processed / "observations.parquet", index=False)
    server = start_server(state_dir=tmp_path, model_dir=trajectory_bundle, workers=2)
    try:
        points = server.client().get("/forecast", params={"hours": 48}).json()["trajectory"]
        expected = {
            f'forecast_trajectory{{bound="{bound}",horizon_hours="{p["horizon_hours"]}"}}': p[bound]
            for p in points
            for bound in ("lower", "prediction", "upper")
        }
        issued = pd.Timestamp(stored["time"].iloc[-1]).timestamp()
        scraped: dict[int, dict[str, float]] = {}
        for _ in range(60):  # fresh connections until both workers have answered
            with httpx.Client(base_url=server.url, timeout=10.0) as client:
                pid = client.get("/health").json()["worker_pid"]  # same connection, same worker
                scraped[pid] = parse_metrics(client.get("/metrics").text)
            if len(scraped) == 2:
                break
        assert len(scraped) == 2, f"one worker answered every scrape: {sorted(scraped)}"
        for metrics in scraped.values():
            trajectory = {k: v for k, v in metrics.items() if k.startswith("forecast_trajectory{")}
            assert trajectory == expected
            assert metrics["forecast_trajectory_issue_timestamp_seconds"] == issued
    finally:
        server.stop()
