"""Rolling-origin cross-validation and the Optuna search over a candidate's hyperparameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from rps.features.spec import FeatureSpec
from rps.models import evaluation as ev
from rps.models.candidates import fit_candidate
from rps.models.forecasters import INT_PARAMS, FitInfo
from rps.models.parallel import in_order

#: search-space entries sampled on a log scale (when the low bound is > 0)
LOG_PARAMS = frozenset({"learning_rate", "alpha", "lambda_l1", "lambda_l2"})


#: the first trial of each search (clipped into the search space): a sound default
DEFAULT_HYPERPARAMS: dict[str, dict[str, float]] = {
    "lightgbm": {
        "num_leaves": 31,
        "learning_rate": 0.05,
        "n_estimators": 400,
        "min_child_samples": 20,
        "feature_fraction": 0.9,
        "lambda_l2": 1.0,
    },
    "ridge": {"alpha": 1.0},
}


@dataclass
class CVOutcome:
    """Cross-validation of one candidate configuration."""

    rmse: float  # mean of the fold RMSEs
    fold_rmse: list[float]
    residuals: np.ndarray  # out-of-fold y - pred, all folds (conformal calibration)
    best_iterations: list[int] = field(default_factory=list)


class _PrunedError(Exception):
    """Raised by a report callback to abandon a configuration."""


def cross_validate(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    spec: FeatureSpec,
    hyper: Mapping[str, Any] | None = None,
    seed: int = 0,
    report: Callable[[int, float], None] | None = None,
    sample_weight: np.ndarray | None = None,
) -> CVOutcome:
    """Rolling-origin CV; ``report(fold, running_mean_rmse)`` may raise to prune.

    ``sample_weight`` (one per row of ``x``) weights each fold's fit, not its score.
    """

    def fit_fold(fold: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, FitInfo]:
        tr, va = fold
        weight = None if sample_weight is None else sample_weight[tr]
        predictor, info = fit_candidate(
            name, x[tr], y[tr], spec, hyper, seed=seed, valid=(x[va], y[va]), sample_weight=weight
        )
        return predictor.predict(x[va]), info

    # the folds run side by side; with pruning, the first fold runs alone: most pruned
    # configurations stop after it (docs/BENCHMARKS.md "Training")
    lead = [fit_fold(folds[0])] if report is not None and folds else []
    fits = in_order(fit_fold, folds[len(lead) :])
    fold_rmse: list[float] = []
    residuals: list[np.ndarray] = []
    best: list[int] = []
    try:
        for k, (pred, info) in enumerate(chain(lead, fits)):
            va = folds[k][1]
            fold_rmse.append(ev.rmse(y[va], pred))
            residuals.append(y[va] - pred)
            if "best_iteration" in info:
                best.append(int(info["best_iteration"]))
            if report is not None:
                report(k, float(np.mean(fold_rmse)))
    finally:
        fits.close()  # a pruned configuration: the folds not started are not fitted
    return CVOutcome(float(np.mean(fold_rmse)), fold_rmse, np.concatenate(residuals), best)


def _clip_into(
    space: Mapping[str, tuple[float, float]], values: Mapping[str, float]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (low, high) in space.items():
        value = float(values.get(key, (low + high) / 2))
        value = min(max(value, low), high)
        out[key] = round(value) if key in INT_PARAMS else value
    return out


@dataclass
class TuneOutcome:
    """The best configuration of a search and its CV."""

    hyper: dict[str, Any]
    cv: CVOutcome
    n_trials: int
    n_pruned: int


TrialLogger = Callable[[str, int, dict[str, Any], float | None, str], None]


def tune(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    spec: FeatureSpec,
    space: Mapping[str, tuple[float, float]],
    n_trials: int,
    seed: int,
    on_trial: TrialLogger | None = None,
    sample_weight: np.ndarray | None = None,
) -> TuneOutcome:
    """Optuna search (seeded TPE, median pruning across folds) minimising CV RMSE.

    The first trial is :data:`DEFAULT_HYPERPARAMS` clipped into ``space``. With an empty
    space the default configuration is cross-validated once.
    """
    import optuna

    defaults = DEFAULT_HYPERPARAMS.get(name, {})
    if not space:
        cv = cross_validate(
            name, x, y, folds, spec=spec, hyper=defaults, seed=seed, sample_weight=sample_weight
        )
        if on_trial is not None:
            on_trial(name, 0, dict(defaults), cv.rmse, "COMPLETE")
        return TuneOutcome(dict(defaults), cv, 1, 0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, n_trials // 2)))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    study.enqueue_trial(_clip_into(space, defaults))
    outcomes: dict[int, CVOutcome] = {}

    def objective(trial: optuna.Trial) -> float:
        hyper: dict[str, Any] = {}
        for key, (low, high) in space.items():
            if low == high:
                hyper[key] = round(low) if key in INT_PARAMS else low
            elif key in INT_PARAMS:
                hyper[key] = trial.suggest_int(key, round(low), round(high))
            else:
                log_scale = key in LOG_PARAMS and low > 0
                hyper[key] = trial.suggest_float(key, low, high, log=log_scale)

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise _PrunedError

        try:
            cv = cross_validate(
                name,
                x,
                y,
                folds,
                spec=spec,
                hyper=hyper,
                seed=seed,
                report=report,
                sample_weight=sample_weight,
            )
        except _PrunedError:
            if on_trial is not None:
                on_trial(name, trial.number, hyper, None, "PRUNED")
            raise optuna.TrialPruned() from None
        outcomes[trial.number] = cv
        if on_trial is not None:
            on_trial(name, trial.number, hyper, cv.rmse, "COMPLETE")
        return cv.rmse

    study.optimize(objective, n_trials=n_trials, catch=())
    best = study.best_trial
    hyper: dict[str, Any] = dict(best.params)
    for key, (low, _high) in space.items():  # fixed (low == high) entries are not in params
        hyper.setdefault(key, round(low) if key in INT_PARAMS else low)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return TuneOutcome(hyper, outcomes[best.number], len(study.trials), pruned)
