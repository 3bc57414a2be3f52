"""The data pipeline end to end: raw -> gate -> Parquet in storage -> DVC -> profile in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from rps.cli import app
from rps.data.pipeline import LATEST_OBSERVATIONS, Interval, run_pipeline
from rps.data.quality import QualityGateError
from rps.data.sources.replay import default_recording
from rps.settings import get_settings
from tests.conftest import FIXED_NOW

pytestmark = pytest.mark.slow


def _small_params(params):
    return params.model_copy(update={"data": params.data.model_copy(update={"history_days": 30})})


def test_cli_pipeline_on_replay_prints_every_location(settings, monkeypatch):
    result = CliRunner().invoke(
        app, ["pipeline", "--source", "replay", "--end", "2026-06-15T12:00:00Z"]
    )
    assert result.exit_code == 0, result.output
    for step in ("extract", "validate", "transform", "profile", "load", "version"):
        assert f"ok {step}" in result.output
    raw = settings.raw_dir / "raw_data_20260615_120000.csv"
    assert raw.exists()
    catalog = [
        json.loads(line)
        for line in (settings.state_path / "datasets.jsonl").read_text().splitlines()
    ]
    md5 = catalog[-1]["md5"]
    # the object store is the DVC remote: one copy, content-addressed, nothing beside it
    remote_files = [p for p in Path(settings.dvc_remote).rglob("*") if p.is_file()]
    assert remote_files == [Path(settings.dvc_remote) / "files" / "md5" / md5[:2] / md5[2:]]
    assert f"ok load      {remote_files[0].as_uri()}" in result.output
    mlflow.set_tracking_uri(settings.tracking_uri)
    runs = mlflow.search_runs(
        experiment_names=[f"{settings.mlflow_experiment}-data"], output_format="list"
    )
    assert runs and runs[0].data.tags["dataset_md5"] == md5
    artifacts = mlflow.MlflowClient().list_artifacts(runs[0].info.run_id, "profiling")
    assert any(a.path.endswith(".html") for a in artifacts)
    status = json.loads((settings.state_path / "pipeline_status.json").read_text())
    assert status["last_run_failed"] is False and status["last_dataset_md5"] == md5
    # DataStale's input: the newest observation of the copy the API reads
    latest = pd.read_parquet(settings.processed_dir / LATEST_OBSERVATIONS, columns=["time"])
    assert pd.Timestamp(status["last_observation_at"]) == latest["time"].max()


def test_same_interval_twice_gives_same_files_and_hash(settings, params):
    small = _small_params(params)
    interval = Interval.ending_at(FIXED_NOW, small)
    first = run_pipeline(settings, small, interval, source_name="replay", profile=False)
    second = run_pipeline(settings, small, interval, source_name="replay", profile=False)
    assert first.raw_path == second.raw_path
    assert first.version.md5 == second.version.md5
    assert first.version.git_rev == second.version.git_rev
    assert len(list(settings.raw_dir.glob("raw_data_*.csv"))) == 1


def test_pipeline_against_s3(settings, params, s3_endpoint, monkeypatch):
    bucket = s3_endpoint.new_bucket("pipeline")
    s3_settings = settings.model_copy(
        update={"storage_backend": "s3", "s3_bucket": bucket, **s3_endpoint.settings_kwargs()}
    )
    result = run_pipeline(
        s3_settings,
        _small_params(params),
        Interval.ending_at(FIXED_NOW, params),
        source_name="replay",
        profile=False,
    )
    md5 = result.version.md5
    key = f"dvc/files/md5/{md5[:2]}/{md5[2:]}"
    assert result.storage_uri == result.version.storage_uri == f"s3://{bucket}/{key}"
    keys = [o["Key"] for o in s3_endpoint.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [key]  # the dataset once, in the DVC remote: no second copy


def test_gate_failure_stops_everything_downstream(settings, params, tmp_path, monkeypatch):
    broken = tmp_path / "broken.csv"
    lines = default_recording().read_text().splitlines()
    header, body = lines[:2], lines[2:]
    # Dry-bulb temperature is the 32nd field: make every hour 99 degC
    body = [",".join([*f[:31], "99.0", *f[32:]]) for f in (line.split(",") for line in body)]
    broken.write_text("\n".join(header + body) + "\n")
    monkeypatch.setenv("RPS_REPLAY_FILE", str(broken))
    get_settings.cache_clear()
    with pytest.raises(QualityGateError, match="temperature_2m"):
        run_pipeline(
            get_settings(),
            _small_params(params),
            Interval.ending_at(FIXED_NOW, params),
            profile=False,
        )
    assert list(settings.raw_dir.glob("raw_data_*.quarantined"))
    assert not list(settings.processed_dir.glob("*.parquet"))
    assert not (settings.state_path / "datasets.jsonl").exists()
    status = json.loads((settings.state_path / "pipeline_status.json").read_text())
    assert status["last_run_failed"] is True
    result = CliRunner().invoke(app, ["pipeline", "--end", FIXED_NOW.isoformat(), "--no-profile"])
    assert result.exit_code == 1
    assert "QualityGateError" in result.output and "temperature_2m" in result.output


def test_interval_is_history_days_ending_on_the_hour(params):
    interval = Interval.ending_at("2026-06-15T12:34:00Z", params)
    assert interval.end == pd.Timestamp("2026-06-15 12:00", tz="UTC")
    assert interval.end - interval.start == pd.Timedelta(days=params.data.history_days)


def test_tasks_one_process_each_through_manifest_files(settings, tmp_path):
    """What the DVC stages run: `rps pipeline --task NAME`, each on the previous manifest."""
    from rps.data.pipeline import DATA_TASKS

    runner = CliRunner()
    end = "2026-06-15T12:00:00Z"
    folder = tmp_path / "stages"
    early = runner.invoke(
        app, ["pipeline", "--task", "validate", "--end", end, "--manifest-dir", str(folder)]
    )
    assert early.exit_code == 1 and "run task 'extract' first" in early.output
    unknown = runner.invoke(app, ["pipeline", "--task", "train", "--manifest-dir", str(folder)])
    assert unknown.exit_code == 1 and "unknown data task 'train'" in unknown.output

    for task in DATA_TASKS:
        result = runner.invoke(
            app, ["pipeline", "--task", task, "--end", end, "--manifest-dir", str(folder)]
        )
        assert result.exit_code == 0, result.output
        assert f"ok {task}" in result.output
    manifest = json.loads((folder / "version.json").read_text())
    md5 = manifest["dataset_md5"]
    catalog = (settings.state_path / "datasets.jsonl").read_text().splitlines()
    assert json.loads(catalog[-1])["md5"] == md5 == manifest["dataset_md5"]
    assert manifest["storage_uri"] == manifest["dvc_storage_uri"]
    assert Path(manifest["profile_html"]).is_file() and manifest["profile_run_id"]
