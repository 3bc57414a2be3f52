"""Pipeline alerts: a JSON line always, plus Slack and email when configured.

:func:`send_alert` never raises: a channel that fails is logged and reported in the returned
outcome, so an alert about a failure can never mask the failure itself. Events are plain
dicts; :func:`failure_event` and :func:`success_event` build the two the DAG sends.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rps.settings import Settings

logger = logging.getLogger(__name__)

SOURCE = "rps.orchestration"
OK = "ok"
SKIPPED = "skipped"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def quality_report_details(error: BaseException | None) -> dict[str, Any] | None:
    """The gate's report (raw file, failures with check/column/observed/allowed) or None.

    Args:
        error: any exception; only a :class:`rps.data.quality.QualityGateError` has a report.
    """
    report = getattr(error, "report", None)
    if report is None or not hasattr(report, "failures"):
        return None
    failures = [
        {
            "check": f.check,
            "column": f.column,
            "observed": f.observed,
            "allowed": f.allowed,
            "detail": f.detail,
        }
        for f in report.failures
    ]
    report_path = getattr(error, "report_path", None)
    return {
        "raw_file": report.raw_file,
        "rows": report.rows,
        "failures": failures,
        "report_path": str(report_path) if report_path else None,
    }


def failure_event(
    *,
    dag_id: str,
    run_id: str | None,
    task_id: str | None,
    error: BaseException | None,
    interval_end: str | None = None,
    try_number: int | None = None,
    log_url: str | None = None,
) -> dict[str, Any]:
    """The event sent when a task fails for good (its retries spent).

    Includes ``quality_report`` when the error is a quality-gate failure.
    """
    event: dict[str, Any] = {
        "event": "task_failed",
        "severity": "error",
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "interval_end": interval_end,
        "try_number": try_number,
        "error_type": type(error).__name__ if error is not None else None,
        "error": str(error) if error is not None else None,
        "log_url": log_url,
    }
    report = quality_report_details(error)
    if report is not None:
        event["quality_report"] = report
    return event


def success_event(*, dag_id: str, run_id: str | None, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary sent when a run finished every task."""
    return {
        "event": "run_succeeded",
        "severity": "info",
        "dag_id": dag_id,
        "run_id": run_id,
        **dict(summary),
    }


def format_text(event: Mapping[str, Any]) -> str:
    """A few human-readable lines for Slack and email."""
    kind = str(event.get("event", "event"))
    dag_id, run_id = event.get("dag_id", "?"), event.get("run_id", "?")
    if kind == "task_failed":
        head = f":red_circle: {dag_id} failed at task {event.get('task_id')} (run {run_id})"
        lines = [head, f"{event.get('error_type')}: {event.get('error')}"]
        report = event.get("quality_report")
        if report:
            lines.append(f"quality gate report for {report.get('raw_file')}:")
            for failure in report.get("failures", []):
                where = f" [{failure['column']}]" if failure.get("column") else ""
                lines.append(
                    f"  - {failure['check']}{where}: observed {failure['observed']},"
                    f" allowed {failure['allowed']}"
                )
        if event.get("log_url"):
            lines.append(f"log: {event['log_url']}")
        return "\n".join(lines)
    if kind == "run_succeeded":
        skip = {"event", "severity", "dag_id", "run_id", "source", "sent_at"}
        lines = [f":large_green_circle: {dag_id} succeeded (run {run_id})"]
        lines += [f"  {k}: {v}" for k, v in event.items() if k not in skip and v is not None]
        return "\n".join(lines)
    return json.dumps(dict(event), default=str)


def subject(event: Mapping[str, Any]) -> str:
    """The email subject line."""
    if event.get("event") == "task_failed":
        return f"[rps] {event.get('dag_id')} FAILED at {event.get('task_id')}"
    if event.get("event") == "run_succeeded":
        return f"[rps] {event.get('dag_id')} succeeded"
    return f"[rps] {event.get('event', 'alert')}"


def build_email(settings: Settings, event: Mapping[str, Any]) -> EmailMessage:
    """The email for an event: text body plus the event as an indented JSON attachment."""
    recipients = [a.strip() for a in (settings.alert_email_to or "").split(",") if a.strip()]
    message = EmailMessage()
    message["Subject"] = subject(event)
    message["From"] = settings.alert_email_from
    message["To"] = ", ".join(recipients)
    message.set_content(format_text(event) + "\n")
    message.add_attachment(
        json.dumps(dict(event), indent=2, default=str).encode(),
        maintype="application",
        subtype="json",
        filename="event.json",
    )
    return message


def _append_log(path: Path, event: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(dict(event), default=str, sort_keys=True) + "\n"
    # one write() of a line opened in append mode: concurrent writers never interleave
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _post_slack(settings: Settings, event: Mapping[str, Any]) -> None:
    import httpx

    assert settings.slack_webhook_url is not None
    response = httpx.post(
        settings.slack_webhook_url,
        json={"text": format_text(event)},
        timeout=settings.http_timeout_s,
    )
    response.raise_for_status()


def _send_email(settings: Settings, event: Mapping[str, Any]) -> None:
    assert settings.smtp_host is not None
    message = build_email(settings, event)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.http_timeout_s) as s:
        s.send_message(message)


def send_alert(settings: Settings, event: dict[str, Any]) -> dict[str, str]:
    """Send an event through every configured channel; never raises.

    * always: one JSON line appended to ``settings.alert_log``;
    * ``settings.slack_webhook_url``: a Slack-compatible webhook POST ``{"text": ...}``;
    * ``settings.smtp_host`` and ``settings.alert_email_to``: an email over SMTP.

    Args:
        settings: the channels' configuration.
        event: what happened (``event``, ``severity``, ``dag_id``, ...); ``source`` and
            ``sent_at`` are added.

    Returns:
        Each channel's outcome: ``"ok"``, ``"skipped"`` (not configured) or
        ``"failed: <error>"``.
    """
    record = {"source": SOURCE, "sent_at": _now(), **event}
    outcome: dict[str, str] = {}
    channels: dict[str, tuple[bool, Callable[[], None]]] = {
        "log": (True, lambda: _append_log(settings.alert_log, record)),
        "slack": (bool(settings.slack_webhook_url), lambda: _post_slack(settings, record)),
        "email": (
            bool(settings.smtp_host and settings.alert_email_to),
            lambda: _send_email(settings, record),
        ),
    }
    for name, (enabled, send) in channels.items():
        if not enabled:
            outcome[name] = SKIPPED
            continue
        try:
            send()
        except Exception as exc:  # a broken channel must never hide the alert's cause
            logger.exception("alert channel %s failed for event %s", name, record.get("event"))
            outcome[name] = f"failed: {type(exc).__name__}: {exc}"
        else:
            outcome[name] = OK
    logger.info("alert %s sent: %s", record.get("event"), outcome)
    return outcome
