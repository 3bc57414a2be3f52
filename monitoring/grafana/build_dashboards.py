"""Generate the RPS Grafana dashboards (JSON) from one description.

The generated files in ``monitoring/grafana/dashboards/`` are committed and provisioned by
Grafana; edit this script, then run::

    python monitoring/grafana/build_dashboards.py          # write the JSON files
    python monitoring/grafana/build_dashboards.py --check  # exit 1 if they are out of date

Every panel queries the provisioned Prometheus datasource (uid ``prometheus``); the queries
use the API's metrics, the recording rules of ``monitoring/prometheus/rules/recording.yml``,
and cAdvisor (``container_*``) and node-exporter (``node_*``) series.
``tests/unit/monitoring/test_dashboards.py`` checks both.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("build_dashboards")

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "prometheus"}
JOB = 'job="rps-predictor"'
GRID_WIDTH = 24
SCHEMA_VERSION = 39


@dataclass
class Query:
    """One PromQL query of a panel."""

    expr: str
    legend: str = "__auto"
    instant: bool = False
    fmt: str = "time_series"


@dataclass
class Panel:
    """A panel before layout; ``width`` and ``height`` in grid units."""

    title: str
    kind: str  # timeseries | stat | table | heatmap | trend
    queries: list[Query]
    description: str
    unit: str = "short"
    width: int = 12
    height: int = 8
    threshold: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    mappings: list[dict[str, Any]] = field(default_factory=list)
    decimals: int | None = None
    hide_columns: tuple[str, ...] = ()
    band: Band | None = None  # trend panels only


@dataclass(frozen=True)
class Band:
    """What a ``trend`` panel draws: series against a numeric label instead of time.

    Its queries are instant and in table format, one per series, each aggregated ``by`` the
    ``x_label``. Grafana's Prometheus datasource turns query ``A`` into a frame with the fields
    ``Time``, the label and ``Value #A``; the panel's transformations make the label a number,
    join the frames on it into one (the trend panel draws a single frame), drop the ``Time``
    fields, name each value field after its series and sort by x. The first series is filled
    up to the last one (the interval band), the others are drawn as lines.
    """

    x_label: str
    x_unit: str
    series: tuple[str, ...]  # one per query, in query order: lower bound first, upper last


@dataclass
class Row:
    """A titled row of panels."""

    title: str
    panels: list[Panel]


def _thresholds(threshold: float | None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if threshold is not None:
        steps.append({"color": "red", "value": threshold})
    return {"mode": "absolute", "steps": steps}


def _targets(queries: list[Query]) -> list[dict[str, Any]]:
    targets = []
    for index, query in enumerate(queries):
        targets.append(
            {
                "datasource": dict(DATASOURCE),
                "refId": chr(ord("A") + index),
                "expr": query.expr,
                "legendFormat": query.legend,
                "instant": query.instant,
                "range": not query.instant,
                "format": query.fmt,
                "editorMode": "code",
            }
        )
    return targets


def _value_field(ref_id: str) -> str:
    """The value field Grafana's Prometheus datasource names for a table query of several."""
    return f"Value #{ref_id}"


