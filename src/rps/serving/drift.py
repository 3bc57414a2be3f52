"""Input drift of served feature rows against the model's seasonal training reference.

Per request, each row is checked against the training range (``min``/``max`` of the bundle's
``reference_stats``): the out-of-range features are returned to the caller. A
:class:`DriftMonitor` per worker keeps the last ``window_size`` rows in a ring buffer and
recomputes, every ``recompute_every`` rows or ``recompute_seconds`` (never per request):

* the out-of-distribution ratio (rows with a feature outside the training range) and the
  variance of the predictions, over the whole ring (dashboard gauges);
* over the newest ``window`` rows (one row an hour in production; the window is part of the
  bundle's seasonal reference, :mod:`rps.serving.seasonal`), two checks, each as a ratio to
  its limit (above 1: drift): ``seasonal_anomaly`` (the largest per-feature ``|mean anomaly|``
  against the feature's calendar-conditioned climatology) and ``humidity_consistency``
  (the window median of implied minus measured dew point);
* over the newest week of the ring, ``humidity_change``: the CUSUM of the humidity residual's
  moves from its own previous 24 h, over its threshold
  (:func:`rps.serving.seasonal.humidity_change_path`, parameters ``drift.humidity_*``);
* over the whole ring, the hours the temperature has been unchanged while the humidity
  residual moved (``stuck``, :func:`rps.serving.seasonal.stuck_hours`): a sensor fault,
  published apart from the drift checks and alerted on by its own rule.

A bundle without a seasonal reference (trained before it existed) gets the range check and
the ratios over the ring only. The forecast-error check runs on the shared prediction log
(:mod:`rps.serving.accuracy`), not here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rps.params import DriftParams
from rps.serving.seasonal import (
    SEASONAL_KEY,
    HumidityChangeTest,
    SeasonalReference,
    SeasonalReferenceError,
)

logger = logging.getLogger(__name__)

CHECKS: tuple[str, ...] = ("seasonal_anomaly", "humidity_consistency", "humidity_change")
"""The input checks, the ``check`` label of ``drift_check_ratio``."""


def training_bounds(
    feature_names: Sequence[str], reference_stats: Mapping[str, Mapping[str, Any]]
) -> tuple[np.ndarray, np.ndarray]:
    """The training ``[min, max]`` of each feature, ``-inf``/``inf`` where unknown.

    Args:
        feature_names: The model's feature order.
        reference_stats: Per feature ``min``/``max`` (other keys ignored).

    Returns:
        Two float arrays in feature order: lower and upper bounds.
    """
    lower = np.full(len(feature_names), -np.inf)
    upper = np.full(len(feature_names), np.inf)
    for i, name in enumerate(feature_names):
        stats = reference_stats.get(name) or {}
        low, high = _finite(stats.get("min")), _finite(stats.get("max"))
        if low is not None:
            lower[i] = low
        if high is not None:
            upper[i] = high
    return lower, upper


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class ReferenceProfile:
    """The training reference of a served model, prepared for the monitor.

    Attributes:
        n_features: Width of the model's rows.
        seasonal: The seasonal reference, or None when the bundle has none.
    """

    n_features: int
    seasonal: SeasonalReference | None

    @property
    def names(self) -> list[str]:
        """Tracked feature names (empty without a seasonal reference)."""
        return self.seasonal.names if self.seasonal is not None else []

    @classmethod
    def build(
        cls,
        feature_names: Sequence[str],
        reference_stats: Mapping[str, Any],
        reference_sample: np.ndarray | None = None,
    ) -> ReferenceProfile:
        """Prepare the reference from a bundle's statistics.

        Args:
            feature_names: The model's feature order.
            reference_stats: The bundle's statistics; the seasonal reference is read from
                its :data:`~rps.serving.seasonal.SEASONAL_KEY` entry.
            reference_sample: Unused (kept for the bundle interface).

        Returns:
            The profile; a missing or malformed seasonal reference is logged and left out.
        """
        del reference_sample
        seasonal = None
        raw = reference_stats.get(SEASONAL_KEY)
        if isinstance(raw, Mapping):
            try:
                seasonal = SeasonalReference.from_json(feature_names, raw)
            except SeasonalReferenceError as exc:
                logger.warning("drift: %s; only the range check runs", exc)
        else:
            logger.warning("drift: the bundle has no seasonal reference; only the range check runs")
        return cls(n_features=len(feature_names), seasonal=seasonal)


@dataclass(frozen=True)
class DriftSnapshot:
    """Drift statistics of one window.

    Attributes:
        samples: Rows in the ring.
        ood_ratio: Share of the ring's rows with a feature outside the training range.
        prediction_variance: Variance of the ring's point forecasts.
        window: Rows behind the window checks and ``feature_anomaly`` (0: not computed yet;
            ``humidity_change`` reads up to the newest week of the ring).
        checks: Per check of :data:`CHECKS`, its value over its limit (above 1: drift).
        feature_anomaly: Per tracked feature, ``|mean anomaly|`` over its limit.
        stuck: Keyed by ``temperature_2m``, the newest rows over which the temperature stayed
            unchanged while the humidity residual moved (0: not stuck); not a drift check.
    """

    samples: int
    ood_ratio: float
    prediction_variance: float
    window: int = 0
    checks: dict[str, float] = field(default_factory=dict)
    feature_anomaly: dict[str, float] = field(default_factory=dict)
    stuck: dict[str, int] = field(default_factory=dict)

    def drifted(self) -> list[str]:
        """The checks above their limit."""
        return sorted(name for name, ratio in self.checks.items() if ratio > 1.0)

    def top_features(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` features with the largest anomaly ratio."""
        return sorted(self.feature_anomaly.items(), key=lambda kv: -kv[1])[:k]


