"""Registry mode: the API follows ``models:/<name>@champion`` of a real MLflow server whose
artifacts are proxied (``mlflow-artifacts:/``), with no mlflow in the serving path.

Each test registers real bundles, moves the alias with the MLflow client (as the promote step
does) and watches the API react by itself (version check every second).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
import tenacity

from tests.integration.conftest_serving import (
    TRAIN_END,
    ProxiedMlflow,
    ServerHandle,
    feature_rows,
    feature_spec,
    non_finite_bundle,
    start_proxied_mlflow,
)
from tests.integration.test_serving_registry import _register, _set_champion
from tests.integration.test_serving_workers import _versions

pytestmark = pytest.mark.slow

FAST_CHECKS = {"RPS_MODEL_CHECK_SECONDS": "1", "RPS_MODEL_CHECK_BACKOFF_MAX_S": "2"}


@pytest.fixture(scope="module")
def proxied_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedMlflow]:
    """A proxied-artifact MLflow server for this module."""
    server = start_proxied_mlflow(tmp_path_factory.mktemp("mlflow-proxied"))
    try:
        yield server
    finally:
        server.stop()


@functools.cache
def _rows() -> list[dict[str, float]]:
    from tests.integration.test_serving_workers import build_rows

    spec = feature_spec()
    return feature_rows(build_rows(TRAIN_END + pd.Timedelta(days=9)).tail(8), spec.feature_names)


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``check()`` is true (AssertionError naming ``what`` after ``timeout``)."""
    try:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_delay(timeout), wait=tenacity.wait_fixed(0.3)
        ):
            with attempt:
                if not check():
                    raise AssertionError(what)
    except tenacity.RetryError as exc:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from exc


def _failures(server: ServerHandle, reason: str) -> float:
    return server.metrics().get(f'model_reload_failures_total{{reason="{reason}"}}', 0.0)


def test_two_workers_follow_the_champion_with_no_failed_request(
    proxied_mlflow: ProxiedMlflow,
    serving_factory: Callable[..., ServerHandle],
    serving_bundle: Path,
    serving_bundle_v2: Path,
    tmp_path: Path,
) -> None:
    """Moving the alias is enough: within seconds every worker answers with the new version,
    and constant traffic during the swap sees no failed request."""
    name = "rps-registry-mode-follow"
    settings = proxied_mlflow.settings(tmp_path, name)
    first = _register(settings, serving_bundle)
    _set_champion(settings, first)
    server = serving_factory(
        model_dir=None, workers=2, extra_env=proxied_mlflow.env(name, **FAST_CHECKS)
    )
    _until(lambda: set(_versions(server.url, 12)) == {first}, 30, f"all workers on {first}")

    def registry_checked() -> bool:  # ``registry`` is null until a worker's first check
        health = httpx.get(f"{server.url}/health", timeout=10).json()
        assert health["model_source"] == "registry"
        return bool((health["registry"] or {}).get("reachable"))

    _until(registry_checked, 30, "a worker's registry check")

    rows = _rows()
    outcomes: dict[str, int] = {"ok": 0, "failed": 0}
    seen: set[str] = set()
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.post("/predict", json={"rows": rows})
                except httpx.HTTPError:
                    outcomes["failed"] += 1
                    continue
                if response.status_code == 200:
                    outcomes["ok"] += 1
                    seen.add(response.json()["model_version"])
                else:
                    outcomes["failed"] += 1

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        second = _register(settings, serving_bundle_v2)
        _set_champion(settings, second)
        _until(lambda: set(_versions(server.url, 16)) == {second}, 60, f"all workers on {second}")
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert outcomes["failed"] == 0, outcomes
    assert outcomes["ok"] > 0
    assert seen == {first, second}
    health = httpx.get(f"{server.url}/health", timeout=10).json()
    assert health["registry"]["champion_version"] == second


