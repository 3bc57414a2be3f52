"""Live accuracy: a bounded, append-only log of predictions joined later to realized values.

Every prediction with a known target time is appended to ``predictions``; realized values
posted to ``POST /feedback`` go into ``actuals`` (one value per time, the latest wins). The
live RMSE and MAE are computed over the newest ``window`` predictions that have a realized
value, by target time. SQLite in WAL mode lets the worker processes of one server share the
file; each insert is one short transaction.
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
    UNIQUE (issue_time, target_time, model_version)
);
CREATE INDEX IF NOT EXISTS ix_predictions_target ON predictions (target_time);
CREATE TABLE IF NOT EXISTS actuals (
    time INTEGER PRIMARY KEY,
    value REAL NOT NULL,
    received_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class LoggedPrediction:
    """One prediction to log (times in Unix seconds, UTC)."""

    issue_time: int
    target_time: int
    model_version: str
    prediction: float
    lower: float
    upper: float


@dataclass(frozen=True)
class LiveAccuracy:
    """Errors of the newest joined predictions (None without any)."""

    rmse: float | None
    mae: float | None
    samples: int


class PredictionLog:
    """The shared SQLite prediction log of one server (all its workers)."""

    def __init__(self, path: Path, *, window: int, max_rows: int = 100_000) -> None:
        """Open (and create) the log.

        Args:
            path: The SQLite file (its folder is created).
            window: Joined predictions the live metrics cover.
            max_rows: Predictions kept; older ones are pruned.

        Raises:
            sqlite3.Error, OSError: the file cannot be created or opened.
        """
        self.path = path
        self.window = window
        self.max_rows = max_rows
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=10.0, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        with self._conn:
            self._conn.executescript(_SCHEMA)
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
            (now, p.issue_time, p.target_time, p.model_version, p.prediction, p.lower, p.upper)
            for p in predictions
        ]
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR IGNORE INTO predictions (logged_at, issue_time, target_time, "
                "model_version, prediction, lower, upper) VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        return joined

    def live_accuracy(self) -> LiveAccuracy:
        """RMSE and MAE over the newest ``window`` joined predictions (by target time)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT AVG(e * e), AVG(ABS(e)), COUNT(*) FROM ("
                " SELECT p.prediction - a.value AS e FROM predictions p"
                " JOIN actuals a ON a.time = p.target_time"
                " ORDER BY p.target_time DESC, p.id DESC LIMIT ?)",
                (self.window,),
            ).fetchone()
        mse, mae, samples = row
        if not samples:
            return LiveAccuracy(rmse=None, mae=None, samples=0)
        return LiveAccuracy(rmse=math.sqrt(float(mse)), mae=float(mae), samples=int(samples))
