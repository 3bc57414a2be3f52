"""Which data and code a model is trained on: loading a dataset version, fingerprints."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rps.git import GitError, run_git
from rps.models.errors import DatasetError
from rps.settings import Settings

IN_MEMORY_URI = "in-memory"


@dataclass(frozen=True)
class DatasetRef:
    """Which data a model was trained on."""

    md5: str
    uri: str


def frame_md5(frame: pd.DataFrame) -> str:
    """A content fingerprint of observations passed in memory (not a file md5)."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.md5(hashed.tobytes(), usedforsecurity=False).hexdigest()


def load_observations(
    settings: Settings, dataset_md5: str | None
) -> tuple[pd.DataFrame, DatasetRef]:
    """Load a dataset version through :mod:`rps.data.versioning`.

    Raises:
        DatasetError: the version store is unavailable or the version unknown/unreadable.
    """
    try:
        from rps.data.versioning import load_dataset
    except ImportError as exc:
        raise DatasetError(f"dataset versioning is unavailable: {exc}") from exc
    label = dataset_md5 or "latest"
    try:
        frame, version = load_dataset(settings, dataset_md5)
    except Exception as exc:  # the store raises its own types; name the version either way
        raise DatasetError(
            f"dataset version {label} cannot be loaded: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise DatasetError(f"dataset version {label} holds no observations")
    return frame, DatasetRef(md5=str(version.md5), uri=str(version.storage_uri))


def code_version(root: Path) -> tuple[str, bool | None]:
    """The git commit of ``root`` and whether tracked files differ from it.

    Returns:
        ``(sha, dirty)``; ``("unknown", None)`` outside a git work tree.
    """

    try:
        sha = run_git(root, "rev-parse", "HEAD", timeout=10).stdout.strip()
        status = run_git(root, "status", "--porcelain", "--untracked-files=no", timeout=10)
    except GitError:
        return "unknown", None
    return sha, bool(status.stdout.strip())
