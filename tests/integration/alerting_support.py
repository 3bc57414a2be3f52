"""Shared by the alerting tests: the real receiver app under uvicorn in a thread, polling, and
the requirement of the real Prometheus/Alertmanager binaries."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn

from rps.monitoring import promconfig
from rps.monitoring.alert_receiver import RetrainTrigger, create_receiver_app
from rps.settings import Settings


def require_binary(names: tuple[str, ...], package: str) -> str:
    """The binary's path; fails (never skips) when the Debian package is missing."""
    try:
        return promconfig.find_binary(*names, package=package)
    except promconfig.BinaryNotFoundError as exc:
        pytest.fail(f"this test needs the real binary: {exc}", pytrace=False)


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll ``condition`` every 0.1 s until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Receiver:
    """The alert receiver app (real FastAPI app, fake trigger) under uvicorn in a thread."""

    def __init__(self, settings: Settings, trigger: RetrainTrigger) -> None:
        self.settings = settings
        self.trigger: Any = trigger
        self.port = promconfig.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_receiver_app(settings, trigger=trigger),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=15, what="the alert receiver to start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def records(self) -> list[dict[str, Any]]:
        """The alert log (one JSON line per alert of every notification)."""
        if not self.settings.alert_log.exists():
            return []
        lines = self.settings.alert_log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def logged(self, alertname: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["alertname"] == alertname]
