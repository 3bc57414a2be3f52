"""rps.monitoring.alert_rules: the rule file's thresholds, and Prometheus agreeing with them."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import yaml

from rps.monitoring.alert_rules import (
    AlertRuleError,
    AlertRules,
    load_alert_rules,
    parse_alert_rules,
)
from tests.unit.monitoring.catalog import RULES_DIR, run_tool

ALERTS_YML = RULES_DIR / "alerts.yml"
RATIOS = (0.5, 1.0, 1.01, 1.8)
STUCK_HOURS = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 7.0)


def _rules_text(drift_expr: str, stuck_expr: str) -> str:
    return yaml.safe_dump(
        {
            "groups": [
                {
                    "name": "g",
                    "rules": [
                        {"alert": "DataDriftDetected", "expr": drift_expr},
                        {"alert": "SensorStuck", "expr": stuck_expr},
                    ],
                }
            ]
        }
    )


STUCK = 'max by (job) (sensor_stuck_hours{job="rps-predictor"}) >= 4'


def test_rule_in_force_holds_retraining_below_the_sensor_alert() -> None:
    rules = load_alert_rules(ALERTS_YML)
    # the hold must start before SensorStuck pages, else a retraining can start in between
    assert rules.drift_hold_hours is not None
    assert 0 < rules.drift_hold_hours < rules.stuck_alert_hours


def test_parse_without_hold() -> None:
    text = _rules_text('job:drift_check_ratio:max{job="rps-predictor"} > 1', STUCK)
    assert parse_alert_rules(text) == AlertRules(stuck_alert_hours=4.0, drift_hold_hours=None)


def test_parse_multiline_hold() -> None:
    expr = (
        'job:drift_check_ratio:max{job="rps-predictor"} > 1\nunless on (job)\n'
        '(max by (job) (sensor_stuck_hours{job="rps-predictor"}) >= 1.5)'
    )
    assert parse_alert_rules(_rules_text(expr, STUCK)).drift_hold_hours == 1.5


@pytest.mark.parametrize(
    ("drift_expr", "stuck_expr"),
    [
        # another comparison, another grouping, another metric: not what the Python applies
        ('job:drift_check_ratio:max{job="rps-predictor"} > 2', STUCK),
        (
            'job:drift_check_ratio:max{job="rps-predictor"} > 1 unless on (job, instance) '
            '(max by (job) (sensor_stuck_hours{job="rps-predictor"}) >= 1)',
            STUCK,
        ),
        ('job:drift_check_ratio:max{job="rps-predictor"} > 1', "sensor_stuck_hours > 4"),
    ],
)
def test_parse_refuses_an_unknown_shape(drift_expr: str, stuck_expr: str) -> None:
    with pytest.raises(AlertRuleError, match="cannot apply"):
        parse_alert_rules(_rules_text(drift_expr, stuck_expr))


def test_parse_refuses_a_missing_rule() -> None:
    text = yaml.safe_dump({"groups": [{"name": "g", "rules": []}]})
    with pytest.raises(AlertRuleError, match="no alert rule SensorStuck"):
        parse_alert_rules(text)


def test_firing_per_hour() -> None:
    rules = AlertRules(stuck_alert_hours=4.0, drift_hold_hours=2.0)
    ratio = np.array([0.5, 1.2, 1.2, 1.2, 1.2, 1.2])
    stuck = np.array([0, 0, 1, 2, 5, 0])
    assert rules.data_drift(ratio, stuck).tolist() == [False, True, True, False, False, True]
    assert rules.sensor_stuck(stuck).tolist() == [False, False, False, False, True, False]
    unheld = AlertRules(stuck_alert_hours=4.0)
    assert unheld.data_drift(ratio, stuck).tolist() == [False, True, True, True, True, True]


def test_prometheus_fires_as_the_python_rules_say(promtool: str, tmp_path: Path) -> None:
    """The tie between the benchmark and production: for a grid of (worst drift ratio,
    stuck counter) held for 10 minutes (longer than every ``for``), promtool evaluates the
    real rule files and must fire exactly the alerts :class:`AlertRules` says."""
    rules = load_alert_rules(ALERTS_YML)
    cases = []
    for ratio, stuck in itertools.product(RATIOS, STUCK_HOURS):
        expected = [
            name
            for name, firing in (
                ("DataDriftDetected", rules.data_drift(np.array([ratio]), np.array([stuck]))),
                ("SensorStuck", rules.sensor_stuck(np.array([stuck]))),
            )
            if bool(firing[0])
        ]
        cases.append(
            {
                "name": f"ratio {ratio}, stuck {stuck} h",
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'drift_check_ratio{job="rps-predictor", instance="api:8000",'
                        ' check="humidity_change"}',
                        "values": f"{ratio}x12",
                    },
                    {
                        "series": 'sensor_stuck_hours{job="rps-predictor", instance="api:8000",'
                        ' variable="temperature_2m"}',
                        "values": f"{stuck}x12",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": 'count by (alertname) (ALERTS{alertstate="firing"})',
                        "eval_time": "10m",
                        "exp_samples": [
                            {"labels": f'{{alertname="{name}"}}', "value": 1} for name in expected
                        ],
                    }
                ],
            }
        )
    test_file = tmp_path / "tie_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(RULES_DIR / "recording.yml"), str(ALERTS_YML)],
                "evaluation_interval": "1m",
                "tests": cases,
            }
        ),
        encoding="utf-8",
    )
    result = run_tool(promtool, "test", "rules", test_file)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def test_keep_firing_for_in_whole_hours() -> None:
    text = _rules_text('job:drift_check_ratio:max{job="rps-predictor"} > 1', STUCK)
    rules = yaml.safe_load(text)
    rules["groups"][0]["rules"][0]["keep_firing_for"] = "3h"
    assert parse_alert_rules(yaml.safe_dump(rules)).drift_keep_hours == 3
    rules["groups"][0]["rules"][0]["keep_firing_for"] = "90m"
    with pytest.raises(AlertRuleError, match="keep_firing_for '90m'"):
        parse_alert_rules(yaml.safe_dump(rules))


def test_a_dip_shorter_than_the_keep_is_one_incident() -> None:
    rules = AlertRules(stuck_alert_hours=4.0, drift_keep_hours=2)
    ratio = np.array([1.2, 0.5, 0.5, 1.2, 0.5, 0.5, 0.5, 1.2])
    firing = rules.data_drift(ratio, np.zeros(len(ratio)))
    assert firing.tolist() == [True, True, True, True, True, True, False, True]


def test_prometheus_keeps_firing_as_the_python_rules_say(promtool: str, tmp_path: Path) -> None:
    """The rule in force over hours of a ratio that dips under the limit: promtool's firing
    DataDriftDetected at the middle of each hour is what :meth:`AlertRules.data_drift` says."""
    rules = load_alert_rules(ALERTS_YML)
    assert rules.drift_keep_hours > 0
    keep = rules.drift_keep_hours
    hours = [1.8, 0.5, 0.5, 1.8] + [0.5] * (keep + 2) + [1.8, 0.5]
    firing = rules.data_drift(np.array(hours), np.zeros(len(hours)))
    assert not firing.all()  # the sequence resolves once, so both answers are checked
    per_minute = " ".join(f"{ratio}x59" for ratio in hours)  # a gauge scraped every minute
    case = {
        "name": "hours dipping under the limit",
        "interval": "1m",
        "input_series": [
            {
                "series": 'drift_check_ratio{job="rps-predictor", instance="api:8000",'
                ' check="humidity_change"}',
                "values": per_minute,
            }
        ],
        "promql_expr_test": [
            {
                "expr": 'count(ALERTS{alertname="DataDriftDetected", alertstate="firing"})',
                "eval_time": f"{60 * hour + 30}m",
                "exp_samples": [{"labels": "{}", "value": 1}] if fires else [],
            }
            for hour, fires in enumerate(firing.tolist())
        ],
    }
    test_file = tmp_path / "keep_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(RULES_DIR / "recording.yml"), str(ALERTS_YML)],
                "evaluation_interval": "1m",
                "tests": [case],
            }
        ),
        encoding="utf-8",
    )
    result = run_tool(promtool, "test", "rules", test_file)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
