"""Live accuracy: a bounded, append-only log of predictions joined later to realized values.

Every prediction with a known target time is appended to ``predictions``; realized values
posted to ``POST /feedback`` go into ``actuals`` (one value per time, the latest wins). The
live RMSE and MAE are computed over the newest ``window`` predictions that have a realized
value, by target time. Over the same predictions, in target-time order, a one-sided CUSUM
(:func:`error_cusum`) of the squared errors in units of the model's holdout RMSE tests
whether the errors have grown (the ``forecast_error`` drift check). SQLite in WAL mode lets
the worker processes of one server share the file; each insert is one short transaction.

Forecasts of every horizon of a trajectory are logged with the factor their interval was
rescaled by (``factor``); the live metrics cover the model's own horizon. When realized values
join logged forecasts, the interval rescale factor of every horizon
(:mod:`rps.models.interval_rescale`) is recomputed from the newest joined forecasts of that
horizon and stored in ``interval_factors``, which every worker reads (:meth:`interval_factors`).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rps.models.interval_rescale import Rescale, needed_factor, rolling_factor
from rps.params import DriftParams
from rps.serving.cusum import CusumTest, cusum_path

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    logged_at REAL NOT NULL,
    issue_time INTEGER NOT NULL,
    target_time INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    prediction REAL NOT NULL,
    lower REAL NOT NULL,
    upper REAL NOT NULL,
    factor REAL NOT NULL DEFAULT 1.0,
    UNIQUE (issue_time, target_time, model_version)
);
CREATE INDEX IF NOT EXISTS ix_predictions_target ON predictions (target_time);
CREATE INDEX IF NOT EXISTS ix_predictions_lead
    ON predictions (target_time - issue_time, target_time);
CREATE TABLE IF NOT EXISTS actuals (
    time INTEGER PRIMARY KEY,
    value REAL NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS interval_factors (
    horizon INTEGER PRIMARY KEY,
    factor REAL NOT NULL,
    samples INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
"""

#: the newest joined forecasts of one lead time (seconds), newest first (the lead index)
_JOINED_AT_LEAD = """
SELECT a.value - p.prediction, (p.lower - p.prediction) / p.factor,
       (p.upper - p.prediction) / p.factor
FROM predictions p JOIN actuals a ON a.time = p.target_time
WHERE p.target_time - p.issue_time = ? AND p.factor > 0
ORDER BY p.target_time DESC LIMIT ?
"""


@dataclass(frozen=True)
class LoggedPrediction:
    """One prediction to log (times in Unix seconds, UTC).

    ``factor`` is what the served interval was rescaled by (:mod:`rps.models.interval_rescale`):
    the interval before the rescale is recovered from it.
    """

    issue_time: int
    target_time: int
    model_version: str
    prediction: float
    lower: float
    upper: float
    factor: float = 1.0


@dataclass(frozen=True)
class ErrorTest(CusumTest):
    """The forecast-error CUSUM's parameters (``drift.error_*`` in params.yaml).

    The evidence of a row is its standardised squared error above 1: an ``allowance`` of 1.0
    lets a sustained RMSE up to sqrt(2) times the holdout RMSE add nothing, and ``cap`` keeps
    one storm's miss from firing the test alone.
    """


def error_cusum_path(
    errors: np.ndarray, *, scale: float, allowance: float, cap: float
) -> np.ndarray:
    """A one-sided CUSUM on standardised squared errors, after each error.

    ``g_t = max(0, g_{t-1} + min((e_t / scale)^2, cap) - 1 - allowance)``, ``g_0 = 0``: it
    stays near 0 while the errors are as large as at training time and grows by the excess
    while they are larger. The hour after ``g`` last stood at 0 is the classic estimate of when
    the errors grew.

    Args:
        errors: Forecast errors in target-time order.
        scale: The model's holdout RMSE.
        allowance: Excess tolerated per error.
        cap: Largest standardised squared error counted.

    Raises:
        ValueError: ``scale`` is not positive.
    """
    if not scale > 0:
        raise ValueError(f"error_cusum needs a positive scale, got {scale}")
    steps = np.minimum((np.asarray(errors, dtype=float) / scale) ** 2, cap) - 1.0 - allowance
    return cusum_path(steps)


