"""Training against a real MLflow server: tracking, registration and the promotion gate.

Data: the newest 75 days of replayed Greensboro weather (spring: the learned models beat
persistence clearly) and, for "nothing beats persistence", a random-walk temperature.
Budget: n_trials=2, two CV folds and a 12 h trajectory, so each training takes seconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import typer
from mlflow import MlflowClient
from typer.testing import CliRunner

from rps.cli import model as model_cli
from rps.features.build import build_features
from rps.models import registry
from rps.models.bundle import load_bundle
from rps.models.train import DatasetError, InsufficientDataError, train
from rps.params import Params
from rps.settings import get_settings
from tests.integration.conftest_mlflow import MlflowServer, free_port

pytestmark = pytest.mark.slow

SPRING_DAYS = 75
#: a search space that cannot fit anything: LightGBM with 1-2 stumps, ridge crushed to a mean
WEAK_SPACE = {
    "lightgbm": {"num_leaves": (2, 2), "learning_rate": (0.01, 0.01), "n_estimators": (1, 2)},
    "ridge": {"alpha": (1e7, 1e8)},
}


#: a short trajectory (12 h, three horizon groups, two interval folds) keeps each run fast
SHORT_TRAJECTORY = {"max_hours": 12, "group_starts": (1, 4, 7), "interval_folds": 2}


@pytest.fixture(scope="module")
def fast(params: Params) -> Params:
    train_params = params.train.model_copy(update={"n_trials": 2, "cv_folds": 2})
    horizons = params.horizons.model_copy(update=SHORT_TRAJECTORY)
    return params.model_copy(update={"train": train_params, "horizons": horizons})


@pytest.fixture(scope="module")
def weak(fast: Params) -> Params:
    train_params = fast.train.model_copy(update={"search_space": WEAK_SPACE})
    return fast.model_copy(update={"train": train_params})


@pytest.fixture(scope="module")
def spring(observations: pd.DataFrame) -> pd.DataFrame:
    return observations.iloc[-SPRING_DAYS * 24 :].reset_index(drop=True)


def random_walk(variables: tuple[str, ...], *, days: int = 60, seed: int = 0) -> pd.DataFrame:
    """Weather nobody can forecast better than persistence: a random-walk temperature."""
    rng = np.random.default_rng(seed)
    n = days * 24
    frame = pd.DataFrame({"time": pd.date_range("2024-03-01", periods=n, freq="h", tz="UTC")})
    for name in variables:
        frame[name] = rng.normal(50.0, 5.0, n)
    frame["temperature_2m"] = 10.0 + np.cumsum(rng.normal(0.0, 1.0, n))
    frame["wind_direction_10m"] = rng.uniform(0, 360, n)
    return frame


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, mlflow_server: MlflowServer, tmp_path: Path):
    """``cli(name, "list")`` runs ``rps model list`` against registered model ``name``."""

    app = typer.Typer()
    model_cli.register(app)
    runner = CliRunner()

    def invoke(name: str, *args: str):  # type: ignore[no-untyped-def]
        for key, value in mlflow_server.env(tmp_path, name).items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        try:
            return runner.invoke(app, ["model", *args])
        finally:
            get_settings.cache_clear()

    return invoke


def versions(client: MlflowClient, name: str) -> list[str]:
    return sorted(mv.version for mv in client.search_model_versions(f"name='{name}'"))


def test_clean_run_registers_a_champion_with_everything_tracked(
    mlflow_server: MlflowServer,
    fast: Params,
    spring: pd.DataFrame,
    tmp_path: Path,
    cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "clean-run"
    settings = mlflow_server.settings(tmp_path, name)
    result = train(settings, fast, observations=spring, dataset_md5="a" * 32)
    assert result.version == "1" and result.promoted
    assert result.candidate == "lightgbm"
    assert result.metrics["holdout_rmse"] < result.candidates["seasonal_naive"]["holdout_rmse"]

    client = MlflowClient(mlflow_server.url)
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert client.get_model_version_by_alias(name, "challenger").version == "1"
    tags = client.get_model_version(name, "1").tags
    assert tags["role"] == "champion"
    assert tags["model_kind"] == "lightgbm_horizons"
    assert tags["gate_decision"] == "promoted" and "no champion yet" in tags["gate_reason"]
    assert tags["dataset_md5"] == "a" * 32
    assert tags["promoted_by"] == "gate" and tags["promoted_at"] and tags["reason"]

    run = client.get_run(result.run_id)
    params, metrics, run_tags = run.data.params, run.data.metrics, run.data.tags
    assert params["dataset_md5"] == "a" * 32 and params["dataset_uri"] == "in-memory"
    assert params["train.n_trials"] == "2" and params["features.horizon_hours"] == "6"
    assert len(params["code_sha"]) == 40 and params["code_dirty"] in ("true", "false")
    assert run_tags["rps.gate"] == "promoted" and run_tags["rps.version"] == "1"
    for key in (
        "holdout_rmse",
        "holdout_mae",
        "holdout_r2",
        "holdout_mape",
        "holdout_smape",
        "holdout_skill_vs_persistence",
        "holdout_directional_accuracy",
        "interval_coverage",
        "duration_s",
        "holdout_rmse_hour_00",
        "holdout_rmse_hour_23",
        "persistence.holdout_rmse",
        "ridge.cv_rmse",
        "lightgbm.dm_p_vs_persistence",
    ):
        assert np.isfinite(metrics[key]), key
    assert metrics["holdout_skill_vs_persistence"] > 0.3
    assert 0.75 <= metrics["interval_coverage"] <= 1.0

    artifacts = {
        f.path
        for top in ("", "plots", "evaluation", "reference")
        for f in client.list_artifacts(result.run_id, top)
    }
    for path in (
        "feature_config.json",
        "plots/forecast_vs_actual.png",
        "plots/residual_histogram.png",
        "plots/error_by_hour.png",
        "plots/feature_importance.png",
        "plots/skill_by_horizon.png",
        "plots/coverage_by_horizon.png",
        "plots/fan_chart.png",
        "reference/reference_stats.json",
        "evaluation/holdout_predictions.csv",
        "evaluation/holdout_observations.parquet",
        "evaluation/candidates.json",
        "evaluation/gate.json",
        "evaluation/metrics_by_horizon.json",
    ):
        assert path in artifacts, path

    trials = client.search_runs(
        [result.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{result.run_id}'"
    )
    assert len(trials) == 4  # 2 trials each for ridge and LightGBM
    assert all("candidate" in t.data.params for t in trials)
    assert sum("cv_rmse" in t.data.metrics for t in trials) >= 3  # a trial may be pruned

    bundle_dir = registry.download_bundle(settings, "champion", dst=tmp_path / "dl")
    bundle = load_bundle(bundle_dir)
    assert bundle.kind == "lightgbm_horizons" and bundle.checksum == result.bundle_checksum
    assert bundle.max_horizon_hours == 12 and len(bundle.metrics_by_horizon) == 12
    assert {"holdout_rmse", "holdout_mae", "interval_coverage"} <= set(bundle.metrics)
    lineage = bundle.lineage
    for key in ("run_id", "dataset_md5", "dataset_uri", "code_sha", "code_dirty", "params"):
        assert key in lineage, key
    assert lineage["run_id"] == result.run_id and lineage["trained_at"]
    assert (
        bundle.interval["alpha"] == 0.1 and bundle.interval["lower"] < 0 < bundle.interval["upper"]
    )
    assert bundle.reference_sample is not None
    assert bundle.reference_sample.shape == (1000, len(bundle.feature_names))
    stats = bundle.reference_stats["temperature_2m"]
    assert {"mean", "std", "min", "max", "quantiles"} <= set(stats)
    assert len(stats["quantiles"]) == 13

    features = build_features(spring, bundle.feature_spec).dropna().iloc[-5:]
    rows = features[bundle.feature_names]
    # loading prepends the model's own copy of the rps modules to sys.path (its code_paths):
    # keep it out of this process's path, or processes spawned later import that partial copy
    monkeypatch.setattr(sys, "path", list(sys.path))
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    out = model.predict(rows.reset_index(drop=True))
    np.testing.assert_allclose(out["prediction"], bundle.predictor.predict(rows.to_numpy()))
    inputs = model.metadata.get_input_schema().input_names()
    assert inputs == bundle.feature_names

    info = registry.champion_info(settings)
    assert info["version"] == "1" and info["run_id"] == result.run_id
    assert info["dataset_md5"] == "a" * 32 and info["model_kind"] == "lightgbm_horizons"
    assert info["metrics"]["holdout_rmse"] == pytest.approx(result.metrics["holdout_rmse"])

    shown = cli(name, "info", "champion")
    assert shown.exit_code == 0, shown.output
    details = json.loads(shown.stdout)
    assert details["run_id"] == result.run_id and details["params"]["dataset_md5"] == "a" * 32
    by_horizon = details["metrics_by_horizon"]
    assert [row["horizon_hours"] for row in by_horizon] == list(range(1, 13))
    keys = ("rmse", "persistence_rmse", "seasonal_naive_rmse", "coverage", "mean_width")
    for row in by_horizon:
        assert all(np.isfinite(row[k]) for k in (*keys, "interval_score")), row
        assert row["rmse"] <= row["persistence_rmse"]  # the gate's rule at every horizon
    assert by_horizon[5] == bundle.metrics_by_horizon[5]
    stepped = client.get_metric_history(result.run_id, "horizon.rmse")
    assert sorted(m.step for m in stepped) == list(range(1, 13))


def test_gate_refuses_worse_promotes_better_and_rollback_restores(
    mlflow_server: MlflowServer,
    fast: Params,
    weak: Params,
    spring: pd.DataFrame,
    tmp_path: Path,
    cli,
) -> None:
    name = "gated"
    settings = mlflow_server.settings(tmp_path, name)
    client = MlflowClient(mlflow_server.url)

    first = train(settings, weak, observations=spring)
    assert first.promoted and first.candidate == "seasonal_naive"

    better = train(settings, fast, observations=spring)
    assert better.promoted, better.gate_reason
    assert better.candidate == "lightgbm" and "champion v1" in better.gate_reason
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert client.get_model_version(name, "1").tags["role"] == "retired"

    worse = train(settings, weak, observations=spring)
    assert not worse.promoted and "worse than champion v2" in worse.gate_reason
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert client.get_model_version_by_alias(name, "challenger").version == "3"
    refused = client.get_model_version(name, "3").tags
    assert refused["gate_decision"] == "refused" and refused["role"] == "challenger"

    report = tmp_path / "reports" / "compare.md"
    degraded = cli(
        name, "compare", "--candidate", "3", "--against", "champion", "--output", str(report)
    )
    assert degraded.exit_code == 1, degraded.output
    assert "REFUSED" in degraded.output
    text = report.read_text()
    assert "| rmse |" in text and "Diebold-Mariano" in text and "REFUSE" in text
    assert (tmp_path / "reports" / "compare_forecast.png").stat().st_size > 0
    assert (tmp_path / "reports" / "compare_error_by_hour.png").stat().st_size > 0
    improved = cli(name, "compare", "--candidate", "2", "--against", "1")
    assert improved.exit_code == 0, improved.output

    rolled = cli(name, "rollback", "--by", "tester", "--reason", "bad forecasts downstream")
    assert rolled.exit_code == 0, rolled.output
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert client.get_model_version(name, "2").tags["role"] == "rolled_back"
    restored = client.get_model_version(name, "1").tags
    assert restored["role"] == "champion" and restored["promoted_by"] == "tester"

    shown = cli(name, "history", "--json")
    assert shown.exit_code == 0, shown.output
    events = json.loads(shown.stdout)
    assert [(e["action"], e["version"], e["previous"]) for e in events] == [
        ("rollback", "1", "2"),
        ("gate", "2", "1"),
        ("gate", "1", None),
    ]
    assert events[0]["by"] == "tester" and events[0]["reason"] == "bad forecasts downstream"

    again = cli(name, "rollback", "--by", "tester")
    assert again.exit_code == 1 and "no previous champion" in again.output
    assert client.get_model_version_by_alias(name, "champion").version == "1"

    manual = cli(name, "promote", "2", "--by", "tester", "--reason", "fixed downstream")
    assert manual.exit_code == 0, manual.output
    assert registry.champion_info(settings)["version"] == "2"
    listed = cli(name, "list")
    assert listed.exit_code == 0 and "champion" in listed.output


def test_persistence_stays_champion_when_learned_models_lose(
    mlflow_server: MlflowServer, fast: Params, tmp_path: Path
) -> None:
    name = "unpredictable"
    settings = mlflow_server.settings(tmp_path, name)
    first = train(settings, fast, observations=random_walk(fast.data.variables, seed=0))
    assert first.candidate == "persistence" and first.promoted
    for learned in ("ridge", "lightgbm"):
        assert not first.candidates[learned]["beats_persistence"]
    second = train(settings, fast, observations=random_walk(fast.data.variables, seed=1))
    assert second.candidate == "persistence"
    info = registry.champion_info(settings)
    assert info["model_kind"] == "persistence"
    bundle = load_bundle(registry.download_bundle(settings, dst=tmp_path / "dl"))
    rows = np.random.default_rng(0).normal(size=(3, len(bundle.feature_names)))
    column = bundle.feature_names.index("temperature_2m")
    np.testing.assert_array_equal(bundle.predictor.predict(rows), rows[:, column])


def test_bad_input_is_refused_with_named_errors_and_changes_nothing(
    mlflow_server: MlflowServer, fast: Params, tmp_path: Path, cli
) -> None:
    name = "bad-input"
    settings = mlflow_server.settings(tmp_path, name)
    client = MlflowClient(mlflow_server.url)
    train(settings, fast, observations=random_walk(fast.data.variables, seed=2))
    before = versions(client, name)
    champion = client.get_model_version_by_alias(name, "champion").version

    with pytest.raises(InsufficientDataError, match=r"needs at least \d+"):
        train(settings, fast, observations=random_walk(fast.data.variables, days=10))
    with pytest.raises(DatasetError, match="0123456789abcdef"):
        train(settings, fast, dataset_md5="0123456789abcdef")
    with pytest.raises(registry.ModelNotFoundError, match="no version 99"):
        registry.version_info(settings, "99")
    with pytest.raises(registry.ModelNotFoundError, match="'nope'"):
        registry.download_bundle(settings, "nope", dst=tmp_path / "x")
    with pytest.raises(registry.ModelNotFoundError, match="does not exist"):
        registry.champion_info(mlflow_server.settings(tmp_path, "never-registered"))
    for args in (("info", "99"), ("promote", "42"), ("compare", "--candidate", "7")):
        result = cli(name, *args)
        assert result.exit_code == 1, (args, result.output)
        assert "ModelNotFoundError" in result.output

    dead = mlflow_server.settings(
        tmp_path, name, mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}"
    )
    started = time.perf_counter()
    with pytest.raises(registry.TrackingUnavailableError, match="unreachable"):
        train(dead, fast, observations=random_walk(fast.data.variables, seed=3))
    assert time.perf_counter() - started < 15

    assert versions(client, name) == before
    assert client.get_model_version_by_alias(name, "champion").version == champion


def test_a_corrupted_champion_blocks_promotion_not_training(
    mlflow_server: MlflowServer, fast: Params, tmp_path: Path
) -> None:
    name = "corrupted"
    settings = mlflow_server.settings(tmp_path, name)
    client = MlflowClient(mlflow_server.url)
    train(settings, fast, observations=random_walk(fast.data.variables, seed=4))
    model_id = client.get_model_version(name, "1").source.rsplit("/", 1)[-1]
    (stored,) = (mlflow_server.root / "artifacts").rglob(f"{model_id}/**/bundle/params.json")
    stored.write_text(stored.read_text() + " ")  # the checksum no longer matches

    result = train(settings, fast, observations=random_walk(fast.data.variables, seed=5))
    assert not result.promoted
    assert "champion v1 cannot be loaded" in result.gate_reason and "checksum" in result.gate_reason
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert client.get_model_version_by_alias(name, "challenger").version == "2"
