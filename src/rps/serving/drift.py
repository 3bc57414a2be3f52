"""Input drift against the training reference, over a sliding window of served feature rows.

Per request, each row is checked against the training range (``min``/``max`` of the bundle's
``reference_stats``): the out-of-range features are returned to the caller. Over the last
``window_size`` rows (per worker process) a :class:`DriftMonitor` keeps a ring buffer and
recomputes, every ``recompute_every`` rows or ``recompute_seconds`` (never per request):

* mean shift: ``|mean(window) - mean(train)| / std(train)``, in training standard deviations;
* the two-sample Kolmogorov-Smirnov statistic against the bundle's ``reference_sample``;
* the population stability index over the training deciles (expected shares measured on the
  reference sample, so tied deciles of discrete features do not distort it);
* the out-of-distribution ratio: the share of rows with at least one out-of-range feature;
* the variance of the predictions in the window.

A recomputation costs a few milliseconds (KS and PSI for ~90 features), so it runs at most once
per ``min_interval_seconds`` under load, and ``GET /metrics`` refreshes a stale window first.

Calendar features (``target_hour``, ``target_month``, ...) are deterministic functions of the
clock: a window of a few days always "drifts" from a training year on them, so they are checked
for range but left out of the distribution statistics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rps.params import DriftParams

CALENDAR_PREFIXES: tuple[str, ...] = ("target_",)
DECILES: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 10))
_PSI_FLOOR = 1e-4


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


def _quantile_edges(stats: Mapping[str, Any]) -> list[tuple[float, float]]:
    """``(level, value)`` of the training deciles (or of all quantiles when deciles lack)."""
    raw = stats.get("quantiles")
    if not isinstance(raw, Mapping):
        return []
    levels: list[tuple[float, float]] = []
    for key, value in raw.items():
        try:
            level = float(key)
        except (TypeError, ValueError):
            continue
        number = _finite(value)
        if number is not None and 0.0 < level < 1.0:
            levels.append((level, number))
    deciles = [(q, v) for q, v in levels if any(abs(q - d) < 1e-6 for d in DECILES)]
    chosen = deciles if len(deciles) >= 2 else levels
    return sorted(chosen)


@dataclass(frozen=True)
class ReferenceProfile:
    """The training reference of the drift-tracked features, prepared for fast comparison.

    Attributes:
        names: Tracked feature names (non-calendar features with a mean and a std).
        columns: Their indices in the model's feature order.
        mean: Training means.
        std: Training standard deviations (zero replaced by one, so shifts stay finite).
        sorted_sample: Per tracked feature, the finite reference-sample values, sorted
            (empty when the bundle has no reference sample: KS is then not computed).
        psi_edges: Per tracked feature, the distinct decile values (bin upper edges).
        psi_expected: Per tracked feature, the reference share of each of the
            ``len(edges) + 1`` bins (empty when PSI cannot be computed).
    """

    names: list[str]
    columns: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    sorted_sample: list[np.ndarray]
    psi_edges: list[np.ndarray]
    psi_expected: list[np.ndarray]

    @classmethod
    def build(
        cls,
        feature_names: Sequence[str],
        reference_stats: Mapping[str, Mapping[str, Any]],
        reference_sample: np.ndarray | None,
        *,
        exclude_prefixes: Sequence[str] = CALENDAR_PREFIXES,
    ) -> ReferenceProfile:
        """Prepare the reference from a bundle's statistics and sample.

        Args:
            feature_names: The model's feature order.
            reference_stats: Per feature ``mean``, ``std``, ``min``, ``max``, ``quantiles``.
            reference_sample: Training rows (``n x len(feature_names)``) or None.
            exclude_prefixes: Feature-name prefixes left out of the statistics.

        Returns:
            The profile (possibly tracking no feature when the statistics are missing).
        """
        sample = None
        if reference_sample is not None:
            sample = np.asarray(reference_sample, dtype=float)
            if sample.ndim != 2 or sample.shape[1] != len(feature_names):
                sample = None
        names: list[str] = []
        columns: list[int] = []
        means: list[float] = []
        stds: list[float] = []
        sorted_sample: list[np.ndarray] = []
        edges_list: list[np.ndarray] = []
        expected_list: list[np.ndarray] = []
        for index, name in enumerate(feature_names):
            if any(name.startswith(prefix) for prefix in exclude_prefixes):
                continue
            stats = reference_stats.get(name) or {}
            mean, std = _finite(stats.get("mean")), _finite(stats.get("std"))
            if mean is None or std is None:
                continue
            names.append(name)
            columns.append(index)
            means.append(mean)
            stds.append(std if std > 0 else 1.0)
            column = np.empty(0)
            if sample is not None:
                column = np.sort(sample[:, index][np.isfinite(sample[:, index])])
            sorted_sample.append(column)
            edges, expected = _psi_reference(_quantile_edges(stats), column)
            edges_list.append(edges)
            expected_list.append(expected)
        return cls(
            names=names,
            columns=np.asarray(columns, dtype=int),
            mean=np.asarray(means, dtype=float),
            std=np.asarray(stds, dtype=float),
            sorted_sample=sorted_sample,
            psi_edges=edges_list,
            psi_expected=expected_list,
        )


def _psi_reference(
    quantiles: list[tuple[float, float]], sorted_column: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if not quantiles:
        if sorted_column.size < 10:
            return np.empty(0), np.empty(0)
        quantiles = [(q, float(np.quantile(sorted_column, q))) for q in DECILES]
    # tied deciles (a discrete feature) collapse into one edge with the highest level
    by_value: dict[float, float] = {}
    for level, value in quantiles:
        by_value[value] = max(level, by_value.get(value, 0.0))
    edges = np.asarray(sorted(by_value), dtype=float)
    if sorted_column.size:
        expected = _bin_shares(sorted_column, edges)
    else:
        levels = np.asarray([by_value[v] for v in edges], dtype=float)
        cumulative = np.concatenate(([0.0], levels, [1.0]))
        expected = np.diff(cumulative)
    return edges, expected


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of ``values`` in the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    bins = np.searchsorted(edges, values, side="left")
    counts = np.bincount(bins, minlength=edges.size + 1)
    return counts / max(values.size, 1)


def ks_statistic(sorted_reference: np.ndarray, sorted_window: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic of two sorted samples."""
    points = np.concatenate((sorted_reference, sorted_window))
    cdf_reference = np.searchsorted(sorted_reference, points, side="right") / sorted_reference.size
    cdf_window = np.searchsorted(sorted_window, points, side="right") / sorted_window.size
    return float(np.max(np.abs(cdf_reference - cdf_window)))


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors (shares floored at 1e-4)."""
    e = np.maximum(expected, _PSI_FLOOR)
    a = np.maximum(actual, _PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class DriftSnapshot:
    """Drift statistics of one window.

    Attributes:
        samples: Rows in the window.
        ood_ratio: Share of rows with at least one feature outside the training range.
        prediction_variance: Variance of the window's point forecasts.
        mean_shift: Per feature, the mean shift in training standard deviations.
        ks: Per feature, the two-sample KS statistic (features with a reference sample).
        psi: Per feature, the PSI over the training deciles.
    """

    samples: int
    ood_ratio: float
    prediction_variance: float
    mean_shift: dict[str, float] = field(default_factory=dict)
    ks: dict[str, float] = field(default_factory=dict)
    psi: dict[str, float] = field(default_factory=dict)

    def breaches(self, thresholds: DriftParams) -> dict[str, list[str]]:
        """The statistics above their threshold: ``{"ks": [features...], ...}``."""
        found = {
            "mean_shift": sorted(
                n for n, v in self.mean_shift.items() if v > thresholds.mean_shift_threshold
            ),
            "ks": sorted(n for n, v in self.ks.items() if v > thresholds.ks_threshold),
            "psi": sorted(n for n, v in self.psi.items() if v > thresholds.psi_threshold),
            "ood_ratio": ["*"] if self.ood_ratio > thresholds.ood_ratio_threshold else [],
        }
        return {key: names for key, names in found.items() if names}


class DriftMonitor:
    """A sliding window of served rows and its periodically recomputed drift statistics.

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
    ) -> None:
        """Create an empty window.

        Args:
            profile: The training reference.
            n_features: Width of the rows passed to :meth:`observe` (the model's features).
            window_size: Rows kept.
            recompute_every: Recompute after this many new rows; default ``window_size // 10``.
            min_interval_seconds: ... but not more often than this (a recomputation costs a few
                milliseconds; under heavy load this bounds its share of the CPU).
            recompute_seconds: Recompute after this long when new rows arrived meanwhile.
            min_samples: Rows needed before the first computation; default
                ``min(window_size, 100)`` (KS and PSI are noise on fewer rows).
            clock: Monotonic seconds (injectable for tests).
        """
        self.profile = profile
        self.n_features = n_features
        self.window_size = window_size
        self.recompute_every = recompute_every or max(1, window_size // 10)
        self.min_interval_seconds = min_interval_seconds
        self.recompute_seconds = recompute_seconds
        self.min_samples = min_samples or min(window_size, 100)
        self._clock = clock
        self._rows = np.zeros((window_size, len(profile.names)))
        self._ood = np.zeros(window_size, dtype=bool)
        self._predictions = np.zeros(window_size)
        self._next = 0
        self._count = 0
        self._pending = 0
        self._last_compute = clock()
        self.last: DriftSnapshot | None = None

    @property
    def samples(self) -> int:
        """Rows currently in the window."""
        return self._count

    def observe(
        self, rows: np.ndarray, ood_rows: np.ndarray, predictions: np.ndarray
    ) -> DriftSnapshot | None:
        """Add served rows; recompute when due.

        Args:
            rows: ``(k, n_features)`` feature rows in the model's order.
            ood_rows: ``(k,)`` whether each row had an out-of-range feature.
            predictions: ``(k,)`` point forecasts.

        Returns:
            A new snapshot when one was computed, else None.
        """
        k = rows.shape[0]
        if k == 0:
            return None
        tracked = rows[:, self.profile.columns]
        if k >= self.window_size:
            self._rows[:] = tracked[-self.window_size :]
            self._ood[:] = ood_rows[-self.window_size :]
            self._predictions[:] = predictions[-self.window_size :]
            self._next = 0
            self._count = self.window_size
        else:
            slots = (self._next + np.arange(k)) % self.window_size
            self._rows[slots] = tracked
            self._ood[slots] = ood_rows
            self._predictions[slots] = predictions
            self._next = int((self._next + k) % self.window_size)
            self._count = min(self._count + k, self.window_size)
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

    def refresh(self) -> DriftSnapshot | None:
        """Recompute now if rows arrived since the last computation (e.g. before a scrape)."""
        if self._pending == 0 or self._count < self.min_samples:
            return None
        return self.compute()

    def compute(self) -> DriftSnapshot:
        """Recompute the statistics of the current window (also when below ``min_samples``)."""
        self._pending = 0
        self._last_compute = self._clock()
        n = self._count
        if n == 0:
            self.last = DriftSnapshot(samples=0, ood_ratio=0.0, prediction_variance=0.0)
            return self.last
        window = self._rows[:n]
        profile = self.profile
        shift = np.abs(window.mean(axis=0) - profile.mean) / profile.std
        ordered = np.sort(window, axis=0)
        ks: dict[str, float] = {}
        psi_values: dict[str, float] = {}
        for j, name in enumerate(profile.names):
            column = ordered[:, j]
            if profile.sorted_sample[j].size:
                ks[name] = ks_statistic(profile.sorted_sample[j], column)
            if profile.psi_expected[j].size:
                actual = _bin_shares(column, profile.psi_edges[j])
                psi_values[name] = psi(profile.psi_expected[j], actual)
        self.last = DriftSnapshot(
            samples=n,
            ood_ratio=float(self._ood[:n].mean()),
            prediction_variance=float(self._predictions[:n].var()),
            mean_shift={name: float(v) for name, v in zip(profile.names, shift, strict=True)},
            ks=ks,
            psi=psi_values,
        )
        return self.last

    def seed_from(self, other: DriftMonitor) -> None:
        """Start from another monitor's window (after a model swap with the same features).

        Rows are copied when both track the same features in the same order; otherwise the
        window stays empty.
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
