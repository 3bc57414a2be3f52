"""Retraining after drift against a real MLflow server: adapt to the new regime, judge the present.

Data: the newest 90 days of replayed Greensboro weather. The drifted series are built here
from it (the replay source cannot inject drift yet):

* sustained: from 14 days before the end, the daily temperature cycle grows by 4 degC
  (peak near 20 UTC, the local afternoon) - a change the lag features do not carry through;
* transient: a 12-hour +6 degC sensor bias on the temperature 4 days before the end.

Sustained: the champion is trained on the data before the change, the drift-triggered
challenger on everything (onset placed by replaying the champion's drift checks).
Transient: champion and challenger are trained on the same period with the same onset and
split (so neither is fresher), the challenger on the data with the blip; only the blip
differs. Budget: n_trials=2, two CV folds and a 12 h trajectory.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from rps.models.bundle import load_bundle
from rps.models.gate import predict_bundle
from rps.models.registry import download_bundle
from rps.models.train import train
from rps.params import Params
from tests.integration.conftest_mlflow import MlflowServer

pytestmark = pytest.mark.slow

DAYS = 90


@pytest.fixture(scope="module")
def fast(params: Params) -> Params:
    train_params = params.train.model_copy(update={"n_trials": 2, "cv_folds": 2})
    short = {"max_hours": 12, "group_starts": (1, 4, 7), "interval_folds": 2}
    horizons = params.horizons.model_copy(update=short)
    return params.model_copy(update={"train": train_params, "horizons": horizons})


@pytest.fixture(scope="module")
def clean(observations: pd.DataFrame) -> pd.DataFrame:
    return observations.iloc[-DAYS * 24 :].reset_index(drop=True)


def times_of(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame["time"], utc=True)


def grown_daily_cycle(frame: pd.DataFrame, since: pd.Timestamp, amplitude: float) -> pd.DataFrame:
    """The temperature's daily cycle grows by ``amplitude`` from ``since`` (peak 20 UTC)."""
    out = frame.copy()
    times = times_of(out)
    after = (times >= since).to_numpy()
    hours = times.dt.hour.to_numpy()
    out.loc[after, "temperature_2m"] += amplitude * np.cos(2 * np.pi * (hours[after] - 20) / 24)
    return out


def sensor_blip(frame: pd.DataFrame, start: pd.Timestamp, hours: int, bias: float) -> pd.DataFrame:
    """A temperature sensor reading ``bias`` too high for ``hours`` from ``start``."""
    out = frame.copy()
    times = times_of(out)
    during = ((times >= start) & (times < start + pd.Timedelta(hours=hours))).to_numpy()
    out.loc[during, "temperature_2m"] += bias
    return out


def gate_evidence(client: MlflowClient, run_id: str) -> dict:
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation/gate.json")