def input_checks(
    reference: SeasonalReference, rows: np.ndarray
) -> tuple[dict[str, float], dict[str, float]]:
    """The check ratios and per-feature anomaly ratios of consecutive rows (a window).

    Args:
        reference: The seasonal reference.
        rows: ``(n, n_features)`` rows in arrival order (one an hour in production).

    Returns:
        ``(checks, feature_anomaly)`` as in :class:`DriftSnapshot`.
    """
    anomaly = np.abs(reference.anomalies(rows).mean(axis=0)) / reference.anomaly_limit
    checks = {"seasonal_anomaly": float(anomaly.max()) if anomaly.size else 0.0}
    if reference.humidity.size:
        gap = float(np.abs(np.median(reference.humidity_residual(rows))))
        checks["humidity_consistency"] = gap / reference.humidity_limit
    features = {n: float(v) for n, v in zip(reference.names, anomaly, strict=True)}
    return checks, features


class DriftMonitor:
    """A ring of served rows and its periodically recomputed drift statistics.

    Not thread-safe: one monitor per worker, used from the event loop only.
    """

    def __init__(
        self,
        profile: ReferenceProfile,
        *,
        n_features: int,
        window_size: int,
        recompute_every: int | None = None,
        min_interval_seconds: float = 1.0,
        recompute_seconds: float = 10.0,
        min_samples: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        humidity_test: HumidityChangeTest | None = None,
    ) -> None:
        """Create an empty ring.

        Args:
            profile: The training reference.
            n_features: Width of the rows passed to :meth:`observe` (the model's features).
            window_size: Rows kept (the OOD ratio's window; at least the checks' window).
            recompute_every: Recompute after this many new rows; default ``window_size // 10``.
            min_interval_seconds: ... but not more often than this.
            recompute_seconds: Recompute after this long when new rows arrived meanwhile.
            min_samples: Rows needed before the first computation; default the checks'
                window (or ``min(window_size, 100)`` without a seasonal reference).
            clock: Monotonic seconds (injectable for tests).
            humidity_test: The humidity-change CUSUM's parameters (default: params.yaml's
                defaults).
        """
        seasonal_window = profile.seasonal.window if profile.seasonal is not None else 0
        self.profile = profile
        self.n_features = n_features
        self.window_size = max(window_size, seasonal_window)
        self.recompute_every = recompute_every or max(1, self.window_size // 10)
        self.min_interval_seconds = min_interval_seconds
        self.recompute_seconds = recompute_seconds
        self.min_samples = min_samples or seasonal_window or min(self.window_size, 100)
        self._clock = clock
        self.humidity_test = humidity_test or DriftParams().humidity_test()
        self._rows = np.zeros((self.window_size, n_features))
        self._ood = np.zeros(self.window_size, dtype=bool)
        self._predictions = np.zeros(self.window_size)
        self._next = 0
        self._count = 0
        self._pending = 0
        self._last_compute = clock()
        self.last: DriftSnapshot | None = None

    @property
    def samples(self) -> int:
        """Rows currently in the ring."""
        return self._count

    def observe(
        self, rows: np.ndarray, ood_rows: np.ndarray, predictions: np.ndarray
    ) -> DriftSnapshot | None:
        """Add served rows; recompute when due.

        A row equal to the one observed just before it is not added again: clients that poll
        (a dashboard asking ``/forecast`` every few seconds) repeat the same hour's row, and the
        checks' window must hold distinct hours, not one hour many times.

        Args:
            rows: ``(k, n_features)`` feature rows in the model's order.
            ood_rows: ``(k,)`` whether each row had an out-of-range feature.
            predictions: ``(k,)`` point forecasts.

        Returns:
            A new snapshot when one was computed, else None.
        """
        if rows.shape[0] == 1:  # one request, one row: the hot path, without temporaries
            # (a == b).all(): np.array_equal's answer for rows of one shape, without its checks
            if self._count and (rows[0] == self._rows[self._next - 1]).all():
                return None
            self._rows[self._next] = rows[0]
            self._ood[self._next] = ood_rows[0]
            self._predictions[self._next] = predictions[0]
            self._next = (self._next + 1) % self.window_size
            self._count = min(self._count + 1, self.window_size)
            k = 1
        else:
            k = self._store(rows, ood_rows, predictions)
            if k == 0:
                return None
        self._pending += k
        if self._count < self.min_samples:
            return None
        if self.last is None:
            return self.compute()
        elapsed = self._clock() - self._last_compute
        if elapsed >= self.recompute_seconds or (
            self._pending >= self.recompute_every and elapsed >= self.min_interval_seconds
        ):
            return self.compute()
        return None

    def _store(self, rows: np.ndarray, ood_rows: np.ndarray, predictions: np.ndarray) -> int:
        """Add a batch of rows to the ring, each unless equal to the row before it; return k."""
        if rows.shape[0] and self._count:
            previous = self._rows[(self._next - 1) % self.window_size]
            keep = ~np.all(rows == np.vstack([previous, rows[:-1]]), axis=1)
            rows, ood_rows, predictions = rows[keep], ood_rows[keep], predictions[keep]
        elif rows.shape[0] > 1:
            keep = np.concatenate([[True], ~np.all(rows[1:] == rows[:-1], axis=1)])
            rows, ood_rows, predictions = rows[keep], ood_rows[keep], predictions[keep]
        k = rows.shape[0]
        if k >= self.window_size:
            self._rows[:] = rows[-self.window_size :]
            self._ood[:] = ood_rows[-self.window_size :]
            self._predictions[:] = predictions[-self.window_size :]
            self._next = 0
            self._count = self.window_size
        elif k:
            slots = (self._next + np.arange(k)) % self.window_size
            self._rows[slots] = rows
            self._ood[slots] = ood_rows
            self._predictions[slots] = predictions
            self._next = int((self._next + k) % self.window_size)
            self._count = min(self._count + k, self.window_size)
        return int(k)

    def refresh(self) -> DriftSnapshot | None:
        """Recompute now if rows arrived since the last computation (e.g. before a scrape)."""
        if self._pending == 0 or self._count < self.min_samples:
            return None
        return self.compute()

    def _newest(self, n: int) -> np.ndarray:
        order = (self._next - n + np.arange(n)) % self.window_size
        rows: np.ndarray = self._rows[order]
        return rows

    def compute(self) -> DriftSnapshot:
        """Recompute the statistics of the current ring (also when below ``min_samples``)."""
        self._pending = 0
        self._last_compute = self._clock()
        n = self._count
        if n == 0:
            self.last = DriftSnapshot(samples=0, ood_ratio=0.0, prediction_variance=0.0)
            return self.last
        checks: dict[str, float] = {}
        features: dict[str, float] = {}
        stuck: dict[str, int] = {}
        window = 0
        seasonal = self.profile.seasonal
        if seasonal is not None and n >= seasonal.window:
            window = seasonal.window
            ring = self._newest(n)
            checks, features = input_checks(seasonal, ring[-window:])
            change = seasonal.humidity_change(ring, self.humidity_test)
            if change is not None:
                checks["humidity_change"] = change
            stuck = seasonal.stuck(ring)
        self.last = DriftSnapshot(
            samples=n,
            ood_ratio=float(self._ood[:n].mean()),
            prediction_variance=float(self._predictions[:n].var()),
            window=window,
            checks=checks,
            feature_anomaly=features,
            stuck=stuck,
        )
        return self.last

    def seed_from(self, other: DriftMonitor) -> None:
        """Start from another monitor's ring (after a model swap with the same features).

        Rows are copied when both monitors take rows of the same width and track the same
        features; otherwise the ring stays empty.
        """
        if other.profile.names != self.profile.names or other.n_features != self.n_features:
            return
        n = min(other._count, self.window_size)
        if n == 0:
            return
        order = (other._next - n + np.arange(n)) % other.window_size
        self._rows[:n] = other._rows[order]
        self._ood[:n] = other._ood[order]
        self._predictions[:n] = other._predictions[order]
        self._count = n
        self._next = n % self.window_size
        self._pending = n