def _band_transformations(band: Band, ref_ids: list[str]) -> list[dict[str, Any]]:
    # a join names repeated fields "Time 1", "Time 2", ...: drop every one of them
    times = ["Time", *(f"Time {i}" for i in range(1, len(ref_ids) + 1))]
    return [
        {
            "id": "convertFieldType",
            "options": {
                "fields": {},
                "conversions": [{"targetField": band.x_label, "destinationType": "number"}],
            },
        },
        {"id": "joinByField", "options": {"byField": band.x_label, "mode": "outer"}},
        {
            "id": "organize",
            "options": {
                "excludeByName": dict.fromkeys(times, True),
                "indexByName": {},
                "renameByName": {
                    _value_field(ref): name for ref, name in zip(ref_ids, band.series, strict=True)
                },
            },
        },
        {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": band.x_label}]}},
    ]


def _band_overrides(band: Band) -> list[dict[str, Any]]:
    def by_name(name: str, properties: dict[str, Any]) -> dict[str, Any]:
        return {
            "matcher": {"id": "byName", "options": name},
            "properties": [{"id": key, "value": value} for key, value in properties.items()],
        }

    lower, *middle, upper = band.series
    bound = {"color": {"mode": "fixed", "fixedColor": "blue"}, "custom.lineWidth": 1}
    return [
        by_name(band.x_label, {"unit": band.x_unit, "decimals": 0}),
        by_name(lower, bound),
        by_name(upper, {**bound, "custom.fillBelowTo": lower, "custom.fillOpacity": 20}),
        *(by_name(name, {"color": {"mode": "fixed", "fixedColor": "orange"}}) for name in middle),
    ]


def _lines(*, width: int, fill: int) -> dict[str, Any]:
    """The field style of series drawn as lines (timeseries and trend panels)."""
    return {
        "drawStyle": "line",
        "lineWidth": width,
        "fillOpacity": fill,
        "showPoints": "never",
        "spanNulls": False,
    }


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "thresholds": _thresholds(panel.threshold),
        "mappings": panel.mappings,
    }
    if panel.minimum is not None:
        defaults["min"] = panel.minimum
    if panel.maximum is not None:
        defaults["max"] = panel.maximum
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    options: dict[str, Any]
    overrides: list[dict[str, Any]] = []
    transformations: list[dict[str, Any]] = []
    if (panel.band is None) != (panel.kind != "trend"):
        raise ValueError(f"{panel.title}: a band goes with a trend panel, and only there")
    if panel.band is not None:
        band = panel.band
        if len(band.series) != len(panel.queries) or len(band.series) < 2:
            raise ValueError(f"{panel.title}: one query per band series, at least two")
        if not all(q.instant and q.fmt == "table" for q in panel.queries):
            raise ValueError(f"{panel.title}: band queries are instant, in table format")
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = _lines(width=2, fill=0)
        options = {
            "xField": band.x_label,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        }
        overrides = _band_overrides(band)
        transformations = _band_transformations(band, [t["refId"] for t in _targets(panel.queries)])
    elif panel.kind == "timeseries":
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {
            **_lines(width=1, fill=10),
            "thresholdsStyle": {"mode": "line" if panel.threshold is not None else "off"},
        }
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "textMode": "auto",
            "orientation": "auto",
        }
    elif panel.kind == "table":
        options = {"showHeader": True, "cellHeight": "sm"}
    elif panel.kind == "heatmap":
        options = {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "yAxis": {"axisPlacement": "left", "unit": panel.unit},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": True},
            "legend": {"show": True},
        }
    else:
        raise ValueError(f"unknown panel kind {panel.kind!r}")
    result: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": dict(DATASOURCE),
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "options": options,
        "targets": _targets(panel.queries),
    }
    if panel.hide_columns:
        transformations.append(
            {
                "id": "organize",
                "options": {"excludeByName": dict.fromkeys(panel.hide_columns, True)},
            }
        )
    if transformations:
        result["transformations"] = transformations
    return result


def build_dashboard(uid: str, title: str, description: str, rows: list[Row]) -> dict[str, Any]:
    """Lay the rows out on Grafana's 24-column grid and wrap them in a dashboard."""
    panels: list[dict[str, Any]] = []
    panel_id = 1
    y = 0
    for row in rows:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel_json(panel, panel_id, x, y))
            panel_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["rps"],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["rps"],
                "asDropdown": False,
                "title": "RPS dashboards",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "panels": panels,
    }


UP_MAPPING = [
    {
        "type": "value",
        "options": {
            "0": {"text": "DOWN", "color": "red", "index": 0},
            "1": {"text": "UP", "color": "green", "index": 1},
        },
    }
]
FAILED_MAPPING = [
    {
        "type": "value",
        "options": {
            "0": {"text": "succeeded", "color": "green", "index": 0},
            "1": {"text": "FAILED", "color": "red", "index": 1},
        },
    }
]


