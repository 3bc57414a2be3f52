"""The whole monitoring chain with real processes: API -> Prometheus -> Alertmanager -> receiver.

Two prediction servers (real uvicorn subprocesses serving the real test bundle) are scraped by
a real Prometheus as two instances of job ``rps-predictor``: one gets undrifted rows from the
training period, the other rows of the synthetic source with a large injected mean shift. A real
Alertmanager (loopback configuration rendered by ``rps.monitoring.promconfig``) posts to the
alert receiver app, whose retraining trigger is a recording fake.

Prometheus loads a test variant of the production rules: the same expressions, labels and
annotations, with every ``for`` shortened to :data:`ALERT_FOR` and the recording groups
evaluated every second (see :func:`write_test_rules`), so the chain completes in seconds.

The fixtures and helpers here are shared with ``test_dashboards_live.py``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from rps.monitoring import promconfig
from rps.monitoring.local_stack import write_rules
from rps.settings import Settings
from tests.integration.alerting_support import Receiver, require_binary, wait_for
from tests.integration.conftest_serving import (
    TRAIN_END,
    TRAIN_START,
    ServerHandle,
    feature_spec,
    replay_observations,
    serving_params,
    start_server,
    training_features,
)

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = REPO_ROOT / "monitoring" / "prometheus" / "rules"
ALERT_FOR = "3s"
"""Every alert's ``for`` in the test rules (production: 1m to 30m)."""
INTERVAL = "1s"
"""Scrape, rule evaluation and recording-group interval of the test Prometheus."""
CHAIN_TIMEOUT = 60.0
"""Seconds from the drifted traffic to the retraining trigger call."""
ROWS = 500
"""Rows sent to each server: one full drift window (``drift.window_size`` in params.yaml)."""
BATCH = 100
DRIFT_MAGNITUDE = 25.0
"""degC added to the synthetic temperature: far outside the 120 training days' range."""


# rules and processes -------------------------------------------------------------------------
def write_test_rules(directory: Path, alert_for: str = ALERT_FOR) -> list[Path]:
    """The production rule files with short ``for`` durations and 1 s recording groups.

    Expressions, labels and annotations are copied unchanged (``rps run --demo-drift`` uses the
    same function), so the test exercises the rules that production evaluates.
    """
    return write_rules(RULES_DIR, directory, alert_for=alert_for, group_interval=INTERVAL)


