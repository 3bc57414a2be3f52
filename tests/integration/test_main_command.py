"""The README's main job: ``rps run`` runs the DAG, names the champion, and serves it with
Prometheus and Alertmanager beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from rps.monitoring.local_stack import start_local_monitoring
from rps.monitoring.promconfig import free_port
from rps.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
REPO_ROOT = Path(__file__).resolve().parents[2]


def _small_project(root: Path) -> dict[str, str]:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["data"]["history_days"] = 60
    raw["train"]["n_trials"] = 2
    raw["horizons"] = {"max_hours": 12, "group_starts": [1, 4, 7], "interval_folds": 2}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RPS_", "AIRFLOW"))}
    env.update(
        {
            "RPS_PROJECT_ROOT": str(root),
            "RPS_PARAMS_PATH": str(root / "params.yaml"),
            "RPS_STATE_DIR": str(root / ".rps"),
        }
    )
    return env


def test_rps_run_trains_a_champion_and_serves_it(tmp_path: Path) -> None:
    env = _small_project(tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rps", "run", "--port", str(port), "--no-monitoring"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        health = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                if health.get("model_loaded"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        assert health and health["model_loaded"], process.stdout.read() if process.stdout else ""
        forecast = httpx.get(f"http://127.0.0.1:{port}/forecast", timeout=10).json()
        assert -90 < forecast["prediction"] < 60
        assert forecast["model_version"] == health["model_version"]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=60)
    for task in ("extract", "quality_gate", "train", "promote", "notify"):
        assert f"  {task}" in output
    assert "rps_pipeline" in output and ": success (" in output
    assert f"champion: rps-temperature-forecaster version {health['model_version']}" in output
    assert "holdout_rmse" in output
    assert f"curl -s http://127.0.0.1:{port}/forecast" in output
    # Airflow's task logs went to the log file, not the terminal
    assert (tmp_path / ".rps" / "logs" / "dag-runs.log").stat().st_size > 0
    assert "[DAG TEST]" not in output


def test_rps_run_fails_with_the_gate_when_the_data_is_bad(tmp_path: Path) -> None:
    from rps.data.sources.replay import default_recording

    env = _small_project(tmp_path)
    lines = default_recording().read_text().splitlines()
    body = [",".join([*f[:31], "99.0", *f[32:]]) for f in (line.split(",") for line in lines[2:])]
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join(lines[:2] + body) + "\n")
    env["RPS_REPLAY_FILE"] = str(broken)
    done = subprocess.run(
        [sys.executable, "-m", "rps", "run", "--no-serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 1
    assert "quality_gate  failed" in done.stdout
    assert "failed tasks: quality_gate" in done.stderr


def test_local_monitoring_scrapes_the_api_port_with_demo_rules(tmp_path: Path) -> None:
    settings = Settings(project_root=REPO_ROOT, state_dir=tmp_path / ".rps")
    api_port = free_port()
    stack = start_local_monitoring(
        settings,
        api_port=api_port,
        demo=True,
        prometheus_port=free_port(),
        alertmanager_port=free_port(),
        receiver_port=free_port(),
    )
    try:
        wanted = f"http://127.0.0.1:{api_port}/metrics"
        scraped: set[str] = set()
        deadline = time.monotonic() + 30  # target discovery runs shortly after readiness
        while wanted not in scraped and time.monotonic() < deadline:
            targets = httpx.get(f"{stack.prometheus.url}/api/v1/targets", timeout=10).json()
            scraped = {t["scrapeUrl"] for t in targets["data"]["activeTargets"]}
            time.sleep(0.5)
        assert wanted in scraped
        rules = httpx.get(f"{stack.prometheus.url}/api/v1/rules", timeout=10).json()
        alerts = {
            r["name"]: r["duration"]
            for g in rules["data"]["groups"]
            for r in g["rules"]
            if r["type"] == "alerting"
        }
        assert alerts["DataDriftDetected"] == 20.0
        assert httpx.get(f"{stack.alertmanager.url}/-/ready", timeout=10).status_code == 200
        receiver = stack.receiver_url.removesuffix("/alerts")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{receiver}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("the alert receiver did not come up")
    finally:
        stack.stop()
    assert stack.receiver.poll() is not None
