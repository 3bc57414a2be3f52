"""The Alertmanager webhook receiver: an alert log and the drift -> retraining trigger.

Alertmanager posts every notification (webhook payload version 4) to ``POST /alerts``. The
receiver appends each alert of the payload as one JSON line to :attr:`Settings.alert_log`, and
when the payload holds a *firing* ``DataDriftDetected`` or ``LiveAccuracyDegraded`` alert it asks
for a retraining run through ``trigger(reason=...)``, at most once per
:attr:`Settings.retrain_cooldown_s`. The cool-down is a small JSON file under
:attr:`Settings.state_path`, read and written under an exclusive file lock, so it survives
restarts and holds across uvicorn workers (and containers that share the volume).

A trigger that fails is logged and reported in the response but does not start the cool-down:
Alertmanager re-sends the notification after its ``repeat_interval`` and the next one retries.
The response is 200 all the same, so Alertmanager does not re-post (and the log duplicate) the
whole group. The embedded default's in-process retraining run goes on in the background
(:func:`_default_trigger`), so the response never waits for it.

Run it with :func:`serve` (the ``rps alerts serve`` command) or any ASGI server via
:func:`create_receiver_app` / :func:`create_app_from_env`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from rps.files import file_lock, write_atomic
from rps.settings import Settings, get_settings

logger = logging.getLogger(__name__)

RETRAIN_ALERTS = frozenset({"DataDriftDetected", "LiveAccuracyDegraded"})
"""Alert names whose firing notification asks for a retraining run."""
DEFAULT_PORT = 9095
COOLDOWN_FILENAME = "retrain_cooldown.json"


class RetrainTrigger(Protocol):
    """Starts a retraining run; returns an identifier of the run (logged, echoed back)."""

    def __call__(self, *, reason: str) -> object:
        """Start a retraining run for ``reason``."""
        ...


class WebhookAlert(BaseModel):
    """One alert of an Alertmanager webhook payload."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: str | None = Field(default=None, alias="startsAt")
    ends_at: str | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = ""

    @property
    def name(self) -> str:
        """The ``alertname`` label (empty when missing)."""
        return self.labels.get("alertname", "")


class WebhookPayload(BaseModel):
    """Alertmanager's webhook payload, version 4."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    version: Literal["4"]
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[WebhookAlert]


@dataclass(frozen=True)
class RetrainDecision:
    """What the receiver did about retraining for one notification.

    Attributes:
        status: ``not_requested`` (no firing retraining alert), ``triggered``, ``cooldown``
            (a run was started less than the cool-down ago) or ``error`` (the trigger failed).
        alertname: The alert that asked for it.
        reason: The reason passed to the trigger.
        run: What the trigger returned (e.g. an Airflow DAG run id).
        last_triggered_at: Unix time of the last started run.
        next_allowed_at: Unix time from which the next run may start.
        error: The trigger's exception, for ``error``.
    """

    status: Literal["not_requested", "triggered", "cooldown", "error"]
    alertname: str | None = None
    reason: str | None = None
    run: str | None = None
    last_triggered_at: float | None = None
    next_allowed_at: float | None = None
    error: str | None = None


def append_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Append records as JSON lines in one locked ``O_APPEND`` write.

    Concurrent writers (threads, workers, processes) never interleave within a call: a
    sibling ``.lock`` file is held (:func:`rps.files.file_lock`) while the lines go out in one
    buffered write.

    Args:
        path: The JSONL file; it and its parent folders are created when missing.
        records: JSON-serialisable mappings, one line each.

    Returns:
        The number of lines written.
    """
    lines = [json.dumps(dict(record), separators=(",", ":"), default=str) for record in records]
    if not lines:
        return 0
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock")), path.open("ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return len(lines)


def _write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps(dict(payload), indent=2, sort_keys=True))


