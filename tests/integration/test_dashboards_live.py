"""Every Grafana panel query, run against a real Prometheus that scraped the real API.

Grafana is not installed here, so the test does what Grafana would: it takes each panel's PromQL
from ``monitoring/grafana/dashboards/*.json``, replaces Grafana's variables with concrete values,
and sends it to Prometheus' HTTP API (``/api/v1/query``). The stack and the traffic (predictions,
feedback for live accuracy, refused inputs, drifted rows that fire DataDriftDetected) come from
``test_monitoring_chain.py``; Prometheus has the recording rules loaded.

Every query must run without error. The service-health and model-performance panels must
return data. The infrastructure panels read cAdvisor and node-exporter series, which do not
exist without the compose stack: they are listed in :data:`EXPECTED_EMPTY` and must parse and
run (empty result) only.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.integration import test_monitoring_chain as chain
from tests.integration.test_monitoring_chain import INTERVAL, Stack, Traffic, wait_for

pytestmark = pytest.mark.slow

# the chain module's fixtures (module scope: this module starts and drives its own stack)
stack = chain.stack
traffic = chain.traffic

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "monitoring" / "grafana" / "dashboards"
GRAFANA_VARIABLES = {
    # what Grafana substitutes: $__rate_interval is max(4 x scrape interval, $__interval +
    # scrape interval); with the test's 1 s scrapes a minute covers every sample sent
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$__range_s": "300",
    "$__interval_ms": "15000",
    "$job": "rps-predictor",
}
EXPECTED_EMPTY = {
    # cAdvisor (container_*) and node-exporter (node_*) series exist in the compose stack only
    ("infrastructure.json", "Container CPU", "A"),
    ("infrastructure.json", "Container memory", "A"),
    ("infrastructure.json", "Container network", "A"),
    ("infrastructure.json", "Container network", "B"),
    ("infrastructure.json", "Container disk I/O", "A"),
    ("infrastructure.json", "Container disk I/O", "B"),
    ("infrastructure.json", "Host CPU usage", "A"),
    ("infrastructure.json", "Host memory used", "A"),
    ("infrastructure.json", "Host load", "A"),
    ("infrastructure.json", "Host load", "B"),
    ("infrastructure.json", "Host load", "C"),
    ("infrastructure.json", "Host disk space used", "A"),
    ("infrastructure.json", "Host disk I/O", "A"),
    ("infrastructure.json", "Host disk I/O", "B"),
    ("infrastructure.json", "Host network", "A"),
    ("infrastructure.json", "Host network", "B"),
}
"""Panel queries (dashboard file, panel title, refId) that return nothing without compose."""
NON_EMPTY_DASHBOARDS = {"service-health.json", "model-performance.json"}


def substitute(expr: str) -> str:
    """``expr`` with Grafana's variables replaced (longest names first: ``$__range_s``)."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    leftover = re.findall(r"\$\{?\w+", expr)
    assert not leftover, f"unknown Grafana variables {leftover} in {expr!r}"
    return expr


def panel_queries() -> list[tuple[str, str, str, str]]:
    """(dashboard file, panel title, refId, PromQL) of every panel target, variables replaced."""
    queries = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            for target in panel["targets"]:
                queries.append((path.name, panel["title"], target["refId"], target["expr"]))
    return [(name, title, ref, substitute(expr)) for name, title, ref, expr in queries]


def test_dashboard_queries_cover_every_dashboard() -> None:
    queries = panel_queries()
    assert {name for name, *_ in queries} == NON_EMPTY_DASHBOARDS | {"infrastructure.json"}
    keys = {(name, title, ref) for name, title, ref, _ in queries}
    assert keys >= EXPECTED_EMPTY, EXPECTED_EMPTY - keys
    assert all(name == "infrastructure.json" for name, _, _ in EXPECTED_EMPTY)