def test_after_a_sustained_drift_the_adapted_challenger_is_promoted(
    mlflow_server: MlflowServer, fast: Params, clean: pd.DataFrame, tmp_path: Path
) -> None:
    """A drift run with no onset given replays the champion's drift checks to find it, and wins."""
    name = "drift-sustained"
    settings = mlflow_server.settings(tmp_path, name)
    onset = times_of(clean).max().floor("D") - pd.Timedelta(days=14)
    before = clean[times_of(clean) < onset].reset_index(drop=True)
    first = train(settings, fast, observations=before, dataset_md5="b" * 32)
    assert first.promoted and first.version == "1"

    drifted = grown_daily_cycle(clean, onset, amplitude=4.0)
    result = train(settings, fast, observations=drifted, dataset_md5="c" * 32, adapt=True)

    client = MlflowClient(mlflow_server.url)
    tags = client.get_run(result.run_id).data.tags
    assert tags["rps.drift_onset_source"] == "drift_checks"  # the champion's checks placed it
    estimated = pd.Timestamp(tags["rps.drift_onset"])
    # found inside the drift's first half: the gate's window lies wholly in the new regime
    assert onset - pd.Timedelta(hours=24) <= estimated <= onset + pd.Timedelta(days=7), estimated
    evidence = gate_evidence(client, result.run_id)
    assert evidence["rule"] == "superior", evidence["reason"]
    assert evidence["champion_version"] == "1"
    assert evidence["candidate_rmse"] < 0.8 * evidence["champion_rmse"]
    # the served model was fitted again with the holdout; the gate judged the forecasts made
    # before that refit, as training recorded them
    recorded = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            f"runs:/{result.run_id}/evaluation/holdout_predictions.csv", dst_path=str(tmp_path)
        )
    )
    assert evidence["n"] == len(recorded)
    recorded_rmse = float(np.sqrt(np.mean((recorded["actual"] - recorded["prediction"]) ** 2)))
    assert evidence["candidate_rmse"] == pytest.approx(recorded_rmse)
    served = load_bundle(download_bundle(settings, "2", dst=tmp_path / "v2"))
    assert served.lineage["refit_with_holdout"] is True
    issue_times = pd.DatetimeIndex(pd.to_datetime(recorded["issue_time"], utc=True))
    refit = predict_bundle(served, drifted, issue_times)
    refit_rmse = float(np.sqrt(np.mean((recorded["actual"] - refit) ** 2)))
    assert refit_rmse < recorded_rmse  # it has seen these hours
    # the gate judged the present: the newest hours after the onset only
    params = client.get_run(result.run_id).data.params
    assert pd.Timestamp(params["holdout_start"]) >= max(estimated, onset)
    assert int(params["rows_holdout"]) <= fast.train.promotion.recent_window_hours
    assert result.promoted and result.version == "2"
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    version_tags = client.get_model_version(name, "2").tags
    assert version_tags["gate_decision"] == "promoted" and version_tags["gate_rule"] == "superior"
    assert version_tags["drift_onset"] == tags["rps.drift_onset"]

    # a scheduled run after it keeps the champion's regime: its holdout is still the present
    # (a newest 20 % would be mostly old regime, where the adapted champion looks worse)
    scheduled = train(settings, fast, observations=drifted, dataset_md5="g" * 32)
    scheduled_tags = client.get_run(scheduled.run_id).data.tags
    assert scheduled_tags["rps.drift_onset_source"] == "champion"
    assert scheduled_tags["rps.drift_onset"] == tags["rps.drift_onset"]
    scheduled_params = client.get_run(scheduled.run_id).data.params
    assert pd.Timestamp(scheduled_params["holdout_start"]) >= estimated


def test_after_a_transient_blip_the_champion_stays(
    mlflow_server: MlflowServer, fast: Params, clean: pd.DataFrame, tmp_path: Path
) -> None:
    """A drift run for a 12-hour sensor glitch, long over, does not replace the champion."""
    name = "drift-blip"
    settings = mlflow_server.settings(tmp_path, name)
    start = times_of(clean).max().floor("D") - pd.Timedelta(days=4)
    first = train(settings, fast, observations=clean, dataset_md5="d" * 32, onset=start)
    assert first.promoted and first.version == "1"

    blipped = sensor_blip(clean, start, hours=12, bias=6.0)
    result = train(settings, fast, observations=blipped, dataset_md5="e" * 32, onset=start)

    client = MlflowClient(mlflow_server.url)
    evidence = gate_evidence(client, result.run_id)
    assert not result.promoted, evidence["reason"]
    assert evidence["rule"].startswith("refused"), evidence
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert client.get_model_version_by_alias(name, "challenger").version == "2"
    assert client.get_model_version(name, "2").tags["gate_decision"] == "refused"

    # a drift run 20 hours after an onset cannot fill its holdout with the new regime
    soon = times_of(clean).max() - pd.Timedelta(hours=20)
    early = train(settings, fast, observations=blipped, dataset_md5="f" * 32, onset=soon)
    assert not early.promoted
    assert gate_evidence(client, early.run_id)["rule"] == "refused_too_early"
    assert client.get_model_version_by_alias(name, "champion").version == "1"
