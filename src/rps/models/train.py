"""Training: one call from observations to a tracked, registered and gated model.

:func:`train` does the whole loop, each stage in its own module:

1. load a versioned dataset (:mod:`rps.models.dataset`) or take observations, build the
   shared features, refuse leakage (:mod:`rps.models.leakage`) and datasets too short;
2. split by time (:mod:`rps.models.splits`): the newest ``holdout_fraction`` of rows is the
   holdout, separated from the training rows by a gap of ``horizon`` hours; rolling-origin
   CV folds on the training rows carry the same gap;
3. fit the candidates (:mod:`rps.models.candidates`, :mod:`rps.models.tuning`): baselines
   and learned models (ridge, LightGBM) tuned by Optuna, one nested MLflow run per trial;
4. pick the candidate (:func:`rps.models.selection.choose_candidate`), calibrate its
   split-conformal interval, and log everything to one MLflow parent run
   (:mod:`rps.models.artifacts`);
5. evaluate, register and promote it (:mod:`rps.models.stages`): the gate's evidence,
   a new version with alias ``challenger``, and the gate's decision on ``champion``.

:func:`train_candidate` is steps 1-4 alone (a run and its logged model, no registry side
effect); the DAG runs the stages as separate tasks. A drift-triggered run (``adapt``)
trains with the new regime in view (:mod:`rps.models.adaptation`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import pandas as pd

from rps.features.build import FeatureSpec
from rps.models.adaptation import Regime, refit_with_holdout
from rps.models.artifacts import (
    build_bundle,
    flat_params,
    log_artifacts,
    model_signature,
    pip_requirements,
    trial_logger,
)
from rps.models.dataset import IN_MEMORY_URI, DatasetRef, code_version, frame_md5, load_observations
from rps.models.errors import (
    DatasetError,
    InsufficientDataError,
    LeakageError,
    TrainingError,
)
from rps.models.horizons import HORIZON_METRICS, HorizonData, TrajectoryFit, trajectory_metrics
from rps.models.lineage import log_dataset_inputs
from rps.models.registry import METRICS_BY_HORIZON
from rps.models.selection import add_trajectory, choose_candidate, fit_candidates
from rps.models.splits import prepare_data
from rps.params import Params
from rps.settings import Settings

__all__ = [
    "CandidateRun",
    "DatasetError",
    "InsufficientDataError",
    "LeakageError",
    "TrainResult",
    "TrainingError",
    "TrainingInputs",
    "code_version",
    "train",
    "train_candidate",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _RunOutcome:
    """What every training run reports (the candidate and its run)."""

    run_id: str
    experiment_id: str
    candidate: str
    model_kind: str
    metrics: dict[str, float]
    candidates: dict[str, dict[str, float]]
    dataset_md5: str
    dataset_uri: str
    code_sha: str
    code_dirty: bool | None
    bundle_checksum: str
    duration_s: float
    timings: dict[str, float]


@dataclass(frozen=True)
class CandidateRun(_RunOutcome):
    """A training run and the candidate it logged (not registered yet)."""

    model_uri: str
    drift_onset: str | None


@dataclass(frozen=True)
class TrainResult(_RunOutcome):
    """What one training run produced and decided."""

    model_name: str
    version: str
    promoted: bool
    gate_reason: str
    drift_onset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (nested dataclasses become dicts)."""
        return asdict(self)


