"""The forecast trajectory: rows of every horizon, out-of-fold errors, intervals, scores.

A training run forecasts every hour 1..``horizons.max_hours`` (params.yaml). The strategy was
chosen by ``bench/bench_horizons.py`` (docs/BENCHMARKS.md): direct models per group of
horizons (:class:`rps.models.forecasters.HorizonForecaster`) on stacked rows that carry their
horizon as a feature (:func:`rps.features.build.build_horizon_features`).

* :func:`prepare_horizons` - the training rows (for each training issue time and each group,
  one horizon of the group drawn at random: every issue time teaches every group at the cost of
  one row per group; in a drift run, every horizon of the few issue times after the onset,
  each row weighing its share of the issue time's weight), the holdout (every horizon of every
  holdout issue time) and the blocked folds of the interval calibration. No training label
  lies in the holdout period.
* :func:`out_of_fold` - forecasts of the training issue times by models that did not train on
  them: the training issue times are cut into ``horizons.interval_folds`` blocks; a block's
  every horizon is forecast by a model fitted on the rows whose labels end before the block or
  whose issue times start ``max_hours`` after it (LightGBM stops early on one drawn horizon per
  issue time and group of the block, :func:`stopping_rows`). These errors choose the baseline
  fallbacks and calibrate the intervals (:mod:`rps.models.intervals`).
* :func:`metrics_by_horizon` - the holdout scores per horizon: RMSE beside persistence and
  seasonal naive, interval coverage, mean width, interval (Winkler) score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rps.features.build import TARGET, build_horizon_features
from rps.features.spec import HORIZON, SAME_HOUR, FeatureSpec
from rps.models import evaluation as ev
from rps.models.candidates import fit_candidate
from rps.models.errors import InsufficientDataError
from rps.models.forecasters import (
    GROUP_ROUNDS,
    GROUP_STARTS,
    MAX_HORIZON,
    FitInfo,
    Forecaster,
    HorizonForecaster,
    group_index,
)
from rps.models.intervals import HorizonInterval, IntervalError, fit_horizon_interval
from rps.models.parallel import in_order
from rps.params import HorizonParams

log = logging.getLogger(__name__)

#: forecaster kinds served as a trajectory: never worse than persistence at any horizon
#: (seasonal naive and climatology read any horizon's row too, but lose to persistence at
#: the first hours, so a champion of theirs forecasts its configured horizon only)
MULTI_HORIZON_KINDS = frozenset({"persistence", "lightgbm_horizons"})
BASELINE_FALLBACKS = ("persistence", "seasonal_naive")
#: the per-horizon scores stored with a model (``rps model info`` -> ``metrics_by_horizon``)
HORIZON_METRICS = (
    "rmse",
    "persistence_rmse",
    "seasonal_naive_rmse",
    "coverage",
    "mean_width",
    "interval_score",
)


@dataclass
class HorizonRows:
    """Feature rows of ``(issue time, horizon)`` pairs with their labels."""

    x: np.ndarray
    y: np.ndarray
    horizons: np.ndarray
    issue_times: pd.DatetimeIndex
    weights: np.ndarray | None = None

    def take(self, keep: np.ndarray) -> HorizonRows:
        return HorizonRows(
            self.x[keep],
            self.y[keep],
            self.horizons[keep],
            self.issue_times[keep],
            None if self.weights is None else self.weights[keep],
        )

    def baseline(self, name: str, spec: FeatureSpec) -> np.ndarray:
        """Persistence (the target now) or seasonal naive (the same hour a day earlier)."""
        column = spec.target if name == "persistence" else SAME_HOUR[0]
        out: np.ndarray = self.x[:, spec.feature_names.index(column)]
        return out


@dataclass
class HorizonData:
    """The stacked rows of a training run (see the module docstring)."""

    spec: FeatureSpec
    params: HorizonParams
    observations: pd.DataFrame
    train: HorizonRows
    holdout: HorizonRows
    holdout_span: tuple[pd.Timestamp, pd.Timestamp]  # first and last holdout issue time
    blocks: list[tuple[pd.Timestamp, pd.Timestamp]] = field(default_factory=list)
    weight_of: pd.Series | None = None  # training weight per issue time (drift runs)

    @property
    def max_hours(self) -> int:
        return self.params.max_hours

    def trainable(self, times: pd.DatetimeIndex, horizons: np.ndarray) -> np.ndarray:
        """Pairs whose label is not in the holdout period: it ends before the holdout starts,
        or the pair is issued after the holdout (a holdout inside the year, bench only)."""
        start, end = self.holdout_span
        labels = times + pd.to_timedelta(horizons, unit="h")
        return np.asarray((labels <= start) | (times > end))

    def grid(self, issue_times: pd.DatetimeIndex, *, training: bool) -> HorizonRows:
        """Every horizon of ``issue_times`` with a known label (``training``: and trainable)."""
        hours = np.arange(1, self.max_hours + 1)
        times = issue_times.repeat(len(hours))
        horizons = np.tile(hours, len(issue_times))
        keep = self.trainable(times, horizons) if training else np.ones(len(times), dtype=bool)
        return self._rows(times[keep], horizons[keep])

    def _rows(self, times: pd.DatetimeIndex, horizons: np.ndarray) -> HorizonRows:
        frame = build_horizon_features(self.observations, self.spec, times, horizons)
        # complete rows on the NumPy array: DataFrame.dropna copied the whole frame
        values = frame[[*self.spec.feature_names, TARGET]].to_numpy(dtype=float)
        complete = ~np.isnan(values).any(axis=1)
        index = pd.DatetimeIndex(frame.index[complete])
        weights = None
        if self.weight_of is not None:
            weights = self.weight_of.reindex(index).fillna(1.0).to_numpy(dtype=float)
        return HorizonRows(
            values[complete, :-1],
            values[complete, -1],
            frame[HORIZON].to_numpy(dtype=int)[complete],
            index,
            weights,
        )


def group_bounds(hp: HorizonParams) -> list[tuple[int, int]]:
    """``(first, last)`` horizon of each group."""
    ends = [*(s - 1 for s in hp.group_starts[1:]), hp.max_hours]
    return list(zip(hp.group_starts, ends, strict=True))


def prepare_horizons(
    observations: pd.DataFrame,
    spec: FeatureSpec,
    hp: HorizonParams,
    *,
    train_times: pd.DatetimeIndex,
    holdout_times: pd.DatetimeIndex,
    weights: np.ndarray | None = None,
    onset: pd.Timestamp | None = None,
    seed: int = 0,
) -> HorizonData:
    """The training rows, the holdout and the interval folds (see the module docstring).

    Args:
        observations: the cleaned hourly observations of the run.
        spec: the run's feature spec (with ``horizon_features``).
        hp: ``params.horizons``.
        train_times: issue times of the complete training rows.
        holdout_times: issue times of the holdout rows.
        weights: the training weight of each of ``train_times`` (drift runs), or None.
        onset: the drift onset (drift runs): issue times from it on train every horizon of
            each group, not one drawn at random. A few days of the new regime drawn one
            horizon per group would leave a dozen rows per horizon to learn it from.
        seed: draws the horizon of each training row.
    """
    empty = HorizonRows(np.empty((0, 0)), np.empty(0), np.empty(0), pd.DatetimeIndex([]))
    data = HorizonData(
        spec=spec,
        params=hp,
        observations=observations,
        train=empty,
        holdout=empty,
        holdout_span=(holdout_times[0], holdout_times[-1]),
        weight_of=None if weights is None else pd.Series(weights, index=train_times),
    )
    rng = np.random.default_rng(seed)
    times, horizons = [], []
    recent = np.zeros(len(train_times), dtype=bool)
    if onset is not None:
        recent = np.asarray(train_times >= onset)
    for first, last in group_bounds(hp):
        drawn = rng.integers(first, last + 1, size=len(train_times))
        pair_times = train_times[~recent]
        pair_horizons = drawn[~recent]
        if recent.any():
            every = np.arange(first, last + 1)
            pair_times = pd.DatetimeIndex(pair_times.append(train_times[recent].repeat(len(every))))
            pair_horizons = np.concatenate([pair_horizons, np.tile(every, int(recent.sum()))])
        keep = data.trainable(pair_times, pair_horizons)
        times.append(pair_times[keep])
        horizons.append(pair_horizons[keep])
    stacked = pd.DatetimeIndex(np.concatenate([t.asi8 for t in times])).tz_localize("UTC")
    order = np.argsort(stacked.asi8, kind="stable")
    data.train = data._rows(stacked[order], np.concatenate(horizons)[order])
    spread_weights(data.train, hp)
    data.holdout = data.grid(holdout_times, training=False)
    blocks = np.array_split(np.arange(len(train_times)), hp.interval_folds)
    data.blocks = [(train_times[b[0]], train_times[b[-1]]) for b in blocks if len(b)]
    return data


def spread_weights(rows: HorizonRows, hp: HorizonParams) -> None:
    """Spread each issue time's weight over its rows in a group (in place; no weights: no-op).

    An issue time that trains a group with several rows (every horizon) weighs as much in
    that group as one that trains it with a single drawn horizon.
    """
    if rows.weights is None or not len(rows.y):
        return
    group = group_index(list(hp.group_starts), rows.horizons)
    pairs = pd.Series(0, index=pd.MultiIndex.from_arrays([rows.issue_times.asi8, group]))
    rows.weights = rows.weights / pairs.groupby(level=[0, 1]).transform("size").to_numpy()


def refit_with_holdout(
    data: HorizonData,
    fit: TrajectoryFit,
    name: str,
    hyper: dict[str, Any],
    *,
    weight_of: pd.Series,
    seed: int,
) -> Forecaster:
    """The trajectory's predictor fitted again on its training rows plus the holdout.

    Same hyperparameters, rounds per group and fallbacks; ``weight_of`` weighs every issue
    time of both (drift runs: :func:`rps.models.adaptation.recency_weights` over them).
    """
    rows = HorizonRows(
        np.vstack([data.train.x, data.holdout.x]),
        np.concatenate([data.train.y, data.holdout.y]),
        np.concatenate([data.train.horizons, data.holdout.horizons]),
        pd.DatetimeIndex(data.train.issue_times.append(data.holdout.issue_times)),
    )
    rows.weights = weight_of.reindex(rows.issue_times).fillna(1.0).to_numpy(dtype=float)
    spread_weights(rows, data.params)
    predictor, _ = fit_candidate(
        name,
        rows.x,
        rows.y,
        data.spec,
        _final_hyper(name, hyper, data.params, fit.oof),
        seed=seed,
        sample_weight=rows.weights,
    )
    if isinstance(predictor, HorizonForecaster):
        predictor = predictor.with_fallback(fit.fallback)
    return predictor


@dataclass
class OutOfFold:
    """Forecasts of the training issue times by models that did not train on them."""

    rows: HorizonRows
    pred: np.ndarray
    fold: np.ndarray
    group_rounds: dict[int, int]  # mean best iteration per group (LightGBM only)


def _hyper(name: str, hyper: dict[str, Any], hp: HorizonParams) -> dict[str, Any]:
    if name != "lightgbm":
        return dict(hyper)
    return {**hyper, GROUP_STARTS: list(hp.group_starts), MAX_HORIZON: hp.max_hours}


def _final_hyper(
    name: str, hyper: dict[str, Any], hp: HorizonParams, oof: OutOfFold
) -> dict[str, Any]:
    """The hyperparameters of a fit on every training row: each group's rounds out of fold."""
    final = _hyper(name, hyper, hp)
    if oof.group_rounds:
        final[GROUP_ROUNDS] = oof.group_rounds
    return final


