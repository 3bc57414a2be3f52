"""A bad release caught by ``rps deploy verify`` and undone by ``rps deploy rollback``,
against a real prediction server (uvicorn subprocess).

The bad release is a model the server accepts (its checksums verify and its smoke prediction
is finite) that forecasts 500 degC: only a post-deploy check of the answers catches it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from rps.cli import app
from rps.deploy.history import DeployHistory, Release
from rps.settings import Settings
from tests.deploy_support import absurd_bundle
from tests.integration.conftest_serving import ADMIN_TOKEN, ServerHandle

pytestmark = pytest.mark.slow


def _rps(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_verify_catches_a_bad_release_and_rollback_restores_the_previous_one(
    serving_bundle: Path,
    serving_factory: Callable[..., ServerHandle],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # release 1: the good model, served from a folder the deploy repoints (like a volume)
    live = tmp_path / "live-model"
    live.symlink_to(serving_bundle)
    server = serving_factory(model_dir=live)
    history = DeployHistory.for_settings(settings)
    history.append(Release(action="deploy", image="rps-api:v1", model_version="1"))
    code, out = _rps("deploy", "verify", "--url", server.url, "--expect-version", "1",
                     "--model-dir", str(serving_bundle), "--wait", "5")  # fmt: skip
    assert code == 0, out
    assert "verified" in out

    # release 2: a model that forecasts 500 degC is published and hot-reloaded
    bad = absurd_bundle(serving_bundle, tmp_path / "bad", version="2")
    live.unlink()
    live.symlink_to(bad)
    with server.client() as client:
        reloaded = client.post("/model/reload", headers=server.admin_headers())
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["model_version"] == "2"
    history.append(Release(action="deploy", image="rps-api:v2", model_version="2"))

    code, out = _rps("deploy", "verify", "--url", server.url, "--expect-version", "2",
                     "--model-dir", str(bad), "--wait", "5")  # fmt: skip
    assert code == 1, out
    assert "FAIL prediction: prediction 500.00 outside the sane range [-90.0, 60.0]" in out
    assert "verification failed: prediction:" in out

    # the version check alone also refuses a release that is not the one expected
    code, out = _rps("deploy", "verify", "--url", server.url, "--expect-version", "3",
                     "--model-dir", str(bad), "--wait", "5")  # fmt: skip
    assert code == 1 and "serving version 2, expected 3" in out

    # rollback: no token -> a clear refusal, nothing recorded
    code, out = _rps("deploy", "rollback", "--url", server.url, "--no-verify")
    assert code == 1 and "needs the API token" in out
    assert history.current().key == ("rps-api:v2", "2")  # type: ignore[union-attr]

    monkeypatch.setenv("RPS_API_TOKEN", ADMIN_TOKEN)
    code, out = _rps("deploy", "rollback", "--url", server.url,
                     "--model-dir", str(serving_bundle), "--reason", "verify failed")  # fmt: skip
    assert code == 0, out
    assert "rolled back: rps-api:v2 (model v2) -> rps-api:v1 (model v1)" in out
    assert "service model v2 -> v1 (POST /model/rollback)" in out
    assert "PASS prediction" in out

    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/model/info").json()["version"] == "1"
    code, out = _rps("deploy", "verify", "--url", server.url, "--expect-version", "1",
                     "--model-dir", str(serving_bundle), "--wait", "5")  # fmt: skip
    assert code == 0, out

    last = history.events()[-1]
    assert last.action == "rollback" and last.detail == "verify failed"
    assert last.rolled_back_from == "rps-api:v2 (model v2)"
    assert history.current().key == ("rps-api:v1", "1")  # type: ignore[union-attr]
    code, out = _rps("deploy", "history")
    assert code == 0 and "rollback target: -" in out

    # nothing further back: a second rollback is refused with the reason
    code, out = _rps("deploy", "rollback", "--url", server.url)
    assert code == 1 and "no previous release" in out


def test_verify_without_a_local_bundle_uses_replayed_weather(
    serving_server: ServerHandle, settings: Settings
) -> None:
    """In CD the bundle folder may be gone: the test input is then a window of observations."""
    code, out = _rps("deploy", "verify", "--url", serving_server.url, "--expect-version", "1",
                     "--model-dir", "does-not-exist", "--wait", "5")  # fmt: skip
    assert code == 0, out
    assert "PASS metrics" in out


def test_record_and_history_commands(settings: Settings) -> None:
    code, out = _rps("deploy", "record", "--image", "ghcr.io/o/rps-api:1.0.0",
                     "--model-version", "4", "--model-digest", "ab" * 32)  # fmt: skip
    assert code == 0 and "recorded deploy: ghcr.io/o/rps-api:1.0.0 (model v4)" in out
    code, out = _rps("deploy", "record", "--image", "x", "--model-version", "1",
                     "--action", "rollback")  # fmt: skip
    assert code == 2
    code, out = _rps("deploy", "history", "--json")
    assert code == 0 and '"model_version": "4"' in out


def _register(settings: Settings, bundle_dir: Path) -> str:
    """Log a bundle as a registered pyfunc version (the trainer's path, without training)."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from rps.models import registry
    from rps.models.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    assert bundle.reference_sample is not None
    example = pd.DataFrame(bundle.reference_sample[:2], columns=bundle.feature_names)
    output = pd.DataFrame({"prediction": [0.0, 0.0], "lower": [0.0, 0.0], "upper": [0.0, 0.0]})
    registry.configure_tracking(settings)
    registry.ensure_experiment(settings)
    with mlflow.start_run():
        return registry.log_and_register(
            settings,
            bundle_dir,
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=["rps"],
        )


def test_fetch_model_from_the_registry(
    mlflow_server: object,
    serving_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fetch-model downloads the champion, verifies it and stamps the registry version."""
    from mlflow import MlflowClient

    from rps.models.bundle import load_bundle
    from rps.settings import get_settings

    name = "rps-deploy-fetch-test"
    settings = mlflow_server.settings(tmp_path, name)  # type: ignore[attr-defined]
    _register(settings, serving_bundle)  # version 1
    version = _register(settings, serving_bundle)  # version 2 (its lineage still says 1)
    MlflowClient(tracking_uri=settings.tracking_uri).set_registered_model_alias(
        name, "champion", version
    )
    for key, value in mlflow_server.env(tmp_path, name).items():  # type: ignore[attr-defined]
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        dest = tmp_path / "model"
        code, out = _rps("deploy", "fetch-model", "--dest", str(dest))
        assert code == 0, out
        assert f"version={version}" in out
        bundle = load_bundle(dest)
        assert bundle.lineage["model_version"] == version
        assert f"digest={bundle.checksum}" in out
        assert f"registry_digest={load_bundle(serving_bundle).checksum}" in out

        code, out = _rps("deploy", "newest-version")
        assert code == 0 and out.strip() == version

        code, out = _rps("deploy", "fetch-model", "--ref", "99", "--dest", str(dest))
        assert code == 1 and "cannot fetch '99'" in out
    finally:
        get_settings.cache_clear()
