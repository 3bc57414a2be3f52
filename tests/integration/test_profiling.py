"""Profiling real replayed weather with data-profiling and logging it to a SQLite MLflow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rps.data.profiling import (
    ProfilingError,
    log_profile_to_mlflow,
    profile_dataset,
    summary_path,
)
from rps.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    from rps.data.sources.replay import ReplayClock, ReplaySource, default_recording, read_tmy3

    now = pd.Timestamp("2026-06-15 12:00", tz="UTC")
    source = ReplaySource(
        read_tmy3(default_recording()), clock=ReplayClock(wall_now=lambda: now, anchor=now)
    )
    data = source.fetch(now - pd.Timedelta(hours=499), now).frame
    assert len(data) == 500
    data.loc[data.index[:10], "cloud_cover"] = np.nan  # 2 % missing in one column
    data.loc[data.index[20:25], "surface_pressure"] = np.nan  # a second column with gaps
    return data


def test_profile_and_log_to_mlflow(
    tmp_path: Path, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith(("RPS_", "MLFLOW_")):
            monkeypatch.delenv(key)
    settings = Settings(_env_file=None, project_root=tmp_path, state_dir=tmp_path / "state")
    settings.state_path.mkdir(parents=True)

    html = profile_dataset(
        frame,
        tmp_path / "reports" / "obs.profile.html",
        title="RPS test",
        targets=["temperature_2m", "not_a_column"],
    )

    assert html == tmp_path / "reports" / "obs.profile.html"
    text = html.read_text(encoding="utf-8")
    assert "RPS test" in text and "temperature_2m" in text
    # the full report, not minimal mode: correlations, missing-value patterns, interactions
    assert ">Correlations<" in text
    assert "correlations_tab-pearson" in text and "correlations_tab-spearman" in text
    assert "correlations_tab-phi_k" not in text  # the slow measures stay off
    assert ">Missing values<" in text
    for diagram in ("bar", "matrix", "heatmap"):  # heatmap: two columns have gaps
        assert f"id=tab-missing-{diagram}" in text
    assert ">Interactions<" in text
    summary = json.loads(summary_path(html).read_text())
    assert summary["rows"] == 500 and summary["columns"] == 8
    assert summary["null_fraction"]["cloud_cover"] == pytest.approx(0.02)
    assert summary["null_fraction"]["surface_pressure"] == pytest.approx(0.01)
    assert sorted(p.name for p in html.parent.iterdir()) == [
        "obs.profile.html",
        "obs.profile.summary.json",
    ]

    run_id = log_profile_to_mlflow(settings, html, dataset_md5="abc123" * 5, run_name="profile-t")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    assert settings.tracking_uri.startswith("sqlite:///")
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "rps-temperature-data"
    assert experiment.artifact_location == settings.artifact_root
    assert run.info.run_name == "profile-t"
    assert run.info.status == "FINISHED"
    assert run.data.tags["dataset_md5"] == "abc123" * 5
    assert run.data.tags["rows"] == "500" and run.data.tags["columns"] == "8"
    assert run.data.metrics["null_fraction.cloud_cover"] == pytest.approx(0.02)
    assert run.data.metrics["null_fraction.temperature_2m"] == 0.0
    artifacts = {a.path for a in client.list_artifacts(run_id, "profiling")}
    assert artifacts == {"profiling/obs.profile.html", "profiling/obs.profile.summary.json"}
    stored = Path(settings.state_path / "mlartifacts")
    assert any(p.name == "obs.profile.html" for p in stored.rglob("*.html"))

    # a second run reuses the experiment
    second = log_profile_to_mlflow(settings, html, dataset_md5="def", run_name="again")
    assert client.get_run(second).info.experiment_id == experiment.experiment_id


def test_profile_errors(tmp_path: Path) -> None:
    with pytest.raises(ProfilingError, match="empty frame"):
        profile_dataset(pd.DataFrame({"a": []}), tmp_path / "x.html", title="t")
    with pytest.raises(ProfilingError, match=r"\.html"):
        profile_dataset(pd.DataFrame({"a": [1]}), tmp_path / "x.pdf", title="t")
    settings = Settings(_env_file=None, project_root=tmp_path, state_dir=tmp_path / "s")
    with pytest.raises(ProfilingError, match="not found"):
        log_profile_to_mlflow(settings, tmp_path / "none.html", dataset_md5="x", run_name="r")
