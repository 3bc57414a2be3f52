"""Several uvicorn workers (``rps serve --workers 2``): summed metrics and shared model swaps."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.integration.conftest_serving import (
    TRAIN_END,
    ServerHandle,
    feature_rows,
    feature_spec,
    replay_observations,
)

pytestmark = pytest.mark.slow


def _predictions_per_worker(folder: Path) -> dict[str, float]:
    """predictions_total in each worker's own metric file (``counter_<pid>.db``)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    totals: dict[str, float] = {}
    for path in sorted(folder.glob("counter_*.db")):
        pid = path.stem.removeprefix("counter_")
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == "predictions_total":
                    totals[pid] = totals.get(pid, 0.0) + sample.value
    return totals


def _versions(url: str, n: int) -> list[str]:
    """Model versions answered by ``n`` /health requests on fresh connections."""

    def one(_: int) -> str:
        return str(httpx.get(f"{url}/health", timeout=10.0).json()["model_version"])

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(n)))


def _wait_for_version(url: str, version: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = _versions(url, 12)
        if set(seen) == {version}:
            return
        time.sleep(0.2)
    raise AssertionError(f"workers still answer {sorted(set(seen))}, expected {version}")


def test_two_workers_sum_counters_and_follow_swaps(
    serving_factory: Callable[..., ServerHandle],
    serving_bundle: Path,
    serving_bundle_v2: Path,
    tmp_path: Path,
) -> None:
    """Counters from both workers are summed in /metrics (whichever worker answers), and a
    reload or rollback handled by one worker is followed by the other."""
    link = tmp_path / "current"
    link.symlink_to(serving_bundle)
    server = serving_factory(model_dir=link, workers=2)
    folder = server.state_dir / "serving" / "prometheus"

    spec = feature_spec()
    end = TRAIN_END + pd.Timedelta(days=9)
    features = build_rows(end)
    row = feature_rows(features.tail(1), spec.feature_names)

    def predict(_: int) -> int:
        return httpx.post(f"{server.url}/predict", json={"rows": row}, timeout=30.0).status_code

    sent = 0
    with ThreadPoolExecutor(max_workers=6) as pool:
        while sent < 600:
            statuses = list(pool.map(predict, range(60)))
            assert set(statuses) == {200}
            sent += len(statuses)
            per_worker = _predictions_per_worker(folder)
            if len(per_worker) == 2 and all(v > 0 for v in per_worker.values()):
                break
    per_worker = _predictions_per_worker(folder)
    assert len(per_worker) == 2, f"expected two workers' files, got {per_worker}"
    assert all(v > 0 for v in per_worker.values()), f"one worker served nothing: {per_worker}"
    assert sum(per_worker.values()) == sent
    for _ in range(4):  # any worker may answer the scrape: every answer has the sum
        metrics = server.metrics()
        assert metrics["predictions_total"] == sent
        key = 'api_requests_total{endpoint="/predict",method="POST",status="200"}'
        assert metrics[key] == sent
    assert metrics["service_uptime_seconds"] > 0

    link.unlink()
    link.symlink_to(serving_bundle_v2)
    reload = httpx.post(f"{server.url}/model/reload", headers=server.admin_headers(), timeout=60)
    assert reload.status_code == 200, reload.text
    _wait_for_version(server.url, "2")
    rollback = httpx.post(
        f"{server.url}/model/rollback", headers=server.admin_headers(), timeout=60
    )
    assert rollback.status_code == 200, rollback.text
    _wait_for_version(server.url, "1")


def build_rows(end: pd.Timestamp) -> pd.DataFrame:
    from rps.features.build import build_features

    spec = feature_spec()
    frame = replay_observations(end - pd.Timedelta(days=9), end)
    return build_features(frame, spec).dropna(subset=spec.feature_names)
