"""Alertmanager -> alert receiver -> retraining trigger, with the real Debian binaries.

A receiver app runs under uvicorn on a free loopback port with a fake trigger; a real
Alertmanager (loopback configuration rendered by rps.monitoring.promconfig: production grouping
and inhibition, short intervals) posts to it. A real Prometheus loads the production rules.
The API -> Prometheus -> Alertmanager leg (a firing rule) is not covered here: the rules'
``for`` durations are minutes; promtool's unit tests cover when each alert fires.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from rps.monitoring import promconfig
from rps.monitoring.alert_receiver import create_receiver_app
from rps.settings import Settings

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((REPO_ROOT / "monitoring" / "prometheus" / "rules").glob("*.yml"))


def _require(names: tuple[str, ...], package: str) -> str:
    try:
        return promconfig.find_binary(*names, package=package)
    except promconfig.BinaryNotFoundError as exc:
        pytest.fail(f"this test needs the real binary: {exc}", pytrace=False)


class FakeTrigger:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, *, reason: str) -> str:
        with self._lock:
            self.calls.append(reason)
            return f"fake-run-{len(self.calls)}"


class Receiver:
    """The receiver app served by uvicorn in a thread."""

    def __init__(self, settings: Settings, trigger: FakeTrigger) -> None:
        self.settings = settings
        self.trigger = trigger
        self.port = promconfig.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_receiver_app(settings, trigger=trigger),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        _wait_for(lambda: self.server.started, timeout=15, what="uvicorn start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def records(self) -> list[dict[str, Any]]:
        if not self.settings.alert_log.exists():
            return []
        lines = self.settings.alert_log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    def logged(self, alertname: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["alertname"] == alertname]


def _wait_for(condition: Callable[[], object], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _alert(name: str, severity: str = "critical", **annotations: str) -> dict[str, Any]:
    return {
        "labels": {
            "alertname": name,
            "severity": severity,
            "team": "ml",
            "job": "rps-predictor",
            "instance": "127.0.0.1:8000",
        },
        "annotations": {"summary": f"{name} in test", **annotations},
        "startsAt": datetime.now(UTC).isoformat(),
        "generatorURL": "http://127.0.0.1/graph",
    }


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        project_root=tmp_path,
        state_dir=Path("state"),
        retrain_cooldown_s=3600.0,
    )
    with Receiver(settings, FakeTrigger()) as running:
        yield running


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[promconfig.ManagedProcess]:
    binary = _require(promconfig.ALERTMANAGER_BINARIES, "prometheus-alertmanager")
    config = promconfig.render_alertmanager_config(
        receiver_url=f"{receiver.url}/alerts",
        group_wait="1s",
        group_interval="1s",
        repeat_interval="2s",  # re-sends the notification while the test waits
    )
    with promconfig.start_alertmanager(
        port=promconfig.free_port(),
        data_dir=tmp_path / "alertmanager",
        config_text=config,
        binary=binary,
    ) as running:
        yield running


def _post_alerts(alertmanager: promconfig.ManagedProcess, *alerts: dict[str, Any]) -> None:
    response = httpx.post(f"{alertmanager.url}/api/v2/alerts", json=list(alerts), timeout=5)
    assert response.status_code == 200, response.text


def test_drift_alert_reaches_the_receiver_and_triggers_retraining_once(
    alertmanager: promconfig.ManagedProcess, receiver: Receiver
) -> None:
    _post_alerts(alertmanager, _alert("DataDriftDetected"))
    _wait_for(lambda: receiver.trigger.calls, timeout=20, what="the retraining trigger")
    assert receiver.logged("DataDriftDetected")
    assert receiver.trigger.calls == ["DataDriftDetected: DataDriftDetected in test"]

    # re-sent within the cool-down: by Prometheus (same alert again) and by Alertmanager
    # (repeat_interval), and a second retraining alert in a group of its own
    _post_alerts(alertmanager, _alert("DataDriftDetected"))
    _post_alerts(alertmanager, _alert("LiveAccuracyDegraded"))
    _wait_for(
        lambda: (
            len(receiver.logged("DataDriftDetected")) >= 2
            and receiver.logged("LiveAccuracyDegraded")
        ),
        timeout=20,
        what="repeated and second notifications",
    )
    time.sleep(0.5)  # the receiver logs before it decides: let the last decision finish
    assert receiver.trigger.calls == ["DataDriftDetected: DataDriftDetected in test"]

    record = receiver.logged("DataDriftDetected")[0]
    assert record["status"] == "firing"
    assert record["receiver"] == promconfig.RECEIVER_NAME
    assert record["labels"]["severity"] == "critical"
    assert record["external_url"].startswith("http://")
    health = httpx.get(f"{receiver.url}/health", timeout=5).json()
    assert health["last_retrain"]["run"] == "fake-run-1"


def test_service_unhealthy_inhibits_latency_alerts(
    alertmanager: promconfig.ManagedProcess, receiver: Receiver
) -> None:
    _post_alerts(alertmanager, _alert("ServiceUnhealthy"))
    _wait_for(lambda: receiver.logged("ServiceUnhealthy"), timeout=20, what="ServiceUnhealthy")
    _post_alerts(
        alertmanager,
        _alert("InferenceLatencyHigh", severity="warning"),
        _alert("DataStale", severity="warning"),  # not inhibited: proves delivery went on
    )
    _wait_for(lambda: receiver.logged("DataStale"), timeout=20, what="DataStale")
    time.sleep(3)  # group_wait + a repeat cycle
    assert receiver.logged("InferenceLatencyHigh") == []
    assert receiver.trigger.calls == []


def test_prometheus_loads_the_production_rules(tmp_path: Path) -> None:
    binary = _require(promconfig.PROMETHEUS_BINARIES, "prometheus")
    port = promconfig.free_port()
    config = promconfig.render_prometheus_config(
        api_targets=[f"127.0.0.1:{promconfig.free_port()}"],  # nothing listens: up == 0
        self_target=f"127.0.0.1:{port}",
        rule_files=[path.resolve() for path in RULES],
        scrape_interval="1s",
        evaluation_interval="1s",
    )
    with promconfig.start_prometheus(
        port=port, data_dir=tmp_path / "prometheus", config_text=config, binary=binary
    ) as prometheus:
        groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        alerts = {rule["name"] for rule in rules if rule["type"] == "alerting"}
        assert len(alerts) == 8
        assert "DataDriftDetected" in alerts
        assert sum(rule["type"] == "recording" for rule in rules) == 14

        def service_unhealthy_pending() -> bool:
            response = httpx.get(f"{prometheus.url}/api/v1/alerts", timeout=5).json()
            return any(
                a["labels"]["alertname"] == "ServiceUnhealthy" and a["state"] == "pending"
                for a in response["data"]["alerts"]
            )

        _wait_for(service_unhealthy_pending, timeout=30, what="ServiceUnhealthy pending")
    assert not prometheus.running
