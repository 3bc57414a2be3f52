"""File habits used across the package: atomic writes, inter-process locks, content digests.

One implementation each, so that a crash never leaves half a file, concurrent processes
(API workers, Airflow tasks, test runs) serialise on the same kind of lock, and every
content hash is computed the same way.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

__all__ = ["file_digest", "file_lock", "write_atomic"]


def write_atomic(path: Path, payload: bytes | str, *, mode: int = 0o644) -> None:
    """Write ``payload`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a temporary sibling, are flushed to disk, and the sibling is renamed
    over ``path``. Parent folders are created. Text is encoded as UTF-8.
    """
    data = payload.encode() if isinstance(payload, str) else payload
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def file_lock(path: Path, *, timeout: float = -1) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``path`` (created if missing) for the block.

    Args:
        path: the lock file; by convention ``<what it protects>.lock``.
        timeout: seconds to wait; negative waits forever. ``filelock.Timeout`` when exceeded.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path, timeout=timeout):
        yield


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's content, read in chunks (``hashlib.file_digest``)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()
