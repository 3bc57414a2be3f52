"""``rps deploy build/run/stop/base-image`` through the CLI, with a recording fake podman."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner

from rps.cli import app
from rps.deploy.history import DeployHistory
from rps.deploy.image import LOCAL_BASE_IMAGE
from rps.settings import Settings
from tests.deploy_support import linear_bundle
from tests.unit.deploy.test_engine import FAKE, calls

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "podman"
    script.write_text(FAKE, encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "engine.log"))
    monkeypatch.setenv("FAKE_IMAGES", str(tmp_path / "images"))
    (tmp_path / "images").write_text(LOCAL_BASE_IMAGE + "\n", encoding="utf-8")
    monkeypatch.setenv("RPS_CONTAINER_ENGINE", "podman")
    monkeypatch.delenv("RPS_CONTAINER_SANDBOX", raising=False)
    return tmp_path / "engine.log"


def _rps(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_build_records_the_release(
    fake: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the build context comes from the repository, the model from the project's model/ folder
    monkeypatch.setenv("RPS_PROJECT_ROOT", str(REPO_ROOT))
    monkeypatch.setenv("RPS_STATE_DIR", str(tmp_path / ".rps"))
    from rps.settings import get_settings

    get_settings.cache_clear()
    bundle = linear_bundle(tmp_path / "model", version="6")
    code, out = _rps("deploy", "build", "--model-dir", str(bundle), "--no-fetch",
                     "--base-image", LOCAL_BASE_IMAGE,
                     "-t", "rps-api:v6", "-t", "rps-api:latest")  # fmt: skip
    assert code == 0, out
    assert "built rps-api:v6, rps-api:latest (model v6)" in out
    (build,) = [c for c in calls(fake) if "build" in c]
    assert "MODEL_VERSION=6" in build and f"BASE_IMAGE={LOCAL_BASE_IMAGE}" in build
    history = DeployHistory(tmp_path / ".rps" / "deploy" / "history.jsonl")
    (event,) = history.events()
    assert (event.action, event.image, event.model_version) == ("build", "rps-api:v6", "6")
    assert event.engine == "podman" and len(event.git_sha) in (0, 40)

    default_tag = _rps("deploy", "build", "--model-dir", str(bundle), "--no-fetch")
    assert default_tag[0] == 0 and "built rps-api:v6 (model v6)" in default_tag[1]


def test_build_without_a_bundle_or_registry_fails_clearly(fake: Path, settings: Settings) -> None:
    code, out = _rps("deploy", "build", "--model-dir", "nowhere", "--no-fetch")
    assert code == 1 and "does not verify" in out


def test_run_waits_for_health_and_stop(fake: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/health").respond_with_json({"status": "ok", "model_version": "6"})
    port = str(httpserver.port)
    code, out = _rps("deploy", "run", "--image", "rps-api:v6", "--name", "api", "--port", port)
    assert code == 0, out
    assert f"api (rps-api:v6) serving on http://127.0.0.1:{port}: ok (model version 6)" in out
    code, out = _rps("deploy", "stop", "--name", "api")
    assert code == 0 and ["rm", "-f", "api"] in calls(fake)


def test_run_reports_an_unhealthy_container(fake: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/health").respond_with_json(
        {"status": "unavailable", "detail": "no model"}, status=503
    )
    code, out = _rps("deploy", "run", "--image", "x:1", "--port", str(httpserver.port),
                     "--wait", "0.2")  # fmt: skip
    assert code == 1
    assert "server log line" in out and "is not healthy: HTTP 503: no model" in out


def test_base_image_command(fake: Path) -> None:
    code, out = _rps("deploy", "base-image")
    assert code == 0 and LOCAL_BASE_IMAGE in out


def test_sandbox_with_docker_is_refused(fake: Path) -> None:
    code, out = _rps("deploy", "stop", "--engine", "docker", "--sandbox")
    assert code == 2 and "sandbox profile is for podman" in out
