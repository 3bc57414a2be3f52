"""The serving image, built and run for real with podman (no Docker daemon needed).

Builds the local Debian base when it is missing (debootstrap, cached under
``/var/tmp/rps-bookworm``), bakes a freshly trained LightGBM bundle into the image, runs it on a
free loopback port with host networking and checks ``/health``, ``/predict``, ``/metrics``,
``/model/info``, the image's health check and what the image must not contain.

The sandbox image store (``/var/tmp/rps-containers``) keeps the layer cache between runs:
the first build on a machine takes a couple of minutes, later ones only rebuild the layers
whose inputs changed (usually the source and the model).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rps.deploy.engine import Engine, make_engine
from rps.deploy.image import (
    LOCAL_BASE_IMAGE,
    build_image,
    container_logs,
    ensure_local_base,
    run_container,
    stop_container,
)
from rps.deploy.verify import verify_deployment
from tests.integration.conftest_serving import build_bundle, free_port

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(1800)]

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/rps-api:systemtest"
VERSION = "7"
NAME = f"rps-api-systemtest-{os.getpid()}"


@pytest.fixture(scope="module")
def engine() -> Engine:
    """podman with the sandbox profile; a missing podman fails the test (CI installs it)."""
    if shutil.which("podman") is None:
        pytest.fail(
            "podman is not installed: the container test needs it "
            "(apt-get install podman runc debootstrap; .ci/run installs them)"
        )
    return make_engine("podman", sandbox=True)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("image-model") / "model", version=VERSION)


@pytest.fixture(scope="module")
def image(engine: Engine, bundle: Path) -> str:
    started = time.monotonic()
    ensure_local_base(engine)
    built = build_image(
        engine,
        repo_root=REPO_ROOT,
        model_dir=bundle,
        tags=[IMAGE],
        base_image=LOCAL_BASE_IMAGE,
        git_sha="0" * 40,
    )
    # the tag moved: drop the image it left behind (this store is the test's own)
    engine.run_cmd("image", "prune", "-f", check=False, timeout=300)
    print(f"image built in {time.monotonic() - started:.0f} s")
    assert built.model_version == VERSION
    return built.image


@pytest.fixture(scope="module")
def container(engine: Engine, image: str) -> Iterator[str]:
    """The image running on a free loopback port; yields its base URL."""
    name = NAME
    port = free_port()
    run_container(engine, image, name=name, port=port)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"container never became healthy:\n{container_logs(engine, name)}")
        yield url
    finally:
        logs = container_logs(engine, name)
        stop_container(engine, name)
        print(logs[-3000:])


def _inspect(engine: Engine, image: str) -> dict[str, object]:
    out = engine.run_cmd("image", "inspect", image).stdout
    data: dict[str, object] = json.loads(out)[0]
    return data


def test_image_metadata(engine: Engine, image: str) -> None:
    data = _inspect(engine, image)
    config: dict[str, object] = data["Config"]  # type: ignore[assignment]
    assert config.get("User") == "10001:10001", "the service must not run as root"
    assert config.get("Cmd") == ["rps", "serve", "--host", "0.0.0.0", "--port", "8000"]
    # podman reports the health check beside Config, docker inside it
    health = json.dumps(data.get("Healthcheck") or config.get("Healthcheck"))
    assert "/health" in health and "urllib" in health, health
    env = "\n".join(config.get("Env") or [])  # type: ignore[arg-type]
    assert "RPS_MODEL_DIR=/app/model" in env
    labels = config.get("Labels") or {}
    assert labels.get("io.rps.model.version") == VERSION  # type: ignore[union-attr]


def test_serves_health_predict_metrics(
    engine: Engine, container: str, bundle: Path, params_rows: list[dict[str, float]]
) -> None:
    with httpx.Client(base_url=container, timeout=30) as client:
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["model_version"] == VERSION

        info = client.get("/model/info").json()
        assert info["version"] == VERSION
        assert info["source"].startswith("/app/model")

        response = client.post("/predict", json={"rows": params_rows[:1]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == VERSION
        (prediction,) = body["predictions"]
        assert math.isfinite(prediction["prediction"])
        assert -90 <= prediction["prediction"] <= 60

        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert "api_requests_total" in metrics.text
        assert 'endpoint="/predict"' in metrics.text


def test_verify_passes_against_the_container(container: str, bundle: Path) -> None:
    report = verify_deployment(container, VERSION, model_dir=bundle, wait_s=30)
    assert report.ok, report.summary()


def test_healthcheck_and_contents(engine: Engine, container: str) -> None:
    name = NAME
    check = engine.run_cmd("healthcheck", "run", name, check=False, timeout=60)
    assert check.returncode == 0, check.stderr.decode()
    whoami = engine.run_cmd("exec", name, "id", "-u", timeout=60).stdout.decode().strip()
    assert whoami == "10001"
    for module in ("airflow", "mlflow", "data_profiling", "pytest"):
        found = engine.run_cmd(
            "exec", name, "python3", "-c", f"import {module}", check=False, timeout=60
        )
        assert found.returncode != 0, f"{module} must not be in the serving image"


@pytest.fixture(scope="module")
def params_rows(bundle: Path) -> list[dict[str, float]]:
    """Feature rows from the bundle's reference sample, keyed by feature name."""
    from rps.models.bundle import load_bundle

    loaded = load_bundle(bundle)
    assert loaded.reference_sample is not None
    return [
        dict(zip(loaded.feature_names, map(float, row), strict=True))
        for row in loaded.reference_sample[:3]
    ]
