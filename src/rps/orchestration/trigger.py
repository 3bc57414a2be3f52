"""Start a retraining run of the pipeline DAG: through Airflow's REST API, or in-process.

With ``settings.airflow_api_url`` set (the distributed setup), :func:`trigger_retrain` asks
Airflow 3's API server for a token (``POST /auth/token`` with the configured username and
password) and creates a DAG run (``POST /api/v2/dags/rps_pipeline/dagRuns`` with conf
``{"reason": ...}`` and no logical date, so the run's interval ends at its trigger time).
Otherwise (the embedded default) it runs the DAG once in this process with ``dag.test``,
so retraining needs no scheduler; the call then returns when the run has finished.

The alert receiver (:mod:`rps.monitoring.alert_receiver`) calls :func:`trigger_retrain` on a
drift alert.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rps.orchestration import DAG_ID

if TYPE_CHECKING:
    import httpx

    from rps.settings import Settings

logger = logging.getLogger(__name__)


class TriggerError(RuntimeError):
    """The run could not be started (API unreachable, refused, or bad credentials)."""


@dataclass(frozen=True)
class TriggerResult:
    """A started run.

    Attributes:
        run_id: Airflow's DAG run id.
        via: ``"api"`` or ``"in-process"``.
        state: the final state for an in-process run; the API's state (usually ``queued``)
            otherwise.
    """

    run_id: str
    via: str
    state: str | None


def _base_url(url: str) -> str:
    base = url.rstrip("/")
    for suffix in ("/api/v2", "/api/v1"):
        base = base.removesuffix(suffix)
    return base


def _error_text(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text
    return str(detail)[:500]


def api_token(client: httpx.Client, settings: Settings) -> str | None:
    """A JWT from ``POST /auth/token``; None when no username is configured.

    Raises:
        TriggerError: the password is missing or the server refused the credentials.
    """
    if not settings.airflow_username:
        return None
    if settings.airflow_password is None:
        raise TriggerError("RPS_AIRFLOW_USERNAME is set but RPS_AIRFLOW_PASSWORD is not")
    response = client.post(
        "/auth/token",
        json={
            "username": settings.airflow_username,
            "password": settings.airflow_password.get_secret_value(),
        },
    )
    if response.status_code >= 400:
        raise TriggerError(
            f"Airflow refused the token request ({response.status_code}): {_error_text(response)}"
        )
    token = response.json().get("access_token")
    if not token:
        raise TriggerError("Airflow's /auth/token response holds no access_token")
    return str(token)


def trigger_via_api(settings: Settings, conf: dict[str, Any]) -> TriggerResult:
    """Create a DAG run through Airflow 3's REST API.

    Raises:
        TriggerError: the API is unreachable or refused the run (the message says why).
    """
    import httpx

    assert settings.airflow_api_url is not None
    base = _base_url(settings.airflow_api_url)
    try:
        with httpx.Client(base_url=base, timeout=settings.http_timeout_s) as client:
            token = api_token(client, settings)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = client.post(
                f"/api/v2/dags/{DAG_ID}/dagRuns",
                json={"logical_date": None, "conf": conf},
                headers=headers,
            )
    except httpx.HTTPError as exc:
        raise TriggerError(f"cannot reach Airflow at {base}: {exc}") from exc
    if response.status_code >= 400:
        raise TriggerError(
            f"Airflow refused to start {DAG_ID} ({response.status_code}): {_error_text(response)}"
        )
    body = response.json()
    run_id = body.get("dag_run_id")
    if not run_id:
        raise TriggerError(f"Airflow's dagRuns response holds no dag_run_id: {body!r:.300}")
    logger.info("triggered %s run %s through %s (conf %s)", DAG_ID, run_id, base, conf)
    return TriggerResult(run_id=str(run_id), via="api", state=body.get("state"))


def start_retrain(reason: str, settings: Settings | None = None) -> TriggerResult:
    """Start a retraining run (REST API when configured, else in-process); see the module doc.

    Raises:
        ValueError: ``reason`` is empty.
        TriggerError: the API refused or is unreachable.
        rps.orchestration.airflow_home.AirflowHomeError,
        rps.orchestration.local_run.DagLoadError: the embedded Airflow cannot run the DAG.
    """
    if not reason or not reason.strip():
        raise ValueError("a retraining run needs a reason")
    if settings is None:
        from rps.settings import get_settings

        settings = get_settings()
    conf = {"reason": reason.strip()}
    if settings.airflow_api_url:
        return trigger_via_api(settings, conf)
    from rps.orchestration.local_run import run_dag_locally

    result = run_dag_locally(settings, conf=conf)
    if not result.succeeded:
        logger.error(
            "in-process retraining run %s ended %s (failed: %s)",
            result.run_id,
            result.state,
            ", ".join(result.failed_tasks()) or "none",
        )
    return TriggerResult(run_id=result.run_id, via="in-process", state=result.state)


def trigger_retrain(reason: str, settings: Settings | None = None) -> str:
    """Start a retraining run of the pipeline DAG and return its run id.

    Uses Airflow's REST API when ``settings.airflow_api_url`` is configured; otherwise runs
    the DAG in this process (blocking until it finishes). A run that fails after it started
    is reported by the DAG's own failure alert, not raised here.

    Args:
        reason: why (e.g. ``"drift"``); the run's conf is ``{"reason": reason}``.
        settings: default: the process settings.

    Returns:
        The DAG run id.

    Raises:
        ValueError: ``reason`` is empty.
        TriggerError: the API refused the run or is unreachable.
    """
    return start_retrain(reason, settings).run_id
