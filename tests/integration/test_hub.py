"""The hub by configuration alone, against authenticated stand-ins on loopback.

Dagshub is replaced by three real servers that check credentials: MLflow's basic-auth app
(``mlflow server --app-name basic-auth``), SeaweedFS's S3 gateway with an identity whose keys
are the token (as Dagshub takes them), and a bare git repository. The settings name only the
hub (a repository URL, a user, a token) plus the three loopback addresses.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed
from typer.testing import CliRunner

from rps.cli import app
from rps.data.hub import HubError, check_hub
from rps.data.pipeline import Interval, run_pipeline
from rps.params import load_params
from rps.settings import Settings, get_settings
from tests.conftest import FIXED_NOW
from tests.integration.conftest_mlflow import REPO_ROOT, free_port, stop_process_group

pytestmark = pytest.mark.slow

USER = "hub-admin"
TOKEN = "hub-token-4f1c2a9e7b"  # the admin password and the S3 keys: one token for everything
HUB_REPO = "https://dagshub.example/team/rps"


class NotReadyError(Exception):
    """A server has not answered yet."""


def _wait_until(ready: Any, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    def probe() -> None:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if not ready():
                raise NotReadyError(what)
        except (httpx.HTTPError, OSError) as exc:
            raise NotReadyError(what) from exc

    for attempt in Retrying(
        stop=stop_after_delay(180),
        wait=wait_fixed(0.5),
        retry=retry_if_exception_type(NotReadyError),
        reraise=True,
    ):
        with attempt:
            probe()


@pytest.fixture(scope="module")
def auth_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MLflow's basic-auth app: every request needs USER/TOKEN."""
    root = tmp_path_factory.mktemp("hub-mlflow")
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        f"admin_username = {USER}\n"
        f"admin_password = {TOKEN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--app-name",
        "basic-auth",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "rps-test-csrf-key",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(
            lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, process, log, "mlflow"
        )
        yield url
    finally:
        stop_process_group(process)


