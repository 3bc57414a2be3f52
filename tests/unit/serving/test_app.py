"""The app in-process (Starlette's TestClient): states that need no real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from rps.serving.app import create_app
from rps.serving.launcher import prepare_multiprocess_dir
from rps.settings import Settings
from tests.unit.serving.bundles import PARAMS_FILE


def _client(tmp_path: Path, **settings: object) -> Iterator[TestClient]:
    app = create_app(
        Settings(state_dir=tmp_path / "state", params_path=PARAMS_FILE, **settings)  # type: ignore[arg-type]
    )
    with TestClient(app) as client:
        yield client


@pytest.fixture
def no_model(tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path, model_dir=tmp_path / "nothing-here")


@pytest.fixture
def no_token(tmp_path: Path, bundle_dir: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path, model_dir=bundle_dir, api_token=None)


def test_without_a_model_health_and_predictions_answer_503(no_model: TestClient) -> None:
    """It starts, reports why no model is loaded, and refuses predictions with 503."""
    health = no_model.get("/health")
    assert health.status_code == 503
    assert "does not exist" in health.json()["detail"]
    assert no_model.post("/predict", json={"rows": [{"a": 1.0}]}).status_code == 503
    assert no_model.get("/model/info").status_code == 503
    assert no_model.get("/forecast").status_code == 503
    assert no_model.get("/metrics").status_code == 200


def test_model_management_is_disabled_without_a_token(no_token: TestClient) -> None:
    """With no RPS_API_TOKEN configured reload and rollback answer 503, with or without auth."""
    for path in ("/model/reload", "/model/rollback"):
        assert no_token.post(path).status_code == 503
        response = no_token.post(path, headers={"Authorization": "Bearer anything"})
        assert response.status_code == 503
        assert "RPS_API_TOKEN" in response.json()["detail"]


def test_a_linear_bundle_serves_in_process(no_token: TestClient, bundle_dir: Path) -> None:
    """A non-LightGBM bundle serves too; the version comes from the lineage."""
    from rps.models.bundle import load_bundle

    names = load_bundle(bundle_dir).feature_names
    row = {**dict.fromkeys(names, 10.0), "horizon_hours": 6.0}  # the model's own lead time
    body = no_token.post("/predict", json={"rows": [row]}).json()
    assert body["model_version"] == "7"
    assert body["predictions"][0]["prediction"] == pytest.approx(20.5)
    assert body["predictions"][0]["upper"] - body["predictions"][0]["lower"] == pytest.approx(4.0)


def test_a_non_finite_forecast_is_a_422(no_token: TestClient, bundle_dir: Path) -> None:
    """Finite inputs whose forecast overflows are refused with 422, not a 500 or a null."""
    from rps.models.bundle import load_bundle

    names = load_bundle(bundle_dir).feature_names
    fine = {**dict.fromkeys(names, 10.0), "horizon_hours": 6.0}
    huge = {**fine, names[0]: 1.7e308, names[1]: 1.7e308}
    response = no_token.post("/predict", json={"rows": [fine, huge]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "rows", 1]
    assert "not finite" in response.text


def test_token_checks_use_the_configured_secret(tmp_path: Path, bundle_dir: Path) -> None:
    """401 without a bearer token, 403 with a wrong one, 200 with the configured one."""
    for client in _client(tmp_path, model_dir=bundle_dir, api_token=SecretStr("s3cret")):
        assert client.post("/model/reload").status_code == 401
        assert (
            client.post("/model/reload", headers={"Authorization": "Bearer x"}).status_code == 403
        )
        ok = client.post("/model/reload", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert ok.json()["changed"] is False


def test_prepare_multiprocess_dir_removes_stale_metric_files(tmp_path: Path) -> None:
    """The launcher empties the Prometheus multiprocess folder of a previous run."""
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "counter_123.db").write_bytes(b"x")
    (folder / "keep.txt").write_text("x")
    assert prepare_multiprocess_dir(folder) == folder.resolve()
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]


def test_series_without_a_value_are_absent(no_token: TestClient, bundle_dir: Path) -> None:
    """Before any drift window or joined prediction their gauges are absent, not 0."""
    text = no_token.get("/metrics").text
    for absent in ("out_of_distribution_ratio", "prediction_variance", "feature_psi", "live_rmse"):
        assert f"\n{absent}" not in text
    for present in ("service_uptime_seconds", "model_info", "model_holdout_rmse", "live_samples"):
        assert f"\n{present}" in text


def test_refused_predictions_are_counted_once_by_reason(
    no_model: TestClient, no_token: TestClient
) -> None:
    """prediction_errors_total counts /predict refusals (not other endpoints), once each."""
    no_model.post("/predict", json={"rows": [{"a": 1.0}]})
    no_model.get("/model/info")
    assert 'prediction_errors_total{reason="no_model"} 1.0' in no_model.get("/metrics").text
    huge = {"rows": [{"x": 1e308}]}
    no_token.post("/predict", json=huge)
    assert 'prediction_errors_total{reason="unknown_feature"} 1.0' in no_token.get("/metrics").text
