"""Fixtures for the serving unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.serving.bundles import linear_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A linear bundle (prediction = first two features + 0.5) with reference statistics."""
    return linear_bundle(tmp_path_factory.mktemp("bundle") / "b")