def service_health() -> dict[str, Any]:
    """Service health: traffic, latency, errors and uptime of the prediction API."""
    rows = [
        Row(
            "Service health",
            [
                Panel(
                    "Service up",
                    "stat",
                    [Query(f"min(up{{{JOB}}})")],
                    "Whether Prometheus can scrape the prediction API (ServiceUnhealthy fires "
                    "after 2 minutes down).",
                    width=4,
                    height=4,
                    mappings=UP_MAPPING,
                    threshold=None,
                ),
                Panel(
                    "Uptime",
                    "stat",
                    [Query(f"min(service_uptime_seconds{{{JOB}}})")],
                    "Seconds since the prediction API process started (the youngest replica).",
                    unit="s",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Requests per minute",
                    "stat",
                    [Query(f"sum(job:api_requests:rate_per_minute{{{JOB}}})")],
                    "All HTTP requests per minute, averaged over 5 minutes.",
                    unit="reqpm",
                    width=4,
                    height=4,
                ),
                Panel(
                    "p95 latency",
                    "stat",
                    [Query(f"max(job:api_request_latency_seconds:p95_5m{{{JOB}}})")],
                    "95th percentile request latency over 5 minutes (InferenceLatencyHigh "
                    "above 0.5 s).",
                    unit="s",
                    width=4,
                    height=4,
                    threshold=0.5,
                ),
                Panel(
                    "Error rate",
                    "stat",
                    [Query(f"100 * max(job:api_request_errors:ratio_5m{{{JOB}}})")],
                    "Share of requests answered with a 5xx status over 5 minutes "
                    "(PredictionErrorsHigh above 5%).",
                    unit="percent",
                    width=4,
                    height=4,
                    threshold=5,
                    decimals=2,
                ),
                Panel(
                    "Firing alerts",
                    "stat",
                    [Query('count(ALERTS{alertstate="firing"}) or vector(0)')],
                    "Number of alerts firing now (all RPS alert rules).",
                    width=4,
                    height=4,
                    threshold=1,
                ),
            ],
        ),
        Row(
            "Traffic and latency",
            [
                Panel(
                    "Request rate per minute by endpoint",
                    "timeseries",
                    [
                        Query(
                            f"job_endpoint:api_requests:rate_per_minute{{{JOB}}}",
                            "{{endpoint}}",
                        )
                    ],
                    "HTTP requests per minute per endpoint, averaged over 5 minutes.",
                    unit="reqpm",
                ),
                Panel(
                    "Requests per minute by status",
                    "timeseries",
                    [Query(f"job_status:api_requests:rate_per_minute{{{JOB}}}", "{{status}}")],
                    "HTTP requests per minute per response status code.",
                    unit="reqpm",
                ),
                Panel(
                    "Latency: average and p95",
                    "timeseries",
                    [
                        Query(f"job:api_request_latency_seconds:avg_5m{{{JOB}}}", "average"),
                        Query(f"job:api_request_latency_seconds:p95_5m{{{JOB}}}", "p95"),
                        Query(
                            f"job_endpoint:api_request_latency_seconds:p95_5m{{{JOB}}}",
                            "p95 {{endpoint}}",
                        ),
                    ],
                    "Mean and 95th percentile request latency over 5 minutes, overall and per "
                    "endpoint; the red line is the 0.5 s alert threshold.",
                    unit="s",
                    threshold=0.5,
                    minimum=0,
                ),
                Panel(
                    "Error rate %",
                    "timeseries",
                    [
                        Query(f"100 * job:api_request_errors:ratio_5m{{{JOB}}}", "5xx"),
                        Query(f"100 * job:api_request_client_errors:ratio_5m{{{JOB}}}", "4xx"),
                        Query(
                            f"100 * job:prediction_errors:ratio_5m{{{JOB}}}",
                            "refused or failed /predict",
                        ),
                    ],
                    "Server errors (5xx) and client errors (4xx) as a share of all requests, "
                    "and refused or failed /predict requests as a share of /predict requests; "
                    "the red line is PredictionErrorsHigh's 5% threshold (5xx only).",
                    unit="percent",
                    threshold=5,
                    minimum=0,
                ),
            ],
        ),
        Row(
            "Errors and uptime",
            [
                Panel(
                    "Refused or failed predictions by reason",
                    "timeseries",
                    [
                        Query(
                            f"job_reason:prediction_errors:rate_per_minute{{{JOB}}}",
                            "{{reason}}",
                        )
                    ],
                    "Refused or failed /predict requests per minute by reason: input "
                    "validation (client side), no_model, non_finite_prediction.",
                    unit="short",
                ),
                Panel(
                    "Uptime per instance",
                    "timeseries",
                    [Query(f"service_uptime_seconds{{{JOB}}}", "{{instance}}")],
                    "Process uptime of each API instance; drops to zero mark restarts.",
                    unit="s",
                ),
                Panel(
                    "Firing alerts (details)",
                    "table",
                    [Query('ALERTS{alertstate="firing"}', instant=True, fmt="table")],
                    "Alerts firing now with their labels (Prometheus' ALERTS series).",
                    width=24,
                    hide_columns=("Time", "Value", "__name__", "alertstate"),
                ),
            ],
        ),
    ]
    return build_dashboard(
        "rps-service-health",
        "RPS / Service health",
        "Traffic, latency, errors and uptime of the RPS prediction API.",
        rows,
    )


