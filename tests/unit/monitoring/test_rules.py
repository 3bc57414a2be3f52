"""The Prometheus and Alertmanager configuration: promtool/amtool checks and rule conventions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rps.monitoring import promconfig
from tests.unit.monitoring.catalog import (
    ALERT_NAMES,
    DOCS,
    MONITORING,
    PROMETHEUS_DIR,
    RULES_DIR,
    alert_rules,
    load_yaml,
    recording_rule_names,
    run_tool,
    unknown_metrics,
)

PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"
ALERTMANAGER_YML = MONITORING / "alertmanager" / "alertmanager.yml"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))


def _ok(result: object) -> str:
    return f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- promtool / amtool
def test_promtool_check_config(promtool: str) -> None:
    result = run_tool(promtool, "check", "config", PROMETHEUS_YML)
    assert result.returncode == 0, _ok(result)
    assert "2 rule files found" in result.stdout + result.stderr


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(promtool: str, rule_file: Path) -> None:
    result = run_tool(promtool, "check", "rules", rule_file)
    assert result.returncode == 0, _ok(result)


def test_promtool_test_rules(promtool: str) -> None:
    assert RULE_TESTS, "no promtool unit tests found"
    result = run_tool(promtool, "test", "rules", *RULE_TESTS)
    assert result.returncode == 0, _ok(result)
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), _ok(result)


def test_amtool_check_config(amtool: str) -> None:
    result = run_tool(amtool, "check-config", ALERTMANAGER_YML)
    assert result.returncode == 0, _ok(result)


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["alertname=DataDriftDetected", "severity=critical"], "rps-alert-receiver,critical"),
        (["alertname=ServiceUnhealthy", "severity=critical"], "rps-alert-receiver,critical"),
        (["alertname=InferenceLatencyHigh", "severity=warning"], "rps-alert-receiver,slack"),
        (["alertname=SomethingElse"], "rps-alert-receiver,slack"),
    ],
)
def test_amtool_routes_by_severity(amtool: str, labels: list[str], receivers: str) -> None:
    result = run_tool(
        amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", *labels
    )
    assert result.returncode == 0, _ok(result)
    assert result.stdout.strip() == receivers


def test_rendered_loopback_prometheus_config_is_valid(promtool: str, tmp_path: Path) -> None:
    text = promconfig.render_prometheus_config(
        api_targets=["127.0.0.1:18000"],
        alertmanager_targets=["127.0.0.1:19093"],
        self_target="127.0.0.1:19090",
        rule_files=[path.resolve() for path in RULE_FILES],
        scrape_interval="1s",
        evaluation_interval="1s",
    )
    path = tmp_path / "prometheus.yml"
    path.write_text(text, encoding="utf-8")
    result = run_tool(promtool, "check", "config", path)
    assert result.returncode == 0, _ok(result)
    assert f"{len(RULE_FILES)} rule files found" in result.stdout + result.stderr


def test_rendered_loopback_alertmanager_config_is_valid(amtool: str, tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(
        promconfig.render_alertmanager_config(receiver_url="http://127.0.0.1:19095/alerts"),
        encoding="utf-8",
    )
    result = run_tool(amtool, "check-config", path)
    assert result.returncode == 0, _ok(result)


# ---------------------------------------------------------------------------- conventions
def test_every_required_alert_is_defined_once() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert sorted(names) == sorted(ALERT_NAMES)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_labels_and_annotations(rule: dict) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["labels"]["team"]
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook_url"} <= set(annotations)
    anchor = rule["alert"].lower()
    assert annotations["runbook_url"] == f"docs/MONITORING.md#{anchor}"
    headings = DOCS.read_text(encoding="utf-8").splitlines()
    assert f"### {rule['alert']}" in headings, f"docs/MONITORING.md lacks '### {rule['alert']}'"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alerts_select_the_predictor_job(rule: dict) -> None:
    # the inhibition rule matches on job; every alert must keep it
    assert 'job="rps-predictor"' in rule["expr"]


def test_rule_expressions_reference_known_metrics() -> None:
    groups = (
        load_yaml(RULES_DIR / "recording.yml")["groups"]
        + load_yaml(RULES_DIR / "alerts.yml")["groups"]
    )
    for group in groups:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            assert not unknown_metrics(rule["expr"]), f"{name}: {unknown_metrics(rule['expr'])}"


def test_recording_rule_names_follow_convention() -> None:
    for name in recording_rule_names():
        level, _metric, operation = name.split(":")
        assert level and operation, name


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(ALERT_NAMES) <= firing, f"no firing case: {set(ALERT_NAMES) - firing}"
    assert set(ALERT_NAMES) <= quiet, f"no non-firing case: {set(ALERT_NAMES) - quiet}"


def test_alertmanager_inhibition_and_grouping_match_the_loopback_variant() -> None:
    production = load_yaml(ALERTMANAGER_YML)
    loopback = yaml.safe_load(
        promconfig.render_alertmanager_config(receiver_url="http://127.0.0.1:1/alerts")
    )
    assert production["inhibit_rules"] == loopback["inhibit_rules"]
    assert production["route"]["group_by"] == loopback["route"]["group_by"] == ["alertname"]
    source = production["inhibit_rules"][0]
    assert source["source_matchers"] == ['alertname="ServiceUnhealthy"']
    assert "InferenceLatencyHigh" in source["target_matchers"][0]
    assert source["equal"] == ["job"]


def test_alertmanager_receivers() -> None:
    config = load_yaml(ALERTMANAGER_YML)
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    webhook = receivers["rps-alert-receiver"]["webhook_configs"][0]
    assert webhook["url"] == "http://rps-alert-receiver:9095/alerts"
    assert webhook["send_resolved"] is True
    assert receivers["slack"]["slack_configs"][0]["api_url_file"]
    assert receivers["critical"]["email_configs"][0]["to"]
    first_route = config["route"]["routes"][0]
    assert first_route == first_route | {"receiver": "rps-alert-receiver", "continue": True}
    assert "matchers" not in first_route, "every alert must reach the receiver"


def test_loopback_prometheus_keeps_production_job_names() -> None:
    production = load_yaml(PROMETHEUS_YML)
    loopback = yaml.safe_load(
        promconfig.render_prometheus_config(
            api_targets=["127.0.0.1:1"],
            alertmanager_targets=["127.0.0.1:2"],
            self_target="127.0.0.1:3",
        )
    )
    production_jobs = {job["job_name"] for job in production["scrape_configs"]}
    loopback_jobs = {job["job_name"] for job in loopback["scrape_configs"]}
    assert loopback_jobs <= production_jobs
    assert {promconfig.PREDICTOR_JOB, "node-exporter", "cadvisor"} <= production_jobs
    predictor = next(j for j in production["scrape_configs"] if j["job_name"] == "rps-predictor")
    assert predictor["static_configs"][0]["targets"] == ["api:8000"]
    assert predictor.get("metrics_path", "/metrics") == "/metrics"
    alerting = production["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alerting == ["alertmanager:9093"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.95, sum by (job, le) (rate(x_bucket{le=~"1|2"}[5m])))',
            {"x_bucket"},
        ),
        ('label_replace(a{job="j"} > 0.25, "statistic", "psi", "", "")', {"a"}),
        ("b > on (job, instance) (1.5 * c) and on (job) d >= 48", {"b", "c", "d"}),
        ("time() - e:f:g{job='j'} > 6 * 3600", {"e:f:g"}),
        ('count(ALERTS{alertstate="firing"}) or vector(0)', {"ALERTS"}),
        ("rate(h[$__rate_interval]) offset 5m", {"h"}),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    from tests.unit.monitoring.catalog import metric_names

    assert metric_names(expr) == names


def test_every_metric_is_documented() -> None:
    from tests.unit.monitoring.catalog import API_METRICS

    docs = DOCS.read_text(encoding="utf-8")
    for name, (kind, labels) in API_METRICS.items():
        row = next((line for line in docs.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row, f"docs/MONITORING.md has no row for {name}"
        assert f"| {kind} |" in row, name
        for label in labels:
            assert f"`{label}`" in row, f"{name}: label {label} undocumented"
    for name in recording_rule_names():
        assert f"`{name}`" in docs or name.rsplit(":", 1)[-1] in docs, name


def test_people_are_reminded_daily_and_the_receiver_hourly() -> None:
    # one incident, one notification: a person hears of it when it starts and resolves and is
    # reminded once a day; only the alert receiver (which retries a failed trigger) hears hourly
    route = load_yaml(ALERTMANAGER_YML)["route"]
    repeats = {
        child["receiver"]: child.get("repeat_interval", route["repeat_interval"])
        for child in route["routes"]
    }
    assert repeats.pop("rps-alert-receiver") == "1h"
    assert set(repeats) == {"critical", "slack"}
    assert set(repeats.values()) == {"24h"}
    assert route["repeat_interval"] == "24h"
