"""The prediction API over HTTP, against a real uvicorn process: endpoints and metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.integration.conftest_serving import (
    TRAIN_END,
    TRAIN_START,
    ServerHandle,
    feature_rows,
    feature_spec,
    observation_window,
    replay_observations,
)

pytestmark = pytest.mark.slow

REQUIRED_METRICS = (
    "api_requests_total",
    "api_request_latency_seconds_bucket",
    "predictions_total",
    "prediction_errors_total",
    "service_uptime_seconds",
    "out_of_distribution_ratio",
    "drift_check_ratio",
    "feature_anomaly_ratio",
    "prediction_variance",
    "prediction_confidence_bucket",
    "live_samples",
    "model_holdout_rmse",
    "model_info",
)


@pytest.fixture(scope="module")
def live_window() -> pd.DataFrame:
    """Twenty days of replayed observations just after the training period."""
    return replay_observations(TRAIN_END, TRAIN_END + pd.Timedelta(days=20))


@pytest.fixture(scope="module")
def live_features(live_window: pd.DataFrame) -> pd.DataFrame:
    from rps.features.build import build_features

    spec = feature_spec()
    return build_features(live_window, spec).dropna(subset=spec.feature_names)


def _metric_names(server: ServerHandle) -> set[str]:
    return {key.split("{")[0] for key in server.metrics()}


def test_health_reports_the_loaded_model(serving_server: ServerHandle) -> None:
    """It answers 200 with the model's name and version."""
    body = serving_server.client().get("/health").json()
    assert body["status"] == "ok"
    assert body["model_loaded"] is True
    assert body["model_version"] == "1"
    assert body["uptime_seconds"] >= 0


def test_model_info_reports_lineage_and_checksum(
    serving_server: ServerHandle, serving_bundle: Path
) -> None:
    """It reports the bundle's lineage, metrics, features and verified checksum."""
    from rps.models.bundle import load_bundle

    bundle = load_bundle(serving_bundle)
    info = serving_server.client().get("/model/info").json()
    assert info["name"] == "rps-temperature-forecaster"
    assert info["version"] == "1"
    assert info["alias"] == "champion"
    assert info["kind"] == "lightgbm"
    assert info["checksum"] == bundle.checksum
    assert info["run_id"] == bundle.lineage["run_id"]
    assert info["dataset_md5"] == bundle.lineage["dataset_md5"]
    assert info["code_sha"] == bundle.lineage["code_sha"]
    assert info["trained_at"] == bundle.lineage["trained_at"]
    assert info["metrics"]["holdout_rmse"] == pytest.approx(bundle.metrics["holdout_rmse"])
    assert info["features"] == bundle.feature_names
    assert info["window_hours"] == bundle.feature_spec.window_hours


