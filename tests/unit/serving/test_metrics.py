"""The observation age on the data's clock (what DataStale alerts on)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from rps.data.sources.replay import ReplayClock
from rps.serving.metrics import RuntimeCollector, data_clock_now
from rps.settings import Settings


def _collector(tmp_path: Path, data_now: float) -> RuntimeCollector:
    return RuntimeCollector(
        started_at=0.0,
        status_file=tmp_path / "pipeline_status.json",
        model_name="m",
        current_model=lambda: None,
        live_accuracy=lambda: None,
        data_now=lambda: data_now,
    )


def _gauges(collector: RuntimeCollector) -> dict[str, float]:
    return {m.name: m.samples[0].value for m in collector.collect() if m.samples}


def test_observation_age_is_measured_on_the_data_clock(tmp_path: Path) -> None:
    newest = datetime(2025, 3, 1, 5, tzinfo=UTC)
    (tmp_path / "pipeline_status.json").write_text(
        json.dumps({"last_observation_at": newest.isoformat()})
    )
    gauges = _gauges(_collector(tmp_path, newest.timestamp() + 7200))
    assert gauges["data_last_observation_timestamp_seconds"] == newest.timestamp()
    assert gauges["data_observation_age_seconds"] == 7200


def test_no_observation_age_without_a_newest_observation(tmp_path: Path) -> None:
    (tmp_path / "pipeline_status.json").write_text(json.dumps({"last_run_failed": False}))
    assert "data_observation_age_seconds" not in _gauges(_collector(tmp_path, 1e9))


def test_the_replay_clock_runs_as_the_replay_source_reads_it(tmp_path: Path) -> None:
    anchor = datetime.now(UTC).replace(microsecond=0)
    origin = datetime(2026, 11, 20, tzinfo=UTC)
    settings = Settings(
        state_dir=tmp_path,
        source="replay",
        replay_speed=1440.0,
        replay_anchor=anchor,
        replay_origin=origin.replace(tzinfo=None),  # naive: UTC, as ReplayClock reads it
    )
    expected = ReplayClock.from_settings(settings).now().timestamp()
    got = data_clock_now(settings, default_anchor=0.0)
    # a wall second between the two calls is 1440 replay seconds
    assert got == pytest.approx(expected, abs=1440.0 * 2)
    assert got - origin.timestamp() == pytest.approx(
        (time.time() - anchor.timestamp()) * 1440, abs=2880
    )


def test_other_sources_use_the_wall_clock(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, source="synthetic", replay_speed=100.0)
    assert data_clock_now(settings, default_anchor=0.0) == pytest.approx(time.time(), abs=5)
    replay = Settings(state_dir=tmp_path, source="replay")  # no shared clock: speed 1 from now
    assert data_clock_now(replay, default_anchor=time.time()) == pytest.approx(
        pd.Timestamp.now(tz="UTC").timestamp(), abs=5
    )
