"""Validated Open-Meteo responses on disk, one file per query and UTC hour.

A rerun inside the same hour reads the cached response instead of refetching; when the API
stays unreachable, the newest cached response for the same query is served instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pandas as pd

from rps.files import write_atomic

logger = logging.getLogger(__name__)

CACHE_HOUR_FORMAT = "%Y%m%dT%H"


def _utc(ts: pd.Timestamp | str) -> pd.Timestamp:
    stamp = pd.Timestamp(ts)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


class ResponseCache:
    """Validated JSON responses on disk, one file per query and UTC hour."""

    def __init__(self, directory: Path, keep_per_query: int = 3, max_age_days: float = 30.0):
        self.directory = directory
        self.keep_per_query = max(1, keep_per_query)
        self.max_age = pd.Timedelta(days=max_age_days)

    @staticmethod
    def query_key(url: str, query: Mapping[str, str]) -> str:
        """The hour-independent part of the key: URL plus the sorted query."""
        canonical = f"{url}?{urlencode(sorted(query.items()))}"
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]

    def path(self, key: str, hour: pd.Timestamp) -> Path:
        return self.directory / f"{key}-{hour.strftime(CACHE_HOUR_FORMAT)}.json"

    def read(self, path: Path) -> tuple[Any, pd.Timestamp] | None:
        """The payload and fetch time stored at ``path``, or None if absent or unreadable."""
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            payload = entry["payload"]
            fetched_at = _utc(entry["fetched_at"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("open_meteo: ignoring unreadable cache file %s (%s)", path, exc)
            return None
        return payload, fetched_at

    def newest_first(self, key: str) -> list[Path]:
        """Every cached response for a query, newest hour first."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(f"{key}-*.json"), reverse=True)

    def write(
        self,
        key: str,
        hour: pd.Timestamp,
        *,
        url: str,
        query: Mapping[str, str],
        payload: Any,
        fetched_at: pd.Timestamp,
    ) -> None:
        """Store a response atomically (:func:`rps.files.write_atomic`); never raises."""
        target = self.path(key, hour)
        entry = {
            "url": url,
            "query": dict(query),
            "fetched_at": fetched_at.isoformat(),
            "payload": payload,
        }
        try:
            write_atomic(target, json.dumps(entry, separators=(",", ":")))
        except OSError as exc:
            logger.warning("open_meteo: could not write cache file %s (%s)", target, exc)
        self._prune(key, hour)

    def _prune(self, key: str, hour: pd.Timestamp) -> None:
        """Keep the newest few files per query and drop any file older than ``max_age``."""
        stale = self.newest_first(key)[self.keep_per_query :]
        cutoff = (hour - self.max_age).strftime(CACHE_HOUR_FORMAT)
        for path in self.directory.glob("*-*.json"):
            stamp = path.stem.rpartition("-")[2]
            if len(stamp) == len("20240101T00") and stamp < cutoff:
                stale.append(path)
        for path in stale:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:  # pragma: no cover - e.g. a read-only cache
                logger.debug("open_meteo: could not prune %s (%s)", path, exc)