def test_predict_rows_equals_the_bundle_in_process(
    serving_server: ServerHandle, serving_bundle: Path, live_features: pd.DataFrame
) -> None:
    """Batch predictions over HTTP equal the bundle's own predictions and intervals."""
    from rps.models.bundle import load_bundle

    bundle = load_bundle(serving_bundle)
    batch = live_features.tail(10)
    response = serving_server.client().post(
        "/predict", json={"rows": feature_rows(batch, bundle.feature_names)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    point, lower, upper = bundle.predict_with_interval(batch[bundle.feature_names].to_numpy())
    got = body["predictions"]
    assert [p["prediction"] for p in got] == pytest.approx(point.tolist(), abs=1e-9)
    assert [p["lower"] for p in got] == pytest.approx(lower.tolist(), abs=1e-9)
    assert [p["upper"] for p in got] == pytest.approx(upper.tolist(), abs=1e-9)
    assert body["model_version"] == "1"
    assert body["horizon_hours"] == 6
    assert all(p["issue_time"] is None and p["target_time"] is None for p in got)


def test_predict_rows_with_issue_times_returns_target_times(
    serving_server: ServerHandle, live_features: pd.DataFrame
) -> None:
    """Given issue times, each row's target time is the issue time plus the horizon."""
    spec = feature_spec()
    batch = live_features.tail(2)
    issue_times = [t.isoformat() for t in batch.index]
    response = serving_server.client().post(
        "/predict",
        json={"rows": feature_rows(batch, spec.feature_names), "issue_times": issue_times},
    )
    assert response.status_code == 200, response.text
    for item, issued in zip(response.json()["predictions"], batch.index, strict=True):
        assert pd.Timestamp(item["issue_time"]) == issued
        assert pd.Timestamp(item["target_time"]) == issued + pd.Timedelta(hours=6)


def test_predict_observations_matches_the_offline_feature_row(
    serving_server: ServerHandle, live_window: pd.DataFrame, live_features: pd.DataFrame
) -> None:
    """A raw observation window gives the same forecast as the offline features of its hour."""
    spec = feature_spec()
    window = live_window.tail(spec.window_hours + 5)
    client = serving_server.client()
    from_observations = client.post("/predict", json={"observations": observation_window(window)})
    assert from_observations.status_code == 200, from_observations.text
    item = from_observations.json()["predictions"][0]
    issue = pd.Timestamp(window["time"].iloc[-1])
    assert pd.Timestamp(item["issue_time"]) == issue
    assert pd.Timestamp(item["target_time"]) == issue + pd.Timedelta(hours=spec.horizon_hours)
    offline = feature_rows(live_features.loc[[issue]], spec.feature_names)
    from_rows = client.post("/predict", json={"rows": offline}).json()["predictions"][0]
    assert item["prediction"] == pytest.approx(from_rows["prediction"], abs=1e-9)


def test_predict_names_features_outside_the_training_range(
    serving_server: ServerHandle, live_features: pd.DataFrame
) -> None:
    """A feature beyond the training [min, max] is listed in ood_features."""
    spec = feature_spec()
    row = feature_rows(live_features.tail(1), spec.feature_names)[0]
    row["surface_pressure"] = 2000.0
    body = serving_server.client().post("/predict", json={"rows": [row]}).json()
    assert "surface_pressure" in body["predictions"][0]["ood_features"]


def test_forecast_uses_the_newest_stored_observations(serving_server: ServerHandle) -> None:
    """503 without stored observations; then a forecast from the newest stored hour; 503 on gaps."""
    client = serving_server.client()
    processed = serving_server.state_dir / "data" / "processed"
    (processed / "observations.parquet").unlink(missing_ok=True)
    missing = client.get("/forecast")
    assert missing.status_code == 503
    assert "observations" in missing.json()["detail"]

    processed.mkdir(parents=True, exist_ok=True)
    stored = replay_observations(TRAIN_END, TRAIN_END + pd.Timedelta(days=9))
    stored.to_parquet(processed / "observations.parquet", index=False)
    response = client.get("/forecast")
    assert response.status_code == 200, response.text
    body = response.json()
    assert pd.Timestamp(body["issue_time"]) == pd.Timestamp(stored["time"].iloc[-1])
    assert pd.Timestamp(body["target_time"]) == pd.Timestamp(body["issue_time"]) + pd.Timedelta(
        hours=6
    )
    assert body["location"] == "Greensboro, NC"
    assert body["lower"] <= body["prediction"] <= body["upper"]

    gappy = stored.drop(index=stored.index[-10])
    gappy.to_parquet(processed / "observations.parquet", index=False)
    broken = client.get("/forecast")
    assert broken.status_code == 503
    assert "gaps" in broken.json()["detail"]


def test_metrics_exposes_every_documented_series(
    serving_server: ServerHandle, live_features: pd.DataFrame
) -> None:
    """After enough predictions /metrics holds every required metric name."""
    spec = feature_spec()
    client = serving_server.client()
    rows = feature_rows(live_features.tail(128), spec.feature_names)
    for start in range(0, 128, 64):
        assert client.post("/predict", json={"rows": rows[start : start + 64]}).status_code == 200
    client.post("/predict", json={"rows": []})  # one refused request
    names = _metric_names(serving_server)
    missing = [name for name in REQUIRED_METRICS if name not in names]
    assert not missing, f"missing metrics: {missing}"
    values = serving_server.metrics()
    assert values['model_info{alias="champion",name="rps-temperature-forecaster",version="1"}'] == 1
    assert values["model_holdout_rmse"] > 0
    assert values['feature_anomaly_ratio{feature_name="temperature_2m"}'] >= 0
    assert not any(k.startswith("feature_anomaly") and "target_hour" in k for k in values)


def test_pipeline_status_metrics_follow_the_status_file(serving_server: ServerHandle) -> None:
    """The pipeline gauges are absent without pipeline_status.json and read it when present."""
    status_file = serving_server.state_dir / "pipeline_status.json"
    status_file.unlink(missing_ok=True)
    assert "pipeline_last_run_failed" not in _metric_names(serving_server)
    status_file.write_text(
        json.dumps(
            {
                "last_success_at": "2024-05-01T06:00:00+00:00",
                "last_observation_at": "2024-05-01T05:00:00Z",
                "last_run_failed": True,
            }
        )
    )
    values = serving_server.metrics()
    assert (
        values["pipeline_last_success_timestamp_seconds"]
        == pd.Timestamp("2024-05-01T06:00:00Z").timestamp()
    )
    assert (
        values["data_last_observation_timestamp_seconds"]
        == pd.Timestamp("2024-05-01T05:00:00Z").timestamp()
    )
    newest = pd.Timestamp("2024-05-01T05:00:00Z").timestamp()
    assert values["data_observation_age_seconds"] == pytest.approx(time.time() - newest, abs=120)
    assert values["pipeline_last_run_failed"] == 1.0
    status_file.unlink()


def test_request_metrics_use_route_templates(
    serving_server: ServerHandle, live_features: pd.DataFrame
) -> None:
    """Requests are counted per route template; unknown paths share the endpoint "other"."""
    spec = feature_spec()
    client = serving_server.client()
    ok_key = 'api_requests_total{endpoint="/predict",method="POST",status="200"}'
    other_key = 'api_requests_total{endpoint="other",method="GET",status="404"}'
    predictions_key = "predictions_total"
    before = serving_server.metrics()
    rows = feature_rows(live_features.tail(3), spec.feature_names)
    assert client.post("/predict", json={"rows": rows}).status_code == 200
    for suffix in ("a", "b", "c/d"):
        assert client.get(f"/no-such-route/{suffix}").status_code == 404
    after = serving_server.metrics()
    assert after[ok_key] - before.get(ok_key, 0.0) == 1
    assert after[other_key] - before.get(other_key, 0.0) == 3
    assert after[predictions_key] - before[predictions_key] == 3
    assert not any("no-such-route" in key for key in after)
    latency = 'api_request_latency_seconds_count{endpoint="/predict"}'
    assert after[latency] > before.get(latency, 0.0)


def test_prediction_interval_width_is_observed(
    serving_server: ServerHandle, serving_bundle: Path, live_features: pd.DataFrame
) -> None:
    """prediction_confidence records the interval width of every predicted row."""
    from rps.models.bundle import load_bundle

    bundle = load_bundle(serving_bundle)
    width = bundle.interval["upper"] - bundle.interval["lower"]
    before = serving_server.metrics()
    rows = feature_rows(live_features.tail(4), bundle.feature_names)
    serving_server.client().post("/predict", json={"rows": rows})
    after = serving_server.metrics()
    assert after["prediction_confidence_count"] - before["prediction_confidence_count"] == 4
    grown = after["prediction_confidence_sum"] - before["prediction_confidence_sum"]
    assert grown == pytest.approx(4 * width)


def _training_rows() -> list[dict[str, Any]]:
    from rps.features.build import build_features

    spec = feature_spec()
    frame = replay_observations(TRAIN_START, TRAIN_START + pd.Timedelta(days=10))
    features = build_features(frame, spec).dropna(subset=spec.feature_names)
    return feature_rows(features.tail(3), spec.feature_names)


def test_in_range_rows_have_no_ood_features(serving_server: ServerHandle) -> None:
    """Rows from the training period are inside the training range."""
    body = serving_server.client().post("/predict", json={"rows": _training_rows()}).json()
    assert all(item["ood_features"] == [] for item in body["predictions"])
    assert np.isfinite([item["prediction"] for item in body["predictions"]]).all()
