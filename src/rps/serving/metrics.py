"""Prometheus metrics of the prediction service, correct with one or several worker processes.

With several workers (``rps serve --workers N``) the launcher points ``PROMETHEUS_MULTIPROC_DIR``
at an emptied folder before any worker imports ``prometheus_client``; every worker then writes its
samples to memory-mapped files there and ``/metrics`` (answered by any worker) aggregates them:
counters and histograms are summed, gauges use the multiprocess mode named at their definition
(``livemostrecent``: the value most recently set by a live worker).

Values that are a function of "now" or of a file (uptime, the pipeline status, the served
model's identity, the forecast trajectory from the stored observations) are not stored: a
collector computes them at scrape time, so every worker answers the same without a gauge mode.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rps.serving.launcher import MULTIPROC_ENV

if TYPE_CHECKING:
    from rps.serving.accuracy import LiveAccuracy
    from rps.serving.drift import DriftSnapshot
    from rps.serving.predictor import ServedModel
    from rps.serving.service import PublishedTrajectory
    from rps.settings import Settings

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
INTERVAL_WIDTH_BUCKETS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0)
PIPELINE_STATUS_FILE = "pipeline_status.json"
# (key in the status file, metric name, help text) of the status file's timestamps
_PIPELINE_TIMESTAMPS = (
    (
        "last_success_at",
        "pipeline_last_success_timestamp_seconds",
        "Unix time of the last successful pipeline run.",
    ),
    (
        "last_observation_at",
        "data_last_observation_timestamp_seconds",
        "Unix time of the newest observation the pipeline stored.",
    ),
)


def multiprocess_enabled() -> bool:
    """Whether ``prometheus_client`` writes to a shared multiprocess folder.

    The folder must be set before ``prometheus_client`` is first imported; when it was set later
    the process still keeps its metrics in memory, and so exposes them itself.
    """
    if not os.environ.get(MULTIPROC_ENV):
        return False
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        logger.warning(
            "%s is set but prometheus_client was imported before it: single-process metrics",
            MULTIPROC_ENV,
        )
        return False
    return True


def _iso_timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def data_clock_now(settings: Settings, *, default_anchor: float) -> float:
    """Unix time "now" on the data's clock: for the replay source the replay clock every
    process shares (``origin + (wall - anchor) * speed``, as
    :class:`rps.data.sources.replay.ReplayClock` computes it, here without pandas; a naive
    setting is UTC), else wall time. ``default_anchor``: the anchor when none is set."""
    wall = time.time()
    if settings.source != "replay":
        return wall

    def unix(value: datetime | None, default: float) -> float:
        if value is None:
            return default
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()

    anchor = unix(settings.replay_anchor, default_anchor)
    return unix(settings.replay_origin, anchor) + (wall - anchor) * settings.replay_speed


@dataclass(kw_only=True, eq=False)  # eq=False: the registry keys collectors by identity
class RuntimeCollector(Collector):
    """Scrape-time metrics: uptime, the served model, live accuracy, the pipeline status file
    and the forecast trajectory.

    Live accuracy is read from the prediction log that all workers share, so every worker
    answers the same; ``live_rmse``/``live_mae`` are absent until a prediction has been joined
    (a gauge would read 0, a perfect score, before any feedback).

    Attributes:
        started_at: Unix time the service started (the launcher's, shared by workers).
        status_file: ``pipeline_status.json`` written by the pipeline.
        model_name: The registered model name (label of ``model_info``).
        current_model: Returns the model this worker serves now.
        live_accuracy: Returns the live accuracy (None without a prediction log).
        trajectory: Returns the trajectory to publish (None: nothing to publish).
        interval_factors: Returns the interval rescale factor of each lead time served
            (None or empty: the rescale is off).
        data_now: Returns "now" on the data's clock as Unix time (the replay clock's time for
            the replay source, else wall time): ``data_observation_age_seconds`` is measured
            on it, so a replay that runs faster than the wall clock is not "stale".
    """

    started_at: float
    status_file: Path
    model_name: str
    current_model: Callable[[], ServedModel | None]
    live_accuracy: Callable[[], LiveAccuracy | None]
    trajectory: Callable[[], PublishedTrajectory | None] | None = None
    interval_factors: Callable[[], Mapping[int, float]] | None = None
    data_now: Callable[[], float] = time.time

    def describe(self) -> list[Metric]:
        """Nothing to pre-register (names are unique to this collector)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield the current values."""
        yield GaugeMetricFamily(
            "service_uptime_seconds",
            "Seconds since the prediction service started.",
            value=max(0.0, time.time() - self.started_at),
        )
        model = self.current_model()
        if model is not None:
            info = GaugeMetricFamily(
                "model_info",
                "The served model (value 1): registered name, version and alias.",
                labels=["name", "version", "alias"],
            )
            info.add_metric([self.model_name, model.version, model.alias], 1.0)
            yield info
            yield from self._trajectory(model)
            holdout = model.bundle.metrics.get("holdout_rmse")
            if holdout is not None and math.isfinite(holdout):
                yield GaugeMetricFamily(
                    "model_holdout_rmse",
                    "RMSE of the served model on its training holdout.",
                    value=holdout,
                )
        yield from self._live_accuracy()
        yield from self._interval_factors()
        yield from self._pipeline_status()

    def _interval_factors(self) -> Iterator[Metric]:
        if self.interval_factors is None:
            return
        try:
            factors = self.interval_factors()
        except Exception as exc:  # a locked or damaged log must not break the scrape
            logger.warning("interval factors unavailable: %s", exc)
            return
        if not factors:
            return
        gauge = GaugeMetricFamily(
            "interval_rescale_factor",
            "Factor applied to the trained interval of each lead time, learned from the "
            "realized errors of that lead time (1: as trained; below 1: narrower).",
            labels=["horizon_hours"],
        )
        for hours, factor in sorted(factors.items()):
            gauge.add_metric([str(hours)], factor)
        yield gauge

    def _trajectory(self, model: ServedModel) -> Iterator[Metric]:
        published = self.trajectory() if self.trajectory is not None else None
        if published is None or published.model is not model:  # swapped since the refresh
            return
        forecast = GaugeMetricFamily(
            "forecast_trajectory",
            "The served model's forecast from the newest stored observations, in the target's "
            "unit, by lead time: the prediction and its interval bounds.",
            labels=["horizon_hours", "bound"],
        )
        for point in published.points:
            hours = str(point["horizon_hours"])
            forecast.add_metric([hours, "lower"], point["lower"])
            forecast.add_metric([hours, "prediction"], point["prediction"])
            forecast.add_metric([hours, "upper"], point["upper"])
        yield forecast
        yield GaugeMetricFamily(
            "forecast_trajectory_issue_timestamp_seconds",
            "Unix time of the newest stored observation the forecast trajectory starts from.",
            value=published.window.issue_time.timestamp(),
        )

    def _live_accuracy(self) -> Iterator[Metric]:
        try:
            live = self.live_accuracy()
        except Exception as exc:  # a locked or damaged log must not break the scrape
            logger.warning("live accuracy unavailable: %s", exc)
            return
        if live is None:
            return
        yield GaugeMetricFamily(
            "live_samples",
            "Joined predictions behind live_rmse and live_mae.",
            value=float(live.samples),
        )
        if live.error_drift is not None:
            yield GaugeMetricFamily(
                "forecast_error_drift_ratio",
                "Forecast-error CUSUM over its threshold (above 1: the errors have grown).",
                value=live.error_drift,
            )
        if live.rmse is not None and live.mae is not None:
            yield GaugeMetricFamily(
                "live_rmse",
                "RMSE of the newest predictions joined to realized values.",
                value=live.rmse,
            )
            yield GaugeMetricFamily(
                "live_mae",
                "MAE of the newest predictions joined to realized values.",
                value=live.mae,
            )

    def _pipeline_status(self) -> Iterator[Metric]:
        try:
            status = json.loads(self.status_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            logger.warning("cannot read %s: %s", self.status_file, exc)
            return
        if not isinstance(status, dict):
            return
        for key, name, documentation in _PIPELINE_TIMESTAMPS:
            stamp = _iso_timestamp(status.get(key))
            if stamp is not None:
                yield GaugeMetricFamily(name, documentation, value=stamp)
            if stamp is not None and key == "last_observation_at":
                yield GaugeMetricFamily(
                    "data_observation_age_seconds",
                    "Age of the newest stored observation on the data's clock (DataStale).",
                    value=self.data_now() - stamp,
                )
        failed = status.get("last_run_failed")
        if isinstance(failed, bool):
            yield GaugeMetricFamily(
                "pipeline_last_run_failed",
                "1 when the last pipeline run failed, else 0.",
                value=float(failed),
            )


class ServingMetrics:
    """The service's metric objects and their exposition."""

    def __init__(self, runtime: RuntimeCollector) -> None:
        """Define the metrics (in a private registry, so several apps can share a process).

        Args:
            runtime: The scrape-time collector to expose alongside.
        """
        self.multiprocess = multiprocess_enabled()
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "api_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "endpoint", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "api_request_latency_seconds",
            "Request latency by route template.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.predictions = Counter(
            "predictions", "Rows predicted (each row of a batch counts).", registry=registry
        )
        self.prediction_errors = Counter(
            "prediction_errors",
            "Prediction requests refused or failed, by reason.",
            ["reason"],
            registry=registry,
        )
        # created at the first drift computation: an unlabelled gauge would read 0 before it
        self.ood_ratio: Gauge | None = None
        self.prediction_variance: Gauge | None = None
        self.drift_check = Gauge(
            "drift_check_ratio",
            "Input drift check value over its limit (above 1: drift), by check.",
            ["check"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.feature_anomaly = Gauge(
            "feature_anomaly_ratio",
            "|Mean seasonal anomaly| of a feature over the drift window, over its limit.",
            ["feature_name"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.sensor_stuck = Gauge(
            "sensor_stuck_hours",
            "Hours the temperature has been unchanged while the humidity residual moved.",
            ["variable"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.prediction_confidence = Histogram(
            "prediction_confidence",
            "Width of the prediction interval (upper - lower), in target units.",
            buckets=INTERVAL_WIDTH_BUCKETS,
            registry=registry,
        )
        self.model_swaps = Counter(
            "model_swaps",
            "Model reloads and rollbacks by outcome.",
            ["action", "result"],
            registry=registry,
        )
        self.model_reload_failures = Counter(
            "model_reload_failures",
            "Candidate models refused, by the check that failed (download, checksum, load, smoke).",
            ["reason"],
            registry=registry,
        )
        registry.register(runtime)
        if self.multiprocess:
            from prometheus_client import multiprocess

            self._exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._exposed)  # type: ignore[no-untyped-call]
            self._exposed.register(runtime)
        else:
            from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                registry.register(collector)
            self._exposed = registry
        self._latency_children: dict[str, Histogram] = {}
        self._request_children: dict[tuple[str, str, int], Counter] = {}

    def observe_request(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        """Count one request and its latency."""
        latency = self._latency_children.get(endpoint)
        if latency is None:
            latency = self._latency_children[endpoint] = self.latency.labels(endpoint=endpoint)
        latency.observe(seconds)
        key = (method, endpoint, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(
                method=method, endpoint=endpoint, status=str(status)
            )
        counter.inc()

    def set_drift(self, snapshot: DriftSnapshot) -> None:
        """Publish a drift window's statistics."""
        if self.ood_ratio is None or self.prediction_variance is None:
            self.ood_ratio = Gauge(
                "out_of_distribution_ratio",
                "Share of the window's rows with a feature outside the training range.",
                registry=self.registry,
                multiprocess_mode="livemostrecent",
            )
            self.prediction_variance = Gauge(
                "prediction_variance",
                "Variance of the point forecasts in the drift window.",
                registry=self.registry,
                multiprocess_mode="livemostrecent",
            )
        self.ood_ratio.set(snapshot.ood_ratio)
        self.prediction_variance.set(snapshot.prediction_variance)
        for name, value in snapshot.checks.items():
            self.drift_check.labels(check=name).set(value)
        for name, value in snapshot.feature_anomaly.items():
            self.feature_anomaly.labels(feature_name=name).set(value)
        for name, hours in snapshot.stuck.items():
            self.sensor_stuck.labels(variable=name).set(hours)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self._exposed), CONTENT_TYPE_LATEST

    def worker_exit(self) -> None:
        """Drop this worker's live gauges from the multiprocess folder (at shutdown)."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
