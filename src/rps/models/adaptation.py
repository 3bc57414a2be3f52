"""Retraining after drift: find the onset, weight the new regime, judge on the present.

A drift-triggered run (the DAG's conf ``reason`` starts with a drift alert's name, or the
conf sets ``adapt``/``drift_onset``) trains differently from a scheduled one:

* **Onset.** Given in the conf (``drift_onset``), else estimated as the change point of
  the current champion's absolute forecast errors over the last
  ``train.adaptation.onset_lookback_hours`` (:func:`estimate_onset`: the split that best
  separates a low-error past from a higher-error present, as in binary segmentation). An
  alert fires hours after the onset and data from before it is of the old regime, so the
  onset - not the alert time - is where "the present" starts. Without a champion to
  measure, the onset defaults to the middle of the lookback.
* **Holdout = the present.** The holdout (the gate's evidence) is the newest
  ``train.promotion.recent_window_hours`` after the onset, at most half of the post-onset
  rows (:func:`recent_holdout`), so the other half is there to learn from. Training rows end
  ``horizon`` hours before it, as always.
* **Recency weighting.** Post-onset training rows carry ``train.adaptation.
  recent_weight_share`` of the total sample weight (:func:`recency_weights`). A year of the
  old regime would otherwise outvote two weeks of the new one, while dropping the old data
  would leave too few rows to estimate 50-odd coefficients or a tree; weighting keeps the old
  data as a prior for what did not change (the seasons, the physics between variables) and
  lets the new rows decide what did (a shifted daily cycle, a biased sensor).
* **Gate.** Scored on that post-onset window only, with the usual paired Diebold-Mariano
  tests; with ``train.promotion.drift_requires_superiority`` the challenger must be
  significantly more accurate than the champion (non-inferiority is not enough: the alarm
  claimed the champion got worse; if that does not show in the present, a transient blip
  must not replace it).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from rps.features.spec import FeatureSpec
    from rps.params import Params
    from rps.settings import Settings

log = logging.getLogger(__name__)

#: alert names (and the generic word) whose retraining runs adapt to a new regime
DRIFT_REASONS: tuple[str, ...] = (
    "DataDriftDetected",
    "FeatureDriftDetected",
    "LiveAccuracyDegraded",
    "PredictionErrorDrift",
    "drift",
)
MIN_SEGMENT_HOURS = 12
MIN_HOLDOUT_ROWS = 48


@dataclass(frozen=True)
class Regime:
    """The drift a run adapts to."""

    onset: pd.Timestamp
    source: str  # conf | champion_errors | default

    def to_dict(self) -> dict[str, str]:
        """JSON-ready (lineage, tags)."""
        return {"onset": self.onset.isoformat(), "source": self.source}


def is_drift_reason(reason: str) -> bool:
    """Whether a run's reason names drift (``"DataDriftDetected: ..."``, ``"drift"``)."""
    head = reason.strip().split(":", 1)[0].strip()
    return any(head.lower() == name.lower() for name in DRIFT_REASONS)


def estimate_onset(
    times: pd.DatetimeIndex, errors: np.ndarray, *, min_segment: int = MIN_SEGMENT_HOURS
) -> pd.Timestamp | None:
    """The time the mean absolute error steps up (the strongest single change point).

    Absolute rather than squared errors: one stormy hour should not move the estimate.

    For every split with at least ``min_segment`` finite errors on either side, the
    statistic is ``n_before * n_after / n * (mean_after - mean_before)^2`` (binary
    segmentation for a change in mean); the best split with a higher mean after it wins.

    Returns:
        The first time after the change, or None (too few errors, or no increase).
    """
    errors = np.asarray(errors, dtype=float)
    ok = np.isfinite(errors)
    values, stamps = errors[ok], pd.DatetimeIndex(times)[ok]
    n = len(values)
    if n < 2 * min_segment:
        return None
    cumsum = np.cumsum(values)
    split = np.arange(min_segment, n - min_segment + 1)
    before = cumsum[split - 1] / split
    after = (cumsum[-1] - cumsum[split - 1]) / (n - split)
    stat = split * (n - split) / n * (after - before) ** 2
    stat[after <= before] = -1.0
    best = int(np.argmax(stat))
    if stat[best] <= 0:
        return None
    return pd.Timestamp(stamps[split[best]])


