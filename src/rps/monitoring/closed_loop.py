"""The closed loop, end to end on the embedded default: drift -> alert -> retrain -> gate -> served.

``rps demo-loop`` (``make demo-loop``) runs every part as it runs in production, on loopback,
with one difference: a replay clock shared by every process (``RPS_REPLAY_ANCHOR``,
``RPS_REPLAY_ORIGIN``, ``RPS_REPLAY_SPEED``) runs the recorded weather hundreds of times
faster than the wall clock. The sequence:

1. a fresh state folder; the first champion is trained by an in-process DAG run on the clean
   year that ends at the replay origin;
2. the API (registry mode, two workers), Prometheus, Alertmanager and the alert receiver start;
   the clock starts;
3. every replay hour the newest observations are ingested through the pipeline's own
   extract -> quality gate -> transform steps, and steady traffic asks ``GET /forecast``;
4. at the onset the source's drift scenario (``drift.demo_scenario`` in params.yaml) starts
   changing what is ingested; the API's detectors cross their limits, Prometheus fires the
   retraining alert, Alertmanager posts it to the receiver, the receiver runs the DAG (which
   adapts to the new regime and judges the challenger on the hours after the onset), the
   promote step moves ``champion`` and calls ``POST /model/reload``, and every worker swaps;
5. the loop ends by itself once the new champion has served ``after_swap_hours`` replay hours
   (or at the deadline) and writes the timeline as JSON.

Live RMSE is computed from the forecasts the traffic received and the realised (drifted)
observations of their target hours: ``before`` the onset, ``during`` (old champion after the
onset) and ``after`` (new champion).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import yaml

from rps.data.pipeline import Interval, step_extract, step_transform, step_validate
from rps.data.schema import TIME
from rps.data.sources import make_source
from rps.data.sources.replay import ReplayClock
from rps.monitoring.alert_receiver import RETRAIN_ALERTS
from rps.monitoring.promconfig import free_port
from rps.params import Params, load_params
from rps.settings import Settings

logger = logging.getLogger(__name__)

#: Debian packages the loop needs (Prometheus and Alertmanager run for real).
MONITORING_PACKAGES = ("prometheus", "prometheus-alertmanager")
#: Days of observations each replay-hour ingest keeps (the features' longest lag is a week).
INGEST_DAYS = 14
#: The drift signals the API exports: a ratio above 1 means a check is over its limit.
DRIFT_SIGNALS = ("drift_check_ratio", "forecast_error_drift_ratio")
#: While the drift alert keeps firing, Alertmanager repeats it every 2 minutes and the receiver
#: starts another retraining run at most this often (a refused challenger is not the end).
RETRAIN_COOLDOWN_S = 120.0


class LoopError(RuntimeError):
    """The loop could not start or a part of it failed; the message names the part."""


@dataclass(frozen=True)
class LoopPlan:
    """How the loop runs (replay hours are the clock's; seconds are wall time)."""

    speed: float = 1440.0  # replay hours per wall hour: one replay hour every 2.5 s
    # clean replay hours served before the drift starts: the first 6 have no realised target
    # yet, so live RMSE before the onset is over 48 target hours, as after the swap
    pre_onset_hours: int = 54
    after_swap_hours: int = 48  # replay hours the new champion serves before the loop ends
    workers: int = 2
    request_interval_s: float = 0.25  # steady traffic: one GET /forecast this often
    deadline_s: float = 1200.0  # the loop ends here at the latest
    origin_days_ago: int = 7  # the replay origin, before now (recorded hours exist for any date)


@dataclass
class Timeline:
    """What happened, when: each event carries its replay time and wall seconds since start."""

    scenario: dict[str, Any] = field(default_factory=dict)
    first_champion: str | None = None
    onset: dict[str, Any] | None = None
    detected: dict[str, Any] | None = None
    alert_fired: dict[str, Any] | None = None
    retrain_started: dict[str, Any] | None = None
    registered_version: dict[str, Any] | None = None
    gate_decision: dict[str, Any] | None = None
    refused_challengers: list[str] = field(default_factory=list)
    served_by_all_workers: dict[str, Any] | None = None
    false_alarms_before_onset: int = 0
    requests: int = 0
    failed_requests: int = 0
    live_rmse_before: float | None = None
    live_rmse_during: float | None = None
    live_rmse_after: float | None = None
    ended: str = "running"

    @property
    def new_champion_served(self) -> bool:
        return self.served_by_all_workers is not None


@dataclass
class _Forecast:
    issue_time: pd.Timestamp
    target_time: pd.Timestamp
    prediction: float
    version: str


class _Traffic(threading.Thread):
    """Steady ``GET /forecast`` traffic; counts failures and keeps each hour's forecast."""

    def __init__(self, api_url: str, interval_s: float) -> None:
        super().__init__(name="loop-traffic", daemon=True)
        self.api_url = api_url
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.requests = 0
        self.failed = 0
        self.forecasts: dict[tuple[pd.Timestamp, str], _Forecast] = {}
        self._lock = threading.Lock()

    def run(self) -> None:
        with httpx.Client(base_url=self.api_url, timeout=10.0) as client:
            while not self.stop.is_set():
                self._ask(client)
                self.stop.wait(self.interval_s)

    def _ask(self, client: httpx.Client) -> None:
        try:
            response = client.get("/forecast")
            ok = response.status_code == 200
        except httpx.HTTPError as exc:
            logger.warning("forecast request failed: %s", exc)
            ok = False
        with self._lock:
            self.requests += 1
            if not ok:
                self.failed += 1
                return
        body = response.json()
        issue = pd.Timestamp(body["issue_time"])
        forecast = _Forecast(
            issue,
            pd.Timestamp(body["target_time"]),
            float(body["prediction"]),
            str(body["model_version"]),
        )
        with self._lock:
            self.forecasts[(issue, forecast.version)] = forecast

    def snapshot(self) -> list[_Forecast]:
        with self._lock:
            return list(self.forecasts.values())


def _rmse(errors: list[float]) -> float | None:
    return math.sqrt(sum(e * e for e in errors) / len(errors)) if errors else None


def live_rmse(
    forecasts: list[_Forecast],
    truth: pd.Series,
    *,
    onset: pd.Timestamp,
    first_version: str,
    new_version: str | None,
) -> tuple[float | None, float | None, float | None]:
    """RMSE of the served forecasts against realised values: before / during / after.

    ``before``: targets before the onset; ``during``: the first champion's forecasts of
    targets at or after the onset; ``after``: the new champion's forecasts.
    """
    before: list[float] = []
    during: list[float] = []
    after: list[float] = []
    for f in forecasts:
        actual = truth.get(f.target_time)
        if actual is None or not math.isfinite(float(actual)):
            continue
        error = f.prediction - float(actual)
        if f.version == first_version:
            (before if f.target_time < onset else during).append(error)
        elif f.version == new_version:
            after.append(error)
    return _rmse(before), _rmse(during), _rmse(after)


def parse_signals(exposition: str) -> dict[str, float]:
    """The largest value of each drift signal in a Prometheus text exposition."""
    worst: dict[str, float] = {}
    for line in exposition.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in DRIFT_SIGNALS:
            try:
                value = float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
            if math.isfinite(value):
                worst[name] = max(worst.get(name, value), value)
    return worst


class ClosedLoop:
    """The loop's processes and its timeline; :meth:`run` drives it, :meth:`stop` ends it."""

    def __init__(
        self, base: Settings, params: Params, plan: LoopPlan, say: Callable[[str], None]
    ) -> None:
        self.plan = plan
        self.say = say
        self.state = base.state_path / "demo-loop"
        now = pd.Timestamp.now(tz="UTC").floor("h")
        self.origin = now - pd.Timedelta(days=plan.origin_days_ago)
        self.onset = self.origin + pd.Timedelta(hours=plan.pre_onset_hours)
        scenario = params.drift.demo_scenario
        if scenario is None:
            raise LoopError("params.yaml sets no drift.demo_scenario to inject")
        scenario = scenario.model_copy(update={"start": self.onset.to_pydatetime()})
        drift = params.drift.model_copy(update={"scenario": scenario})
        self.params = params.model_copy(update={"drift": drift})
        self.timeline = Timeline(scenario=scenario.model_dump(mode="json"))
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.env = {
            "RPS_STATE_DIR": str(self.state),
            "RPS_PARAMS_PATH": str(self.state / "params.yaml"),
            "RPS_PROJECT_ROOT": str(base.project_root),
            "RPS_SOURCE": "replay",
            "RPS_API_TOKEN": secrets.token_urlsafe(16),
            "RPS_API_RELOAD_URLS": self.api_url,
            "RPS_MODEL_CHECK_SECONDS": "5",
            "RPS_RETRAIN_COOLDOWN_S": str(RETRAIN_COOLDOWN_S),
        }
        for key in ("RPS_MODEL_DIR", "RPS_MODEL_URI", "RPS_AIRFLOW_API_URL"):
            os.environ.pop(key, None)
        self.settings = base
        self.clock: ReplayClock | None = None
        self.started_wall = time.monotonic()
        self._api: subprocess.Popen[bytes] | None = None
        self._monitoring: Any = None
        self._traffic: _Traffic | None = None

    # -- set-up -----------------------------------------------------------------------------
    def prepare(self) -> Settings:
        """Empty the loop's state folder, write its params and point this process at them.

        Raises:
            LoopError: Prometheus or Alertmanager is not installed (names the Debian packages).
        """
        missing = [package for package in MONITORING_PACKAGES if shutil.which(package) is None]
        if missing:
            raise LoopError(
                f"the loop needs Prometheus and Alertmanager: apt-get install {' '.join(missing)}"
            )
        if self.state.exists():
            shutil.rmtree(self.state)
        self.state.mkdir(parents=True)
        (self.state / "params.yaml").write_text(
            yaml.safe_dump(self.params.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
        )
        os.environ.update(self.env)
        self.settings = Settings()
        self.params = load_params(self.settings.params_file)
        self.settings.ensure_dirs()
        return self.settings

    def train_first_champion(self) -> str:
        """Run the DAG in-process on the clean year ending at the replay origin."""
        from rps.models.registry import champion_info
        from rps.orchestration.local_run import run_dag_locally

        result = run_dag_locally(
            self.settings, conf={"reason": "demo-loop: first champion"}, end=self.origin
        )
        if not result.succeeded:
            raise LoopError(f"the first DAG run failed: {', '.join(result.failed_tasks())}")
        version = str(champion_info(self.settings)["version"])
        self.timeline.first_champion = version
        return version

    def start_services(self) -> None:
        """Start the clock, the API (registry mode), Prometheus, Alertmanager and the receiver."""
        from rps.monitoring.local_stack import start_local_monitoring

        self.ingest(self.origin)
        anchor = pd.Timestamp.now(tz="UTC")
        os.environ.update(
            {
                "RPS_REPLAY_SPEED": repr(self.plan.speed),
                "RPS_REPLAY_ANCHOR": anchor.isoformat(),
                "RPS_REPLAY_ORIGIN": self.origin.isoformat(),
            }
        )
        self.settings = Settings()
        self.clock = ReplayClock.from_settings(self.settings)
        self.started_wall = time.monotonic()
        log = (self.state / "api.log").open("ab")
        self._api = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rps",
                "serve",
                "--workers",
                str(self.plan.workers),
                "--port",
                str(self.api_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._monitoring = start_local_monitoring(self.settings, api_port=self.api_port, demo=True)
        self._wait_ready()
        self._traffic = _Traffic(self.api_url, self.plan.request_interval_s)
        self._traffic.start()

    def _wait_ready(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._api is not None and self._api.poll() is not None:
                raise LoopError(f"the API exited; see {self.state / 'api.log'}")
            try:
                if httpx.get(f"{self.api_url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise LoopError(f"the API was not ready within {timeout_s:.0f} s")

    def ingest(self, end: pd.Timestamp) -> None:
        """The pipeline's extract -> quality gate -> transform for the newest days."""
        interval = Interval(start=end - pd.Timedelta(days=INGEST_DAYS), end=end)
        raw = step_extract(self.settings, self.params, interval)
        step_validate(self.params, raw.path, interval)
        step_transform(self.settings, self.params, raw.path)

    # -- the loop ---------------------------------------------------------------------------
    def now(self) -> pd.Timestamp:
        assert self.clock is not None, "start_services() first"
        return self.clock.now().floor("h")

    def _event(self, name: str, **details: Any) -> dict[str, Any]:
        event = {
            "replay_time": self.now().isoformat(),
            "wall_s": round(time.monotonic() - self.started_wall, 1),
            **details,
        }
        setattr(self.timeline, name, event)
        shown = ", ".join(f"{k}={v}" for k, v in details.items())
        self.say(f"[{event['wall_s']:7.1f} s | {event['replay_time'][:16]}] {name} {shown}")
        return event

    def run(self) -> Timeline:
        """Drive the loop until the new champion has served long enough, or the deadline."""
        assert self._traffic is not None, "start_services() first"
        last_ingested = self.origin
        swap_at: pd.Timestamp | None = None
        horizon = pd.Timedelta(hours=self.params.features.horizon_hours)
        while True:
            hour = self.now()
            if hour > last_ingested:
                self.ingest(hour)
                last_ingested = hour
            if self.timeline.onset is None and hour >= self.onset:
                self._event("onset", kind=self.timeline.scenario["kind"])
            self._poll()
            if self.timeline.served_by_all_workers is not None and swap_at is None:
                swap_at = hour
            elapsed = time.monotonic() - self.started_wall
            if (
                swap_at is not None
                and hour >= swap_at + pd.Timedelta(hours=self.plan.after_swap_hours) + horizon
            ):
                self.timeline.ended = "new champion served"
                break
            if elapsed > self.plan.deadline_s:
                self.timeline.ended = f"deadline ({self.plan.deadline_s:.0f} s)"
                break
            time.sleep(0.5)
        self._finish()
        return self.timeline

    def _poll(self) -> None:
        t = self.timeline
        if t.detected is None:
            signals = self._signals()
            crossed = {k: round(v, 2) for k, v in signals.items() if v > 1}
            if crossed and t.onset is None:
                t.false_alarms_before_onset += 1
            elif crossed:
                self._event("detected", signals=crossed)
        if t.onset is not None and t.alert_fired is None:
            firing = self._firing_alerts()
            if firing:
                self._event("alert_fired", alerts=sorted(firing))
        if t.alert_fired is not None and t.retrain_started is None and self._retrain_requested():
            self._event("retrain_started", via="alert receiver -> in-process DAG run")
        decision = t.gate_decision
        if t.retrain_started is not None and (
            decision is None or decision["decision"] != "promoted"
        ):
            self._check_registry()
        elif (
            decision is not None
            and t.served_by_all_workers is None
            and self._all_workers_on(decision["version"])
        ):
            self._event(
                "served_by_all_workers", version=decision["version"], workers=self.plan.workers
            )

    def _signals(self) -> dict[str, float]:
        try:
            return parse_signals(httpx.get(f"{self.api_url}/metrics", timeout=5).text)
        except httpx.HTTPError:
            return {}

    def _firing_alerts(self) -> set[str]:
        url = f"{self._monitoring.prometheus.url}/api/v1/alerts"
        try:
            alerts = httpx.get(url, timeout=5).json()["data"]["alerts"]
        except (httpx.HTTPError, KeyError, ValueError):
            return set()
        return {
            a["labels"]["alertname"]
            for a in alerts
            if a.get("state") == "firing" and a["labels"].get("alertname") in RETRAIN_ALERTS
        }

    def _retrain_requested(self) -> bool:
        log = self.settings.alert_log
        if not log.exists():
            return False
        for line in log.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("alertname") in RETRAIN_ALERTS and record.get("status") == "firing":
                return True
        return False

    def _check_registry(self) -> None:
        from rps.models.registry import list_versions

        t = self.timeline
        first = int(t.first_champion or 0)
        newer = [v for v in list_versions(self.settings) if int(v["version"]) > first]
        if not newer:
            return
        newest = max(newer, key=lambda v: int(v["version"]))
        if t.registered_version is None:
            self._event(
                "registered_version", version=newest["version"], model_kind=newest["model_kind"]
            )
        if newest["version"] in t.refused_challengers:
            return
        if newest["gate_decision"] in ("promoted", "refused"):
            from rps.models.registry import version_info

            info = version_info(self.settings, newest["version"])
            self._event(
                "gate_decision",
                version=newest["version"],
                decision=newest["gate_decision"],
                reason=info["gate_reason"],
            )
            if newest["gate_decision"] == "refused":
                t.refused_challengers.append(newest["version"])

    def _all_workers_on(self, version: str, samples: int = 24) -> bool:
        seen: dict[int, str] = {}
        for _ in range(samples):
            try:
                # a new connection each time: the kernel spreads them over the workers
                body = httpx.get(f"{self.api_url}/health", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return False
            seen[int(body["worker_pid"])] = str(body.get("model_version"))
        return len(seen) >= self.plan.workers and set(seen.values()) == {version}

    def _finish(self) -> None:
        traffic = self._traffic
        assert traffic is not None
        traffic.stop.set()
        traffic.join(15)
        t = self.timeline
        t.requests, t.failed_requests = traffic.requests, traffic.failed
        truth = self._truth()
        new = t.gate_decision["version"] if t.gate_decision else None
        t.live_rmse_before, t.live_rmse_during, t.live_rmse_after = live_rmse(
            traffic.snapshot(),
            truth,
            onset=self.onset,
            first_version=t.first_champion or "",
            new_version=new,
        )

    def _truth(self) -> pd.Series:
        """The realised target, as ingested (with the drift), over the loop's replay hours."""
        source = make_source(self.settings, self.params)
        frame = source.fetch(self.origin, self.now()).frame
        target = self.params.data.target
        return pd.Series(frame[target].to_numpy(), index=pd.DatetimeIndex(frame[TIME]))

    def write(self) -> Path:
        """The timeline as JSON under the loop's state folder; returns the path."""
        path = self.state / "timeline.json"
        payload = asdict(self.timeline) | {"new_champion_served": self.timeline.new_champion_served}
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
        return path

    def stop(self) -> None:
        """Stop the traffic, the API and the monitoring processes."""
        if self._traffic is not None:
            self._traffic.stop.set()
        if self._monitoring is not None:
            self._monitoring.stop()
        if self._api is not None and self._api.poll() is None:
            self._api.terminate()
            try:
                self._api.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._api.kill()