def _log_horizons(
    data: HorizonData, trajectory: TrajectoryFit, by_horizon: list[dict[str, float]], alpha: float
) -> None:
    """Per-horizon holdout scores: ``horizon.<name>`` metrics stepped by the horizon (the MLflow
    UI draws them against the horizon), ``evaluation/metrics_by_horizon.json``, and the plots
    ``plots/skill_by_horizon.png``, ``plots/coverage_by_horizon.png`` and ``plots/fan_chart.png``
    (the newest holdout issue time with every horizon)."""
    import mlflow

    from rps.models import plots

    for row in by_horizon:
        step = int(row["horizon_hours"])
        mlflow.log_metrics({f"horizon.{k}": row[k] for k in HORIZON_METRICS}, step=step)
    mlflow.log_dict({"metrics_by_horizon": by_horizon}, METRICS_BY_HORIZON)
    rows = data.holdout
    whole = rows.issue_times[rows.horizons == data.max_hours]
    at = np.flatnonzero(rows.issue_times == whole[-1])
    pred = trajectory.predictor.predict(rows.x[at])
    lower, upper = trajectory.interval.bounds(rows.x[at], pred, data.spec.feature_names)
    with tempfile.TemporaryDirectory(prefix="rps-horizon-plots-") as tmp:
        folder = Path(tmp)
        for path in (
            plots.skill_by_horizon(folder / "skill_by_horizon.png", by_horizon),
            plots.coverage_by_horizon(folder / "coverage_by_horizon.png", by_horizon, alpha=alpha),
            plots.fan_chart(
                folder / "fan_chart.png",
                whole[-1] + pd.to_timedelta(rows.horizons[at], unit="h"),
                prediction=pred,
                lower=lower,
                upper=upper,
                actual=rows.y[at],
                title=f"Holdout trajectory issued {whole[-1]:%Y-%m-%d %H:%M} UTC",
            ),
        ):
            mlflow.log_artifact(str(path), "plots")


