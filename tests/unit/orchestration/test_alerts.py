"""Alert channels: the JSON log line, a Slack-compatible webhook, email over SMTP."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from rps.data.quality import CheckFailure, QualityGateError, QualityReport
from rps.orchestration import alerts, steps
from rps.settings import Settings

from .conftest import SmtpSink


def gate_error(tmp_path: Path) -> QualityGateError:
    report = QualityReport(
        raw_file=str(tmp_path / "raw_data_20261120_000000.csv"),
        checked_at="2026-11-20T00:00:00+00:00",
        rows=1441,
        checks_run=["parse", "schema", "range"],
        failures=[CheckFailure("range", "temperature_2m", 99.0, [-90.0, 60.0], "out of range")],
    )
    return QualityGateError(report, tmp_path / "raw_data_20261120_000000.quality.json")


def read_log(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(line) for line in settings.alert_log.read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_log_line_always_written(settings: Settings) -> None:
    outcome = alerts.send_alert(settings, {"event": "run_succeeded", "dag_id": "d", "n": 1})
    assert outcome == {"log": "ok", "slack": "skipped", "email": "skipped"}
    alerts.send_alert(settings, {"event": "second"})
    lines = read_log(settings)
    assert [line["event"] for line in lines] == ["run_succeeded", "second"]
    assert lines[0]["source"] == alerts.SOURCE and lines[0]["n"] == 1 and "sent_at" in lines[0]


def test_failure_event_carries_the_gate_report(tmp_path: Path) -> None:
    event = alerts.failure_event(
        dag_id="rps_pipeline", run_id="r1", task_id="quality_gate", error=gate_error(tmp_path)
    )
    assert event["event"] == "task_failed" and event["error_type"] == "QualityGateError"
    failure = event["quality_report"]["failures"][0]
    assert failure == {
        "check": "range",
        "column": "temperature_2m",
        "observed": 99.0,
        "allowed": [-90.0, 60.0],
        "detail": "out of range",
    }
    text = alerts.format_text(event)
    assert "quality_gate" in text and "range [temperature_2m]: observed 99.0" in text
    other = alerts.failure_event(dag_id="d", run_id="r", task_id="t", error=RuntimeError("boom"))
    assert "quality_report" not in other and other["error"] == "boom"


def test_slack_webhook(settings: Settings, httpserver: HTTPServer) -> None:
    received: list[dict[str, Any]] = []

    def handler(request: Request) -> Response:
        received.append(json.loads(request.data))
        return Response("ok")

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handler)
    settings.slack_webhook_url = httpserver.url_for("/hook")
    event = alerts.success_event(dag_id="rps_pipeline", run_id="r1", summary={"promoted": True})
    outcome = alerts.send_alert(settings, event)
    assert outcome["slack"] == "ok"
    assert set(received[0]) == {"text"}
    text = received[0]["text"]
    assert "rps_pipeline succeeded" in text and "promoted: True" in text


def test_a_failing_channel_never_raises(settings: Settings, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("down", status=500)
    settings.slack_webhook_url = httpserver.url_for("/hook")
    settings.smtp_host, settings.smtp_port = "127.0.0.1", free_port()  # nothing listens
    settings.alert_email_to = "ops@example.org"
    settings.http_timeout_s = 2.0
    outcome = alerts.send_alert(settings, {"event": "task_failed", "dag_id": "d"})
    assert outcome["log"] == "ok"
    assert outcome["slack"].startswith("failed: HTTPStatusError")
    assert outcome["email"].startswith("failed:")
    assert read_log(settings)[0]["event"] == "task_failed"


def test_log_failure_is_reported_not_raised(settings: Settings, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    settings.state_dir = blocker  # the alert log's folder cannot be created
    assert alerts.send_alert(settings, {"event": "x"})["log"].startswith("failed:")


def test_email_over_smtp(settings: Settings, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    settings.smtp_host, settings.smtp_port = smtp_sink.host, smtp_sink.port
    settings.alert_email_to = "ops@example.org, ml@example.org"
    settings.alert_email_from = "rps@example.org"
    event = alerts.failure_event(
        dag_id="rps_pipeline", run_id="r1", task_id="quality_gate", error=gate_error(tmp_path)
    )
    assert alerts.send_alert(settings, event)["email"] == "ok"
    sender, recipients, message = smtp_sink.messages[0]
    assert sender == "rps@example.org"
    assert recipients == ["ops@example.org", "ml@example.org"]
    assert message["Subject"] == "[rps] rps_pipeline FAILED at quality_gate"
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and "temperature_2m" in body.get_content()
    attachment = next(message.iter_attachments())
    assert json.loads(attachment.get_content())["quality_report"]["failures"][0]["observed"] == 99


def test_email_needs_host_and_recipient(settings: Settings) -> None:
    settings.smtp_host = "127.0.0.1"
    assert alerts.send_alert(settings, {"event": "x"})["email"] == "skipped"


def test_on_failure_callback_alerts_and_marks_the_pipeline_failed(
    settings: Settings, tmp_path: Path
) -> None:
    context = {
        "exception": gate_error(tmp_path),
        "ti": SimpleNamespace(task_id="quality_gate", try_number=1, log_url="http://log"),
        "dag_run": SimpleNamespace(dag_id="rps_pipeline", run_id="scheduled__x"),
        "data_interval_end": "2026-11-20T00:00:00+00:00",
    }
    with steps.using_settings(settings):
        steps.on_failure(context)
    (line,) = read_log(settings)
    assert line["task_id"] == "quality_gate" and line["run_id"] == "scheduled__x"
    assert line["interval_end"] == "2026-11-20T00:00:00+00:00"
    assert line["quality_report"]["failures"][0]["check"] == "range"
    status = json.loads((settings.state_path / "pipeline_status.json").read_text())
    assert status["last_run_failed"] is True and status["last_failed_task"] == "quality_gate"


def test_on_failure_callback_swallows_its_own_errors(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("alerting is broken")

    monkeypatch.setattr(alerts, "send_alert", broken)
    with steps.using_settings(settings):
        steps.on_failure({"exception": ValueError("x"), "ti": SimpleNamespace(task_id="train")})
