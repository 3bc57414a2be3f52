"""Extraction: fetch from a source and store the response immediately, unmodified.

Raw files are named by their collection time, ``raw_data_YYYYMMDD_HHMMSS.csv``, written
atomically (temporary file + rename) and never overwritten: storing identical content again
returns the existing file, so a rerun of the same interval adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from rps.data.schema import TIME
from rps.data.sources.base import FetchResult, WeatherSource
from rps.files import file_digest, write_atomic

logger = logging.getLogger(__name__)
RAW_PREFIX = "raw_data_"


@dataclass(frozen=True)
class RawArtifact:
    """A stored raw file and what is known about it."""

    path: Path
    rows: int
    sha256: str
    source: str
    collected_at: str
    start: str
    end: str
    from_cache: bool
    notes: tuple[str, ...] = ()

    @property
    def meta_path(self) -> Path:
        return sidecar(self.path, "meta.json")


def sidecar(raw_path: Path, suffix: str) -> Path:
    """A file stored next to a raw file (``raw_data_X.<suffix>``)."""
    return raw_path.with_name(f"{raw_path.stem}.{suffix}")


def raw_filename(collected_at: pd.Timestamp) -> str:
    return f"{RAW_PREFIX}{collected_at.strftime('%Y%m%d_%H%M%S')}.csv"


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    out = frame.copy()
    if TIME in out.columns and pd.api.types.is_datetime64_any_dtype(out[TIME]):
        out[TIME] = out[TIME].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out.to_csv(index=False, lineterminator="\n").encode()


def store_raw(
    result: FetchResult,
    raw_dir: Path,
    *,
    collected_at: pd.Timestamp,
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> RawArtifact:
    """Store a fetch result as a raw CSV, never overwriting a different file."""
    payload = _csv_bytes(result.frame)
    digest = hashlib.sha256(payload).hexdigest()
    base = raw_dir / raw_filename(collected_at)
    path = base
    attempt = 0
    while path.exists():
        if file_digest(path, "sha256") == digest:
            logger.info("raw file %s already holds this content; not written again", path)
            break
        attempt += 1
        path = base.with_name(f"{base.stem}_{attempt}{base.suffix}")
    else:
        write_atomic(path, payload)
    artifact = RawArtifact(
        path=path,
        rows=len(result.frame),
        sha256=digest,
        source=result.source,
        collected_at=collected_at.isoformat(),
        start=start.isoformat(),
        end=end.isoformat(),
        from_cache=result.from_cache,
        notes=tuple(result.notes),
    )
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(artifact).items()}
    write_atomic(artifact.meta_path, json.dumps(meta, indent=2).encode())
    return artifact


def extract(
    source: WeatherSource,
    raw_dir: Path,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    collected_at: pd.Timestamp,
) -> RawArtifact:
    """Fetch ``[start, end]`` from ``source`` and store it as a raw file.

    Args:
        source: where the observations come from.
        raw_dir: the raw area.
        start: first hour wanted (UTC).
        end: last hour wanted (UTC).
        collected_at: the collection time that names the file (the data interval's end in a
            scheduled run, so a rerun of the same interval names the same file).
    """
    result = source.fetch(start, end)
    for note in result.notes:
        logger.warning("%s: %s", source.name, note)
    artifact = store_raw(result, raw_dir, collected_at=collected_at, start=start, end=end)
    logger.info("extracted %d rows from %s into %s", artifact.rows, source.name, artifact.path)
    return artifact
