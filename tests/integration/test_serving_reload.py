"""Hot reload and rollback against a real server: verified swaps, refusals, requests in flight."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.integration.conftest_serving import (
    TRAIN_END,
    ServerHandle,
    corrupt_copy,
    feature_rows,
    feature_spec,
    non_finite_bundle,
    replay_observations,
)

pytestmark = pytest.mark.slow


def _point(link: Path, target: Path) -> None:
    """Repoint the served symlink atomically (what a deploy of a new bundle does)."""
    staging = link.with_name(link.name + ".new")
    staging.unlink(missing_ok=True)
    staging.symlink_to(target)
    staging.replace(link)


@pytest.fixture
def models(tmp_path: Path, serving_bundle: Path, serving_bundle_v2: Path) -> dict[str, Path]:
    """Bundle directories and a ``current`` symlink (to v1) used as the server's model_dir."""
    root = tmp_path / "models"
    root.mkdir()
    paths = {
        "v1": serving_bundle,
        "v2": serving_bundle_v2,
        "corrupt": corrupt_copy(serving_bundle_v2, root / "corrupt"),
        "nan": non_finite_bundle(serving_bundle, root / "nan"),
        "missing": root / "does-not-exist",
        "current": root / "current",
    }
    paths["current"].symlink_to(serving_bundle)
    return paths


@pytest.fixture(scope="module")
def rows() -> list[dict[str, float]]:
    from rps.features.build import build_features

    spec = feature_spec()
    end = TRAIN_END + pd.Timedelta(days=9)
    features = build_features(replay_observations(end - pd.Timedelta(days=9), end), spec)
    return feature_rows(features.dropna(subset=spec.feature_names).tail(8), spec.feature_names)


def test_reload_swaps_verified_models_and_rollback_restores(
    serving_factory: Callable[..., ServerHandle], models: dict[str, Path]
) -> None:
    """Reload serves the new champion; corrupt, non-finite or missing ones are refused and the
    old model stays; rollback returns to the previous model."""
    from rps.models.bundle import load_bundle

    server = serving_factory(model_dir=models["current"])
    admin = server.admin_headers()
    client = server.client()

    def version() -> str:
        return str(client.get("/health").json()["model_version"])

    assert version() == "1"
    assert client.post("/model/reload").status_code == 401
    assert client.post("/model/reload", headers={"Authorization": "Bearer x"}).status_code == 403

    _point(models["current"], models["v2"])
    reload = client.post("/model/reload", headers=admin)
    assert reload.status_code == 200, reload.text
    assert reload.json()["changed"] is True
    assert reload.json()["previous_version"] == "1"
    assert version() == "2"
    assert client.get("/model/info").json()["checksum"] == load_bundle(models["v2"]).checksum
    again = client.post("/model/reload", headers=admin).json()
    assert again["changed"] is False

    for bad, reason in (("corrupt", "checksum"), ("nan", "not finite"), ("missing", "not exist")):
        _point(models["current"], models[bad])
        refused = client.post("/model/reload", headers=admin)
        assert refused.status_code == 409, refused.text
        assert reason in refused.json()["detail"]
        assert "still serving version 2" in refused.json()["detail"]
        assert version() == "2"

    rollback = client.post("/model/rollback", headers=admin)
    assert rollback.status_code == 200, rollback.text
    assert rollback.json()["model_version"] == "1"
    info = client.get("/model/info").json()
    assert (info["version"], info["alias"]) == ("1", "rollback")
    nothing_left = client.post("/model/rollback", headers=admin)
    assert nothing_left.status_code == 409
    assert "no previous model" in nothing_left.json()["detail"]

    metrics = server.metrics()
    assert (
        metrics['model_info{alias="rollback",name="rps-temperature-forecaster",version="1"}'] == 1
    )
    assert not any(k.startswith("model_info") and 'version="2"' in k for k in metrics)
    assert metrics['model_swaps_total{action="reload",result="refused"}'] == 3
    assert metrics['model_swaps_total{action="reload",result="ok"}'] == 2


def test_requests_in_flight_during_swaps_all_succeed(
    serving_factory: Callable[..., ServerHandle],
    models: dict[str, Path],
    rows: list[dict[str, float]],
) -> None:
    """Requests sent while the model is swapped back and forth all get 200 from one model."""
    server = serving_factory(model_dir=models["current"])
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def hammer() -> None:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            while not stop.is_set():
                try:
                    response = client.post("/predict", json={"rows": rows})
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(repr(exc))
                    continue
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        body = response.json()
                        versions[body["model_version"]] += 1
                        if len(body["predictions"]) != len(rows):
                            failures.append(f"{len(body['predictions'])} predictions")

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        with server.client() as admin_client:
            for target in ("v2", "v1", "v2", "v1", "v2", "v1"):
                _point(models["current"], models[target])
                response = admin_client.post("/model/reload", headers=server.admin_headers())
                assert response.status_code == 200, response.text
                time.sleep(0.3)
            rollback = admin_client.post("/model/rollback", headers=server.admin_headers())
            assert rollback.status_code == 200, rollback.text
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures, failures[:3]
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) >= 30, statuses
    assert set(versions) == {"1", "2"}, versions