@pytest.fixture(scope="module")
def auth_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SeaweedFS with one identity whose access key and secret are the token."""
    root = tmp_path_factory.mktemp("hub-s3")
    config = root / "s3.json"
    identity = {
        "name": USER,
        "credentials": [{"accessKey": TOKEN, "secretKey": TOKEN}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    ports = {name: free_port() for name in ("s3", "master", "volume", "filer")}
    grpc = {name: free_port() for name in ("s3", "master", "volume", "filer")}
    (root / "data").mkdir()
    command = [
        str(Path(sys.executable).with_name("weed")),
        "server",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-s3",
        f"-s3.config={config}",
        *[f"-{name}.port={port}" for name, port in ports.items()],
        *[f"-{name}.port.grpc={port}" for name, port in grpc.items()],
        "-s3.port.iceberg=0",  # the Iceberg and Lance listeners are not needed (fixed ports)
        "-s3.port.lance=0",
        f"-metricsPort={free_port()}",
    ]
    log = root / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{ports['s3']}"

    def ready() -> bool:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=TOKEN,
            aws_secret_access_key=TOKEN,
        )
        try:
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket="dvc")
            # the filer answers before a volume server has registered: write to be sure
            client.put_object(Bucket="dvc", Key="ready-probe", Body=b"ok")
            client.delete_object(Bucket="dvc", Key="ready-probe")
        except Exception as exc:  # not up yet: connection refused, 5xx while starting
            raise NotReadyError(str(exc)) from exc
        return True

    try:
        _wait_until(ready, process, log, "weed")
        yield url
    finally:
        stop_process_group(process)


@pytest.fixture(scope="module")
def hub_git(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hub-git") / "rps.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    return path


@dataclass(frozen=True)
class Hub:
    mlflow: str
    s3: str
    git: Path

    def env(self, state: Path, token: str = TOKEN) -> dict[str, str]:
        return {
            "RPS_HUB_REPO_URL": HUB_REPO,
            "RPS_HUB_USER": USER,
            "RPS_HUB_TOKEN": token,
            "RPS_HUB_TRACKING_URI": self.mlflow,
            "RPS_HUB_S3_ENDPOINT_URL": self.s3,
            "RPS_HUB_GIT_URL": str(self.git),
            "RPS_STATE_DIR": str(state),
            "RPS_PROJECT_ROOT": str(REPO_ROOT),
            "RPS_PARAMS_PATH": str(REPO_ROOT / "params.yaml"),
        }


@pytest.fixture(scope="module")
def hub(auth_mlflow: str, auth_s3: str, hub_git: Path) -> Hub:
    return Hub(auth_mlflow, auth_s3, hub_git)


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key in list(os.environ):
        if key.startswith(("RPS_", "MLFLOW_TRACKING_")):
            monkeypatch.delenv(key)

    def apply(values: dict[str, str]) -> Settings:
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        return get_settings()

    yield apply
    get_settings.cache_clear()


def test_pipeline_runs_against_the_hub_with_the_right_token(
    hub: Hub, hub_env: Any, tmp_path: Path
) -> None:
    settings = hub_env(hub.env(tmp_path / "state"))
    assert settings.tracking_uri == hub.mlflow and settings.storage_backend == "s3"
    assert settings.dvc_remote == "s3://dvc" and settings.s3_endpoint_url == hub.s3

    assert len(check_hub(settings)) == 3
    params = load_params(settings.params_file)
    small = params.model_copy(update={"data": params.data.model_copy(update={"history_days": 20})})
    result = run_pipeline(settings, small, Interval.ending_at(FIXED_NOW, small))

    md5 = result.dataset_md5
    assert md5 is not None and result.version is not None
    # the dataset is on the hub's DVC remote, its pointer in the hub's git, its profile in MLflow
    assert result.storage_uri == f"s3://dvc/files/md5/{md5[:2]}/{md5[2:]}"
    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=hub.s3, aws_access_key_id=TOKEN, aws_secret_access_key=TOKEN
    )
    assert s3.head_object(Bucket="dvc", Key=f"files/md5/{md5[:2]}/{md5[2:]}")["ContentLength"] > 0
    shown = subprocess.run(
        ["git", "-C", str(hub.git), "show", "main:data/observations.parquet.dvc"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"md5: {md5}" in shown
    experiments = httpx.get(
        f"{hub.mlflow}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": f"{settings.mlflow_experiment}-data"},
        auth=(USER, TOKEN),
        timeout=30,
    )
    assert experiments.status_code == 200, experiments.text
    experiment_id = experiments.json()["experiment"]["experiment_id"]
    runs = httpx.post(
        f"{hub.mlflow}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [experiment_id], "filter": f"tags.dataset_md5 = '{md5}'"},
        auth=(USER, TOKEN),
        timeout=30,
    )
    assert runs.status_code == 200 and len(runs.json()["runs"]) == 1, runs.text
    # without credentials the stand-in refuses: it really is authenticated
    assert httpx.get(f"{hub.mlflow}/api/2.0/mlflow/experiments/search", timeout=30).status_code in (
        401,
        403,
    )


def test_wrong_token_fails_clearly_naming_the_hub(hub: Hub, hub_env: Any, tmp_path: Path) -> None:
    settings = hub_env(hub.env(tmp_path / "state", token="not-the-token"))
    with pytest.raises(HubError, match="refused the token") as caught:
        check_hub(settings)
    assert "dagshub.example/team/rps" in str(caught.value)
    assert "RPS_HUB_TOKEN" in str(caught.value)

    runner = CliRunner()
    for args in (["hub-check"], ["pipeline", "--end", FIXED_NOW.isoformat(), "--no-profile"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert "HubError" in result.output and "refused the token" in result.output
        assert "RPS_HUB_TOKEN" in result.output and "not-the-token" not in result.output
    assert not (tmp_path / "state" / "data" / "raw").exists() or not list(
        (tmp_path / "state" / "data" / "raw").iterdir()
    )


def test_each_service_checks_the_token(hub: Hub, tmp_path: Path) -> None:
    """Right MLflow credentials but a wrong S3 key, then a wrong git URL: each is named."""
    base = {
        "hub_repo_url": HUB_REPO,
        "hub_user": USER,
        "hub_token": SecretStr(TOKEN),
        "hub_tracking_uri": hub.mlflow,
        "hub_s3_endpoint_url": hub.s3,
        "hub_git_url": str(hub.git),
        "project_root": tmp_path,
    }
    wrong_key = Settings(_env_file=None, **base, aws_secret_access_key=SecretStr("x"))
    with pytest.raises(HubError, match="DVC remote"):
        check_hub(wrong_key)
    wrong_git = Settings(_env_file=None, **{**base, "hub_git_url": str(tmp_path / "none.git")})
    with pytest.raises(HubError, match=r"git could not read its repository .*none\.git"):
        check_hub(wrong_git)
