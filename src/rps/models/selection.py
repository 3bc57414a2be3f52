"""Fit every candidate, score it on the holdout, and choose the one to register."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rps.models import evaluation as ev
from rps.models.candidates import BASELINES, KIND_OF, LEARNED, fit_candidate, seasonal_feature
from rps.models.forecasters import Forecaster
from rps.models.horizons import MULTI_HORIZON_KINDS, TrajectoryFit, fit_trajectory
from rps.models.splits import PreparedData
from rps.models.tuning import CVOutcome, TrialLogger, cross_validate, tune
from rps.params import TrainParams

log = logging.getLogger(__name__)


@dataclass
class CandidateResult:
    """One fitted candidate and its evaluation."""

    name: str
    kind: str
    hyper: dict[str, Any]
    predictor: Forecaster
    cv: CVOutcome
    holdout_pred: np.ndarray
    interval: dict[str, float]
    metrics: dict[str, float]  # holdout metrics, interval coverage, cv_rmse, dm p-value
    dm_vs_persistence: ev.DMResult | None = None
    trajectory: TrajectoryFit | None = None  # every horizon: its interval and out-of-fold errors

    def bounds(self, rows: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The interval around ``pred``: the trajectory's conditional one, else the constant."""
        if self.trajectory is not None:
            return self.trajectory.interval.bounds(rows, pred, self.predictor.feature_names)
        return pred + self.interval["lower"], pred + self.interval["upper"]


def _holdout_metrics(
    y: np.ndarray,
    pred: np.ndarray,
    y_now: np.ndarray,
    hours: np.ndarray,
) -> dict[str, float]:
    metrics = {f"holdout_{k}": v for k, v in ev.point_metrics(y, pred, y_now).items()}
    for hour, value in ev.error_by_hour(y, pred, hours).items():
        metrics[f"holdout_rmse_hour_{hour:02d}"] = value
    return metrics


def interval_metrics(
    result: CandidateResult, x: np.ndarray, y: np.ndarray, alpha: float
) -> dict[str, float]:
    """Coverage, mean width and interval score of the candidate's interval on rows ``x``."""
    lower, upper = result.bounds(x, result.predictor.predict(x))
    return {
        "interval_coverage": ev.interval_coverage(y, lower, upper),
        "interval_width": float(np.mean(upper - lower)),
        "interval_score": ev.interval_score(y, lower, upper, alpha),
    }


def add_trajectory(result: CandidateResult, data: PreparedData, tp: TrainParams) -> None:
    """Give a chosen persistence baseline its trajectory interval (LightGBM has one)."""
    if result.trajectory is not None or data.horizons is None:
        return
    if result.kind not in MULTI_HORIZON_KINDS:
        return
    fitted = fit_trajectory(
        data.horizons, result.name, result.hyper, alpha=tp.interval_alpha, seed=tp.seed
    )
    result.trajectory = TrajectoryFit(result.predictor, fitted.interval, {}, fitted.oof)
    x_ho, y_ho = data.x[data.holdout_pos], data.y[data.holdout_pos]
    result.metrics.update(interval_metrics(result, x_ho, y_ho, tp.interval_alpha))


