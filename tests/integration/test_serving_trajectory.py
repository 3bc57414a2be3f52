"""The trajectory over HTTP: a real server with a trained trajectory bundle (every hour 1..48).

GET /forecast?hours=N and POST /predict with horizon_hours answer exactly what the offline
features and the bundle give for the same hours; the requests of before still work unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rps.features.build import build_horizon_features
from rps.models.bundle import load_bundle
from tests.integration.conftest_serving import (
    TRAIN_END,
    ServerHandle,
    observation_window,
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
