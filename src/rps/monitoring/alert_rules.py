"""The retraining and sensor alert rules in force, read from ``alerts.yml``, applied offline.

``bench/bench_drift.py`` replays a year hour by hour and has no Prometheus: it must decide
when DataDriftDetected and SensorStuck would fire from the gauges the service exports
(the worst drift check ratio, ``sensor_stuck_hours``). So that the benchmark measures the
rule Prometheus runs, the thresholds are not restated in Python: :func:`load_alert_rules`
reads them from the rule file, and refuses an expression whose shape it does not know (a
changed rule then fails the benchmark and the unit tests instead of being measured wrong).

The rules as this module understands them:

* **SensorStuck**: ``max by (job) (sensor_stuck_hours{job=...}) >= stuck_alert_hours``.
* **DataDriftDetected**: ``job:drift_check_ratio:max{job=...} > 1``, optionally followed by
  ``unless on (job) (max by (job) (sensor_stuck_hours{job=...}) >= drift_hold_hours)``: while
  the stuck-sensor counter runs (below SensorStuck's threshold too), the alert that starts a
  retraining waits, so a retraining cannot learn a stuck sensor before SensorStuck fires.

``for`` durations (minutes) are shorter than the hour the service's gauges hold in the
replay, so an hour in which the condition holds is an hour the alert fires. DataDriftDetected's
``keep_firing_for`` (whole hours) keeps it firing that many hours after the last hour its
condition held, as Prometheus keeps a firing alert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_JOB = r'\{job="[^"]+"\}'
_STUCK = rf"max\s+by\s*\(job\)\s*\(sensor_stuck_hours{_JOB}\)\s*>=\s*{_NUMBER}"
SENSOR_STUCK_EXPR = re.compile(rf"^{_STUCK}$")
"""SensorStuck's expression; group 1 is the threshold in hours."""
DATA_DRIFT_EXPR = re.compile(
    rf"^job:drift_check_ratio:max{_JOB}\s*>\s*1"
    rf"(?:\s+unless\s+on\s*\(job\)\s*\(\s*{_STUCK}\s*\))?$"
)
"""DataDriftDetected's expression; group 1 (optional) is the hold threshold in hours."""


class AlertRuleError(ValueError):
    """An alert rule is missing or has an expression this module cannot apply."""


@dataclass(frozen=True)
class AlertRules:
    """The thresholds of DataDriftDetected and SensorStuck.

    Attributes:
        stuck_alert_hours: SensorStuck fires when the stuck-sensor counter reaches this.
        drift_hold_hours: DataDriftDetected is held back while the counter is at or above
            this (None: never held back).
        drift_keep_hours: DataDriftDetected keeps firing this many hours after its condition
            last held (its ``keep_firing_for``).
    """

    stuck_alert_hours: float
    drift_hold_hours: float | None = None
    drift_keep_hours: int = 0

    def sensor_stuck(self, stuck_hours: np.ndarray) -> np.ndarray:
        """Per hour, whether SensorStuck fires, from the counter ``sensor_stuck_hours``."""
        return np.asarray(stuck_hours, dtype=float) >= self.stuck_alert_hours

    def data_drift(self, worst_ratio: np.ndarray, stuck_hours: np.ndarray) -> np.ndarray:
        """Per hour, whether DataDriftDetected fires (and asks for a retraining).

        Args:
            worst_ratio: The job's worst drift check ratio (``job:drift_check_ratio:max``).
            stuck_hours: The job's stuck-sensor counter (``sensor_stuck_hours``), same hours.
        """
        firing = np.asarray(worst_ratio, dtype=float) > 1.0
        if self.drift_hold_hours is not None:
            firing &= ~(np.asarray(stuck_hours, dtype=float) >= self.drift_hold_hours)
        if self.drift_keep_hours > 0 and firing.size:
            # firing at hour t if the condition held at any of the hours t - keep .. t
            held = np.concatenate([[0], np.cumsum(firing)])
            start = np.maximum(np.arange(firing.size) - self.drift_keep_hours, 0)
            firing = held[1:] - held[start] > 0
        return firing


def _rule(rules: dict[str, Any], alertname: str) -> dict[str, Any]:
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            if rule.get("alert") == alertname:
                return dict(rule)
    raise AlertRuleError(f"no alert rule {alertname}")


def _expr(rule: dict[str, Any]) -> str:
    return " ".join(str(rule["expr"]).split())


def _whole_hours(rule: dict[str, Any], field: str) -> int:
    """A duration field of ``rule`` in hours (0 when absent); only whole hours apply here."""
    text = str(rule.get(field, "0h"))
    match = re.fullmatch(r"(\d+)h", text)
    if match is None:
        raise AlertRuleError(f"{rule['alert']}: {field} {text!r} is not a whole number of hours")
    return int(match.group(1))


def parse_alert_rules(text: str) -> AlertRules:
    """The :class:`AlertRules` of a Prometheus rule file's text.

    Raises:
        AlertRuleError: A rule is missing or its expression has another shape.
    """
    rules = yaml.safe_load(text) or {}
    stuck_expr = _expr(_rule(rules, "SensorStuck"))
    stuck = SENSOR_STUCK_EXPR.match(stuck_expr)
    if stuck is None:
        raise AlertRuleError(f"SensorStuck: cannot apply {stuck_expr!r}")
    drift_rule = _rule(rules, "DataDriftDetected")
    drift_expr = _expr(drift_rule)
    drift = DATA_DRIFT_EXPR.match(drift_expr)
    if drift is None:
        raise AlertRuleError(f"DataDriftDetected: cannot apply {drift_expr!r}")
    hold = drift.group(1)
    return AlertRules(
        stuck_alert_hours=float(stuck.group(1)),
        drift_hold_hours=float(hold) if hold is not None else None,
        drift_keep_hours=_whole_hours(drift_rule, "keep_firing_for"),
    )


def load_alert_rules(path: Path) -> AlertRules:
    """:func:`parse_alert_rules` of the rule file at ``path`` (``alerts.yml``)."""
    return parse_alert_rules(path.read_text(encoding="utf-8"))
