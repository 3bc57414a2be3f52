"""The production topology, natively: every real server its own process on loopback.

The session starts, in the bootstrap order of docs/DEPLOYMENT.md: PostgreSQL (databases from
``deploy/postgres/init-databases.sh``), SeaweedFS (buckets), Redis, the MLflow tracking server
(PostgreSQL backend store, S3 artifacts), ``airflow db migrate``, the prediction API (registry
mode), the alert receiver, Alertmanager and Prometheus. The Airflow services (api-server,
scheduler, dag-processor, triggerer, and two Celery workers for the CeleryExecutor) start per
executor. Every process gets the same environment: ``deploy/native.env`` resolved with free
ports and generated secrets, so what runs is what the docs tell a person to run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dotenv import dotenv_values

from rps.monitoring.local_stack import write_rules
from rps.monitoring.promconfig import (
    render_alertmanager_config,
    render_prometheus_config,
    start_alertmanager,
    start_prometheus,
)
from tests.production.servers import (
    Postgres,
    SeaweedFS,
    Server,
    free_port,
    http_ok,
    init_databases,
    start,
    start_postgres,
    start_redis,
    start_seaweedfs,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
NATIVE_ENV = REPO_ROOT / "deploy" / "native.env"
BIN = Path(sys.executable).parent
EXECUTORS = ("LocalExecutor", "CeleryExecutor")
CELERY_WORKERS = 2
MLFLOW_BUCKET = "mlflow"
DATA_BUCKET = "rps-data"


def native_env(values: dict[str, str]) -> dict[str, str]:
    """``deploy/native.env`` resolved against ``values`` (ports, folders, secrets)."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RPS_", "AIRFLOW", "MLFLOW_", "AWS_"))
    }
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            patch.delenv(key)
        for key, value in {**base, **values}.items():
            patch.setenv(key, value)
        resolved = dotenv_values(NATIVE_ENV, interpolate=True)
    missing = sorted(k for k, v in resolved.items() if v is None or "${" in v)
    assert not missing, f"deploy/native.env left unresolved: {missing}"
    return {**base, **values, **{k: str(v) for k, v in resolved.items()}}