class RecordingTrigger:
    """Stands in for ``rps.orchestration.trigger.trigger_retrain``: records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __call__(self, *, reason: str) -> str:
        with self._lock:
            self.calls.append((time.monotonic(), reason))
            return f"fake-run-{len(self.calls)}"

    @property
    def reasons(self) -> list[str]:
        with self._lock:
            return [reason for _, reason in self.calls]


@dataclass
class Stack:
    """The running processes of one test module."""

    clean: ServerHandle
    drifted: ServerHandle
    receiver: Receiver
    alertmanager: promconfig.ManagedProcess
    prometheus: promconfig.ManagedProcess
    rule_files: list[Path]
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0))

    @staticmethod
    def instance(server: ServerHandle) -> str:
        """The ``instance`` label Prometheus gives a server's series."""
        return server.url.removeprefix("http://")

    def query(self, expr: str) -> dict[str, Any]:
        """``GET /api/v1/query`` (instant query at now): the whole JSON answer."""
        response = self.client.get(f"{self.prometheus.url}/api/v1/query", params={"query": expr})
        body: dict[str, Any] = response.json()
        body["http_status"] = response.status_code
        return body

    def vector(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query that must succeed."""
        body = self.query(expr)
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self, alertname: str, state: str | None = None) -> list[dict[str, Any]]:
        """Prometheus' active alerts (pending and firing) named ``alertname``."""
        body = self.client.get(f"{self.prometheus.url}/api/v1/alerts").json()
        return [
            a
            for a in body["data"]["alerts"]
            if a["labels"]["alertname"] == alertname and (state is None or a["state"] == state)
        ]

    def diagnostics(self) -> str:
        """Logs and state for an assertion message."""
        try:
            alerts = self.client.get(f"{self.prometheus.url}/api/v1/alerts").json()
        except httpx.HTTPError as exc:
            alerts = f"unavailable: {exc}"
        return (
            f"prometheus alerts: {alerts}\nreceiver log: {self.receiver.records()}\n"
            f"prometheus log:\n{self.prometheus.log_tail(2000)}\n"
            f"alertmanager log:\n{self.alertmanager.log_tail(2000)}"
        )


def _write_pipeline_status(state_dir: Path) -> None:
    """What ``rps.data.pipeline.write_status`` leaves after a successful run an hour ago."""
    now = pd.Timestamp.now(tz="UTC")
    status = {
        "last_run_failed": False,
        "last_success_at": (now - pd.Timedelta(minutes=50)).isoformat(),
        "last_observation_at": (now - pd.Timedelta(hours=1)).floor("h").isoformat(),
    }
    (state_dir / "pipeline_status.json").write_text(json.dumps(status), encoding="utf-8")


STORED_DAYS = 9
"""Days of observations the pipeline stored for the clean server (after the training data, so
no logged prediction is joined with them): its forecast trajectory series come from them."""


def _write_stored_observations(state_dir: Path) -> pd.DataFrame:
    """What the pipeline leaves in ``data/processed/observations.parquet``."""
    frame = replay_observations(TRAIN_END, TRAIN_END + pd.Timedelta(days=STORED_DAYS))
    processed = state_dir / "data" / "processed"
    processed.mkdir(parents=True)
    frame.to_parquet(processed / "observations.parquet", index=False)
    return frame


@pytest.fixture(scope="module")
def stack(serving_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two API servers, the receiver, Alertmanager and Prometheus, all on loopback."""
    prometheus_binary = require_binary(promconfig.PROMETHEUS_BINARIES, "prometheus")
    alertmanager_binary = require_binary(
        promconfig.ALERTMANAGER_BINARIES, "prometheus-alertmanager"
    )
    root = tmp_path_factory.mktemp("monitoring-chain")
    stop: list[Callable[[], None]] = []
    try:
        clean_state = root / "api-clean"
        clean_state.mkdir()
        _write_pipeline_status(clean_state)
        _write_stored_observations(clean_state)
        clean = start_server(state_dir=clean_state, model_dir=serving_bundle)
        stop.append(clean.stop)
        drifted = start_server(state_dir=root / "api-drifted", model_dir=serving_bundle)
        stop.append(drifted.stop)

        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            env="test",
            project_root=root / "receiver",
            state_dir=Path("state"),
            retrain_cooldown_s=3600.0,
        )
        receiver = Receiver(settings, RecordingTrigger())
        receiver.start()
        stop.append(receiver.stop)

        alertmanager = promconfig.start_alertmanager(
            port=promconfig.free_port(),
            data_dir=root / "alertmanager",
            config_text=promconfig.render_alertmanager_config(
                receiver_url=f"{receiver.url}/alerts",
                group_wait="1s",
                group_interval="1s",
                repeat_interval="1m",
            ),
            binary=alertmanager_binary,
        )
        stop.append(alertmanager.stop)

        rule_files = write_test_rules(root / "rules")
        port = promconfig.free_port()
        prometheus = promconfig.start_prometheus(
            port=port,
            data_dir=root / "prometheus",
            config_text=promconfig.render_prometheus_config(
                api_targets=[Stack.instance(clean), Stack.instance(drifted)],
                alertmanager_targets=[alertmanager.url.removeprefix("http://")],
                self_target=f"127.0.0.1:{port}",
                rule_files=rule_files,
                scrape_interval=INTERVAL,
                evaluation_interval=INTERVAL,
            ),
            binary=prometheus_binary,
        )
        stop.append(prometheus.stop)
        running = Stack(clean, drifted, receiver, alertmanager, prometheus, rule_files)
        stop.append(running.client.close)
        yield running
    finally:
        for action in reversed(stop):
            action()


# traffic -------------------------------------------------------------------------------------
def _rows(matrix: np.ndarray, names: list[str]) -> list[dict[str, float]]:
    return [dict(zip(names, map(float, row), strict=True)) for row in matrix]


def synthetic_drifted_rows(names: list[str], n: int, magnitude: float = DRIFT_MAGNITUDE) -> Any:
    """``n`` feature rows of the synthetic source after a ``mean_shift`` drift of the temperature.

    Only rows whose whole history window lies after the drift start are kept, in the season of
    the training data, so every temperature feature carries the shift.
    """
    from rps.data.sources.synthetic import SyntheticSource
    from rps.features.build import build_features
    from rps.params import DriftScenario

    params = serving_params()
    drift_start = TRAIN_START + pd.Timedelta(days=40)
    source = SyntheticSource(
        variables=params.data.variables,
        drifts=[
            DriftScenario(
                kind="bias",
                start=drift_start,
                variables=("temperature_2m",),
                magnitude=magnitude,
            )
        ],
    )
    times = pd.date_range(
        drift_start - pd.Timedelta(days=8), drift_start + pd.Timedelta(days=40), freq="h"
    )
    features = build_features(source.generate(times), feature_spec())
    after = features.loc[features.index >= drift_start + pd.Timedelta(hours=168)]
    matrix = after.dropna(subset=names)[names].to_numpy()
    assert len(matrix) >= n, f"only {len(matrix)} drifted rows"
    return matrix[:n]


@dataclass(frozen=True)
class Traffic:
    """What the ``traffic`` fixture sent, and when the drifted rows went out."""

    clean_rows: int
    drifted_rows: int
    feedback_joined: int
    refused: int
    drift_sent_at: float  # time.monotonic()


def _post(client: httpx.Client, path: str, body: dict[str, Any], status: int = 200) -> Any:
    response = client.post(path, json=body)
    assert response.status_code == status, f"{path}: {response.status_code} {response.text}"
    return response.json()


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> Traffic:
    """Undrifted rows (logged, then joined by /feedback) to one server, drifted to the other.

    The clean server also gets a few refused requests, so the error series exist. The clean
    traffic goes out first, so its drift window exists at least as long as the drifted one.
    """
    names = feature_spec().feature_names
    features = training_features()
    train = features.iloc[: int(len(features) * 0.8)]
    rng = np.random.default_rng(11)
    sample = train.iloc[np.sort(rng.choice(len(train), ROWS, replace=False))]
    horizon = pd.Timedelta(hours=feature_spec().horizon_hours)

    with stack.clean.client() as client:
        for start in range(0, ROWS, BATCH):
            chunk = sample.iloc[start : start + BATCH]
            body = {
                "rows": _rows(chunk[names].to_numpy(), names),
                "issue_times": [moment.isoformat() for moment in chunk.index],
            }
            answer = _post(client, "/predict", body)
            assert not any(item["ood_features"] for item in answer["predictions"]), answer
        # the realised temperatures at the target times: live_rmse, live_mae, live_samples
        feedback = {
            "observations": [
                {"time": (moment + horizon).isoformat(), "temperature_2m": float(target)}
                for moment, target in zip(sample.index, sample["target"], strict=True)
            ]
        }
        joined = _post(client, "/feedback", feedback)["joined"]
        assert joined == ROWS
        # refused inputs: a row lacking a feature (reason "missing"), a malformed body
        incomplete = _rows(sample[names].to_numpy()[:1], names)[0]
        incomplete.pop(names[0])
        _post(client, "/predict", {"rows": [incomplete]}, status=422)
        _post(client, "/predict", {"rows": [{"x": "not a number"}]}, status=422)

    drifted = synthetic_drifted_rows(names, ROWS)
    drift_sent_at = time.monotonic()
    with stack.drifted.client() as client:
        for start in range(0, ROWS, BATCH):
            _post(client, "/predict", {"rows": _rows(drifted[start : start + BATCH], names)})
    return Traffic(
        clean_rows=ROWS,
        drifted_rows=ROWS,
        feedback_joined=joined,
        refused=2,
        drift_sent_at=drift_sent_at,
    )


# tests ---------------------------------------------------------------------------------------
def test_prometheus_runs_the_production_rules_with_short_for(stack: Stack) -> None:
    """The test rules differ from production in ``for`` and ``keep_firing_for`` (and the
    descriptions that state them) and the recording interval only."""
    for path in stack.rule_files:
        production = yaml.safe_load((RULES_DIR / path.name).read_text(encoding="utf-8"))
        variant = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in variant["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    text = " ".join(rule["annotations"]["description"].split())
                    assert f"for {ALERT_FOR}" in text, (rule["alert"], text)
        for group in (*production["groups"], *variant["groups"]):
            group.pop("interval", None)
            for rule in group["rules"]:
                rule.pop("for", None)
                rule.pop("keep_firing_for", None)
                rule.get("annotations", {}).pop("description", None)
        assert variant == production, path.name

    groups = stack.client.get(f"{stack.prometheus.url}/api/v1/rules").json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert all(rule["health"] != "err" for rule in rules), rules
    alerting = [rule for rule in rules if rule["type"] == "alerting"]
    assert len(alerting) == 8  # the rules of alerts.yml, SensorStuck included
    assert {rule["duration"] for rule in alerting} == {float(ALERT_FOR.removesuffix("s"))}
    assert {group["interval"] for group in groups} == {1.0}


def test_drifted_inputs_fire_data_drift_and_trigger_retraining(
    stack: Stack, traffic: Traffic
) -> None:
    drifted, clean = Stack.instance(stack.drifted), Stack.instance(stack.clean)
    receiver = stack.receiver
    try:
        wait_for(
            lambda: receiver.trigger.calls,
            timeout=CHAIN_TIMEOUT,
            what="DataDriftDetected to reach the retraining trigger",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.diagnostics()}") from None
    triggered_after = receiver.trigger.calls[0][0] - traffic.drift_sent_at
    print(f"\nretraining triggered {triggered_after:.1f} s after the drifted rows were sent")

    # the receiver logged the notification: one firing DataDriftDetected for the job (one alert
    # per incident: no instance or check label), the drifted check named in the summary
    records = receiver.logged("DataDriftDetected")
    assert records, stack.diagnostics()
    record = records[0]
    assert record["status"] == "firing"
    assert record["receiver"] == promconfig.RECEIVER_NAME
    assert "instance" not in record["labels"] and "check" not in record["labels"]
    assert record["labels"]["job"] == promconfig.PREDICTOR_JOB
    assert record["labels"]["severity"] == "critical"
    assert record["labels"]["team"] == "ml"
    assert record["annotations"]["runbook_url"] == "docs/MONITORING.md#datadriftdetected"
    assert record["annotations"]["summary"].startswith("Data drift: ")
    assert "x limit" in record["annotations"]["summary"]
    # Prometheus' own link to the expression (its host is the machine's name, not loopback)
    assert "drift_check_ratio" in urllib.parse.unquote(record["generator_url"])

    # one retraining run, asked for by the drift alert with its summary
    reasons = receiver.trigger.reasons
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith("DataDriftDetected: "), reasons
    assert reasons[0] == f"DataDriftDetected: {record['annotations']['summary']}"
    health = stack.client.get(f"{receiver.url}/health").json()
    assert health["last_retrain"]["run"] == "fake-run-1"
    assert health["last_retrain"]["alertname"] == "DataDriftDetected"

    # Prometheus: one firing alert, from the drifted server's checks
    firing = stack.alerts("DataDriftDetected", "firing")
    assert len(firing) == 1, firing
    (ratio,) = stack.vector(f'max(drift_check_ratio{{instance="{drifted}"}})')
    assert float(ratio["value"][1]) > 1.0

    # undrifted inputs over the same window (sent first, so observed at least as long): quiet.
    # Wait two more `for` periods so a late clean alert would have had time to go firing.
    time.sleep(2 * float(ALERT_FOR.removesuffix("s")) + 2)
    window = f"{int(time.monotonic() - traffic.drift_sent_at) + 30}s"
    clean_checks = f'drift_check_ratio{{instance="{clean}"}}'
    samples = stack.vector(f"max(count_over_time({clean_checks}[{window}]))")
    assert samples and float(samples[0]["value"][1]) >= 5, samples  # observed, every second
    (worst,) = stack.vector(f"max(max_over_time({clean_checks}[{window}]))")
    assert float(worst["value"][1]) <= 1.0, worst
    # nor did live accuracy (training rows: live RMSE as on holdout)
    for alertname in ("LiveAccuracyDegraded",):
        clean_alerts = f'ALERTS{{alertname="{alertname}", instance="{clean}"}}'
        assert stack.vector(f"count_over_time({clean_alerts}[{window}])") == [], (
            f"{alertname} was pending or firing for the undrifted server"
        )
    assert all("instance" not in r["labels"] for r in receiver.logged("DataDriftDetected"))
    assert receiver.trigger.reasons == reasons  # no second run (cool-down and no other alert)
