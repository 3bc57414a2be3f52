"""What a training run logs besides metrics: plots, configs, the holdout, the bundle."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rps.features.build import TARGET, TARGET_TIME
from rps.models import evaluation as ev
from rps.models.bundle import ModelBundle
from rps.models.candidates import feature_importance
from rps.models.selection import CandidateResult
from rps.models.splits import PreparedData
from rps.models.tuning import TrialLogger
from rps.params import Params
from rps.serving.seasonal import SEASONAL_KEY, build_reference

log = logging.getLogger(__name__)

REFERENCE_SAMPLE_ROWS = 1000


def flat_params(params: Params) -> dict[str, str]:
    out: dict[str, str] = {
        "data.target": params.data.target,
        "data.variables": ",".join(params.data.variables),
    }
    for key, value in params.features.model_dump().items():
        out[f"features.{key}"] = (
            json.dumps(value) if isinstance(value, list | tuple) else str(value)
        )
    train = params.train.model_dump()
    for key, value in train.items():
        if key == "promotion":
            for k, v in value.items():
                out[f"train.promotion.{k}"] = str(v)
        elif key == "search_space":
            out["train.search_space"] = json.dumps(value, sort_keys=True)
        else:
            out[f"train.{key}"] = str(value)
    return out


def _holdout_frame(
    data: PreparedData, chosen: CandidateResult, persistence: np.ndarray
) -> pd.DataFrame:
    ho = data.features.iloc[data.holdout_pos]
    lower, upper = chosen.bounds(data.x[data.holdout_pos], chosen.holdout_pred)
    return pd.DataFrame(
        {
            "issue_time": ho.index,
            "target_time": ho[TARGET_TIME].to_numpy(),
            "actual": ho[TARGET].to_numpy(dtype=float),
            "prediction": chosen.holdout_pred,
            "lower": lower,
            "upper": upper,
            "persistence": persistence,
        }
    )


def _write_plots(
    directory: Path,
    data: PreparedData,
    chosen: CandidateResult,
    results: Mapping[str, CandidateResult],
) -> list[Path]:
    from rps.models import plots

    ho = data.features.iloc[data.holdout_pos]
    y = ho[TARGET].to_numpy(dtype=float)
    target_times = pd.DatetimeIndex(ho[TARGET_TIME])
    hours = ho["target_hour"].to_numpy()
    pred = chosen.holdout_pred
    forecasts = {chosen.name: pred}
    if chosen.name != "persistence":
        forecasts["persistence"] = results["persistence"].holdout_pred
    by_hour = {
        name: ev.error_by_hour(y, results[name].holdout_pred, hours)
        for name in dict.fromkeys([chosen.name, "persistence", "seasonal_naive"])
        if name in results
    }
    names = data.spec.feature_names
    return [
        plots.forecast_vs_actual(
            directory / "forecast_vs_actual.png",
            target_times,
            y,
            forecasts,
            interval=chosen.bounds(data.x[data.holdout_pos], pred),
        ),
        plots.residual_histogram(
            directory / "residual_histogram.png", y - pred, interval=chosen.interval
        ),
        plots.error_by_hour(directory / "error_by_hour.png", by_hour),
        plots.feature_importance(
            directory / "feature_importance.png",
            names,
            feature_importance(chosen.predictor),
            title=f"Feature importance ({chosen.name})",
        ),
    ]


def model_signature(names: Sequence[str]) -> Any:
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    from rps.models.pyfunc import OUTPUT_COLUMNS

    inputs = Schema([ColSpec("double", n) for n in names])
    outputs = Schema([ColSpec("double", n) for n in OUTPUT_COLUMNS])
    return ModelSignature(inputs=inputs, outputs=outputs)


#: what every logged pyfunc needs to load and serve (MLflow's pyfunc server, the bundle's
#: code as :mod:`rps.models.pyfunc_code` stages it: NumPy, pandas, filelock)
SERVE_DISTRIBUTIONS = ("mlflow-skinny", "numpy", "pandas", "filelock")
#: what a model kind adds (the other kinds predict with NumPy alone)
KIND_DISTRIBUTIONS = {"lightgbm": ("lightgbm",), "lightgbm_horizons": ("lightgbm",)}


def pip_requirements(kind: str) -> list[str]:
    """The logged pyfunc's requirements, pinned to the installed versions.

    What a fresh environment needs to serve a bundle of ``kind`` (``mlflow models serve``):
    neither ``rps`` itself (its modules travel as ``code_paths``) nor the pipeline's
    libraries.
    """
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in (*SERVE_DISTRIBUTIONS, *KIND_DISTRIBUTIONS.get(kind, ())):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


def trial_logger(experiment_id: str, parent_run_id: str) -> TrialLogger:
    import mlflow

    def log_trial(
        name: str, number: int, hyper: dict[str, Any], cv_rmse: float | None, state: str
    ) -> None:
        with mlflow.start_run(
            experiment_id=experiment_id, run_name=f"{name}-trial-{number:02d}", nested=True
        ) as run:
            mlflow.log_params({"candidate": name, "trial": number, **hyper})
            mlflow.set_tags({"rps.trial_state": state, "rps.parent_run": parent_run_id})
            if cv_rmse is not None:
                mlflow.log_metric("cv_rmse", cv_rmse)
            log.debug("trial %s %s: %s %s", name, number, state, run.info.run_id)

    return log_trial


def build_bundle(
    data: PreparedData,
    chosen: CandidateResult,
    metrics: dict[str, float],
    lineage: dict[str, Any],
    *,
    seed: int,
) -> ModelBundle:
    """The chosen predictor with its interval, metrics, lineage and training reference."""
    train_x = data.x[data.train_pos]
    rng = np.random.default_rng(seed)
    size = min(REFERENCE_SAMPLE_ROWS, len(train_x))
    take = np.sort(rng.choice(len(train_x), size=size, replace=False))
    train_frame = pd.DataFrame(train_x, columns=data.spec.feature_names)
    return ModelBundle(
        predictor=chosen.predictor,
        feature_spec=data.spec,
        interval=chosen.interval,
        metrics=metrics,
        lineage=lineage,
        reference_stats={
            **ev.reference_stats(train_frame),
            SEASONAL_KEY: build_reference(train_frame),  # drift checks (rps.serving.seasonal)
        },
        reference_sample=train_x[take],
    )


def log_artifacts(
    root: Path,
    data: PreparedData,
    *,
    chosen: CandidateResult,
    results: Mapping[str, CandidateResult],
    observations: pd.DataFrame,
    bundle_dir: Path,
) -> None:
    """Plots, feature config, reference stats and the holdout evaluation, to the active run."""
    import mlflow

    from rps.models.gate import HOLDOUT_OBSERVATIONS, HOLDOUT_PREDICTIONS, holdout_observations

    spec = data.spec
    _write_plots(root / "plots", data, chosen, results)
    mlflow.log_artifacts(str(root / "plots"), "plots")
    config = root / "feature_config.json"
    config.write_text(json.dumps({**spec.to_dict(), "feature_names": spec.feature_names}, indent=2))
    mlflow.log_artifact(str(config))
    mlflow.log_artifact(str(bundle_dir / "reference_stats.json"), "reference")
    evaluation = root / "evaluation"
    evaluation.mkdir()
    persistence = results["persistence"].holdout_pred
    _holdout_frame(data, chosen, persistence).to_csv(
        evaluation / Path(HOLDOUT_PREDICTIONS).name, index=False
    )
    hold_times = data.index[data.holdout_pos]
    holdout_observations(observations, spec, hold_times).to_parquet(
        evaluation / Path(HOLDOUT_OBSERVATIONS).name, index=False
    )
    candidates = {
        name: {
            "kind": r.kind,
            "hyperparams": r.hyper,
            "metrics": r.metrics,
            "interval": r.interval,
            "cv_fold_rmse": r.cv.fold_rmse,
            "dm_vs_persistence": r.dm_vs_persistence.to_dict() if r.dm_vs_persistence else None,
        }
        for name, r in results.items()
    }
    (evaluation / "candidates.json").write_text(json.dumps(candidates, indent=2, default=str))
    mlflow.log_artifacts(str(evaluation), "evaluation")