@dataclass
class Stack:
    """The running session servers and the environment every process shares."""

    root: Path
    logs: Path
    env: dict[str, str]
    postgres: Postgres
    s3: SeaweedFS
    servers: dict[str, Server] = field(default_factory=dict)

    @property
    def airflow_url(self) -> str:
        return self.env["RPS_AIRFLOW_API_URL"]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.env['RPS_API_PORT']}"

    def airflow(self) -> httpx.Client:
        """An authenticated client of Airflow's REST API (a fresh JWT)."""
        token = httpx.post(
            f"{self.airflow_url}/auth/token",
            json={"username": "admin", "password": self.env["RPS_AIRFLOW_PASSWORD"]},
            timeout=30,
        )
        token.raise_for_status()
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        return httpx.Client(base_url=self.airflow_url, headers=headers, timeout=30)

    def psql(self, database: str, sql: str) -> str:
        """One value from PostgreSQL (as the superuser, over the socket)."""
        result = subprocess.run(
            [str(self.postgres.bin_dir / "psql"), "-U", "postgres", "-d", database, "-tAc", sql],
            env=self.postgres.psql_env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return result.stdout.strip()

    def command(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run a command (e.g. ``rps ...``, ``airflow ...``) with the topology's environment."""
        return subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def start(self, name: str, *argv: str, extra_env: dict[str, str] | None = None) -> Server:
        server = start(
            name,
            [str(BIN / argv[0]), *argv[1:]],
            env={**self.env, **(extra_env or {})},
            log_dir=self.logs,
            cwd=self.root,
        )
        self.servers[name] = server
        return server

    def stop(self, *names: str) -> None:
        for name in names:
            server = self.servers.pop(name, None)
            if server is not None:
                server.stop()


def _small_params(root: Path) -> Path:
    """params.yaml with a short history and two tuning trials (CI time), else unchanged."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["data"]["history_days"] = 60
    raw["train"]["n_trials"] = 2
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Every session server, started in bootstrap order and stopped in reverse.

    The folder is outside pytest's temporary root, which keeps only the last three sessions
    (another pytest run would delete it under the running servers); it is removed when every
    test passed and kept, with the servers' logs in ``logs/``, when one failed.
    """
    root = Path(tempfile.mkdtemp(prefix="rps-production-"))
    logs = root / "logs"
    cleanups: list[Any] = []
    try:
        pg = start_postgres(logs)
        cleanups.append(pg.stop)
        passwords = {
            "AIRFLOW_DB_PASSWORD": secrets.token_hex(12),
            "MLFLOW_DB_PASSWORD": secrets.token_hex(12),
        }
        init_databases(pg, REPO_ROOT / "deploy" / "postgres" / "init-databases.sh", passwords)
        keys = {
            "RPS_AWS_ACCESS_KEY_ID": "rps",
            "RPS_AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
        }
        s3 = start_seaweedfs(
            BIN / "weed",
            root / "seaweedfs",
            logs,
            access_key=keys["RPS_AWS_ACCESS_KEY_ID"],
            secret_key=keys["RPS_AWS_SECRET_ACCESS_KEY"],
            buckets=[DATA_BUCKET, MLFLOW_BUCKET],
        )
        cleanups.append(s3.server.stop)
        redis = start_redis(logs, root / "redis")
        cleanups.append(redis.stop)
        from cryptography.fernet import Fernet

        env = native_env(
            {
                **passwords,
                **keys,
                "RPS_NATIVE_ROOT": str(root),
                "RPS_PROJECT_ROOT": str(REPO_ROOT),
                "RPS_PARAMS_PATH": str(_small_params(root)),
                "RPS_DAG_SCHEDULE": "none",  # runs come from rps trigger and alerts only
                "RPS_RETRAIN_COOLDOWN_S": "0",
                "RPS_API_TOKEN": secrets.token_hex(16),
                "RPS_AIRFLOW_PASSWORD": secrets.token_hex(12),
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW_API_WORKERS": "1",
                "CELERY_WORKER_CONCURRENCY": "1",
                "POSTGRES_PORT": str(pg.port),
                "S3_PORT": s3.endpoint.rsplit(":", 1)[1],
                "REDIS_PORT": redis.url.rsplit(":", 1)[1].split("/")[0],
                "MLFLOW_PORT": str(free_port()),
                "AIRFLOW_API_PORT": str(free_port()),
                "API_PORT": str(free_port()),
                "SCHEDULER_HEALTH_PORT": str(free_port()),
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        topology = Stack(root=root, logs=logs, env=env, postgres=pg, s3=s3)
        cleanups.append(lambda: topology.stop(*reversed(list(topology.servers))))
        _start_mlflow(topology)
        _migrate_airflow(topology)
        _start_serving_and_monitoring(topology)
        yield topology
    finally:
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as exc:  # stop the others all the same
                print(f"\nstopping a production server failed: {exc!r}")
        if request.session.testsfailed:
            print(f"\nproduction topology logs kept in {logs}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _start_mlflow(stack: Stack) -> None:
    port = stack.env["MLFLOW_PORT"]
    server = stack.start(
        "mlflow",
        "mlflow",
        "server",
        "--host=127.0.0.1",
        f"--port={port}",
        "--workers=1",
        f"--backend-store-uri={stack.env['MLFLOW_BACKEND_STORE_URI']}",
        "--serve-artifacts",
        f"--artifacts-destination={stack.env['MLFLOW_ARTIFACTS_DESTINATION']}",
    )
    wait_until(
        http_ok(f"{stack.env['RPS_MLFLOW_TRACKING_URI']}/health"),
        what="MLflow server",
        timeout_s=180,
        server=server,
    )


def _migrate_airflow(stack: Stack) -> None:
    """``airflow db migrate`` and the API user's password file (compose's airflow-init)."""
    home = Path(stack.env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    passwords = Path(stack.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    passwords.write_text(json.dumps({"admin": stack.env["RPS_AIRFLOW_PASSWORD"]}))
    result = stack.command("airflow", "db", "migrate", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _start_serving_and_monitoring(stack: Stack) -> None:
    env = stack.env
    api = stack.start("api", "rps", "serve")
    wait_until(  # alive; 503 until a champion exists
        lambda: httpx.get(f"{stack.api_url}/health", timeout=3).status_code in {200, 503},
        what="prediction API",
        timeout_s=120,
        server=api,
    )
    receiver_port = free_port()
    receiver = stack.start(
        "receiver", "rps", "alerts", "serve", "--host", "127.0.0.1", "--port", str(receiver_port)
    )
    wait_until(
        http_ok(f"http://127.0.0.1:{receiver_port}/health"),
        what="alert receiver",
        timeout_s=120,
        server=receiver,
    )
    monitoring = stack.root / "monitoring"
    alertmanager_port, prometheus_port = free_port(), free_port()
    alertmanager = start_alertmanager(
        port=alertmanager_port,
        data_dir=monitoring / "alertmanager",
        config_text=render_alertmanager_config(
            receiver_url=f"http://127.0.0.1:{receiver_port}/alerts", repeat_interval="1h"
        ),
    )
    stack.servers["alertmanager"] = _managed(alertmanager)
    rules = write_rules(REPO_ROOT / "monitoring" / "prometheus" / "rules", monitoring / "rules")
    prometheus = start_prometheus(
        port=prometheus_port,
        data_dir=monitoring / "prometheus",
        config_text=render_prometheus_config(
            api_targets=[f"127.0.0.1:{env['RPS_API_PORT']}"],
            alertmanager_targets=[f"127.0.0.1:{alertmanager_port}"],
            self_target=f"127.0.0.1:{prometheus_port}",
            rule_files=rules,
            scrape_interval="2s",
            evaluation_interval="2s",
        ),
    )
    stack.servers["prometheus"] = _managed(prometheus)
    env["ALERTMANAGER_URL"] = alertmanager.url
    env["PROMETHEUS_URL"] = prometheus.url
    env["RECEIVER_URL"] = f"http://127.0.0.1:{receiver_port}"


def _managed(handle: Any) -> Server:
    """A promconfig ManagedProcess as a Server (same stop semantics for the teardown)."""
    return Server(name=handle.name, process=handle.process, log_path=handle.log_path)


@dataclass(frozen=True)
class Airflow:
    """The Airflow services of one executor, up and healthy."""

    executor: str
    stack: Stack
    workers: tuple[Server, ...]


def _fail_unfinished_runs(stack: Stack) -> None:
    """Mark queued/running runs failed so the next executor starts from a clean slate."""
    with stack.airflow() as client:
        runs = client.get("/api/v2/dags/rps_pipeline/dagRuns", params={"limit": 100}).json()
        for run in runs.get("dag_runs", []):
            if run["state"] in {"queued", "running"}:
                client.patch(
                    f"/api/v2/dags/rps_pipeline/dagRuns/{run['dag_run_id']}",
                    json={"state": "failed"},
                )


@pytest.fixture(scope="module", params=EXECUTORS)
def airflow(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Airflow]:
    """api-server, scheduler, dag-processor, triggerer (+ two Celery workers) for one executor."""
    executor: str = request.param
    stack.env["AIRFLOW__CORE__EXECUTOR"] = executor
    names = ["airflow-api-server", "airflow-dag-processor", "airflow-triggerer"]
    try:
        api = stack.start("airflow-api-server", "airflow", "api-server")
        wait_until(
            http_ok(f"{stack.airflow_url}/api/v2/monitor/health"),
            what="Airflow api-server",
            timeout_s=240,
            server=api,
        )
        stack.start(
            "airflow-dag-processor",
            "airflow",
            "dag-processor",
        )
        stack.start(
            "airflow-triggerer",
            "airflow",
            "triggerer",
            extra_env={"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())},
        )
        workers: list[Server] = []
        if executor == "CeleryExecutor":
            for index in range(1, CELERY_WORKERS + 1):
                name = f"airflow-celery-worker-{index}"
                names.append(name)
                workers.append(
                    stack.start(
                        name,
                        "airflow",
                        "celery",
                        "worker",
                        "--celery-hostname",
                        f"worker{index}@%h",
                        extra_env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
                    )
                )
        scheduler = stack.start(
            "airflow-scheduler",
            "airflow",
            "scheduler",
            extra_env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
        )
        names.append("airflow-scheduler")
        wait_until(
            http_ok(f"http://127.0.0.1:{stack.env['SCHEDULER_HEALTH_PORT']}/health"),
            what="Airflow scheduler",
            timeout_s=180,
            server=scheduler,
        )

        def dag_parsed() -> bool:
            with stack.airflow() as client:
                return client.get("/api/v2/dags/rps_pipeline").status_code == 200

        wait_until(dag_parsed, what="rps_pipeline parsed into PostgreSQL", timeout_s=180)
        yield Airflow(executor=executor, stack=stack, workers=tuple(workers))
    finally:
        try:
            if "airflow-api-server" in stack.servers:
                _fail_unfinished_runs(stack)
        finally:
            stack.stop(*reversed(names))
