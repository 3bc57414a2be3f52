"""A real MLflow tracking server for the session: ``mlflow server`` on a free loopback port.

The server keeps its runs and registry in SQLite and its artifacts in a local folder
(``--default-artifact-root``), both under a session temporary directory, with one worker
and MLflow's background job runner disabled (it would spawn a dozen processes). Tests get
an :class:`MlflowServer` and build isolated settings per registered model name:

    def test_x(mlflow_server, tmp_path):
        settings = mlflow_server.settings(tmp_path, "my-model")
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import tenacity

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 180.0


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class MlflowServer:
    """A running tracking server.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        root: the folder holding the database and the artifacts.
        log_path: the server's combined stdout/stderr.
    """

    url: str
    root: Path
    log_path: Path

    def settings(self, state_dir: Path, name: str, **overrides: Any) -> Any:
        """Settings using this server, a model name and experiment of their own."""
        from rps.settings import Settings

        values: dict[str, Any] = {
            "mlflow_tracking_uri": self.url,
            "registered_model_name": name,
            "mlflow_experiment": f"{name}-experiment",
            "state_dir": state_dir / ".rps",
            "project_root": REPO_ROOT,
            "params_path": REPO_ROOT / "params.yaml",
            **overrides,
        }
        return Settings(**values)

    def env(self, state_dir: Path, name: str) -> dict[str, str]:
        """``RPS_*`` variables equivalent to :meth:`settings` (for CLI tests)."""
        return {
            "RPS_MLFLOW_TRACKING_URI": self.url,
            "RPS_REGISTERED_MODEL_NAME": name,
            "RPS_MLFLOW_EXPERIMENT": f"{name}-experiment",
            "RPS_STATE_DIR": str(state_dir / ".rps"),
            "RPS_PROJECT_ROOT": str(REPO_ROOT),
            "RPS_PARAMS_PATH": str(REPO_ROOT / "params.yaml"),
        }


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_healthy(
    url: str, process: subprocess.Popen[bytes], log_path: Path, *, what: str, timeout: float
) -> None:
    """Poll ``GET url`` until it answers 200; fail the test (with the log's tail) when the
    process exits first or ``timeout`` seconds pass."""

    @tenacity.retry(
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_fixed(0.5),
        retry=tenacity.retry_if_exception_type(httpx.HTTPError),
        reraise=True,
    )
    def healthy() -> None:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{_tail(log_path)}")
        httpx.get(url, timeout=2.0).raise_for_status()

    try:
        healthy()
    except httpx.HTTPError:
        pytest.fail(f"{what} not healthy after {timeout} s:\n{_tail(log_path)}")


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session and everything it started: SIGTERM to the
    group, SIGKILL when it is still there 15 s later."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """``mlflow server`` (SQLite + local artifacts) for the session, stopped at the end.

    The session's environment pins ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``/``_TIMEOUT`` (so the
    code under test, which only sets them when unset, leaves them alone) and restores them.
    """
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    executable = Path(sys.executable).with_name("mlflow")
    command = [
        str(executable),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log_path = root / "server.log"
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    patch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        wait_until_healthy(
            f"{url}/health", process, log_path, what="mlflow server", timeout=STARTUP_TIMEOUT_S
        )
        logger.info("mlflow server at %s (pid %s)", url, process.pid)
        yield MlflowServer(url=url, root=root, log_path=log_path)
    finally:
        patch.undo()
        stop_process_group(process)  # the server and its uvicorn worker
