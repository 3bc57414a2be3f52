"""Grafana dashboards and provisioning: structure, datasource, PromQL and metric names."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.unit.monitoring.catalog import (
    API_METRICS,
    DOCS,
    MONITORING,
    load_yaml,
    metric_names,
    run_tool,
    unknown_metrics,
)

GRAFANA = MONITORING / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
DASHBOARD_FILES = sorted(DASHBOARD_DIR.glob("*.json"))
PANEL_TYPES = {"timeseries", "stat", "table", "heatmap", "trend"}
GRAFANA_VARIABLES = re.compile(r"\$__(rate_interval|interval|range)")


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_dashboards", GRAFANA / "build_dashboards.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in DASHBOARD_FILES}


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            yield panel


def _all_targets() -> list[tuple[str, str, str]]:
    return [
        (name, panel["title"], target["expr"])
        for name, dashboard in _dashboards().items()
        for panel in _panels(dashboard)
        for target in panel["targets"]
    ]


def test_committed_json_is_what_the_script_generates() -> None:
    generated = _builder().render_all()
    assert sorted(generated) == [path.name for path in DASHBOARD_FILES]
    for name, text in generated.items():
        assert (DASHBOARD_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: run python monitoring/grafana/build_dashboards.py"
        )


def test_dashboard_uids_and_titles_are_unique() -> None:
    dashboards = _dashboards().values()
    assert len({d["uid"] for d in dashboards}) == len(DASHBOARD_FILES) == 3
    assert len({d["title"] for d in dashboards}) == 3


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_panel_structure(path: Path) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert dashboard["panels"][0]["type"] == "row"
    for panel in _panels(dashboard):
        title = panel["title"]
        assert panel["type"] in PANEL_TYPES, title
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, title
        assert panel["description"], f"{title}: no description"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, title
        assert panel["targets"], f"{title}: no query"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus", title
            assert target["expr"].strip(), f"{title}: empty expr"


@pytest.mark.parametrize(("dashboard", "title", "expr"), _all_targets(), ids=str)
def test_panel_metrics_are_known(dashboard: str, title: str, expr: str) -> None:
    assert metric_names(expr), f"{dashboard} / {title}: no metric in {expr!r}"
    assert not unknown_metrics(expr), f"{dashboard} / {title}: {unknown_metrics(expr)}"


def test_panel_promql_parses(promtool: str, tmp_path: Path) -> None:
    # promtool has no expression checker, but it parses every rule's expr: wrap each query
    rules = [
        {"record": f"dashboard_query_{index}", "expr": GRAFANA_VARIABLES.sub("5m", expr)}
        for index, (_, _, expr) in enumerate(_all_targets())
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = run_tool(promtool, "check", "rules", path)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_dashboards_cover_the_issue_groups() -> None:
    exprs = {name: " ".join(t[2] for t in _all_targets() if t[0] == name) for name in _dashboards()}
    service = exprs["service-health.json"]
    for needed in (
        "job:api_requests:rate_per_minute",
        "job:api_request_latency_seconds:avg_5m",
        "job:api_request_latency_seconds:p95_5m",
        "job:api_request_errors:ratio_5m",
        "service_uptime_seconds",
    ):
        assert needed in service, needed
    model = exprs["model-performance.json"]
    for metric in set(API_METRICS) - {
        "api_requests_total",
        "api_request_latency_seconds",
        "prediction_errors_total",
        "service_uptime_seconds",
        "predictions_total",
        "data_last_observation_timestamp_seconds",  # shown as data_observation_age_seconds
    }:
        assert metric in model, metric
    assert "job:predictions:rate_per_minute" in model
    infrastructure = exprs["infrastructure.json"]
    for needed in (
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_fs_writes_bytes_total",
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_filesystem_avail_bytes",
        "node_network_receive_bytes_total",
    ):
        assert needed in infrastructure, needed


def test_the_trajectory_panel_draws_each_bound_against_the_horizon() -> None:
    """One instant table query per bound, joined on the horizon as a number, each value field
    named after its bound, the band filled from upper down to lower."""
    panels = {p["title"]: p for p in _panels(_dashboards()["model-performance.json"])}
    panel = panels["Forecast trajectory"]
    assert panel["type"] == "trend"
    assert panel["options"]["xField"] == "horizon_hours"
    targets = panel["targets"]
    bounds = ["lower", "prediction", "upper"]
    assert [t["expr"] for t in targets] == [
        f'max by (horizon_hours) (forecast_trajectory{{job="rps-predictor", bound="{b}"}})'
        for b in bounds
    ]
    assert all(t["instant"] and not t["range"] and t["format"] == "table" for t in targets)
    steps = {step["id"]: step["options"] for step in panel["transformations"]}
    assert list(steps) == ["convertFieldType", "joinByField", "organize", "sortBy"]
    assert steps["convertFieldType"]["conversions"] == [
        {"targetField": "horizon_hours", "destinationType": "number"}
    ]
    assert steps["joinByField"] == {"byField": "horizon_hours", "mode": "outer"}
    renamed = steps["organize"]["renameByName"]
    assert renamed == {f"Value #{t['refId']}": b for t, b in zip(targets, bounds, strict=True)}
    assert steps["organize"]["excludeByName"]["Time"] is True
    assert steps["sortBy"]["sort"] == [{"field": "horizon_hours"}]
    overrides = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in panel["fieldConfig"]["overrides"]
    }
    assert overrides["upper"]["custom.fillBelowTo"] == "lower"
    assert overrides["upper"]["custom.fillOpacity"] > 0
    assert overrides["horizon_hours"]["unit"] == "h"
    issued = panels["Trajectory issued at"]
    assert issued["fieldConfig"]["defaults"]["unit"] == "dateTimeAsIso"  # milliseconds
    assert issued["targets"][0]["expr"].startswith("1000 * max(forecast_trajectory_issue_")


def test_a_band_is_refused_outside_a_trend_panel_and_without_table_queries() -> None:
    builder = _builder()
    band = builder.Band("x", "h", ("lower", "upper"))
    table = builder.Query("a", instant=True, fmt="table")
    with pytest.raises(ValueError, match="band goes with a trend"):
        builder._panel_json(
            builder.Panel("t", "timeseries", [table, table], "d", band=band), 1, 0, 0
        )
    with pytest.raises(ValueError, match="band goes with a trend"):
        builder._panel_json(builder.Panel("t", "trend", [table, table], "d"), 1, 0, 0)
    with pytest.raises(ValueError, match="instant, in table format"):
        builder._panel_json(
            builder.Panel("t", "trend", [table, builder.Query("b")], "d", band=band), 1, 0, 0
        )
    with pytest.raises(ValueError, match="one query per band series"):
        builder._panel_json(builder.Panel("t", "trend", [table], "d", band=band), 1, 0, 0)


def test_alert_thresholds_drawn_on_panels_match_the_rules() -> None:
    panels = {p["title"]: p for d in _dashboards().values() for p in _panels(d)}

    def red_step(title: str) -> float:
        steps = panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        return float(steps[-1]["value"])

    assert red_step("Latency: average and p95") == 0.5
    assert red_step("Drift checks (DataDriftDetected)") == 1.0
    assert red_step("Feature anomaly (seasonal)") == 1.0
    assert red_step("Error rate %") == 5


def test_datasource_provisioning() -> None:
    config = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (datasource,) = config["datasources"]
    assert datasource["uid"] == "prometheus"
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True


def test_dashboard_provider() -> None:
    config = load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"


def test_every_panel_is_documented() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for dashboard in _dashboards().values():
        assert f"`{dashboard['uid']}`" in docs, dashboard["uid"]
        for panel in _panels(dashboard):
            assert f"| {panel['title']} |" in docs, f"docs/MONITORING.md lacks {panel['title']!r}"