TRAJECTORY_SERIES = ("lower", "prediction", "upper")  # the bound label's values


def model_performance() -> dict[str, Any]:
    """Model performance: throughput, intervals, drift, live accuracy and model version."""
    rows = [
        Row(
            "Model in service",
            [
                Panel(
                    "Model version",
                    "table",
                    [Query(f"model_info{{{JOB}}}", instant=True, fmt="table")],
                    "Registered model name, version and alias the API serves (model_info).",
                    width=8,
                    height=4,
                    hide_columns=("Time", "Value", "__name__"),
                ),
                Panel(
                    "Holdout RMSE",
                    "stat",
                    [Query(f"max(model_holdout_rmse{{{JOB}}})")],
                    "RMSE of the champion on its holdout set at training time.",
                    unit="celsius",
                    width=4,
                    height=4,
                    decimals=2,
                ),
                Panel(
                    "Live RMSE",
                    "stat",
                    [Query(f"max(live_rmse{{{JOB}}})")],
                    "RMSE of recent predictions against the realised temperatures.",
                    unit="celsius",
                    width=4,
                    height=4,
                    decimals=2,
                ),
                Panel(
                    "Live samples",
                    "stat",
                    [Query(f"max(live_samples{{{JOB}}})")],
                    "Predictions joined with their realised truth in the sliding window "
                    "(LiveAccuracyDegraded needs at least 48).",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Predictions per minute",
                    "stat",
                    [Query(f"sum(job:predictions:rate_per_minute{{{JOB}}})")],
                    "Rows predicted per minute over 5 minutes (each row of a batch counts).",
                    width=4,
                    height=4,
                ),
            ],
        ),
        Row(
            "Forecast trajectory",
            [
                Panel(
                    "Forecast trajectory",
                    "trend",
                    [
                        Query(
                            f'max by (horizon_hours) (forecast_trajectory{{{JOB}, bound="{b}"}})',
                            instant=True,
                            fmt="table",
                        )
                        for b in TRAJECTORY_SERIES
                    ],
                    "The served model's forecast from the newest stored observations for every "
                    "hour it forecasts (x: hours ahead of the issue time), inside its 90% "
                    "interval (shaded). A model without a trajectory shows its own horizon only. "
                    "Recomputed at scrape time when the pipeline stores new observations or the "
                    "model changes.",
                    unit="celsius",
                    width=18,
                    height=9,
                    band=Band("horizon_hours", "h", TRAJECTORY_SERIES),
                ),
                Panel(
                    "Trajectory issued at",
                    "stat",
                    [
                        Query(
                            f"1000 * max(forecast_trajectory_issue_timestamp_seconds{{{JOB}}})",
                            instant=True,  # a time: no sparkline
                        )
                    ],
                    "Time of the newest stored observation the trajectory starts from: hour 1 "
                    "of the trajectory is one hour later.",
                    unit="dateTimeAsIso",
                    width=6,
                    height=9,
                ),
            ],
        ),
        Row(
            "Live accuracy",
            [
                Panel(
                    "Live RMSE vs holdout RMSE",
                    "timeseries",
                    [
                        Query(f"live_rmse{{{JOB}}}", "live RMSE"),
                        Query(f"live_mae{{{JOB}}}", "live MAE"),
                        Query(f"model_holdout_rmse{{{JOB}}}", "holdout RMSE"),
                        Query(f"1.5 * model_holdout_rmse{{{JOB}}}", "alert threshold (1.5x)"),
                    ],
                    "Live RMSE and MAE over the sliding window against the champion's holdout "
                    "RMSE; LiveAccuracyDegraded fires when live RMSE stays above 1.5x holdout.",
                    width=16,
                    unit="celsius",
                    minimum=0,
                ),
                Panel(
                    "Live RMSE / holdout RMSE",
                    "timeseries",
                    [Query(f"job:live_rmse:ratio_to_holdout{{{JOB}}}", "ratio")],
                    "1.0 means as accurate as at training time; the red line is the 1.5 alert "
                    "threshold.",
                    width=8,
                    threshold=1.5,
                    minimum=0,
                ),
            ],
        ),
        Row(
            "Predictions",
            [
                Panel(
                    "Prediction throughput",
                    "timeseries",
                    [Query(f"job:predictions:rate_per_minute{{{JOB}}}", "rows / min")],
                    "Rows predicted per minute, averaged over 5 minutes.",
                    width=8,
                ),
                Panel(
                    "Interval width distribution",
                    "heatmap",
                    [
                        Query(
                            "sum by (le) (increase(prediction_confidence_bucket"
                            f"{{{JOB}}}[$__rate_interval]))",
                            "{{le}}",
                            fmt="heatmap",
                        )
                    ],
                    "Histogram of the 90% prediction-interval widths (degC) over time; wider "
                    "intervals mean a less certain model.",
                    width=8,
                    unit="celsius",
                ),
                Panel(
                    "Interval width p50 / p95",
                    "timeseries",
                    [
                        Query(f"job:prediction_confidence:p50_5m{{{JOB}}}", "median"),
                        Query(f"job:prediction_confidence:p95_5m{{{JOB}}}", "p95"),
                    ],
                    "Median and 95th percentile width of the 90% prediction interval.",
                    width=8,
                    unit="celsius",
                    minimum=0,
                ),
                Panel(
                    "Prediction variance",
                    "timeseries",
                    [Query(f"prediction_variance{{{JOB}}}", "variance")],
                    "Variance of the recent point predictions (degC squared); a collapse to "
                    "near zero suggests a stuck model or input.",
                    width=12,
                ),
                Panel(
                    "Interval rescale factor",
                    "timeseries",
                    [
                        Query(
                            "max by (horizon_hours) (interval_rescale_factor"
                            f'{{{JOB}, horizon_hours=~"1|6|12|24|48"}})',
                            "+{{horizon_hours}} h",
                        )
                    ],
                    "The factor each lead time's trained interval is multiplied by, learned "
                    "from its realized errors (1: as trained; below 1: the weather has been "
                    "easier to forecast than the training year's); 1 until enough realized "
                    "values of that lead time are joined.",
                    width=12,
                    threshold=1.0,
                    minimum=0,
                ),
            ],
        ),
        Row(
            "Drift",
            [
                Panel(
                    "Drift checks (DataDriftDetected)",
                    "timeseries",
                    [
                        Query(f"max by (check) (drift_check_ratio{{{JOB}}})", "{{check}}"),
                        Query(f"max(forecast_error_drift_ratio{{{JOB}}})", "forecast_error"),
                    ],
                    "Each drift check's value over its limit, worst worker: the seasonal "
                    "input checks and the forecast-error CUSUM. DataDriftDetected (and "
                    "retraining) when one stays above 1 for 5 minutes.",
                    threshold=1.0,
                    minimum=0,
                ),
                Panel(
                    "Feature anomaly (seasonal)",
                    "timeseries",
                    [
                        Query(
                            f"topk(5, max by (feature_name) (feature_anomaly_ratio{{{JOB}}}))",
                            "{{feature_name}}",
                        )
                    ],
                    "The 5 features whose mean anomaly against their hour-of-day and "
                    "time-of-year climatology is largest, over their limit (the "
                    "seasonal_anomaly check is the largest).",
                    threshold=1.0,
                    minimum=0,
                ),
                Panel(
                    "Stuck sensors (SensorStuck)",
                    "timeseries",
                    [
                        Query(
                            f"max by (variable) (sensor_stuck_hours{{{JOB}}})",
                            "{{variable}}",
                        )
                    ],
                    "Hours the temperature has kept the same value while the implied minus "
                    "measured dew point moved by 1 degC or more; SensorStuck fires at 4 (no "
                    "retraining: the sensor needs fixing).",
                    threshold=4.0,
                    minimum=0,
                ),
                Panel(
                    "Out-of-distribution ratio",
                    "timeseries",
                    [Query(f"out_of_distribution_ratio{{{JOB}}}", "OOD ratio")],
                    "Share of the served rows (newest 500) with at least one feature outside "
                    "its training range (informational: a season the training year did not "
                    "cover also leaves the range).",
                    unit="percentunit",
                    minimum=0,
                    maximum=1,
                    width=24,
                ),
            ],
        ),
        Row(
            "Data and pipeline",
            [
                Panel(
                    "Newest observation age",
                    "stat",
                    [Query(f"max(data_observation_age_seconds{{{JOB}}})")],
                    "Age of the newest weather observation the service has seen, on the "
                    "data's clock (DataStale above 6 h).",
                    unit="s",
                    width=8,
                    height=4,
                    threshold=21600,
                ),
                Panel(
                    "Since last successful pipeline run",
                    "stat",
                    [Query(f"time() - max(pipeline_last_success_timestamp_seconds{{{JOB}}})")],
                    "Time since the data and training pipeline last finished successfully.",
                    unit="s",
                    width=8,
                    height=4,
                ),
                Panel(
                    "Last pipeline run",
                    "stat",
                    [Query(f"max(pipeline_last_run_failed{{{JOB}}})")],
                    "Outcome of the most recent pipeline run (PipelineFailed when failed).",
                    width=8,
                    height=4,
                    mappings=FAILED_MAPPING,
                    threshold=1,
                ),
            ],
        ),
    ]
    return build_dashboard(
        "rps-model-performance",
        "RPS / Model performance",
        "Throughput, prediction intervals, drift, live accuracy and the model in service.",
        rows,
    )