def train_candidate(
    settings: Settings,
    params: Params,
    *,
    dataset_md5: str | None = None,
    observations: pd.DataFrame | None = None,
    adapt: bool = False,
    onset: pd.Timestamp | None = None,
    run_tags: dict[str, str] | None = None,
) -> CandidateRun:
    """Train the candidates and log one run with the chosen model (no registry side effect).

    Args:
        settings: URIs (MLflow tracking), the project root.
        params: the validated ``params.yaml``.
        dataset_md5: the dataset version to load (None: the latest); with ``observations``,
            recorded as the data version instead of a content fingerprint.
        observations: cleaned hourly observations to train on instead of a stored dataset.
        adapt: a drift-triggered run: train with the regime after the onset in view.
        onset: the drift onset (implies ``adapt``; None with ``adapt``: placed by the
            champion's drift checks, :func:`rps.models.adaptation.resolve_regime`).
        run_tags: extra tags for the run (the DAG's params fingerprint, interval, reason).

    Raises:
        DatasetError: the dataset version is missing or unreadable.
        InsufficientDataError: the dataset is too short (the message names the rows needed).
        LeakageError: a feature uses future information.
        rps.models.errors.RegistryError: the tracking server is unreachable.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if observations is None:
        observations, dataset = load_observations(settings, dataset_md5)
    else:
        dataset = DatasetRef(md5=dataset_md5 or frame_md5(observations), uri=IN_MEMORY_URI)
    timings["load_s"] = time.perf_counter() - started
    spec = FeatureSpec.from_params(params.data.variables, params.data.target, params.features)

    from rps.models import registry
    from rps.models.adaptation import inherited_regime, resolve_regime

    registry.configure_tracking(settings)  # fails fast when the server is unreachable
    import mlflow

    regime: Regime | None = None
    if adapt or onset is not None:
        regime = resolve_regime(settings, params, observations, spec, onset=onset)
    else:
        regime = inherited_regime(settings, params, observations)
    mark = time.perf_counter()
    data = prepare_data(
        observations,
        spec,
        params.train,
        onset=None if regime is None else regime.onset,
        hp=params.horizons,
    )
    timings["features_s"] = time.perf_counter() - mark
    experiment_id = registry.ensure_experiment(settings)
    code_sha, code_dirty = code_version(settings.project_root)
    dirty_tag = "unknown" if code_dirty is None else str(code_dirty).lower()
    trained_at = datetime.now(UTC).isoformat(timespec="seconds")
    index = data.index
    train_times = index[data.train_pos]
    hold_times = index[data.holdout_pos]
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{trained_at}") as run:
        run_id = run.info.run_id
        tags = {
            "rps.dataset_md5": dataset.md5,
            "rps.dataset_uri": dataset.uri,
            "rps.code_sha": code_sha,
            "rps.code_dirty": dirty_tag,
            "rps.trained_at": trained_at,
            "mlflow.source.git.commit": code_sha,
            **(run_tags or {}),
        }
        if regime is not None:
            tags["rps.drift_onset"] = regime.onset.isoformat()
            tags["rps.drift_onset_source"] = regime.source
        mlflow.set_tags(tags)
        mlflow.log_params(
            {
                **flat_params(params),
                **{f"horizons.{k}": str(v) for k, v in params.horizons.model_dump().items()},
                "dataset_md5": dataset.md5,
                "dataset_uri": dataset.uri,
                "code_sha": code_sha,
                "code_dirty": dirty_tag,
                "rows_train": len(data.train_pos),
                "rows_holdout": len(data.holdout_pos),
                "train_start": train_times[0].isoformat(),
                "train_end": train_times[-1].isoformat(),
                "holdout_start": hold_times[0].isoformat(),
                "holdout_end": hold_times[-1].isoformat(),
                "gap_hours": spec.horizon_hours,
            }
        )
        log_dataset_inputs(dataset, observations, data)
        mark = time.perf_counter()
        results = fit_candidates(
            data, params.train, on_trial=trial_logger(experiment_id, run_id), timings=timings
        )
        timings["candidates_s"] = time.perf_counter() - mark
        chosen = choose_candidate(results, adapting=regime is not None)
        mark = time.perf_counter()
        add_trajectory(chosen, data, params.train)
        by_horizon = trajectory_metrics(
            data.horizons, chosen.trajectory, params.train.interval_alpha
        )
        timings["trajectory_s"] = time.perf_counter() - mark
        for name, result in results.items():
            mlflow.log_metrics(
                {
                    f"{name}.{k}": v
                    for k, v in result.metrics.items()
                    if not k.startswith("holdout_rmse_hour")
                }
            )
        summary = {k: v for k, v in chosen.metrics.items() if k != "beats_persistence"}
        summary["persistence_holdout_rmse"] = results["persistence"].metrics["holdout_rmse"]
        summary["holdout_rows"] = float(len(data.holdout_pos))
        summary["train_rows"] = float(len(data.train_pos))
        mlflow.log_metrics(summary)
        mlflow.log_params({f"model.{k}": v for k, v in chosen.hyper.items()})
        lineage = {
            "run_id": run_id,
            "experiment_id": experiment_id,
            "registered_model_name": settings.registered_model_name,
            "dataset_md5": dataset.md5,
            "dataset_uri": dataset.uri,
            "code_sha": code_sha,
            "code_dirty": code_dirty,
            "trained_at": trained_at,
            "candidate": chosen.name,
            "params": {
                "train": params.train.model_dump(mode="json"),
                "features": params.features.model_dump(mode="json"),
                "model": chosen.hyper,
            },
            "train_start": train_times[0].isoformat(),
            "train_end": train_times[-1].isoformat(),
            "holdout_start": hold_times[0].isoformat(),
            "holdout_end": hold_times[-1].isoformat(),
        }
        if regime is not None:
            lineage["drift"] = regime.to_dict()
            if params.train.adaptation.refit_with_holdout:
                mark = time.perf_counter()
                refit_with_holdout(chosen, data, params.train)
                lineage["refit_with_holdout"] = True
                timings["refit_s"] = time.perf_counter() - mark
        bundle_metrics = {
            k: float(v) for k, v in summary.items() if not k.startswith("holdout_rmse_hour")
        }
        bundle = build_bundle(data, chosen, bundle_metrics, lineage, seed=params.train.seed)
        if chosen.trajectory is not None:
            bundle.horizon_interval = chosen.trajectory.interval
            bundle.metrics_by_horizon = by_horizon
            assert data.horizons is not None  # a trajectory implies the stacked rows
            _log_horizons(data.horizons, chosen.trajectory, by_horizon, params.train.interval_alpha)
        mark = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="rps-train-") as tmp:
            root = Path(tmp)
            bundle_dir = bundle.save(root / "bundle")
            log_artifacts(
                root,
                data,
                chosen=chosen,
                results=results,
                observations=observations,
                bundle_dir=bundle_dir,
            )
            timings["artifacts_s"] = time.perf_counter() - mark
            mark = time.perf_counter()
            model_uri = registry.log_model(
                settings,
                bundle_dir,
                signature=model_signature(spec.feature_names),
                input_example=data.features.iloc[data.holdout_pos[:5]][
                    spec.feature_names
                ].reset_index(drop=True),
                pip_requirements=pip_requirements(chosen.kind),
            )
            timings["log_model_s"] = time.perf_counter() - mark
        duration = time.perf_counter() - started
        timings["total_s"] = duration
        mlflow.log_metrics(
            {"duration_s": duration, **{f"timing.{k}": v for k, v in timings.items()}}
        )
        mlflow.set_tags(
            {
                "rps.candidate": chosen.name,
                "rps.model_kind": chosen.kind,
                "rps.model_uri": model_uri,
                "rps.bundle_checksum": bundle.checksum,
            }
        )
    log.info("trained %s (%s) in run %s (%.1f s)", chosen.name, chosen.kind, run_id, duration)
    return CandidateRun(
        run_id=run_id,
        experiment_id=experiment_id,
        model_uri=model_uri,
        candidate=chosen.name,
        model_kind=chosen.kind,
        metrics=bundle_metrics,
        candidates={
            name: {k: v for k, v in r.metrics.items() if not k.startswith("holdout_rmse_hour")}
            for name, r in results.items()
        },
        dataset_md5=dataset.md5,
        dataset_uri=dataset.uri,
        code_sha=code_sha,
        code_dirty=code_dirty,
        bundle_checksum=bundle.checksum,
        drift_onset=None if regime is None else regime.onset.isoformat(),
        duration_s=duration,
        timings=timings,
    )


class TrainingInputs(TypedDict, total=False):
    """The keyword arguments :func:`train` hands to :func:`train_candidate` (documented there)."""

    dataset_md5: str | None
    observations: pd.DataFrame | None
    adapt: bool
    onset: pd.Timestamp | None


def train(settings: Settings, params: Params, **inputs: Unpack[TrainingInputs]) -> TrainResult:
    """Train, track, register and gate one model: :func:`train_candidate` plus the stages.

    Arguments as for :func:`train_candidate`.

    Returns:
        The run, the registered version, the gate decision and the metrics.

    Raises:
        DatasetError: the dataset version is missing or unreadable.
        InsufficientDataError: the dataset is too short (the message names the rows needed).
        LeakageError: a feature uses future information.
        rps.models.errors.RegistryError: the tracking server is unreachable or the
            registry refuses an operation (nothing is registered before training succeeds).
    """
    from rps.models import stages

    started = time.perf_counter()
    run = train_candidate(settings, params, **inputs)
    mark = time.perf_counter()
    stages.evaluate_run(settings, params, run.run_id)
    timings = {**run.timings, "gate_s": time.perf_counter() - mark}
    mark = time.perf_counter()
    version = stages.register_candidate(settings, run.run_id)
    timings["register_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    promotion = stages.promote_run(settings, params, run.run_id)
    timings["promote_s"] = time.perf_counter() - mark
    duration = time.perf_counter() - started
    timings["total_s"] = duration
    log.info("version %s (%s): %s", version, run.candidate, promotion.reason)
    return TrainResult(
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        model_name=settings.registered_model_name,
        version=version,
        candidate=run.candidate,
        model_kind=run.model_kind,
        promoted=promotion.promoted,
        gate_reason=promotion.reason,
        metrics=run.metrics,
        candidates=run.candidates,
        dataset_md5=run.dataset_md5,
        dataset_uri=run.dataset_uri,
        code_sha=run.code_sha,
        code_dirty=run.code_dirty,
        bundle_checksum=run.bundle_checksum,
        duration_s=duration,
        timings=timings,
        drift_onset=run.drift_onset,
    )
