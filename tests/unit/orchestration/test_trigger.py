"""trigger_retrain: Airflow 3's REST API (token, then a DAG run) or the in-process runner."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from rps.orchestration import local_run, trigger
from rps.orchestration.local_run import DagRunResult, TaskResult
from rps.orchestration.trigger import TriggerError, start_retrain, trigger_retrain
from rps.settings import Settings

RUNS = "/api/v2/dags/rps_pipeline/dagRuns"


@pytest.fixture
def api(settings: Settings, httpserver: HTTPServer) -> Settings:
    settings.airflow_api_url = httpserver.url_for("/")
    settings.airflow_username = "admin"
    settings.airflow_password = SecretStr("s3cret")
    return settings


def token_endpoint(httpserver: HTTPServer, status: int = 201) -> None:
    httpserver.expect_request(
        "/auth/token", method="POST", json={"username": "admin", "password": "s3cret"}
    ).respond_with_json({"access_token": "jwt-123", "token_type": "bearer"}, status=status)


def test_rest_api_token_then_dag_run(api: Settings, httpserver: HTTPServer) -> None:
    token_endpoint(httpserver)
    bodies: list[dict[str, Any]] = []

    def create_run(request: Request) -> Response:
        assert request.headers["Authorization"] == "Bearer jwt-123"
        bodies.append(json.loads(request.data))
        return Response(
            json.dumps({"dag_run_id": "manual__2026-11-26T14:00:00+00:00", "state": "queued"}),
            status=200,
            content_type="application/json",
        )

    httpserver.expect_request(RUNS, method="POST").respond_with_handler(create_run)
    run_id = trigger_retrain("drift", api)
    assert run_id == "manual__2026-11-26T14:00:00+00:00"
    assert bodies == [{"logical_date": None, "conf": {"reason": "drift"}}]
    result = start_retrain("drift", api)
    assert (result.via, result.state) == ("api", "queued")


def test_api_url_may_include_the_api_prefix(api: Settings, httpserver: HTTPServer) -> None:
    api.airflow_api_url = httpserver.url_for("/api/v2/")
    token_endpoint(httpserver)
    httpserver.expect_request(RUNS, method="POST").respond_with_json({"dag_run_id": "r1"})
    assert trigger_retrain("drift", api) == "r1"


def test_no_username_means_no_token(settings: Settings, httpserver: HTTPServer) -> None:
    settings.airflow_api_url = httpserver.url_for("/")
    httpserver.expect_request(RUNS, method="POST").respond_with_json({"dag_run_id": "r2"})
    assert trigger_retrain("manual", settings) == "r2"
    assert all("Authorization" not in req.headers for req, _ in httpserver.log)


def test_refused_credentials(api: Settings, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/auth/token", method="POST").respond_with_json(
        {"detail": "Invalid credentials"}, status=401
    )
    with pytest.raises(TriggerError, match=r"401.*Invalid credentials"):
        trigger_retrain("drift", api)


def test_refused_run_names_the_reason(api: Settings, httpserver: HTTPServer) -> None:
    token_endpoint(httpserver)
    httpserver.expect_request(RUNS, method="POST").respond_with_json(
        {"detail": "DAG with dag_id: 'rps_pipeline' not found"}, status=404
    )
    with pytest.raises(TriggerError, match=r"404.*not found"):
        trigger_retrain("drift", api)


def test_unreachable_api(settings: Settings) -> None:
    settings.airflow_api_url = "http://127.0.0.1:9"  # discard port: connection refused
    settings.http_timeout_s = 2.0
    with pytest.raises(TriggerError, match="cannot reach Airflow"):
        trigger_retrain("drift", settings)


def test_password_required_with_username(settings: Settings, httpserver: HTTPServer) -> None:
    settings.airflow_api_url = httpserver.url_for("/")
    settings.airflow_username = "admin"
    with pytest.raises(TriggerError, match="RPS_AIRFLOW_PASSWORD"):
        trigger_retrain("drift", settings)


def test_reason_required(settings: Settings) -> None:
    with pytest.raises(ValueError, match="reason"):
        trigger_retrain("  ", settings)


def test_without_api_runs_in_process(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake_run(s: Settings, *, conf: dict[str, Any], end: Any = None) -> DagRunResult:
        calls.append({"settings": s, "conf": conf, "end": end})
        return DagRunResult(
            run_id="manual__local",
            state="failed",
            logical_date=None,
            conf=conf,
            tasks=[TaskResult("extract", "failed", 1.0)],
        )

    monkeypatch.setattr(local_run, "run_dag_locally", fake_run)
    assert settings.airflow_api_url is None
    assert trigger_retrain("drift: ks 0.4", settings) == "manual__local"  # failure not raised
    assert calls == [{"settings": settings, "conf": {"reason": "drift: ks 0.4"}, "end": None}]
    assert trigger.start_retrain("drift", settings).state == "failed"


def test_settings_travel_to_a_child_process(settings: Settings) -> None:
    settings.airflow_password = SecretStr("pw")
    settings.dag_catchup = True
    env = local_run.settings_env(settings)
    assert env["RPS_AIRFLOW_PASSWORD"] == "pw" and env["RPS_DAG_CATCHUP"] == "true"
    assert "RPS_SLACK_WEBHOOK_URL" not in env
    rebuilt = Settings(**{k.removeprefix("RPS_").lower(): v for k, v in env.items()})
    assert rebuilt.state_path == settings.state_path and rebuilt.dag_catchup is True
