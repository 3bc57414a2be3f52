"""The observations the pipeline stored: the window ``GET /forecast`` uses, and realized values.

The pipeline writes the newest cleaned observations to ``processed/observations*.parquet``.
They are read with pyarrow, imported on first use (no pandas), so a serving process that never
answers ``/forecast`` or finds no file never loads it; without pyarrow installed (the lean
``serve`` environment), ``/forecast`` answers 503 naming the ``pipeline`` extra and no actuals
are joined from files (``POST /feedback`` still works).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rps.data.schema import TIME
from rps.features.build import FeatureSpec
from rps.serving.errors import UnavailableError

logger = logging.getLogger(__name__)

HOUR_S = 3600
_UNIT_PER_S = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


@dataclass(frozen=True)
class StoredWindow:
    """The newest stored observations of the spec's variables, oldest first."""

    path: Path
    stamp: tuple[int, int]
    values: np.ndarray
    times: np.ndarray  # int64 Unix seconds

    @property
    def issue_time(self) -> datetime:
        return datetime.fromtimestamp(int(self.times[-1]), tz=UTC)

    def consecutive(self, hours: int) -> bool:
        """The window holds ``hours`` rows, one hour apart."""
        return self.values.shape[0] >= hours and bool(np.all(np.diff(self.times) == HOUR_S))


def read_columns(path: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """Columns of a parquet file as NumPy arrays; timestamps as int64 Unix seconds (naive: UTC).

    Raises:
        UnavailableError: pyarrow is not installed, the file is unreadable or lacks a column.
    """
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise UnavailableError(
            "reading stored observations needs pyarrow (install the 'pipeline' extra)"
        ) from exc
    try:
        names = set(pq.read_schema(path).names)
        missing = sorted(set(columns) - names)
        if missing:
            raise UnavailableError(f"{path} lacks columns {missing}")
        table = pq.read_table(path, columns=columns)
    except UnavailableError:
        raise
    except Exception as exc:  # pyarrow raises several kinds for damaged files
        raise UnavailableError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    out: dict[str, np.ndarray] = {}
    for name in columns:
        column: Any = table.column(name)
        if pa.types.is_timestamp(column.type):
            per_s = _UNIT_PER_S[column.type.unit]
            ints = pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False)
            out[name] = np.asarray(ints, dtype=np.int64) // per_s
        else:
            out[name] = np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)
    return out


class StoredObservations:
    """The newest ``observations*.parquet`` under a folder, re-read only when it changes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._window: StoredWindow | None = None
        self._joined: tuple[Path, int, int] | None = None

    def latest_file(self) -> Path | None:
        """The newest ``observations*.parquet`` under the folder (None if absent)."""
        if not self.root.exists():
            return None
        files = [p for p in self.root.rglob("observations*.parquet") if p.is_file()]
        if not files:
            return None
        return max(files, key=lambda p: p.stat().st_mtime_ns)

    def window(self, spec: FeatureSpec) -> StoredWindow:
        """The newest ``window_hours`` stored observations of the spec's variables.

        Raises:
            UnavailableError: no file, or it cannot be read or lacks columns or rows.
        """
        path = self.latest_file()
        if path is None:
            raise UnavailableError(
                f"no stored observations: {self.root}/observations.parquet "
                "is written by the pipeline (rps pipeline run)"
            )
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._window
        if cached is not None and cached.path == path and cached.stamp == stamp:
            return cached
        columns = read_columns(path, [TIME, *spec.variables])
        times = columns[TIME]
        if times.size == 0:
            raise UnavailableError(f"{path} holds no rows")
        order = np.argsort(times, kind="stable")[-spec.window_hours :]
        values = np.column_stack([columns[v][order] for v in spec.variables])
        cached = StoredWindow(path=path, stamp=stamp, values=values, times=times[order])
        self._window = cached
        return cached

    def new_actuals(self, target: str, *, days: int = 30) -> list[tuple[int, float]]:
        """``(unix seconds, value)`` of the target over the last ``days`` days of the newest file,
        once per file version (empty while the file is unchanged or unreadable)."""
        path = self.latest_file()
        if path is None:
            return []
        stat = path.stat()
        stamp = (path, stat.st_mtime_ns, stat.st_size)
        if stamp == self._joined:
            return []
        try:
            columns = read_columns(path, [TIME, target])
        except UnavailableError as exc:
            logger.warning("cannot join actuals: %s", exc)
            self._joined = stamp
            return []
        self._joined = stamp
        times, values = columns[TIME], columns[target]
        keep = np.isfinite(values)
        times, values = times[keep], values[keep]
        if times.size == 0:
            return []
        recent = times >= times.max() - days * 86_400
        return list(zip(times[recent].tolist(), values[recent].tolist(), strict=True))