def fit_candidates(
    data: PreparedData,
    tp: TrainParams,
    *,
    on_trial: TrialLogger | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, CandidateResult]:
    """Cross-validate, tune and fit every candidate on the training rows; score the holdout."""
    spec = data.spec
    x_tr, y_tr = data.x[data.train_pos], data.y[data.train_pos]
    x_ho, y_ho = data.x[data.holdout_pos], data.y[data.holdout_pos]
    names = spec.feature_names
    y_now = x_ho[:, names.index(spec.target)]
    hours = x_ho[:, names.index("target_hour")]
    significance = tp.promotion.significance
    timings = timings if timings is not None else {}
    weight = data.train_weights
    results: dict[str, CandidateResult] = {}
    for name in (*BASELINES, *LEARNED):
        started = time.perf_counter()
        if name == "seasonal_naive" and seasonal_feature(spec) is None:
            log.warning(
                "no seasonal naive baseline: horizon %s h has no 24 h lag feature",
                spec.horizon_hours,
            )
            continue
        if name in LEARNED:
            space = {
                k: (float(v[0]), float(v[1])) for k, v in tp.search_space.get(name, {}).items()
            }
            tuned = tune(
                name,
                x_tr,
                y_tr,
                data.folds,
                spec=spec,
                space=space,
                n_trials=tp.n_trials,
                seed=tp.seed,
                on_trial=on_trial,
                sample_weight=weight,
            )
            hyper, cv = tuned.hyper, tuned.cv
            timings[f"tune_{name}_s"] = time.perf_counter() - started
            if name == "lightgbm" and cv.best_iterations:
                hyper = {**hyper, "n_estimators": max(1, round(float(np.mean(cv.best_iterations))))}
            regime_alpha = tp.adaptation.regime_alpha
            if name == "ridge" and data.onset is not None and regime_alpha is not None:
                hyper = {**hyper, "regime_alpha": regime_alpha}
        else:
            hyper = {}
            cv = cross_validate(
                name, x_tr, y_tr, data.folds, spec=spec, seed=tp.seed, sample_weight=weight
            )
        trajectory = None
        if name == "lightgbm" and data.horizons is not None:
            mark = time.perf_counter()
            trajectory = fit_trajectory(
                data.horizons, name, hyper, alpha=tp.interval_alpha, seed=tp.seed
            )
            predictor = trajectory.predictor
            timings[f"trajectory_fit_{name}_s"] = time.perf_counter() - mark
        else:
            predictor, _ = fit_candidate(
                name,
                x_tr,
                y_tr,
                spec,
                hyper,
                seed=tp.seed,
                sample_weight=weight,
                regime=data.regime(data.train_pos),
            )
        pred = predictor.predict(x_ho)
        interval = ev.conformal_offsets(cv.residuals, tp.interval_alpha)
        metrics = _holdout_metrics(y_ho, pred, y_now, hours)
        metrics["cv_rmse"] = cv.rmse
        dm = None
        if name != "persistence":
            dm = ev.diebold_mariano(y_ho - pred, y_ho - y_now, horizon=spec.horizon_hours)
            metrics["dm_p_vs_persistence"] = dm.p_value_better
            better = dm.p_value_better < significance and metrics["holdout_rmse"] < ev.rmse(
                y_ho, y_now
            )
            metrics["beats_persistence"] = float(better)
        result = CandidateResult(
            name, KIND_OF[name], dict(hyper), predictor, cv, pred, interval, metrics, dm, trajectory
        )
        metrics.update(interval_metrics(result, x_ho, y_ho, tp.interval_alpha))
        results[name] = result
        timings[f"fit_{name}_s"] = time.perf_counter() - started
        log.info(
            "candidate %s: cv_rmse=%.3f holdout_rmse=%.3f",
            name,
            cv.rmse,
            metrics["holdout_rmse"],
        )
    return results


def choose_candidate(
    results: Mapping[str, CandidateResult], *, adapting: bool = False
) -> CandidateResult:
    """The candidate to offer the gate: the lowest holdout RMSE among those that qualify.

    Hyperparameters are tuned on rolling-origin CV (training rows only); the model family
    is chosen on the holdout. With one year of data the early CV folds validate on a
    season the fold never trained on, which penalises trees (they cannot extrapolate a
    level) far more than the holdout - the newest weeks, the regime the model will serve -
    does; CV RMSE picked ridge over a LightGBM 15 % better on the holdout. The price is a
    small optimism in the reported holdout RMSE (a minimum over five candidates).

    A scheduled run: a candidate qualifies when its holdout RMSE is lower than
    persistence's *and* the one-sided Diebold-Mariano p-value is below the promotion
    significance; when none qualifies, persistence is chosen.

    A drift run (``adapting``): every candidate qualifies. Its holdout is the 48-odd hours
    after the onset, too few for a learned model to beat persistence significantly, yet
    persistence is the worst forecast for a sensor whose clock runs late (bench_adaptation,
    onset 2025-03-15: ridge 2.49 vs persistence 3.49 degC on the holdout, not significant;
    over the next 48 h ridge 2.95, persistence 6.70). The significance the run needs is
    the gate's: the challenger must beat the champion on that window.
    """
    if adapting:
        return min(results.values(), key=lambda r: r.metrics["holdout_rmse"])
    qualified = [
        r
        for r in results.values()
        if r.name != "persistence" and r.metrics.get("beats_persistence")
    ]
    if not qualified:
        return results["persistence"]
    return min(qualified, key=lambda r: r.metrics["holdout_rmse"])