class RetrainCooldown:
    """At most one retraining trigger per ``cooldown_s``, persisted in a JSON file.

    Args:
        state_file: The JSON state file (``last_triggered_at``, ``reason``, ``run``); a sibling
            ``.lock`` file serialises all readers and writers.
        cooldown_s: Minimum seconds between two started runs.
        clock: Wall-clock time in Unix seconds (injectable for tests).
    """

    def __init__(
        self, state_file: Path, cooldown_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.state_file = state_file
        self.lock_file = state_file.with_name(state_file.name + ".lock")
        self.cooldown_s = cooldown_s
        self._clock = clock

    def _read(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cool-down state %s: %s", self.state_file, exc)
            return {}
        return state if isinstance(state, dict) else {}

    def state(self) -> dict[str, Any]:
        """The persisted state (empty before the first triggered run)."""
        with file_lock(self.lock_file):
            return self._read()

    def run_if_due(
        self, *, alertname: str, reason: str, trigger: RetrainTrigger
    ) -> RetrainDecision:
        """Call ``trigger(reason=reason)`` unless a run started less than the cool-down ago.

        The lock is held while the trigger runs, so concurrent callers wait and then see the
        new state instead of starting a second run.

        Args:
            alertname: The alert asking for the run (reported back).
            reason: Passed to the trigger.
            trigger: Starts the run.

        Returns:
            ``triggered``, ``cooldown`` or ``error`` (the cool-down is not started on error).
        """
        with file_lock(self.lock_file):
            state = self._read()
            now = self._clock()
            last = state.get("last_triggered_at")
            if isinstance(last, int | float) and now - last < self.cooldown_s:
                decision = RetrainDecision(
                    status="cooldown",
                    alertname=alertname,
                    reason=reason,
                    run=state.get("run"),
                    last_triggered_at=float(last),
                    next_allowed_at=float(last) + self.cooldown_s,
                )
                logger.info(
                    "retraining for %s skipped: cool-down until %s",
                    alertname,
                    _iso(decision.next_allowed_at),
                )
                return decision
            try:
                result = trigger(reason=reason)
            except Exception as exc:
                if isinstance(exc, RetrainBusyError):
                    logger.info("retraining for %s not started: %s", alertname, exc)
                else:
                    logger.exception("retraining trigger failed for %s", alertname)
                return RetrainDecision(
                    status="error",
                    alertname=alertname,
                    reason=reason,
                    last_triggered_at=last if isinstance(last, int | float) else None,
                    error=f"{type(exc).__name__}: {exc}",
                )
            run = None if result is None else str(result)
            _write_json_atomic(
                self.state_file,
                {
                    "last_triggered_at": now,
                    "last_triggered_at_iso": _iso(now),
                    "alertname": alertname,
                    "reason": reason,
                    "run": run,
                },
            )
            logger.info("retraining triggered by %s: %s (run %s)", alertname, reason, run)
            return RetrainDecision(
                status="triggered",
                alertname=alertname,
                reason=reason,
                run=run,
                last_triggered_at=now,
                next_allowed_at=now + self.cooldown_s,
            )


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()


def cooldown_state_file(settings: Settings) -> Path:
    """Where the retraining cool-down is persisted: ``<state>/monitoring/retrain_cooldown.json``."""
    return settings.state_path / "monitoring" / COOLDOWN_FILENAME


class RetrainBusyError(RuntimeError):
    """The previous in-process retraining run of this receiver has not finished."""


def _default_trigger(settings: Settings) -> RetrainTrigger:
    """``rps.orchestration.trigger.trigger_retrain`` bound to ``settings``, imported lazily.

    Through Airflow's REST API (``settings.airflow_api_url``) the call returns the new run's
    id. The in-process run (the embedded default) takes minutes, and a webhook that answers
    after Alertmanager's timeout is posted again, each post one more notification of the same
    incident: so that run starts on a background thread and the call returns at once. One
    runs at a time; asked again while it runs, the trigger raises :class:`RetrainBusyError`
    (the cool-down is not started, and the next notification asks again).
    """
    running = threading.Lock()

    def trigger(*, reason: str) -> object:
        try:
            from rps.orchestration.trigger import trigger_retrain
        except ImportError as exc:
            raise RuntimeError(
                "retraining trigger unavailable: cannot import rps.orchestration.trigger"
            ) from exc
        if settings.airflow_api_url:
            return trigger_retrain(reason, settings=settings)
        if not running.acquire(blocking=False):
            raise RetrainBusyError("the previous in-process retraining run is still running")

        def run() -> None:
            try:
                trigger_retrain(reason, settings=settings)
            except Exception:
                logger.exception("in-process retraining run failed (%s)", reason)
            finally:
                running.release()

        threading.Thread(target=run, name="rps-retrain", daemon=True).start()
        return f"in-process run started at {_iso(time.time())}"

    return trigger


def _reason(alert: WebhookAlert) -> str:
    summary = alert.annotations.get("summary")
    return f"{alert.name}: {summary}" if summary else alert.name


def _record(payload: WebhookPayload, alert: WebhookAlert, received_at: str) -> dict[str, Any]:
    return {
        "received_at": received_at,
        "receiver": payload.receiver,
        "group_key": payload.group_key,
        "external_url": payload.external_url,
        "alertname": alert.name,
        "status": alert.status,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "starts_at": alert.starts_at,
        "ends_at": alert.ends_at,
        "fingerprint": alert.fingerprint,
        "generator_url": alert.generator_url,
    }


def create_receiver_app(settings: Settings, trigger: RetrainTrigger | None = None) -> FastAPI:
    """The receiver as a FastAPI app.

    Args:
        settings: Supplies ``alert_log``, ``state_path`` and ``retrain_cooldown_s``.
        trigger: Starts a retraining run, called as ``trigger(reason=...)``; default:
            ``rps.orchestration.trigger.trigger_retrain`` (imported at the first drift alert).

    Returns:
        The app: ``POST /alerts`` (Alertmanager webhook) and ``GET /health``.
    """
    retrain = trigger if trigger is not None else _default_trigger(settings)
    cooldown = RetrainCooldown(cooldown_state_file(settings), settings.retrain_cooldown_s)
    alert_log = settings.alert_log
    app = FastAPI(
        title="RPS alert receiver",
        description="Logs Alertmanager notifications; drift alerts trigger retraining.",
        version="1",
    )
    app.state.settings = settings
    app.state.cooldown = cooldown

    @app.post("/alerts")
    def receive_alerts(payload: WebhookPayload) -> dict[str, Any]:
        """Log every alert of the notification; trigger retraining on a firing drift alert."""
        received_at = datetime.now(tz=UTC).isoformat()
        if payload.truncated_alerts:
            logger.warning(
                "notification %s dropped %d alerts (max_alerts)",
                payload.group_key,
                payload.truncated_alerts,
            )
        logged = append_jsonl(
            alert_log, (_record(payload, alert, received_at) for alert in payload.alerts)
        )
        logger.info(
            "received %s notification for group %s: %d alerts",
            payload.status,
            payload.group_key,
            logged,
        )
        wanted = next(
            (a for a in payload.alerts if a.status == "firing" and a.name in RETRAIN_ALERTS),
            None,
        )
        if wanted is None:
            decision = RetrainDecision(status="not_requested")
        else:
            decision = cooldown.run_if_due(
                alertname=wanted.name, reason=_reason(wanted), trigger=retrain
            )
        return {"status": "ok", "logged": logged, "retrain": asdict(decision)}

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness and the retraining cool-down state."""
        return {
            "status": "ok",
            "alert_log": str(alert_log),
            "retrain_cooldown_s": cooldown.cooldown_s,
            "last_retrain": cooldown.state() or None,
        }

    return app


def create_app_from_env() -> FastAPI:
    """App factory for ASGI servers (``uvicorn --factory``): settings from the environment."""
    return create_receiver_app(get_settings())


def serve(
    settings: Settings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int = 1,
    log_level: str | None = None,
) -> None:
    """Run the receiver with uvicorn until interrupted (the ``rps alerts serve`` command).

    Args:
        settings: Settings for a single worker; with ``workers > 1`` every worker reads its
            own from the environment (the cool-down file is shared through the lock).
        host: Address to listen on (``0.0.0.0`` in a container).
        port: TCP port.
        workers: uvicorn worker processes.
        log_level: uvicorn log level; default: the settings' ``log_level``.
    """
    import uvicorn

    resolved = settings or get_settings()
    level = (log_level or resolved.log_level).lower()
    if workers > 1:
        uvicorn.run(
            "rps.monitoring.alert_receiver:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=level,
        )
    else:
        uvicorn.run(create_receiver_app(resolved), host=host, port=port, log_level=level)
