"""Rollback moves: restart the previous image, run a redeploy command, swap the model back."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from rps.deploy import DeployError
from rps.deploy.engine import Engine
from rps.deploy.history import DeployHistory, Release
from rps.deploy.rollback import plan, rollback, run_redeploy, service_rollback
from tests.unit.deploy.test_engine import FAKE, calls

TOKEN = "rollback-test-token"


def _history(tmp_path: Path, *releases: tuple[str, str]) -> DeployHistory:
    history = DeployHistory(tmp_path / "history.jsonl")
    for image, version in releases:
        history.append(Release(action="deploy", image=image, model_version=version))
    return history


@pytest.fixture
def fake_podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "podman"
    script.write_text(FAKE, encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "engine.log"))
    return tmp_path / "engine.log"


def test_plan(tmp_path: Path) -> None:
    history = _history(tmp_path, ("i:1", "1"), ("i:2", "2"))
    current, target = plan(history)
    assert current is not None and current.key == ("i:2", "2")
    assert target.key == ("i:1", "1")
    _, explicit = plan(history, to_image="i:0", to_version="0")
    assert explicit.key == ("i:0", "0")
    with pytest.raises(DeployError, match="no previous release"):
        plan(_history(tmp_path / "one", ("i:1", "1")))


def test_restarts_the_previous_image(tmp_path: Path, fake_podman: Path) -> None:
    history = _history(tmp_path, ("rps-api:v1", "1"), ("rps-api:v2", "2"))
    result = rollback(history, engine=Engine("podman"), container="api", port=18080)
    assert result.ok and result.report is None
    assert result.steps == ["restarted container api from rps-api:v1"]
    run = next(c for c in calls(fake_podman) if c[:2] == ["run", "-d"])
    assert run[-1] == "rps-api:v1"
    assert history.current().key == ("rps-api:v1", "1")  # type: ignore[union-attr]
    last = history.events()[-1]
    assert last.action == "rollback" and last.rolled_back_from == "rps-api:v2 (model v2)"


def test_runs_the_redeploy_command(tmp_path: Path) -> None:
    history = _history(tmp_path, ("reg/rps-api:1.0", "4"), ("reg/rps-api:1.1", "5"))
    out = tmp_path / "deployed.txt"
    command = f'echo "$RPS_DEPLOY_ACTION $RPS_DEPLOY_IMAGE $RPS_DEPLOY_MODEL_VERSION" > {out}'
    result = rollback(history, redeploy_command=command, reason="verify failed")
    assert out.read_text().strip() == "rollback reg/rps-api:1.0 4"
    assert history.events()[-1].detail == "verify failed"
    assert result.ok


def test_redeploy_failure_is_reported(tmp_path: Path) -> None:
    target = Release(action="rollback", image="x:1", model_version="1")
    with pytest.raises(DeployError, match="redeploy command exited 3: nope"):
        run_redeploy("echo nope >&2; exit 3", target)


def test_needs_something_to_act_on(tmp_path: Path) -> None:
    history = _history(tmp_path, ("i:1", "1"), ("i:2", "2"))
    with pytest.raises(DeployError, match="nothing to act on"):
        rollback(history)
    with pytest.raises(DeployError, match="needs a container engine"):
        rollback(history, container="api")
    assert len(history.events()) == 2, "a failed rollback records nothing"


def _service(server: HTTPServer, *, now: str, after: str, status: int = 200) -> None:
    server.expect_request("/model/info").respond_with_json({"version": now})
    server.expect_request(
        "/model/rollback", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
    ).respond_with_json(
        {"model_version": after, "previous_version": now, "detail": "x"}
        if status == 200
        else {"detail": "rollback refused: no previous model to roll back to"},
        status=status,
    )


def test_model_rollback_on_the_service(tmp_path: Path, httpserver: HTTPServer) -> None:
    history = _history(tmp_path, ("rps-api:v1", "1"), ("rps-api:v1", "2"))
    _service(httpserver, now="2", after="1")
    url = httpserver.url_for("/").rstrip("/")
    result = rollback(history, url=url, token=TOKEN, verify=False)
    assert result.steps == ["service model v2 -> v1 (POST /model/rollback)"]
    assert history.current().key == ("rps-api:v1", "1")  # type: ignore[union-attr]


def test_model_rollback_refusals(httpserver: HTTPServer) -> None:
    url = httpserver.url_for("/").rstrip("/")
    with pytest.raises(DeployError, match="needs the API token"):
        service_rollback(url, None, expect_version="1")
    _service(httpserver, now="2", after="1", status=409)
    with pytest.raises(DeployError, match=r"refused the model rollback \(HTTP 409\)"):
        service_rollback(url, TOKEN, expect_version="1")


def test_model_rollback_to_the_wrong_version(httpserver: HTTPServer) -> None:
    _service(httpserver, now="3", after="2")
    url = httpserver.url_for("/").rstrip("/")
    with pytest.raises(DeployError, match="roll back the image too"):
        service_rollback(url, TOKEN, expect_version="1")


def test_service_already_on_the_target(tmp_path: Path, httpserver: HTTPServer) -> None:
    history = _history(tmp_path, ("i:1", "1"), ("i:2", "2"))
    httpserver.expect_request("/model/info").respond_with_json({"version": "1"})
    result = rollback(history, url=httpserver.url_for("/").rstrip("/"), verify=False)
    assert result.steps == ["service serves model v1"]
