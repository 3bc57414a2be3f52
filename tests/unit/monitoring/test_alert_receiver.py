"""The Alertmanager webhook receiver: alert log, retraining trigger, cool-down, locking."""

from __future__ import annotations

import json
import sys
import threading
import types
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rps.monitoring.alert_receiver import (
    RetrainCooldown,
    append_jsonl,
    cooldown_state_file,
    create_receiver_app,
)
from rps.settings import Settings


class RecordingTrigger:
    """A fake retraining trigger that records its calls (thread-safe)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, *, reason: str) -> str:
        with self._lock:
            self.calls.append(reason)
            if self.fail:
                raise ConnectionError("airflow is down")
            return f"run-{len(self.calls)}"


def make_settings(tmp_path: Path, cooldown_s: float = 3600.0) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        project_root=tmp_path,
        state_dir=Path("state"),
        retrain_cooldown_s=cooldown_s,
    )


def alert(name: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "severity": "critical", "job": "rps-predictor", **labels},
        "annotations": {"summary": f"{name} summary", "runbook_url": "docs/MONITORING.md#x"},
        "startsAt": "2026-01-01T00:00:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": f"fp-{name}",
    }


def payload(*alerts: dict[str, Any], version: str = "4") -> dict[str, Any]:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": version,
        "groupKey": '{}:{alertname="x"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "rps-alert-receiver",
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def read_log(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(line) for line in settings.alert_log.read_text().splitlines()]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


def test_every_alert_is_logged_as_one_json_line(settings: Settings) -> None:
    trigger = RecordingTrigger()
    client = TestClient(create_receiver_app(settings, trigger=trigger))
    assert not settings.alert_log.parent.exists()

    response = client.post(
        "/alerts", json=payload(alert("InferenceLatencyHigh"), alert("InferenceLatencyHigh"))
    )
    assert response.status_code == 200
    body = response.json()
    assert body["logged"] == 2
    assert body["retrain"]["status"] == "not_requested"
    records = read_log(settings)
    assert [r["alertname"] for r in records] == ["InferenceLatencyHigh"] * 2
    first = records[0]
    assert first["status"] == "firing"
    assert first["labels"]["job"] == "rps-predictor"
    assert first["annotations"]["summary"] == "InferenceLatencyHigh summary"
    assert first["starts_at"] == "2026-01-01T00:00:00.123456789Z"
    assert first["receiver"] == "rps-alert-receiver"
    assert first["received_at"]
    assert trigger.calls == []


def test_drift_alert_triggers_retraining_once_within_the_cooldown(settings: Settings) -> None:
    trigger = RecordingTrigger()
    client = TestClient(create_receiver_app(settings, trigger=trigger))

    first = client.post("/alerts", json=payload(alert("DataDriftDetected"))).json()
    assert first["retrain"]["status"] == "triggered"
    assert first["retrain"]["run"] == "run-1"
    assert first["retrain"]["alertname"] == "DataDriftDetected"
    assert trigger.calls == ["DataDriftDetected: DataDriftDetected summary"]

    again = client.post("/alerts", json=payload(alert("DataDriftDetected"))).json()
    other = client.post("/alerts", json=payload(alert("LiveAccuracyDegraded"))).json()
    assert again["retrain"]["status"] == other["retrain"]["status"] == "cooldown"
    assert other["retrain"]["next_allowed_at"] == pytest.approx(
        first["retrain"]["last_triggered_at"] + 3600.0
    )
    assert len(trigger.calls) == 1
    assert len(read_log(settings)) == 3


def test_live_accuracy_alert_triggers_retraining(settings: Settings) -> None:
    trigger = RecordingTrigger()
    client = TestClient(create_receiver_app(settings, trigger=trigger))
    body = client.post(
        "/alerts", json=payload(alert("FeatureDriftDetected"), alert("LiveAccuracyDegraded"))
    ).json()
    assert body["retrain"]["status"] == "triggered"
    assert trigger.calls == ["LiveAccuracyDegraded: LiveAccuracyDegraded summary"]


@pytest.mark.parametrize(
    "alerts",
    [
        [alert("DataDriftDetected", status="resolved")],
        [alert("FeatureDriftDetected")],
        [alert("ServiceUnhealthy"), alert("PipelineFailed")],
    ],
    ids=["resolved-drift", "feature-drift", "other-alerts"],
)
def test_other_notifications_do_not_trigger(settings: Settings, alerts: list[dict]) -> None:
    trigger = RecordingTrigger()
    client = TestClient(create_receiver_app(settings, trigger=trigger))
    body = client.post("/alerts", json=payload(*alerts)).json()
    assert body["retrain"]["status"] == "not_requested"
    assert trigger.calls == []
    assert len(read_log(settings)) == len(alerts)


def test_cooldown_survives_a_restart(settings: Settings) -> None:
    first_trigger = RecordingTrigger()
    TestClient(create_receiver_app(settings, trigger=first_trigger)).post(
        "/alerts", json=payload(alert("DataDriftDetected"))
    )
    second_trigger = RecordingTrigger()
    restarted = TestClient(create_receiver_app(settings, trigger=second_trigger))
    body = restarted.post("/alerts", json=payload(alert("DataDriftDetected"))).json()
    assert body["retrain"]["status"] == "cooldown"
    assert second_trigger.calls == []
    state = json.loads(cooldown_state_file(settings).read_text())
    assert state["alertname"] == "DataDriftDetected"
    assert state["run"] == "run-1"
    assert cooldown_state_file(settings).is_relative_to(settings.state_path)


def test_retraining_is_allowed_again_after_the_cooldown(tmp_path: Path) -> None:
    now = [1_000.0]
    cooldown = RetrainCooldown(tmp_path / "cd.json", cooldown_s=60.0, clock=lambda: now[0])
    trigger = RecordingTrigger()
    decide = lambda: cooldown.run_if_due(  # noqa: E731
        alertname="DataDriftDetected", reason="drift", trigger=trigger
    )
    assert decide().status == "triggered"
    now[0] += 59.0
    assert decide().status == "cooldown"
    now[0] += 1.0
    assert decide().status == "triggered"
    assert len(trigger.calls) == 2


def test_failed_trigger_does_not_start_the_cooldown(settings: Settings) -> None:
    trigger = RecordingTrigger(fail=True)
    client = TestClient(create_receiver_app(settings, trigger=trigger))
    body = client.post("/alerts", json=payload(alert("DataDriftDetected")))
    assert body.status_code == 200, "a trigger failure must not make Alertmanager re-post"
    assert body.json()["retrain"]["status"] == "error"
    assert "airflow is down" in body.json()["retrain"]["error"]
    assert not cooldown_state_file(settings).exists()
    trigger.fail = False
    retry = client.post("/alerts", json=payload(alert("DataDriftDetected"))).json()
    assert retry["retrain"]["status"] == "triggered"
    assert len(trigger.calls) == 2


def test_unreadable_cooldown_state_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / "cd.json"
    state.write_text("{not json")
    trigger = RecordingTrigger()
    decision = RetrainCooldown(state, cooldown_s=60.0).run_if_due(
        alertname="DataDriftDetected", reason="drift", trigger=trigger
    )
    assert decision.status == "triggered"
    assert json.loads(state.read_text())["reason"] == "drift"


def test_concurrent_notifications_trigger_once(settings: Settings) -> None:
    trigger = RecordingTrigger()
    app = create_receiver_app(settings, trigger=trigger)

    def post(_: int) -> str:
        with TestClient(app) as client:
            response = client.post("/alerts", json=payload(alert("DataDriftDetected")))
            return str(response.json()["retrain"]["status"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(post, range(16)))
    assert statuses.count("triggered") == 1
    assert statuses.count("cooldown") == 15
    assert len(trigger.calls) == 1
    assert len(read_log(settings)) == 16


def _trigger_in_process(args: tuple[str, str]) -> str:
    state_file, calls_file = args

    def trigger(*, reason: str) -> str:
        append_jsonl(Path(calls_file), [{"reason": reason}])
        return "run"

    cooldown = RetrainCooldown(Path(state_file), cooldown_s=3600.0)
    return cooldown.run_if_due(
        alertname="DataDriftDetected", reason="drift", trigger=trigger
    ).status


def test_cooldown_holds_across_processes(tmp_path: Path) -> None:
    state_file, calls_file = tmp_path / "state" / "cd.json", tmp_path / "calls.jsonl"
    with ProcessPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(_trigger_in_process, [(str(state_file), str(calls_file))] * 8))
    assert statuses.count("triggered") == 1
    assert len(calls_file.read_text().splitlines()) == 1


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    log = tmp_path / "deep" / "alerts.jsonl"
    line = {"payload": "x" * 20_000}

    def write(_: int) -> int:
        return append_jsonl(log, [line, line])

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(pool.map(write, range(32))) == 64
    records = [json.loads(text) for text in log.read_text().splitlines()]
    assert records == [line] * 64


def _fake_trigger_module(monkeypatch: pytest.MonkeyPatch, trigger_retrain: Any) -> types.ModuleType:
    fake = types.ModuleType("rps.orchestration.trigger")
    fake.trigger_retrain = trigger_retrain  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rps.orchestration.trigger", fake)
    return fake


def test_default_trigger_is_imported_lazily_and_bound_to_settings(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, Settings | None]] = []

    def trigger_retrain(reason: str, settings: Settings | None = None) -> str:
        calls.append((reason, settings))
        return "manual__2026-01-01"

    api_settings = settings.model_copy(update={"airflow_api_url": "http://airflow:8080"})
    app = create_receiver_app(api_settings)  # no import yet: the module may not exist
    _fake_trigger_module(monkeypatch, trigger_retrain)
    body = TestClient(app).post("/alerts", json=payload(alert("DataDriftDetected"))).json()
    assert body["retrain"]["status"] == "triggered"
    assert body["retrain"]["run"] == "manual__2026-01-01"
    assert calls == [("DataDriftDetected: DataDriftDetected summary", api_settings)]


def test_an_in_process_run_goes_on_in_the_background_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The webhook answers while the embedded default's run goes on (a late answer is
    re-posted by Alertmanager); asked again meanwhile, the receiver starts no second run."""
    settings = make_settings(tmp_path, cooldown_s=0.0)
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def trigger_retrain(reason: str, settings: Settings | None = None) -> str:
        calls.append(reason)
        started.set()
        assert release.wait(timeout=30)
        return "manual__run"

    _fake_trigger_module(monkeypatch, trigger_retrain)
    client = TestClient(create_receiver_app(settings))
    first = client.post("/alerts", json=payload(alert("DataDriftDetected"))).json()
    assert first["retrain"]["status"] == "triggered"  # answered while the run blocks
    assert started.wait(timeout=10)
    second = client.post("/alerts", json=payload(alert("DataDriftDetected"))).json()
    assert second["retrain"]["status"] == "error"
    assert "still running" in second["retrain"]["error"]
    release.set()
    for _ in range(100):  # the background run ends and frees the receiver
        third = client.post("/alerts", json=payload(alert("DataDriftDetected"))).json()
        if third["retrain"]["status"] == "triggered":
            break
        threading.Event().wait(0.05)
    assert third["retrain"]["status"] == "triggered"
    for _ in range(100):  # the second run starts on its own thread
        if len(calls) == 2:
            break
        threading.Event().wait(0.05)
    assert len(calls) == 2


