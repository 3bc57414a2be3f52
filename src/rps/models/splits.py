"""Time-ordered splits: a holdout of the newest rows and rolling-origin CV folds.

Training rows end ``horizon`` hours before the first row they are validated on, so no
training label lies in the validation period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rps.features.build import TARGET, FeatureSpec, build_features
from rps.models.adaptation import recency_weights, recent_holdout
from rps.models.errors import InsufficientDataError
from rps.models.horizons import HorizonData, prepare_horizons
from rps.models.leakage import check_no_leakage
from rps.params import HorizonParams, TrainParams

MIN_FOLD_ROWS = 48
MIN_HOLDOUT_ROWS = 48


def holdout_split(
    index: pd.DatetimeIndex, holdout_fraction: float, gap_hours: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the training rows and of the holdout (the newest rows).

    Training rows end at least ``gap_hours`` before the first holdout issue time, so with
    ``gap_hours >= horizon`` no training label falls inside the holdout period.
    """
    n = len(index)
    n_hold = max(1, math.ceil(n * holdout_fraction))
    holdout = np.arange(n - n_hold, n)
    cutoff = index[n - n_hold] - pd.Timedelta(hours=gap_hours)
    train = np.flatnonzero(index[: n - n_hold] <= cutoff)
    return train, holdout


def rolling_origin_folds(
    index: pd.DatetimeIndex, n_folds: int, gap_hours: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds: split into ``n_folds + 1`` blocks, validate on blocks 1..k.

    Each fold trains on every row ending ``gap_hours`` before its validation block.
    """
    n = len(index)
    block = n // (n_folds + 1)
    folds = []
    for k in range(1, n_folds + 1):
        start = k * block
        stop = (k + 1) * block if k < n_folds else n
        cutoff = index[start] - pd.Timedelta(hours=gap_hours)
        train = np.flatnonzero(index[:start] <= cutoff)
        folds.append((train, np.arange(start, stop)))
    return folds


def required_rows(spec: FeatureSpec, tp: TrainParams) -> tuple[int, int]:
    """``(complete feature rows, hourly observations)`` the splits need at the least."""
    gap = spec.horizon_hours
    train_rows = (tp.cv_folds + 1) * MIN_FOLD_ROWS + tp.cv_folds * gap
    rows = max(
        math.ceil((train_rows + gap) / (1 - tp.holdout_fraction)),
        math.ceil(MIN_HOLDOUT_ROWS / tp.holdout_fraction) + gap,
    )
    return rows, rows + spec.window_hours - 1 + spec.horizon_hours


@dataclass
class PreparedData:
    """Complete feature rows and the time splits."""

    spec: FeatureSpec
    features: pd.DataFrame  # complete rows only
    x: np.ndarray
    y: np.ndarray
    train_pos: np.ndarray
    holdout_pos: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    weights: np.ndarray | None = None  # per complete row (drift runs), else equal weights
    onset: pd.Timestamp | None = None  # the drift onset this run adapts to
    horizons: HorizonData | None = None  # the stacked rows of every horizon (trajectories)

    @property
    def train_weights(self) -> np.ndarray | None:
        """Sample weights of the training rows (None: equal)."""
        return None if self.weights is None else self.weights[self.train_pos]

    def regime(self, positions: np.ndarray) -> np.ndarray | None:
        """Which of the rows at ``positions`` are at or after the onset (None: no onset)."""
        if self.onset is None:
            return None
        return np.asarray(self.index[positions] >= self.onset)

    @property
    def index(self) -> pd.DatetimeIndex:
        """Issue times of the complete rows."""
        return pd.DatetimeIndex(self.features.index)


def prepare_data(
    observations: pd.DataFrame,
    spec: FeatureSpec,
    tp: TrainParams,
    *,
    onset: pd.Timestamp | None = None,
    hp: HorizonParams | None = None,
) -> PreparedData:
    """Build features, verify them, drop incomplete rows and split by time.

    With a drift ``onset`` the holdout is the newest post-onset window and post-onset
    training rows are weighted up (:mod:`rps.models.adaptation`). With ``hp`` (and a spec
    with horizon features) the rows of every horizon 1..``hp.max_hours`` are stacked too
    (:func:`rps.models.horizons.prepare_horizons`), on the same issue-time split.

    Raises:
        InsufficientDataError: too few rows; the message names the rows needed.
        LeakageError: a feature uses the future.
        FeatureError: the observations lack columns or are not time-ordered.
    """
    need_rows, need_hours = required_rows(spec, tp)
    n_obs = len(observations)
    if n_obs < need_hours:
        raise InsufficientDataError(
            f"dataset has {n_obs} hourly observations; training needs at least {need_hours}: "
            f"a {spec.window_hours} h feature window, the {spec.horizon_hours} h horizon and "
            f"{need_rows} complete rows for {tp.cv_folds} CV folds plus a "
            f"{tp.holdout_fraction:.0%} holdout"
        )
    features = build_features(observations, spec)
    check_no_leakage(features, spec, observations, seed=tp.seed)
    complete = features.dropna(subset=[*spec.feature_names, TARGET])
    if len(complete) < need_rows:
        raise InsufficientDataError(
            f"dataset has {len(complete)} complete feature rows (of {n_obs} observations, "
            f"gaps drop rows); training needs at least {need_rows} for {tp.cv_folds} CV folds "
            f"plus a {tp.holdout_fraction:.0%} holdout"
        )
    index = pd.DatetimeIndex(complete.index)
    gap = spec.horizon_hours
    weights = None
    if onset is None:
        train_pos, holdout_pos = holdout_split(index, tp.holdout_fraction, gap)
    else:
        train_pos, holdout_pos = recent_holdout(
            index, onset, window_hours=tp.promotion.recent_window_hours, gap_hours=gap
        )
        # the share is of the training weight: holdout rows are not counted
        weights = np.ones(len(index))
        weights[train_pos] = recency_weights(
            index[train_pos], onset, tp.adaptation.recent_weight_share
        )
    folds = rolling_origin_folds(index[train_pos], tp.cv_folds, gap)
    shortest = min(min(len(tr), len(va)) for tr, va in folds)
    if len(holdout_pos) < MIN_HOLDOUT_ROWS or shortest < MIN_FOLD_ROWS:
        raise InsufficientDataError(
            f"after splitting, the holdout has {len(holdout_pos)} rows and the smallest CV "
            f"part {shortest}; each needs at least {MIN_FOLD_ROWS} (dataset too short or gappy)"
        )
    x = complete[spec.feature_names].to_numpy(dtype=float)
    y = complete[TARGET].to_numpy(dtype=float)
    stacked = None
    if hp is not None and spec.horizon_features:
        stacked = prepare_horizons(
            observations,
            spec,
            hp,
            train_times=index[train_pos],
            holdout_times=index[holdout_pos],
            weights=None if weights is None else weights[train_pos],
            onset=onset,
            seed=tp.seed,
        )
    return PreparedData(
        spec, complete, x, y, train_pos, holdout_pos, folds, weights, onset, stacked
    )
