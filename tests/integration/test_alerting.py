"""Alertmanager -> alert receiver -> retraining trigger, with the real Debian binaries.

A receiver app runs under uvicorn on a free loopback port with a fake trigger; a real
Alertmanager (loopback configuration rendered by rps.monitoring.promconfig: production grouping
and inhibition, short intervals) posts to it. A real Prometheus loads the production rules.
The API -> Prometheus -> Alertmanager leg (a firing rule) is not covered here: the rules'
``for`` durations are minutes; promtool's unit tests cover when each alert fires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rps.monitoring import promconfig
from rps.settings import Settings
from tests.integration.alerting_support import Receiver, require_binary, wait_for

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((REPO_ROOT / "monitoring" / "prometheus" / "rules").glob("*.yml"))


class FakeTrigger:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, *, reason: str) -> str:
        with self._lock:
            self.calls.append(reason)
            return f"fake-run-{len(self.calls)}"


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
    binary = require_binary(promconfig.ALERTMANAGER_BINARIES, "prometheus-alertmanager")
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
    wait_for(lambda: receiver.trigger.calls, timeout=20, what="the retraining trigger")
    assert receiver.logged("DataDriftDetected")
    assert receiver.trigger.calls == ["DataDriftDetected: DataDriftDetected in test"]

    # re-sent within the cool-down: by Prometheus (same alert again) and by Alertmanager
    # (repeat_interval), and a second retraining alert in a group of its own
    _post_alerts(alertmanager, _alert("DataDriftDetected"))
    _post_alerts(alertmanager, _alert("LiveAccuracyDegraded"))
    wait_for(
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
    wait_for(lambda: receiver.logged("ServiceUnhealthy"), timeout=20, what="ServiceUnhealthy")
    _post_alerts(
        alertmanager,
        _alert("InferenceLatencyHigh", severity="warning"),
        _alert("DataStale", severity="warning"),  # not inhibited: proves delivery went on
    )
    wait_for(lambda: receiver.logged("DataStale"), timeout=20, what="DataStale")
    time.sleep(3)  # group_wait + a repeat cycle
    assert receiver.logged("InferenceLatencyHigh") == []
    assert receiver.trigger.calls == []


def test_prometheus_loads_the_production_rules(tmp_path: Path) -> None:
    binary = require_binary(promconfig.PROMETHEUS_BINARIES, "prometheus")
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
        in_files = [
            rule
            for path in RULES
            for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
            for rule in group["rules"]
        ]
        assert alerts == {rule["alert"] for rule in in_files if "alert" in rule}
        assert "DataDriftDetected" in alerts
        assert sum(rule["type"] == "recording" for rule in rules) == sum(
            "record" in rule for rule in in_files
        )

        def service_unhealthy_pending() -> bool:
            response = httpx.get(f"{prometheus.url}/api/v1/alerts", timeout=5).json()
            return any(
                a["labels"]["alertname"] == "ServiceUnhealthy" and a["state"] == "pending"
                for a in response["data"]["alerts"]
            )

        wait_for(service_unhealthy_pending, timeout=30, what="ServiceUnhealthy pending")
    assert not prometheus.running