def stopping_rows(rows: HorizonRows, hp: HorizonParams, seed: int) -> np.ndarray:
    """Positions of one row per issue time and group of ``rows``, its horizon drawn at random.

    An out-of-fold fit stops early on these rows, as dense as its training rows, and still
    forecasts every row: scoring every horizon of a 24-hour group after each round took about
    a third of that group's fit, and the early stop on them changed no horizon's holdout RMSE
    by more than 0.7 % (docs/BENCHMARKS.md "Training").
    """
    group = group_index(list(hp.group_starts), rows.horizons)
    key = rows.issue_times.asi8 * len(hp.group_starts) + group
    order = np.random.default_rng(seed).permutation(len(rows.y))
    _, first = np.unique(key[order], return_index=True)
    return np.sort(order[first])


def out_of_fold(data: HorizonData, name: str, hyper: dict[str, Any], *, seed: int) -> OutOfFold:
    """Forecast each block's every horizon with a model fitted without the block."""
    train, hp = data.train, data.params
    labels = train.issue_times + pd.to_timedelta(train.horizons, unit="h")
    gap = pd.Timedelta(hours=hp.max_hours)  # the inputs of later rows reach into the block
    # per block: its number, the training positions fitted, its rows, its early-stopping rows
    fold_fits: list[tuple[int, np.ndarray, HorizonRows, np.ndarray]] = []
    for k, (start, end) in enumerate(data.blocks):
        fitted = np.flatnonzero((labels < start) | (train.issue_times > end + gap))
        block = train.issue_times[(train.issue_times >= start) & (train.issue_times <= end)]
        valid = data.grid(block.unique(), training=True)
        if len(fitted) and len(valid.y):
            fold_fits.append((k, fitted, valid, stopping_rows(valid, hp, seed + k)))

    def fit_block(
        fold: tuple[int, np.ndarray, HorizonRows, np.ndarray],
    ) -> tuple[Forecaster, FitInfo]:
        _, fitted, valid, stop = fold
        fit_rows = train.take(fitted)
        return fit_candidate(
            name,
            fit_rows.x,
            fit_rows.y,
            data.spec,
            _hyper(name, hyper, hp),
            seed=seed,
            valid=(valid.x[stop], valid.y[stop]) if name == "lightgbm" else None,
            sample_weight=fit_rows.weights,
        )

    parts: list[HorizonRows] = []
    preds, folds = [], []
    rounds: dict[int, list[int]] = {}
    for (k, _, valid, _), (model, info) in zip(
        fold_fits, in_order(fit_block, fold_fits), strict=True
    ):
        for start_h, best in info.get("best_iterations", {}).items():
            rounds.setdefault(int(start_h), []).append(int(best))
        parts.append(valid)
        preds.append(model.predict(valid.x))
        folds.append(np.full(len(valid.y), k))
    if len(parts) < 2:
        raise InsufficientDataError(
            f"only {len(parts)} of {len(data.blocks)} interval folds have rows to forecast; "
            "the trajectory's interval needs two (dataset too short for horizons.interval_folds)"
        )
    rows = HorizonRows(
        np.vstack([p.x for p in parts]),
        np.concatenate([p.y for p in parts]),
        np.concatenate([p.horizons for p in parts]),
        pd.DatetimeIndex(np.concatenate([p.issue_times.asi8 for p in parts])).tz_localize("UTC"),
    )
    return OutOfFold(
        rows,
        np.concatenate(preds),
        np.concatenate(folds),
        {g: max(1, round(float(np.mean(r)))) for g, r in rounds.items()},
    )


