"""The metric catalogue the monitoring configuration relies on, and a PromQL name extractor.

The prediction API exposes these metrics (names, types and labels agreed in the monitoring
issue); alert rules, recording rules and dashboards may only reference them, the recording
rules, Prometheus' own ``up``/``ALERTS`` series, and cAdvisor/node-exporter series.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
MONITORING = REPO_ROOT / "monitoring"
PROMETHEUS_DIR = MONITORING / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
DOCS = REPO_ROOT / "docs" / "MONITORING.md"

# name -> (type, labels)
API_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "api_requests_total": ("counter", ("method", "endpoint", "status")),
    "api_request_latency_seconds": ("histogram", ("endpoint",)),
    "predictions_total": ("counter", ()),
    "prediction_errors_total": ("counter", ("reason",)),
    "service_uptime_seconds": ("gauge", ()),
    "out_of_distribution_ratio": ("gauge", ()),
    "drift_check_ratio": ("gauge", ("check",)),
    "feature_anomaly_ratio": ("gauge", ("feature_name",)),
    "sensor_stuck_hours": ("gauge", ("variable",)),
    "forecast_error_drift_ratio": ("gauge", ()),
    "prediction_variance": ("gauge", ()),
    "prediction_confidence": ("histogram", ()),
    "live_rmse": ("gauge", ()),
    "live_mae": ("gauge", ()),
    "live_samples": ("gauge", ()),
    "model_holdout_rmse": ("gauge", ()),
    "model_info": ("gauge", ("name", "version", "alias")),
    "forecast_trajectory": ("gauge", ("horizon_hours", "bound")),
    "forecast_trajectory_issue_timestamp_seconds": ("gauge", ()),
    "interval_rescale_factor": ("gauge", ("horizon_hours",)),
    "pipeline_last_success_timestamp_seconds": ("gauge", ()),
    "data_last_observation_timestamp_seconds": ("gauge", ()),
    "data_observation_age_seconds": ("gauge", ()),
    "pipeline_last_run_failed": ("gauge", ()),
}
PROMETHEUS_BUILTIN = {"up", "ALERTS", "ALERTS_FOR_STATE"}
EXPORTER_PREFIXES = ("container_", "node_", "machine_")

ALERT_NAMES = (
    "InferenceLatencyHigh",
    "DataDriftDetected",
    "ServiceUnhealthy",
    "LiveAccuracyDegraded",
    "PredictionErrorsHigh",
    "DataStale",
    "PipelineFailed",
    "SensorStuck",
)

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (functions, keywords, labels removed)."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub("", text)
    text = _BRACKETS.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def base_metric(name: str) -> str:
    """A histogram's series name without its ``_bucket``/``_sum``/``_count`` suffix."""
    for suffix in ("_bucket", "_sum", "_count"):
        stem = name.removesuffix(suffix)
        if stem != name and stem in API_METRICS and API_METRICS[stem][0] == "histogram":
            return stem
    return name


def load_yaml(path: Path) -> dict:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def recording_rule_names() -> set[str]:
    groups = load_yaml(RULES_DIR / "recording.yml")["groups"]
    return {rule["record"] for group in groups for rule in group["rules"]}


def alert_rules() -> list[dict]:
    groups = load_yaml(RULES_DIR / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def unknown_metrics(expr: str, extra: set[str] | None = None) -> set[str]:
    """Names in ``expr`` that are neither catalogued nor recording rules nor exporter series."""
    known = set(API_METRICS) | PROMETHEUS_BUILTIN | recording_rule_names() | (extra or set())
    return {
        name
        for name in metric_names(expr)
        if base_metric(name) not in known and not name.startswith(EXPORTER_PREFIXES)
    }


def run_tool(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a checker binary; callers put its output in their assertion messages."""
    return subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=120, check=False
    )
