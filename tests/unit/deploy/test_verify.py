"""Each verification check against a real HTTP stub (pytest-httpserver), then all of them."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer

from rps.deploy import DeployError
from rps.deploy.verify import (
    check_health,
    check_metrics,
    check_model_info,
    check_prediction,
    row_from_bundle,
    target_bounds,
    verify_deployment,
)
from tests.deploy_support import linear_bundle

METRICS = (
    "# HELP api_requests_total HTTP requests.\n"
    "# TYPE api_requests_total counter\n"
    'api_requests_total{endpoint="/health",method="GET",status="200"} 3.0\n'
)


def _client(server: HTTPServer) -> httpx.Client:
    return httpx.Client(base_url=server.url_for("/").rstrip("/"), timeout=5)


def _info(version: str = "3", **extra: Any) -> dict[str, Any]:
    return {
        "version": version,
        "kind": "lightgbm",
        "checksum": "ab" * 32,
        "features": ["a", "b"],
        "window_hours": 169,
        "source": "/app/model",
        **extra,
    }


def _prediction(value: float = 21.5, version: str = "3") -> dict[str, Any]:
    return {
        "model_name": "m",
        "model_version": version,
        "target": "temperature_2m",
        "horizon_hours": 6,
        "interval_alpha": 0.1,
        "predictions": [
            {"prediction": value, "lower": value - 2, "upper": value + 2, "ood_features": []}
        ],
    }


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# health --------------------------------------------------------------------------------------
def test_health_ok(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/health").respond_with_json({"status": "ok", "model_version": "3"})
    with _client(httpserver) as client:
        result = check_health(client)
    assert result.ok and "3" in result.detail


def test_health_503_reports_the_servers_reason(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/health").respond_with_json(
        {"status": "unavailable", "detail": "checksum mismatch for model.txt"}, status=503
    )
    with _client(httpserver) as client:
        result = check_health(client)
    assert not result.ok
    assert result.detail == "HTTP 503: checksum mismatch for model.txt"


def test_health_waits_for_a_starting_service(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request("/health").respond_with_json(
        {"status": "unavailable", "detail": "model still loading"}, status=503
    )
    httpserver.expect_ordered_request("/health").respond_with_json(
        {"status": "ok", "model_version": "3"}
    )
    with _client(httpserver) as client:
        result = check_health(client, wait_s=5, poll_s=0.05)
    assert result.ok


def test_health_unreachable() -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{_closed_port()}", timeout=1) as client:
        result = check_health(client, wait_s=0.2, poll_s=0.05)
    assert not result.ok
    assert result.detail.startswith("unreachable: ConnectError")
    assert "attempts" in result.detail


# model info ----------------------------------------------------------------------------------
def test_model_info_matches(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/model/info").respond_with_json(_info("3"))
    with _client(httpserver) as client:
        result, info = check_model_info(client, "3", expect_digest="ab" * 32)
    assert result.ok and info["features"] == ["a", "b"]


def test_model_info_version_mismatch(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/model/info").respond_with_json(_info("2"))
    with _client(httpserver) as client:
        result, _ = check_model_info(client, "3")
    assert not result.ok
    assert result.detail.startswith("serving version 2, expected 3")


def test_model_info_digest_mismatch(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/model/info").respond_with_json(_info("3"))
    with _client(httpserver) as client:
        result, _ = check_model_info(client, "3", expect_digest="cd" * 32)
    assert not result.ok and "expected cdcdcdcdcdcd" in result.detail


def test_model_info_unavailable(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/model/info").respond_with_json({"detail": "no model"}, status=503)
    with _client(httpserver) as client:
        result, info = check_model_info(client, "3")
    assert not result.ok and result.detail == "HTTP 503" and info == {}


# prediction ----------------------------------------------------------------------------------
ROW = {"rows": [{"a": 1.0, "b": 2.0}]}


def test_prediction_ok(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/predict", method="POST", json=ROW).respond_with_json(
        _prediction(21.5)
    )
    with _client(httpserver) as client:
        result = check_prediction(client, ROW, expect_version="3")
    assert result.ok and result.detail.startswith("21.50 [19.50, 23.50]")


def test_prediction_nan_is_refused(httpserver: HTTPServer) -> None:
    body = json.dumps(_prediction(0.0)).replace('"prediction": 0.0', '"prediction": NaN')
    httpserver.expect_request("/predict", method="POST").respond_with_data(
        body, content_type="application/json"
    )
    with _client(httpserver) as client:
        result = check_prediction(client, ROW)
    assert not result.ok and result.detail == "prediction is not a finite number: nan"


def test_prediction_null_bound_is_refused(httpserver: HTTPServer) -> None:
    body = _prediction(10.0)
    body["predictions"][0]["upper"] = None
    httpserver.expect_request("/predict", method="POST").respond_with_json(body)
    with _client(httpserver) as client:
        result = check_prediction(client, ROW)
    assert not result.ok and result.detail == "upper is not a finite number: None"


@pytest.mark.parametrize("value", [500.0, -120.0])
def test_prediction_outside_physical_bounds(httpserver: HTTPServer, value: float) -> None:
    httpserver.expect_request("/predict", method="POST").respond_with_json(_prediction(value))
    with _client(httpserver) as client:
        result = check_prediction(client, ROW)
    assert not result.ok
    assert result.detail == f"prediction {value:.2f} outside the sane range [-90.0, 60.0]"


def test_prediction_by_another_version(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/predict", method="POST").respond_with_json(_prediction(version="2"))
    with _client(httpserver) as client:
        result = check_prediction(client, ROW, expect_version="3")
    assert not result.ok and result.detail == "answered by model version 2, expected 3"


def test_prediction_http_error_and_empty(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request("/predict", method="POST").respond_with_json(
        {"detail": "unknown feature 'a'"}, status=422
    )
    httpserver.expect_ordered_request("/predict", method="POST").respond_with_json(
        {**_prediction(), "predictions": []}
    )
    with _client(httpserver) as client:
        first = check_prediction(client, ROW)
        second = check_prediction(client, ROW)
    assert not first.ok and first.detail == "HTTP 422: unknown feature 'a'"
    assert not second.ok and second.detail == "the response holds no prediction"


def test_prediction_without_input() -> None:
    with httpx.Client(base_url="http://127.0.0.1:1") as client:
        result = check_prediction(client, None)
    assert not result.ok and result.detail == "no input row available to test with"


# metrics -------------------------------------------------------------------------------------
def test_metrics_ok(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/metrics").respond_with_data(METRICS, content_type="text/plain")
    with _client(httpserver) as client:
        result = check_metrics(client)
    assert result.ok and "api_requests_total present" in result.detail


def test_metrics_missing_counter(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/metrics").respond_with_data(
        "# TYPE up gauge\nup 1.0\n", content_type="text/plain"
    )
    with _client(httpserver) as client:
        result = check_metrics(client)
    assert not result.ok and result.detail == "missing api_requests_total"


def test_metrics_not_an_exposition(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/metrics").respond_with_data("<html>oops</html>")
    with _client(httpserver) as client:
        result = check_metrics(client)
    assert not result.ok


def test_metrics_http_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/metrics").respond_with_data("", status=500)
    with _client(httpserver) as client:
        result = check_metrics(client)
    assert not result.ok and result.detail == "HTTP 500"


# inputs --------------------------------------------------------------------------------------
def test_row_from_bundle_uses_the_reference_sample(tmp_path: Path) -> None:
    bundle = linear_bundle(tmp_path / "b")
    row = row_from_bundle(bundle)
    assert set(row.values()) == {1.0}
    names = list(row)[:3]
    assert list(row_from_bundle(bundle, names)) == names
    with pytest.raises(DeployError, match="lacks served features"):
        row_from_bundle(bundle, ["not_a_feature"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeployError, match="cannot read the bundle"):
        row_from_bundle(tmp_path / "empty")


def test_target_bounds_from_params(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[3]
    assert target_bounds(repo / "params.yaml") == (-90.0, 60.0)
    assert target_bounds(None) == (-90.0, 60.0)
    (tmp_path / "bad.yaml").write_text("not: [valid", encoding="utf-8")
    assert target_bounds(tmp_path / "bad.yaml") == (-90.0, 60.0)


# all checks ----------------------------------------------------------------------------------
def _serve_release(
    server: HTTPServer, *, version: str, value: float, features: list[str] | None = None
) -> None:
    server.expect_request("/health").respond_with_json({"status": "ok", "model_version": version})
    info = _info(version, **({"features": features} if features else {}))
    server.expect_request("/model/info").respond_with_json(info)
    server.expect_request("/predict", method="POST").respond_with_json(_prediction(value, version))
    server.expect_request("/metrics").respond_with_data(METRICS, content_type="text/plain")


def test_verify_deployment_passes(httpserver: HTTPServer, tmp_path: Path) -> None:
    from rps.models.bundle import load_bundle

    bundle = linear_bundle(tmp_path / "b")
    features = load_bundle(bundle).feature_names
    _serve_release(httpserver, version="3", value=18.0, features=features)
    report = verify_deployment(httpserver.url_for("/").rstrip("/"), "3", model_dir=bundle)
    assert report.ok, report.summary()
    assert [c.name for c in report.checks] == ["health", "model_info", "prediction", "metrics"]
    assert report.reason() == ""
    assert report.summary().endswith("verified (expected model version 3)")
    sent = json.loads(httpserver.log[2][0].data)
    assert list(sent["rows"][0]) == features


def test_verify_deployment_collects_every_failure(httpserver: HTTPServer) -> None:
    _serve_release(httpserver, version="2", value=500.0)
    report = verify_deployment(httpserver.url_for("/").rstrip("/"), "3", use_replay=False)
    assert not report.ok
    failed = {c.name: c.detail for c in report.failures}
    assert set(failed) == {"model_info", "prediction"}
    assert failed["model_info"].startswith("serving version 2, expected 3")
    assert failed["prediction"] == "no input row available to test with"
    assert "NOT verified" in report.summary()


def test_verify_deployment_stops_when_unhealthy() -> None:
    report = verify_deployment(f"http://127.0.0.1:{_closed_port()}", "3", wait_s=0)
    assert not report.ok and [c.name for c in report.checks] == ["health"]


def test_verify_deployment_sends_replayed_observations(httpserver: HTTPServer) -> None:
    """Without a local bundle the test input is a window of replayed weather."""
    pytest.importorskip("pvlib")
    _serve_release(httpserver, version="3", value=12.0)
    report = verify_deployment(httpserver.url_for("/").rstrip("/"), "3")
    assert report.ok, report.summary()
    sent = json.loads(httpserver.log[2][0].data)
    assert len(sent["observations"]) == 169
    assert {"time", "temperature_2m"} <= set(sent["observations"][0])
