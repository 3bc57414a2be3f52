"""Fixtures for the monitoring configuration tests: the promtool and amtool binaries.

CI installs the Debian packages ``prometheus`` and ``prometheus-alertmanager``; tests that need
them fail (not skip) when they are missing, so a broken CI image cannot pass silently.
"""

from __future__ import annotations

import pytest

from rps.monitoring.promconfig import BinaryNotFoundError, find_binary


def _require(name: str, package: str) -> str:
    try:
        return find_binary(name, package=package)
    except BinaryNotFoundError as exc:
        pytest.fail(f"{name} is required for this test: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def promtool() -> str:
    return _require("promtool", "prometheus")


@pytest.fixture(scope="session")
def amtool() -> str:
    return _require("amtool", "prometheus-alertmanager")