def test_missing_trigger_module_is_reported_not_raised(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rps.orchestration.trigger", None)  # import fails
    client = TestClient(create_receiver_app(settings))
    body = client.post("/alerts", json=payload(alert("LiveAccuracyDegraded")))
    assert body.status_code == 200
    assert body.json()["retrain"]["status"] == "error"
    assert "rps.orchestration.trigger" in body.json()["retrain"]["error"]
    assert len(read_log(settings)) == 1


def test_rejects_other_payload_versions(settings: Settings) -> None:
    client = TestClient(create_receiver_app(settings, trigger=RecordingTrigger()))
    response = client.post("/alerts", json=payload(alert("DataDriftDetected"), version="3"))
    assert response.status_code == 422
    assert not settings.alert_log.exists()


def test_health_reports_the_cooldown_state(settings: Settings) -> None:
    client = TestClient(create_receiver_app(settings, trigger=RecordingTrigger()))
    before = client.get("/health").json()
    assert before["status"] == "ok"
    assert before["last_retrain"] is None
    assert before["retrain_cooldown_s"] == 3600.0
    assert before["alert_log"] == str(settings.alert_log)
    client.post("/alerts", json=payload(alert("DataDriftDetected")))
    after = client.get("/health").json()
    assert after["last_retrain"]["alertname"] == "DataDriftDetected"