def error_cusum(errors: np.ndarray, *, scale: float, allowance: float, cap: float) -> float:
    """The current value of :func:`error_cusum_path` (0 without errors).

    Raises:
        ValueError: ``scale`` is not positive.
    """
    path = error_cusum_path(errors, scale=scale, allowance=allowance, cap=cap)
    return float(path[-1]) if path.size else 0.0


@dataclass(frozen=True)
class LiveAccuracy:
    """Errors of the newest joined predictions (None without any).

    ``error_drift`` is the forecast-error CUSUM over its threshold (above 1: drift), None
    without a scale (no holdout RMSE) or without joined predictions.
    """

    rmse: float | None
    mae: float | None
    samples: int
    error_drift: float | None = None


class PredictionLog:
    """The shared SQLite prediction log of one server (all its workers)."""

    def __init__(
        self,
        path: Path,
        *,
        window: int,
        max_rows: int = 100_000,
        error_test: ErrorTest | None = None,
        rescale: Rescale | None = None,
    ) -> None:
        """Open (and create) the log.

        Args:
            path: The SQLite file (its folder is created).
            window: Joined predictions the live metrics cover.
            max_rows: Predictions kept; older ones are pruned.
            error_test: The forecast-error CUSUM's parameters (default: params.yaml's defaults).
            rescale: The interval rescale's parameters (None: no factors are computed and
                :meth:`interval_factors` stays empty).

        Raises:
            sqlite3.Error, OSError: the file cannot be created or opened.
        """
        self.path = path
        self.window = window
        self.max_rows = max_rows
        self.error_test = error_test or DriftParams().error_test()
        self.rescale = rescale
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=10.0, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        with self._conn:
            self._conn.executescript(_SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(predictions)")}
            if "factor" not in columns:  # a log written before the interval rescale
                self._conn.execute(
                    "ALTER TABLE predictions ADD COLUMN factor REAL NOT NULL DEFAULT 1.0"
                )
        self._inserts_since_prune = 0

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def log(self, predictions: Sequence[LoggedPrediction]) -> None:
        """Append predictions (a repeat of the same issue/target time and model is ignored)."""
        if not predictions:
            return
        now = time.time()
        rows = [
            (
                now,
                p.issue_time,
                p.target_time,
                p.model_version,
                p.prediction,
                p.lower,
                p.upper,
                p.factor,
            )
            for p in predictions
        ]
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR IGNORE INTO predictions (logged_at, issue_time, target_time, "
                "model_version, prediction, lower, upper, factor) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._inserts_since_prune += len(rows)
            if self._inserts_since_prune >= 1000:
                self._prune()

    def _prune(self) -> None:
        self._inserts_since_prune = 0
        self._conn.execute(
            "DELETE FROM predictions WHERE id <= (SELECT MAX(id) FROM predictions) - ?",
            (self.max_rows,),
        )
        self._conn.execute(
            "DELETE FROM actuals WHERE time < (SELECT MIN(target_time) FROM predictions)"
        )

    def record_actuals(self, values: Iterable[tuple[int, float]]) -> int:
        """Store realized values and return how many logged predictions they resolve.

        When some resolve and the log has a rescale, the interval factors are recomputed
        (:meth:`update_interval_factors`).

        Args:
            values: ``(time, value)`` pairs (Unix seconds, UTC).

        Returns:
            The number of logged predictions whose target time is among ``values``.
        """
        now = time.time()
        rows = [(t, v, now) for t, v in values]
        if not rows:
            return 0
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT INTO actuals (time, value, received_at) VALUES (?, ?, ?) "
                "ON CONFLICT (time) DO UPDATE SET value = excluded.value, "
                "received_at = excluded.received_at",
                rows,
            )
            joined = 0
            times = sorted({t for t, _, _ in rows})
            for start in range(0, len(times), 500):
                chunk = times[start : start + 500]
                placeholders = ",".join("?" * len(chunk))
                (count,) = self._conn.execute(
                    f"SELECT COUNT(*) FROM predictions WHERE target_time IN ({placeholders})",
                    chunk,
                ).fetchone()
                joined += int(count)
            if joined and self.rescale is not None:
                try:
                    self._update_interval_factors(self.rescale, now)
                except (sqlite3.Error, ValueError) as exc:  # the join stands; factors stay
                    logger.warning("could not update the interval factors: %s", exc)
        return joined

    def update_interval_factors(self) -> None:
        """Recompute the interval factor of every logged horizon from its joined forecasts.

        Each horizon's factor is :func:`rps.models.interval_rescale.rolling_factor` of the
        needed factors of its newest ``rescale.window`` joined forecasts (of any model
        version: each forecast's interval before its own rescale is the reference). A no-op
        without a rescale.
        """
        if self.rescale is None:
            return
        with self._lock, self._conn:
            self._update_interval_factors(self.rescale, time.time())

    def _update_interval_factors(self, rescale: Rescale, now: float) -> None:
        leads, lead = [], 0
        while True:  # the distinct lead times, one index lookup each
            (lead,) = self._conn.execute(
                "SELECT MIN(target_time - issue_time) FROM predictions "
                "WHERE target_time - issue_time > ?",
                (lead,),
            ).fetchone()
            if lead is None:
                break
            if lead % 3600 == 0:
                leads.append(int(lead))
        if not leads:
            return
        stored = []
        for lead in leads:
            rows = self._conn.execute(_JOINED_AT_LEAD, (lead, rescale.window)).fetchall()
            if not rows:
                continue
            data = np.asarray(rows[::-1], dtype=float)  # oldest first
            needed = needed_factor(data[:, 0], data[:, 1], data[:, 2])
            factor, samples = rolling_factor(needed, rescale)
            stored.append((lead // 3600, factor, samples, now))
        self._conn.execute("DELETE FROM interval_factors")
        self._conn.executemany(
            "INSERT INTO interval_factors (horizon, factor, samples, updated_at) "
            "VALUES (?, ?, ?, ?)",
            stored,
        )

    def interval_factors(self) -> dict[int, float]:
        """The stored interval factor of each horizon (hours) with joined forecasts."""
        with self._lock:
            rows = self._conn.execute("SELECT horizon, factor FROM interval_factors").fetchall()
        return {int(h): float(f) for h, f in rows}

    def live_accuracy(
        self, error_scale: float | None = None, horizon_hours: int | None = None
    ) -> LiveAccuracy:
        """RMSE, MAE and the error CUSUM over the newest ``window`` joined predictions.

        Args:
            error_scale: The served model's holdout RMSE (None: no error CUSUM).
            horizon_hours: Only predictions of this lead time (the model's own horizon: the
                log holds every hour of the trajectories too); None: all.
        """
        where, args = "", [self.window]
        if horizon_hours is not None:  # the lead index
            where, args = " WHERE p.target_time - p.issue_time = ?", [horizon_hours * 3600, *args]
        with self._lock:
            rows = self._conn.execute(
                "SELECT e FROM ("
                " SELECT p.prediction - a.value AS e, p.target_time AS t, p.id AS i"
                " FROM predictions p JOIN actuals a ON a.time = p.target_time"
                f"{where} ORDER BY p.target_time DESC, p.id DESC LIMIT ?) ORDER BY t, i",
                args,
            ).fetchall()
        if not rows:
            return LiveAccuracy(rmse=None, mae=None, samples=0)
        errors = np.asarray([e for (e,) in rows], dtype=float)
        drift = None
        if error_scale is not None and math.isfinite(error_scale) and error_scale > 0:
            test = self.error_test
            cusum = error_cusum(errors, scale=error_scale, allowance=test.allowance, cap=test.cap)
            drift = cusum / test.threshold
        return LiveAccuracy(
            rmse=math.sqrt(float(np.mean(errors**2))),
            mae=float(np.mean(np.abs(errors))),
            samples=len(errors),
            error_drift=drift,
        )


class IntervalFactorCache:
    """A worker's copy of the log's interval factors, read again at most every ``ttl_s``.

    The factors change when realized values are joined (hourly), so a request reads a cached
    array; the log (any worker's joins) is read at most once per ``ttl_s`` seconds.
    """

    def __init__(self, log: PredictionLog, *, ttl_s: float = 30.0) -> None:
        self.log = log
        self.ttl_s = ttl_s
        self._factors = np.ones(0)
        self._read_at = -math.inf

    def factors(self) -> np.ndarray:
        """The factor of every horizon 1..the longest stored (index ``h - 1``; 1 if absent)."""
        now = time.monotonic()
        if now - self._read_at >= self.ttl_s:
            self._read_at = now
            try:
                stored = self.log.interval_factors()
            except sqlite3.Error as exc:  # keep the last factors: a read must not fail a request
                logger.warning("could not read the interval factors: %s", exc)
                return self._factors
            factors = np.ones(max(stored, default=0))
            for h, f in stored.items():
                factors[h - 1] = f
            self._factors = factors
        return self._factors
