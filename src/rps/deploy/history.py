"""The deploy history: one JSON line per release event under ``<state>/deploy/history.jsonl``.

Events are ``build`` (an image was built with a model baked in), ``deploy`` (an image went live)
and ``rollback`` (a release was abandoned for the one before it). The *releases* are read as a
stack: ``build`` and ``deploy`` push a release (unless it repeats the top one), ``rollback``
pops the abandoned one, so two rollbacks in a row go back two releases.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rps.deploy import DeployError
from rps.settings import Settings

logger = logging.getLogger(__name__)

Action = Literal["build", "deploy", "rollback"]
ACTIONS: tuple[str, ...] = ("build", "deploy", "rollback")


@dataclass(frozen=True)
class Release:
    """One event of the deploy history.

    Attributes:
        action: ``build``, ``deploy`` or ``rollback``.
        image: The image reference (``name:tag``) of the release.
        model_version: The registry version of the baked-in or served model.
        model_digest: The bundle digest (:func:`rps.models.bundle.bundle_digest`), if known.
        time: ISO 8601 UTC time of the event.
        engine: ``podman``, ``docker`` or empty.
        git_sha: The source commit, if known.
        detail: Free text (e.g. why a rollback happened).
        rolled_back_from: For a rollback: the image and version abandoned.
    """

    action: str
    image: str
    model_version: str
    model_digest: str = ""
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    engine: str = ""
    git_sha: str = ""
    detail: str = ""
    rolled_back_from: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """What identifies a release: the image and the model version."""
        return (self.image, self.model_version)

    def label(self) -> str:
        """``image (model vN)``, for messages."""
        return f"{self.image} (model v{self.model_version})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Release:
        known = set(cls.__dataclass_fields__)
        values = {k: str(v) for k, v in data.items() if k in known and v is not None}
        if values.get("action") not in ACTIONS:
            raise DeployError(f"deploy history entry has unknown action {data.get('action')!r}")
        return cls(**values)


def history_path(settings: Settings) -> Path:
    """Where the deploy history of this project lives."""
    return settings.state_path / "deploy" / "history.jsonl"


class DeployHistory:
    """Append-only JSON-lines history with a file lock (CI jobs may share the state folder)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_settings(cls, settings: Settings) -> DeployHistory:
        return cls(history_path(settings))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (self.path.parent / ".history.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def events(self) -> list[Release]:
        """Every recorded event, oldest first.

        Raises:
            DeployError: a line is not a valid entry (the file was edited by hand).
        """
        if not self.path.exists():
            return []
        events: list[Release] = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                events.append(Release.from_dict(json.loads(line)))
            except (ValueError, TypeError) as exc:
                raise DeployError(f"{self.path}:{number}: not a history entry: {exc}") from exc
        return events

    def append(self, release: Release) -> Release:
        """Record one event (flushed and fsynced before returning)."""
        with self._locked(), self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(release.to_dict(), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        logger.info("deploy history: %s %s", release.action, release.label())
        return release

    def releases(self) -> list[Release]:
        """The release stack after replaying every event (the current release last)."""
        stack: list[Release] = []
        for event in self.events():
            if event.action == "rollback":
                while stack and stack[-1].key != event.key:
                    stack.pop()
                if not stack:
                    stack.append(event)
            elif not stack or stack[-1].key != event.key:
                stack.append(event)
        return stack

    def current(self) -> Release | None:
        """The release that is live (or was built last)."""
        releases = self.releases()
        return releases[-1] if releases else None

    def previous(self) -> Release | None:
        """The release a rollback would go back to (None: there is none)."""
        releases = self.releases()
        return releases[-2] if len(releases) >= 2 else None