def choose_fallback(
    rows: HorizonRows, pred: np.ndarray, spec: FeatureSpec, max_hours: int
) -> dict[int, str]:
    """The horizons where a baseline's RMSE on ``rows`` beats the model's: horizon -> baseline."""
    fallback: dict[int, str] = {}
    for h in range(1, max_hours + 1):
        at = rows.horizons == h
        if not at.any():
            continue
        y = rows.y[at]
        model = ev.rmse(y, pred[at])
        scores = {b: ev.rmse(y, rows.baseline(b, spec)[at]) for b in BASELINE_FALLBACKS}
        best = min(scores, key=lambda b: scores[b])
        if scores[best] < model:
            fallback[h] = best
    return fallback


@dataclass
class TrajectoryFit:
    """A multi-horizon predictor, its calibrated interval and its out-of-fold errors."""

    predictor: Forecaster
    interval: HorizonInterval
    fallback: dict[int, str]
    oof: OutOfFold


def fit_trajectory(
    data: HorizonData,
    name: str,
    hyper: dict[str, Any],
    *,
    alpha: float,
    seed: int,
) -> TrajectoryFit:
    """Fit a multi-horizon candidate on every training row, its fallbacks and its interval.

    The LightGBM candidate trains each group for the mean best iteration its group reached in
    the out-of-fold fits. A horizon where a baseline beat it out of fold, or on the holdout,
    is served by that baseline (the trajectory is never worse than persistence on the evidence
    at hand; choosing on the holdout makes its scores there slightly optimistic, as the choice
    of the candidate itself does). The interval is calibrated on the out-of-fold errors of
    what is served.
    """
    oof = out_of_fold(data, name, hyper, seed=seed)
    final_hyper = _final_hyper(name, hyper, data.params, oof)
    train = data.train
    predictor, _ = fit_candidate(
        name, train.x, train.y, data.spec, final_hyper, seed=seed, sample_weight=train.weights
    )
    fallback: dict[int, str] = {}
    if isinstance(predictor, HorizonForecaster):
        hold = data.holdout
        fallback = {
            **choose_fallback(hold, predictor.predict(hold.x), data.spec, data.max_hours),
            **choose_fallback(oof.rows, oof.pred, data.spec, data.max_hours),
        }
        predictor = predictor.with_fallback(fallback)
        for h, baseline in fallback.items():
            at = oof.rows.horizons == h
            oof.pred[at] = oof.rows.baseline(baseline, data.spec)[at]
        if fallback:
            log.info("baselines serve horizons %s", fallback)
    try:
        interval = fit_horizon_interval(
            oof.rows.x,
            oof.rows.y - oof.pred,
            oof.fold,
            data.spec,
            alpha=alpha,
            max_hours=data.max_hours,
        )
    except IntervalError as exc:
        raise InsufficientDataError(
            f"the trajectory's interval cannot be calibrated: {exc}"
        ) from exc
    return TrajectoryFit(predictor, interval, fallback, oof)