def recent_holdout(
    index: pd.DatetimeIndex,
    onset: pd.Timestamp,
    *,
    window_hours: int,
    gap_hours: int,
    min_rows: int = MIN_HOLDOUT_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Training and holdout positions when the holdout must be the present.

    The holdout is the newest rows after ``onset``: at most ``window_hours`` of them and at
    most half of the post-onset rows, but never fewer than ``min_rows`` (so with an onset
    only hours old it reaches back before the onset). Training rows end ``gap_hours``
    before the holdout starts.
    """
    n_after = int(np.count_nonzero(index >= onset))
    n = len(index)
    size = min(window_hours, math.ceil(n_after / 2), n)
    size = max(size, min(min_rows, n), 1)
    holdout = np.arange(n - size, n)
    cutoff = index[n - size] - pd.Timedelta(hours=gap_hours)
    train = np.flatnonzero(index[: n - size] <= cutoff)
    return train, holdout


def recency_weights(index: pd.DatetimeIndex, onset: pd.Timestamp, share: float) -> np.ndarray:
    """Per-row weights giving the rows at or after ``onset`` ``share`` of the total weight.

    Rows before the onset weigh 1; when either side is empty, every row weighs 1.
    """
    recent = np.asarray(index >= onset)
    n_recent, n_old = int(recent.sum()), int((~recent).sum())
    weights = np.ones(len(index))
    if n_recent and n_old:
        weights[recent] = share / (1 - share) * n_old / n_recent
    return weights


def resolve_regime(
    settings: Settings,
    params: Params,
    observations: pd.DataFrame,
    spec: FeatureSpec,
    *,
    onset: pd.Timestamp | None = None,
) -> Regime:
    """The regime a drift-triggered run adapts to (module docstring: given, estimated, default).

    Raises:
        rps.models.errors.TrackingUnavailableError: the registry cannot be reached.
    """
    from rps.data.schema import TIME

    times = pd.to_datetime(observations[TIME], utc=True)
    end = pd.Timestamp(times.max())
    if onset is not None:
        stamp = pd.Timestamp(onset)
        return Regime(stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp, "conf")
    lookback = pd.Timedelta(hours=params.train.adaptation.onset_lookback_hours)
    estimated = _onset_from_champion(settings, observations, spec, since=end - lookback)
    if estimated is not None:
        return Regime(estimated, "champion_errors")
    return Regime(end - lookback / 2, "default")


def _onset_from_champion(
    settings: Settings, observations: pd.DataFrame, spec: FeatureSpec, *, since: pd.Timestamp
) -> pd.Timestamp | None:
    """The change point of the champion's absolute errors after ``since`` (None: no champion)."""
    import tempfile
    from pathlib import Path

    from rps.features.build import TARGET, build_features
    from rps.models import registry
    from rps.models.bundle import BundleError, load_bundle
    from rps.models.errors import ModelNotFoundError, TrackingUnavailableError
    from rps.models.gate import predict_bundle

    try:
        with tempfile.TemporaryDirectory(prefix="rps-onset-") as tmp:
            bundle = load_bundle(registry.download_bundle(settings, dst=Path(tmp)))
    except TrackingUnavailableError:
        raise
    except (ModelNotFoundError, BundleError, registry.RegistryError, OSError) as exc:
        log.info("no champion to locate the drift onset with (%s)", exc)
        return None
    if bundle.feature_spec.target != spec.target:
        return None
    labels = build_features(observations, bundle.feature_spec)[TARGET]
    labels = labels.loc[since:].dropna()
    if labels.empty:
        return None
    issue_times = pd.DatetimeIndex(labels.index)
    errors = np.abs(labels.to_numpy() - predict_bundle(bundle, observations, issue_times))
    return estimate_onset(issue_times, errors)
