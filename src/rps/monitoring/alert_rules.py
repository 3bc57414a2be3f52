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
replay, so an hour in which the condition holds is an hour the alert fires.
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
    """

    stuck_alert_hours: float
    drift_hold_hours: float | None = None

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
        return firing


def _expr(rules: dict[str, Any], alertname: str) -> str:
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            if rule.get("alert") == alertname:
                return " ".join(str(rule["expr"]).split())
    raise AlertRuleError(f"no alert rule {alertname}")


def parse_alert_rules(text: str) -> AlertRules:
    """The :class:`AlertRules` of a Prometheus rule file's text.

    Raises:
        AlertRuleError: A rule is missing or its expression has another shape.
    """
    rules = yaml.safe_load(text) or {}
    stuck_expr = _expr(rules, "SensorStuck")
    stuck = SENSOR_STUCK_EXPR.match(stuck_expr)
    if stuck is None:
        raise AlertRuleError(f"SensorStuck: cannot apply {stuck_expr!r}")
    drift_expr = _expr(rules, "DataDriftDetected")
    drift = DATA_DRIFT_EXPR.match(drift_expr)
    if drift is None:
        raise AlertRuleError(f"DataDriftDetected: cannot apply {drift_expr!r}")
    hold = drift.group(1)
    return AlertRules(
        stuck_alert_hours=float(stuck.group(1)),
        drift_hold_hours=float(hold) if hold is not None else None,
    )


def load_alert_rules(path: Path) -> AlertRules:
    """:func:`parse_alert_rules` of the rule file at ``path`` (``alerts.yml``)."""
    return parse_alert_rules(path.read_text(encoding="utf-8"))
