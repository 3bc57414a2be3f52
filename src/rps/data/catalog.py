"""The catalog of registered dataset versions: a JSON-lines file under the state folder.

:mod:`rps.data.versioning` appends a line per registered version (after its pushes
succeeded); readers list the versions and resolve an md5 or a prefix of one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rps.settings import Settings

logger = logging.getLogger(__name__)

CATALOG_NAME = "datasets.jsonl"
MIN_PREFIX = 7
PATH_IN_REPO = "data/observations.parquet"


class VersioningError(RuntimeError):
    """A dataset could not be versioned or loaded (git, DVC or the remote failed)."""


class DatasetNotFoundError(VersioningError, LookupError):
    """No registered dataset version matches the request."""


@dataclass(frozen=True)
class DatasetVersion:
    """One registered dataset version.

    Attributes:
        md5: DVC's content hash of the parquet file (the version's identity).
        size: file size in bytes.
        rows: number of rows in the parquet file.
        git_rev: the commit of the DVC workspace that records this version, or None when
            git commits are disabled (``settings.dvc_git_commit``).
        remote: the DVC remote's URL at the time of versioning.
        storage_uri: the object's URI on that remote (``file://...`` or ``s3://...``).
        created_at: when the version was registered (UTC; default: now).
        path_in_repo: the tracked file's path inside the DVC workspace.
    """

    md5: str
    size: int
    rows: int
    git_rev: str | None
    remote: str
    storage_uri: str
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    path_in_repo: str = PATH_IN_REPO

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``created_at`` as ISO 8601)."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetVersion:
        """Inverse of :meth:`to_json`.

        Raises:
            KeyError, TypeError, ValueError: the dict is not a dataset version.
        """
        return cls(
            md5=str(data["md5"]),
            size=int(data["size"]),
            rows=int(data["rows"]),
            git_rev=None if data.get("git_rev") is None else str(data["git_rev"]),
            remote=str(data["remote"]),
            storage_uri=str(data["storage_uri"]),
            created_at=datetime.fromisoformat(str(data["created_at"])),
            path_in_repo=str(data.get("path_in_repo", PATH_IN_REPO)),
        )


def catalog_path(settings: Settings) -> Path:
    return settings.state_path / CATALOG_NAME


def read_catalog(settings: Settings) -> list[DatasetVersion]:
    path = catalog_path(settings)
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(DatasetVersion.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("skipping malformed line %d of %s: %s", number, path, exc)
    return entries


def append_catalog(settings: Settings, version: DatasetVersion) -> None:
    path = catalog_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(version.to_json(), sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def list_datasets(settings: Settings) -> list[DatasetVersion]:
    """The registered versions, oldest first, one per md5 (its latest registration)."""
    latest: dict[str, DatasetVersion] = {}
    for version in read_catalog(settings):
        latest.pop(version.md5, None)
        latest[version.md5] = version
    return list(latest.values())


def resolve(settings: Settings, md5: str | None) -> DatasetVersion:
    versions = list_datasets(settings)
    known = ", ".join(v.md5 for v in reversed(versions[-5:])) or "none"
    if not versions:
        raise DatasetNotFoundError(f"no dataset versions registered in {catalog_path(settings)}")
    if md5 is None:
        return versions[-1]
    prefix = md5.strip().lower()
    if len(prefix) < MIN_PREFIX:
        raise DatasetNotFoundError(
            f"md5 prefix {md5!r} is too short (need >= {MIN_PREFIX} characters); known: {known}"
        )
    matches = [v for v in versions if v.md5.startswith(prefix)]
    if not matches:
        raise DatasetNotFoundError(f"unknown dataset version {md5!r}; newest known: {known}")
    if len(matches) > 1:
        raise DatasetNotFoundError(
            f"md5 prefix {md5!r} is ambiguous: {', '.join(v.md5 for v in matches)}"
        )
    return matches[0]
