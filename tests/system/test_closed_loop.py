"""The whole loop on the embedded default: drift -> alert -> retrain -> gate -> every worker swaps.

Runs ``rps demo-loop`` as a user would (real Prometheus, Alertmanager, the alert receiver, an
in-process Airflow run, MLflow on SQLite, the API with two workers under steady traffic) on a
shortened plan, and checks the timeline it writes. Timings are reported by the benchmark
(docs/BENCHMARKS.md), not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# one xdist worker runs the heaviest tests one at a time (see tests/production/test_topology.py)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400), pytest.mark.xdist_group("heavy")]


def test_drift_ends_with_a_new_champion_on_every_worker_and_no_failed_request(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPS_")}
    env["RPS_STATE_DIR"] = str(tmp_path / "state")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rps",
            "demo-loop",
            "--pre-onset-hours",
            "18",
            "--after-swap-hours",
            "12",
            "--deadline",
            "1800",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    timeline_file = tmp_path / "state" / "demo-loop" / "timeline.json"
    assert timeline_file.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    timeline = json.loads(timeline_file.read_text())
    assert done.returncode == 0, json.dumps(timeline, indent=2) + done.stderr[-2000:]

    first, decision = timeline["first_champion"], timeline["gate_decision"]
    assert timeline["ended"] == "new champion served"
    assert timeline["failed_requests"] == 0 and timeline["requests"] > 100
    for event in ("onset", "detected", "alert_fired", "retrain_started", "registered_version"):
        assert timeline[event] is not None, event
    assert timeline["onset"]["wall_s"] <= timeline["detected"]["wall_s"]
    assert timeline["detected"]["wall_s"] <= timeline["alert_fired"]["wall_s"]
    assert int(decision["version"]) > int(first)
    assert decision["decision"] == "promoted" and decision["reason"].startswith("significantly")
    served = timeline["served_by_all_workers"]
    assert served["version"] == decision["version"] and served["workers"] == 2
    # live RMSE before / during / after the swap is a quality figure of the loop, reported in
    # docs/BENCHMARKS.md (Closed loop) as the issue asks, not asserted: over the test's 12 replay
    # hours after the swap it is noisy (one CI run: after 8.37 against during 5.19 degC)
