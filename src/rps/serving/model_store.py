"""What the workers of one server share on disk: verified bundle copies and the model stack.

Accepted bundles are copied into a content-addressed cache (``state/serving/bundles/<digest>``),
so every worker can load any served model by its checksum. The stack of served models lives in
a JSON file under a file lock (:func:`rps.files.file_lock`): the worker that handles a reload or
rollback commits the new stack, and the other workers notice the new generation and swap to the
same bundle.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rps.files import file_digest, file_lock, write_atomic
from rps.models.bundle import bundle_digest

logger = logging.getLogger(__name__)

MAX_HISTORY = 5


class ModelLoadError(RuntimeError):
    """A candidate model could not be fetched, failed verification or its smoke test.

    Attributes:
        reason: The check that refused it (``download``, ``checksum``, ``load``, ``smoke``),
            the label of ``model_reload_failures_total``.
    """

    def __init__(self, message: str, *, reason: str = "load") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ModelEntry:
    """A served model's identity, as recorded in the shared model stack."""

    path: str
    checksum: str
    version: str
    alias: str
    source: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelEntry:
        return cls(**{f.name: str(data[f.name]) for f in dataclasses.fields(cls)})


def verify_checksums(directory: Path, checksum: str | None = None) -> str:
    """Check every file of a bundle against its ``checksums.json``; return the bundle digest.

    Args:
        directory: The folder holding ``bundle.json`` and ``checksums.json``.
        checksum: The digest the bundle must have (None: any).

    Raises:
        ModelLoadError: (reason ``checksum``) no checksums, a file missing or different, or
            another digest than ``checksum``.
    """
    try:
        checksums: dict[str, str] = json.loads((directory / "checksums.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"bundle lacks readable checksums: {exc}", reason="checksum") from exc
    digest = bundle_digest(checksums)
    if checksum is not None and digest != checksum:
        raise ModelLoadError(
            f"bundle digest {digest[:12]} is not the expected {checksum[:12]}", reason="checksum"
        )
    for name, expected in checksums.items():
        path = directory / name
        if not path.is_file():
            raise ModelLoadError(f"bundle file {name} is missing", reason="checksum")
        actual = file_digest(path, "sha256")
        if actual != expected:
            raise ModelLoadError(
                f"checksum mismatch for {name}: {actual[:12]} != {expected[:12]}",
                reason="checksum",
            )
    return digest


class BundleCache:
    """Content-addressed copies of accepted bundles, so every worker can load any of them."""

    def __init__(self, root: Path, *, keep: int = MAX_HISTORY + 2) -> None:
        self.root = root
        self.keep = keep

    def store(self, source: Path, checksum: str) -> Path:
        """Copy a verified bundle to ``root/<checksum>`` (kept if already there) and return it.

        Raises:
            ModelLoadError: the copy does not match the checksums (the source changed).
        """
        target = self.root / checksum
        if (target / "bundle.json").exists():
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".incoming-"))
        try:
            shutil.copytree(source, staging, dirs_exist_ok=True)
            verify_checksums(staging, checksum)
            try:
                staging.rename(target)
            except OSError:
                if not (target / "bundle.json").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def prune(self, referenced: set[str], *, min_age_s: float = 600.0) -> None:
        """Delete cached bundles beyond the newest ``keep`` that no stack entry references.

        Only copies older than ``min_age_s`` go, so a copy another worker is about to commit
        stays.
        """

        def mtime(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except OSError:  # another worker pruned it meanwhile
                return 0.0

        if not self.root.exists():
            return
        now = time.time()
        cached = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        cached.sort(key=mtime, reverse=True)
        for path in cached[self.keep :]:
            if path.name not in referenced and now - mtime(path) > min_age_s:
                shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class SharedStack:
    """The model stack as last committed (``entries[-1]`` is served)."""

    generation: int
    entries: tuple[ModelEntry, ...]


class SharedModelState:
    """The served-model stack of one server instance in a JSON file under a file lock."""

    def __init__(self, path: Path, instance: str) -> None:
        self.path = path
        self.instance = instance
        self._lock_path = path.with_suffix(".lock")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cross-process lock (blocking)."""
        with file_lock(self._lock_path):
            yield

    def stamp(self) -> tuple[int, int] | None:
        """``(mtime_ns, size)`` of the file, to notice changes cheaply."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def read(self) -> SharedStack | None:
        """The committed stack of this instance, or None (absent, unreadable, other instance)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("instance") != self.instance:
                return None
            entries = tuple(ModelEntry.from_dict(e) for e in data["entries"])
            return SharedStack(generation=int(data["generation"]), entries=entries)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable model state %s: %s", self.path, exc)
            return None

    def write(self, stack: SharedStack) -> None:
        """Replace the file atomically."""
        data = {
            "instance": self.instance,
            "generation": stack.generation,
            "entries": [dataclasses.asdict(e) for e in stack.entries],
            "written_at": datetime.now(UTC).isoformat(),
            "written_by": os.getpid(),
        }
        write_atomic(self.path, json.dumps(data, indent=2))
