"""The production topology end to end, once per executor (LocalExecutor, CeleryExecutor).

``rps trigger retrain`` starts the DAG through Airflow's REST API; the scheduler runs it to
success on PostgreSQL; the champion it produced is in the MLflow registry (PostgreSQL) with its
artifacts in SeaweedFS, and the prediction API serves it. A drift alert posted to Alertmanager
reaches the alert receiver, which starts a new DAG run through the same REST API.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from tests.production.conftest import MLFLOW_BUCKET, Airflow, Stack
from tests.production.servers import wait_until

# the heaviest tests (a whole server stack each) share one xdist worker, one at a time
pytestmark = [
    pytest.mark.production,
    pytest.mark.slow,
    pytest.mark.timeout(1500),
    pytest.mark.xdist_group("heavy"),
]

RUN_TIMEOUT_S = 900.0
TERMINAL = {"success", "failed"}


def _run(client: httpx.Client, run_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v2/dags/rps_pipeline/dagRuns/{run_id}")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _task_states(client: httpx.Client, run_id: str) -> dict[str, str | None]:
    response = client.get(f"/api/v2/dags/rps_pipeline/dagRuns/{run_id}/taskInstances")
    response.raise_for_status()
    return {ti["task_id"]: ti["state"] for ti in response.json()["task_instances"]}


def wait_for_run(stack: Stack, run_id: str) -> dict[str, Any]:
    """Poll the REST API until the run is finished; its last state."""
    last: dict[str, Any] = {}

    def finished() -> bool:
        nonlocal last
        with stack.airflow() as client:
            last = _run(client, run_id)
        return last["state"] in TERMINAL

    wait_until(finished, what=f"DAG run {run_id}", timeout_s=RUN_TIMEOUT_S)
    return last


def _champion(stack: Stack) -> Any:
    from mlflow import MlflowClient

    from rps.settings import Settings

    # both URIs explicit: an earlier test in this process may have set mlflow's global registry
    # URI (rps.models.tracking does), which a client given only a tracking URI would use
    uri = stack.env["RPS_MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = Settings(_env_file=None).registered_model_name  # the default: native.env keeps it
    return client.get_model_version_by_alias(name, "champion")


def test_triggered_run_succeeds_and_its_champion_is_served(airflow: Airflow) -> None:
    stack = airflow.stack
    reason = f"production test {airflow.executor}"
    triggered = stack.command("rps", "trigger", "retrain", "--reason", reason)
    assert triggered.returncode == 0, triggered.stdout + triggered.stderr
    match = re.search(r"run (\S+) \(api\)", triggered.stdout)
    assert match, triggered.stdout
    run_id = match.group(1)

    final = wait_for_run(stack, run_id)
    with stack.airflow() as client:
        states = _task_states(client, run_id)
    assert final["state"] == "success", f"run {run_id}: {states}; logs in {stack.logs}"
    assert final["conf"] == {"reason": reason}
    assert set(states.values()) == {"success"} and len(states) == 11
    # the scheduler's metadata is in PostgreSQL
    assert stack.psql("airflow", f"SELECT state FROM dag_run WHERE run_id = '{run_id}'") == (
        "success"
    )

    # the registry (PostgreSQL) holds a champion whose artifacts are in SeaweedFS
    champion = _champion(stack)
    assert int(stack.psql("mlflow", "SELECT count(*) FROM model_versions")) >= 1
    objects = stack.s3.client().list_objects_v2(Bucket=MLFLOW_BUCKET)  # type: ignore[attr-defined]
    keys = [item["Key"] for item in objects.get("Contents", [])]
    ids = {champion.run_id, getattr(champion, "model_id", None)} - {None}
    assert any(i in key for key in keys for i in ids), (ids, keys[:20])

    # the API serves that champion (reloaded from the registry)
    token = stack.env["RPS_API_TOKEN"]
    reload = httpx.post(
        f"{stack.api_url}/model/reload",
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )
    assert reload.status_code == 200, reload.text
    health = httpx.get(f"{stack.api_url}/health", timeout=10)
    assert health.status_code == 200, health.text
    assert str(health.json()["model_version"]) == str(champion.version)

    if airflow.executor == "CeleryExecutor":
        # every task went through Celery: its database result backend holds one row per task
        # (a worker stores its result a moment after Airflow records the task's state)
        deadline = time.monotonic() + 60
        while True:
            done = stack.psql(
                "airflow", "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'"
            )
            if int(done) >= len(states) or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert int(done) >= len(states)
        assert all(worker.running for worker in airflow.workers)


def test_drift_alert_reaches_airflow_through_alertmanager(airflow: Airflow) -> None:
    stack = airflow.stack
    alert = {
        "labels": {
            "alertname": "DataDriftDetected",
            "severity": "warning",
            "job": "rps-predictor",
            "executor": airflow.executor,  # a new alert per executor: a new notification
        },
        "annotations": {"summary": f"production test drift ({airflow.executor})"},
    }
    posted = httpx.post(f"{stack.env['ALERTMANAGER_URL']}/api/v2/alerts", json=[alert], timeout=10)
    assert posted.status_code == 200, posted.text

    found: list[dict[str, Any]] = []

    def drift_run_exists() -> bool:
        with stack.airflow() as client:
            runs = client.get("/api/v2/dags/rps_pipeline/dagRuns", params={"limit": 100}).json()[
                "dag_runs"
            ]
        found[:] = [
            run
            for run in runs
            if str((run.get("conf") or {}).get("reason", "")).startswith("DataDriftDetected")
            and airflow.executor in str(run["conf"]["reason"])
        ]
        return bool(found)

    wait_until(drift_run_exists, what="the alert's DAG run", timeout_s=120)
    assert found[0]["run_type"] == "manual"
    log = (stack.root / "state" / "alerts.jsonl").read_text()
    assert airflow.executor in log


def test_prometheus_scrapes_the_api(stack: Stack) -> None:
    def up() -> bool:
        result = httpx.get(
            f"{stack.env['PROMETHEUS_URL']}/api/v1/query",
            params={"query": 'up{job="rps-predictor"}'},
            timeout=5,
        ).json()["data"]["result"]
        return bool(result) and result[0]["value"][1] == "1"

    wait_until(up, what="Prometheus scrape of the API", timeout_s=60)