def metrics_by_horizon(
    rows: HorizonRows,
    pred: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    spec: FeatureSpec,
    *,
    alpha: float,
) -> list[dict[str, float]]:
    """Per horizon: RMSE, persistence and seasonal-naive RMSE, coverage, width, interval score."""
    persistence = rows.baseline("persistence", spec)
    seasonal = rows.baseline("seasonal_naive", spec)
    out = []
    for h in np.unique(rows.horizons):
        at = rows.horizons == h
        y = rows.y[at]
        out.append(
            {
                "horizon_hours": int(h),
                "rmse": ev.rmse(y, pred[at]),
                "persistence_rmse": ev.rmse(y, persistence[at]),
                "seasonal_naive_rmse": ev.rmse(y, seasonal[at]),
                "coverage": ev.interval_coverage(y, lower[at], upper[at]),
                "mean_width": float(np.mean(upper[at] - lower[at])),
                "interval_score": ev.interval_score(y, lower[at], upper[at], alpha),
                "n": float(at.sum()),
            }
        )
    return out


def trajectory_metrics(
    data: HorizonData | None, trajectory: TrajectoryFit | None, alpha: float
) -> list[dict[str, float]]:
    """:func:`metrics_by_horizon` of a fitted trajectory on its holdout (empty without one)."""
    if data is None or trajectory is None:
        return []
    rows = data.holdout
    pred = trajectory.predictor.predict(rows.x)
    lower, upper = trajectory.interval.bounds(rows.x, pred, data.spec.feature_names)
    return metrics_by_horizon(rows, pred, lower, upper, data.spec, alpha=alpha)