CONTAINER = 'name!=""'
HOST_FS = 'fstype!~"tmpfs|overlay|squashfs|nsfs"'
HOST_NIC = 'device!~"lo|veth.*|docker.*|br-.*"'


def infrastructure() -> dict[str, Any]:
    """Infrastructure: container (cAdvisor) and host (node-exporter) resources."""
    rows = [
        Row(
            "Containers (cAdvisor)",
            [
                Panel(
                    "Container CPU",
                    "timeseries",
                    [
                        Query(
                            "sum by (name) (rate(container_cpu_usage_seconds_total"
                            f"{{{CONTAINER}}}[$__rate_interval]))",
                            "{{name}}",
                        )
                    ],
                    "CPU cores used by each compose container.",
                    unit="short",
                    minimum=0,
                ),
                Panel(
                    "Container memory",
                    "timeseries",
                    [
                        Query(
                            f"sum by (name) (container_memory_working_set_bytes{{{CONTAINER}}})",
                            "{{name}}",
                        )
                    ],
                    "Working-set memory of each container (what the OOM killer looks at).",
                    unit="bytes",
                    minimum=0,
                ),
                Panel(
                    "Container network",
                    "timeseries",
                    [
                        Query(
                            "sum by (name) (rate(container_network_receive_bytes_total"
                            f"{{{CONTAINER}}}[$__rate_interval]))",
                            "{{name}} received",
                        ),
                        Query(
                            "-sum by (name) (rate(container_network_transmit_bytes_total"
                            f"{{{CONTAINER}}}[$__rate_interval]))",
                            "{{name}} sent",
                        ),
                    ],
                    "Network bytes per second received (up) and sent (down) per container.",
                    unit="Bps",
                ),
                Panel(
                    "Container disk I/O",
                    "timeseries",
                    [
                        Query(
                            "sum by (name) (rate(container_fs_reads_bytes_total"
                            f"{{{CONTAINER}}}[$__rate_interval]))",
                            "{{name}} read",
                        ),
                        Query(
                            "-sum by (name) (rate(container_fs_writes_bytes_total"
                            f"{{{CONTAINER}}}[$__rate_interval]))",
                            "{{name}} written",
                        ),
                    ],
                    "Disk bytes per second read (up) and written (down) per container.",
                    unit="Bps",
                ),
            ],
        ),
        Row(
            "Host (node-exporter)",
            [
                Panel(
                    "Host CPU usage",
                    "timeseries",
                    [
                        Query(
                            "100 * (1 - avg by (instance) (rate(node_cpu_seconds_total"
                            '{mode="idle"}[$__rate_interval])))',
                            "{{instance}}",
                        )
                    ],
                    "Share of host CPU time not idle, all cores.",
                    width=8,
                    unit="percent",
                    minimum=0,
                    maximum=100,
                    threshold=90,
                ),
                Panel(
                    "Host memory used",
                    "timeseries",
                    [
                        Query(
                            "100 * (1 - node_memory_MemAvailable_bytes"
                            " / node_memory_MemTotal_bytes)",
                            "{{instance}}",
                        )
                    ],
                    "Share of host memory not available to new processes.",
                    width=8,
                    unit="percent",
                    minimum=0,
                    maximum=100,
                    threshold=90,
                ),
                Panel(
                    "Host load",
                    "timeseries",
                    [
                        Query("node_load1", "1m"),
                        Query("node_load5", "5m"),
                        Query("node_load15", "15m"),
                    ],
                    "Load averages; compare with the number of cores.",
                    width=8,
                    minimum=0,
                ),
                Panel(
                    "Host disk space used",
                    "timeseries",
                    [
                        Query(
                            f"100 * (1 - node_filesystem_avail_bytes{{{HOST_FS}}}"
                            f" / node_filesystem_size_bytes{{{HOST_FS}}})",
                            "{{mountpoint}}",
                        )
                    ],
                    "Share of each real filesystem in use (volumes, data, TSDB).",
                    width=8,
                    unit="percent",
                    minimum=0,
                    maximum=100,
                    threshold=85,
                ),
                Panel(
                    "Host disk I/O",
                    "timeseries",
                    [
                        Query(
                            "sum by (instance) (rate(node_disk_read_bytes_total"
                            "[$__rate_interval]))",
                            "read",
                        ),
                        Query(
                            "-sum by (instance) (rate(node_disk_written_bytes_total"
                            "[$__rate_interval]))",
                            "written",
                        ),
                    ],
                    "Host disk bytes per second read (up) and written (down).",
                    width=8,
                    unit="Bps",
                ),
                Panel(
                    "Host network",
                    "timeseries",
                    [
                        Query(
                            "sum by (instance) (rate(node_network_receive_bytes_total"
                            f"{{{HOST_NIC}}}[$__rate_interval]))",
                            "received",
                        ),
                        Query(
                            "-sum by (instance) (rate(node_network_transmit_bytes_total"
                            f"{{{HOST_NIC}}}[$__rate_interval]))",
                            "sent",
                        ),
                    ],
                    "Host network bytes per second on physical interfaces.",
                    width=8,
                    unit="Bps",
                ),
            ],
        ),
        Row(
            "Scrape targets",
            [
                Panel(
                    "Targets up",
                    "timeseries",
                    [Query("up", "{{job}} {{instance}}")],
                    "1 when Prometheus scraped the target successfully, 0 when not.",
                    width=24,
                    minimum=0,
                    maximum=1,
                    mappings=UP_MAPPING,
                ),
            ],
        ),
    ]
    return build_dashboard(
        "rps-infrastructure",
        "RPS / Infrastructure",
        "CPU, memory, network and disk of the compose containers and the host.",
        rows,
    )


DASHBOARDS = {
    "service-health.json": service_health,
    "model-performance.json": model_performance,
    "infrastructure.json": infrastructure,
}


def render_all() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        name: json.dumps(build(), indent=2, sort_keys=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    """Write the dashboards, or with ``--check`` report whether the committed ones are current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON is out of date")
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR, help="output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stale = []
    for name, text in render_all().items():
        path = args.out / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(name)
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            logger.info("wrote %s", path)
    if stale:
        logger.error("out of date: %s (run %s)", ", ".join(stale), Path(__file__).name)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
