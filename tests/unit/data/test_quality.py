"""The quality gate refuses every kind of bad data with a report naming the problem."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rps.data.extract import store_raw
from rps.data.quality import QualityGateError, check_raw_file, run_quality_gate
from rps.data.sources.base import FetchResult
from tests.conftest import FIXED_NOW


def _week(observations: pd.DataFrame) -> pd.DataFrame:
    return observations.tail(24 * 14).reset_index(drop=True)


def _store(frame: pd.DataFrame, raw_dir: Path) -> Path:
    result = FetchResult(frame=frame, source="test")
    return store_raw(result, raw_dir, collected_at=FIXED_NOW, start=FIXED_NOW, end=FIXED_NOW).path


def test_clean_replay_data_passes(observations, params, tmp_path):
    path = _store(_week(observations), tmp_path)
    report = run_quality_gate(path, params, now=FIXED_NOW)
    assert report.passed
    assert {"schema", "null_fraction", "range", "freshness", "min_rows"} <= set(report.checks_run)
    saved = json.loads(path.with_name(path.stem + ".quality.json").read_text())
    assert saved["passed"] is True


def _nulls(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[f.index[:10], "relative_humidity_2m"] = np.nan  # 10/336 = 3% > 1%
    return f


def _missing_column(f: pd.DataFrame) -> pd.DataFrame:
    return f.drop(columns=["surface_pressure"])


def _extra_column(f: pd.DataFrame) -> pd.DataFrame:
    f["precipitation"] = 0.0
    return f


def _wrong_type(f: pd.DataFrame) -> pd.DataFrame:
    f["cloud_cover"] = "overcast"
    return f


def _temperature_range(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[f.index[5], "temperature_2m"] = 75.0
    return f


def _humidity_range(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[f.index[5], "relative_humidity_2m"] = 130.0
    return f


def _pressure_range(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[f.index[5], "surface_pressure"] = 700.0
    return f


def _stale(f: pd.DataFrame) -> pd.DataFrame:
    return f[f["time"] < FIXED_NOW - pd.Timedelta(hours=12)]


def _too_few_rows(f: pd.DataFrame) -> pd.DataFrame:
    return f.tail(24)


def _duplicates(f: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([f, f.tail(3)]).sort_values("time", kind="stable")


def _non_monotonic(f: pd.DataFrame) -> pd.DataFrame:
    return f.iloc[[*range(0, 100), 150, *range(100, 150), *range(151, len(f))]]


def _future(f: pd.DataFrame) -> pd.DataFrame:
    later = f.tail(5).copy()
    later["time"] = later["time"] + pd.Timedelta(hours=5)
    return pd.concat([f, later])


def _all_nan(f: pd.DataFrame) -> pd.DataFrame:
    f["wind_speed_10m"] = np.nan
    return f


CORRUPTIONS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str, str | None]] = {
    "nulls": (_nulls, "null_fraction", "relative_humidity_2m"),
    "missing_column": (_missing_column, "schema", "surface_pressure"),
    "extra_column": (_extra_column, "schema", "precipitation"),
    "wrong_type": (_wrong_type, "schema", "cloud_cover"),
    "temperature_range": (_temperature_range, "range", "temperature_2m"),
    "humidity_range": (_humidity_range, "range", "relative_humidity_2m"),
    "pressure_range": (_pressure_range, "range", "surface_pressure"),
    "stale": (_stale, "freshness", "time"),
    "too_few_rows": (_too_few_rows, "min_rows", None),
    "duplicates": (_duplicates, "duplicate_timestamps", "time"),
    "non_monotonic": (_non_monotonic, "monotonic_timestamps", "time"),
    "future": (_future, "future_timestamps", "time"),
    "all_nan": (_all_nan, "null_fraction", "wind_speed_10m"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_each_corruption_stops_at_the_gate(kind, observations, params, tmp_path):
    """Each corruption fails its named check; report saved, raw file kept and quarantined."""
    corrupt, check, column = CORRUPTIONS[kind]
    path = _store(corrupt(_week(observations).copy()), tmp_path)
    before = path.read_bytes()
    with pytest.raises(QualityGateError) as info:
        run_quality_gate(path, params, now=FIXED_NOW)
    failures = info.value.report.failures
    assert any(
        f.check == check and (column is None or column in (f.column or "")) for f in failures
    ), failures
    assert check in str(info.value)
    report = json.loads(path.with_name(path.stem + ".quality.json").read_text())
    assert report["passed"] is False
    assert any(f["check"] == check for f in report["failures"])
    assert path.with_name(path.stem + ".quarantined").exists()
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (b"", "parse"),
        (b"\x00\xff\xfe garbage \x01", "parse"),
        (b"time,temperature_2m\n", "parse"),
        (b"time,temperature_2m\nnot-a-date,1.0\n", "parse"),
    ],
)
def test_unreadable_files_fail_parse(payload, detail, params, tmp_path):
    path = tmp_path / "raw_data_20260615_120000.csv"
    path.write_bytes(payload)
    report = check_raw_file(path, params, now=FIXED_NOW)
    assert not report.passed
    assert report.failures[0].check in {detail, "schema"}


def test_validate_cli_exits_nonzero_and_names_the_check(observations, settings, tmp_path):
    from rps.cli import app

    path = _store(_temperature_range(_week(observations).copy()), tmp_path / "raw")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "temperature_2m" in result.output
    assert path.exists()


def test_validate_cli_passes_good_file(observations, settings, tmp_path):
    from rps.cli import app

    path = _store(_week(observations), tmp_path / "raw")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "passed" in result.output