def test_every_panel_query_runs_on_the_live_prometheus(stack: Stack, traffic: Traffic) -> None:
    assert INTERVAL == "1s"  # GRAFANA_VARIABLES assume the fast test scrapes
    queries = panel_queries()

    def run_all() -> dict[tuple[str, str, str], dict[str, Any]]:
        return {(name, title, ref): stack.query(expr) for name, title, ref, expr in queries}

    def missing(answers: dict[tuple[str, str, str], dict[str, Any]]) -> list[tuple[str, ...]]:
        return [
            key
            for key, answer in answers.items()
            if key not in EXPECTED_EMPTY
            and not (answer.get("status") == "success" and answer["data"]["result"])
        ]

    # recording rules, rates and the drift alert need a few evaluations: poll until all answer
    with contextlib.suppress(AssertionError):  # reported in detail below
        wait_for(lambda: not missing(run_all()), timeout=60, what="every panel to show data")
    answers = run_all()

    errors = {
        key: (answer.get("errorType"), answer.get("error"))
        for key, answer in answers.items()
        if answer.get("status") != "success" or answer["http_status"] != 200
    }
    assert not errors, f"queries failed: {errors}"
    warnings = {
        key: answer["warnings"] for key, answer in answers.items() if answer.get("warnings")
    }
    assert not warnings, warnings
    exprs = {(name, title, ref): expr for name, title, ref, expr in queries}
    empty = {key: exprs[key] for key in missing(answers)}
    assert not empty, f"panels without data: {json.dumps(list(empty.items()), indent=1)}"
    for key in EXPECTED_EMPTY:
        assert answers[key]["data"]["result"] == [], f"{key} has data now: drop it from the list"


def test_panel_values_match_the_traffic(stack: Stack, traffic: Traffic) -> None:
    """A few panels whose value the test traffic determines."""
    clean = Stack.instance(stack.clean)
    (up,) = stack.vector(substitute('min(up{job="rps-predictor"})'))
    assert float(up["value"][1]) == 1.0
    versions = stack.vector('model_info{job="rps-predictor"}')
    assert {v["metric"]["version"] for v in versions} == {"1"}
    samples = stack.vector(f'live_samples{{job="rps-predictor", instance="{clean}"}}')
    assert float(samples[0]["value"][1]) == 168  # drift.live_accuracy_window
    reasons = wait_for(
        lambda: stack.vector('job_reason:prediction_errors:rate_per_minute{job="rps-predictor"}'),
        timeout=30,
        what="refused predictions by reason",
    )
    assert {r["metric"]["reason"] for r in reasons} == {"missing", "validation"}
    firing = wait_for(
        lambda: stack.vector('ALERTS{alertstate="firing", alertname="DataDriftDetected"}'),
        timeout=60,
        what="DataDriftDetected in the firing alerts table",
    )
    # one alert for the incident (per job, not per instance or feature) ...
    assert [a["metric"]["job"] for a in firing] == ["rps-predictor"]
    # ... and the per-instance panel shows which replica sees the drift
    ratios = {
        r["metric"]["instance"]: float(r["value"][1])
        for r in stack.vector('max by (instance) (drift_check_ratio{job="rps-predictor"})')
    }
    assert ratios[Stack.instance(stack.drifted)] > 1.0 >= ratios[clean]


def test_trajectory_panel_shows_the_forecast_of_the_stored_observations(
    stack: Stack, traffic: Traffic
) -> None:
    """The clean server has stored observations, the drifted one none: the trajectory series
    are the clean server's GET /forecast answer (the test bundle forecasts +6 h only)."""
    with stack.clean.client() as client:
        body = client.get("/forecast").json()
    series = stack.vector('forecast_trajectory{job="rps-predictor"}')
    assert {s["metric"]["instance"] for s in series} == {Stack.instance(stack.clean)}
    values = {
        (s["metric"]["horizon_hours"], s["metric"]["bound"]): float(s["value"][1]) for s in series
    }
    # Prometheus' JSON carries each sample's text: the shortest repr of the float, exact
    assert values == {("6", bound): body[bound] for bound in ("lower", "prediction", "upper")}
    assert body["lower"] < body["prediction"] < body["upper"]
    (issued,) = stack.vector('forecast_trajectory_issue_timestamp_seconds{job="rps-predictor"}')
    assert float(issued["value"][1]) == pd.Timestamp(body["issue_time"]).timestamp()
