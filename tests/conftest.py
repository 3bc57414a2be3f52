"""Shared fixtures: the project's params, isolated settings, and real replayed weather."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from rps.params import Params, load_params
from rps.settings import Settings, get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
# A fixed "now" so replayed data and freshness checks do not depend on the wall clock.
FIXED_NOW = pd.Timestamp("2026-06-15 12:00", tz="UTC")


@pytest.fixture(scope="session")
def params() -> Params:
    return load_params(REPO_ROOT / "params.yaml")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose whole local state lives in this test's temporary folder."""
    for key in list(__import__("os").environ):
        if key.startswith("RPS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RPS_PROJECT_ROOT", str(tmp_path))
    monkeypatch.setenv("RPS_PARAMS_PATH", str(REPO_ROOT / "params.yaml"))
    monkeypatch.setenv("RPS_STATE_DIR", str(tmp_path / ".rps"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def recording() -> pd.DataFrame:
    from rps.data.sources.replay import default_recording, read_tmy3

    return read_tmy3(default_recording())


@pytest.fixture(scope="session")
def replay_source(recording: pd.DataFrame, params: Params):  # type: ignore[no-untyped-def]
    from rps.data.sources.replay import ReplayClock, ReplaySource

    clock = ReplayClock(speed=1.0, wall_now=lambda: FIXED_NOW, anchor=FIXED_NOW)
    return ReplaySource(recording, clock=clock, variables=params.data.variables)


@pytest.fixture(scope="session")
def observations(replay_source) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """A year of real hourly observations ending at FIXED_NOW."""
    return replay_source.fetch(FIXED_NOW - pd.Timedelta(days=365), FIXED_NOW).frame