def test_a_corrupt_or_failing_champion_is_refused_and_the_old_model_serves(
    proxied_mlflow: ProxiedMlflow,
    serving_factory: Callable[..., ServerHandle],
    serving_bundle: Path,
    tmp_path: Path,
) -> None:
    """A champion whose model file was altered in the artifact store is refused by the checksum
    check, one predicting NaN by the smoke test; each refusal is counted by reason, logged with
    the check's name, and the old model keeps answering."""
    name = "rps-registry-mode-refuse"
    settings = proxied_mlflow.settings(tmp_path, name)
    good = _register(settings, serving_bundle)
    _set_champion(settings, good)
    server = serving_factory(model_dir=None, extra_env=proxied_mlflow.env(name, **FAST_CHECKS))
    client = server.client()
    rows = _rows()
    assert client.get("/model/info").json()["version"] == good

    failing = _register(settings, non_finite_bundle(serving_bundle, tmp_path / "nan"))
    _set_champion(settings, failing)
    _until(lambda: _failures(server, "smoke") >= 1, 30, "the smoke test refusal")
    assert client.get("/health").json()["model_version"] == good
    assert client.post("/predict", json={"rows": rows}).json()["model_version"] == good
    assert "refused by the smoke check" in server.log_tail()

    tampered = _register(settings, serving_bundle)
    store = proxied_mlflow.root / "artifacts"
    before = set(store.rglob("model.txt"))
    assert before, "no model.txt in the artifact store"
    newest = max(before, key=lambda p: p.stat().st_mtime_ns)
    with newest.open("a", encoding="utf-8") as handle:
        handle.write("\n# tampered in the store\n")
    _set_champion(settings, tampered)
    _until(lambda: _failures(server, "checksum") >= 1, 30, "the checksum refusal")
    assert "refused by the checksum check" in server.log_tail()
    assert client.post("/predict", json={"rows": rows}).json()["model_version"] == good

    # the promote step's explicit reload is refused the same way, with the check's name
    reload = client.post("/model/reload", headers=server.admin_headers(), timeout=120)
    assert reload.status_code == 409
    assert "checksum mismatch for model.txt" in reload.json()["detail"]
    assert _failures(server, "checksum") >= 2
    assert client.get("/health/ready").status_code == 200


def test_registry_down_keeps_serving_and_health_says_so(
    serving_factory: Callable[..., ServerHandle],
    serving_bundle: Path,
    tmp_path: Path,
) -> None:
    """With the registry stopped, predictions are still served, /health reports it degraded
    with the reason, and /health/ready stays 200."""
    name = "rps-registry-mode-down"
    registry = start_proxied_mlflow(tmp_path / "mlflow")
    try:
        settings = registry.settings(tmp_path, name)
        version = _register(settings, serving_bundle)
        _set_champion(settings, version)
        server = serving_factory(model_dir=None, extra_env=registry.env(name, **FAST_CHECKS))
        client = server.client()
        _until(
            lambda: (client.get("/health").json().get("registry") or {}).get("reachable") is True,
            30,
            "a first registry check",
        )
    finally:
        registry.stop()
    _until(lambda: client.get("/health").json()["status"] == "degraded", 30, "degraded health")
    health = client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["registry"]["reachable"] is False
    assert "unreachable" in body["registry"]["detail"]
    assert body["model_version"] == version
    assert client.get("/health/ready").status_code == 200
    response = client.post("/predict", json={"rows": _rows()})
    assert response.status_code == 200
    assert response.json()["model_version"] == version


def test_a_replica_without_a_champion_is_live_not_ready_and_becomes_ready(
    proxied_mlflow: ProxiedMlflow,
    serving_factory: Callable[..., ServerHandle],
    serving_bundle: Path,
    tmp_path: Path,
) -> None:
    """Started before any champion exists, the API is alive but not ready (and refuses
    predictions with 503); once the alias is set it loads the model by itself."""
    name = "rps-registry-mode-empty"
    server = serving_factory(
        model_dir=None, wait_for_model=False, extra_env=proxied_mlflow.env(name, **FAST_CHECKS)
    )
    client = server.client()
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    assert client.get("/health").status_code == 503
    assert client.post("/predict", json={"rows": _rows()}).status_code == 503

    settings = proxied_mlflow.settings(tmp_path, name)
    version = _register(settings, serving_bundle)
    _set_champion(settings, version)
    _until(lambda: client.get("/health/ready").status_code == 200, 30, "readiness")
    assert client.get("/health/ready").json()["model_version"] == version
    assert client.post("/predict", json={"rows": _rows()}).status_code == 200
