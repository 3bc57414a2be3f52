"""The source interface: fetch the hourly observations of a time range."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd


class SourceError(RuntimeError):
    """A source could not deliver usable data (unreachable, malformed, empty)."""


@dataclass(frozen=True)
class FetchResult:
    """What a source delivered, exactly as delivered (no cleaning).

    Attributes:
        frame: one row per hour: ``time`` (tz-aware UTC) and the source's variables.
        source: the source's name.
        from_cache: True when the data came from a cached response because the live
            source was unreachable; the freshness check then decides whether it may pass.
        notes: human-readable remarks (fallbacks, truncation).
    """

    frame: pd.DataFrame
    source: str
    from_cache: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


class WeatherSource(Protocol):
    """Anything that returns hourly observations for ``[start, end]`` (UTC, inclusive)."""

    name: str

    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> FetchResult:
        """Observations with ``start <= time <= end`` that exist at the source's "now"."""
        ...
