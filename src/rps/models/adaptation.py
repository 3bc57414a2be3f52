"""Retraining after drift: find the onset, weight the new regime, judge on the present.

A drift-triggered run (the DAG's conf ``reason`` starts with a drift alert's name, or the
conf sets ``adapt``/``drift_onset``) trains differently from a scheduled one:

* **Onset.** Given in the conf (``drift_onset``), else placed where the current champion's
  own drift checks place it: the observations of the last
  ``train.adaptation.onset_lookback_hours`` are replayed through the checks the API runs
  (the seasonal input checks over each window of rows, the forecast-error CUSUM over the
  realised errors), and the onset is where the evidence of their last episode of crossings
  starts (:func:`detector_onset`). When the checks never crossed (a manual ``adapt`` run),
  the onset is the change point of the champion's absolute errors
  (:func:`estimate_onset`: the split that best separates a low-error past from a
  higher-error present, as in binary segmentation); without a champion, the middle of the
  lookback. An alert fires hours after the onset and data from before it is of the old
  regime, so the onset - not the alert time - is where "the present" starts.
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
* **A ridge per regime.** Weighting alone gives one set of coefficients for both regimes,
  and a linear model cannot serve two: a sensor whose clock runs late leaves a ridge
  weighted toward the new rows at 2.3 degC over the next 48 h where the old level was 1.6.
  In a drift run the ridge learns the new regime's coefficients as the shared ones plus a
  difference with its own penalty ``train.adaptation.regime_alpha``, fitted on the rows
  after the onset (:func:`rps.models.regime.regime_ridge`), and serves those.
* **Refit.** The holdout is half of the new regime. Once the chosen model's holdout forecasts
  are recorded (the gate's evidence), the model is fitted again on the training rows plus the
  holdout with the same hyperparameters (:func:`refit_with_holdout`,
  ``train.adaptation.refit_with_holdout``): the served model learns the new regime from
  twice the rows (delayed daily cycle, offline: +6 h RMSE over the next 48 h 2.78 -> 1.75
  degC). The gate judges the recorded forecasts, not the refit model, which has seen the
  holdout.
* **Inherited.** A champion promoted by a drift run learned the new regime from a few days
  of it. A scheduled run after it would hold out the newest ``train.holdout_fraction`` of the
  rows - weeks, most of them from before the onset - and judge both models on the old regime,
  where a model that a year of it outvotes looks better: the loop would undo its own
  adaptation. So until the rows after the champion's onset outnumber a scheduled run's
  holdout, a scheduled run adapts to that same onset (:func:`inherited_regime`, source
  ``champion``).
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

from rps.serving.accuracy import ErrorTest, error_cusum_path

if TYPE_CHECKING:
    from rps.features.spec import FeatureSpec
    from rps.models.bundle import ModelBundle
    from rps.models.selection import CandidateResult
    from rps.models.splits import PreparedData
    from rps.params import Params, TrainParams
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
#: crossings of the drift checks at most this far apart belong to one episode
EPISODE_GAP_HOURS = 24


@dataclass(frozen=True)
class Regime:
    """The drift a run adapts to."""

    onset: pd.Timestamp
    source: str  # conf | drift_checks | champion_errors | default | champion

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


def detector_onset(
    times: pd.DatetimeIndex,
    check_ratios: np.ndarray,
    errors: np.ndarray,
    *,
    window: int,
    horizon_hours: int,
    error_test: ErrorTest,
    error_scale: float,
) -> pd.Timestamp | None:
    """Where the evidence of the drift checks' last episode of crossings starts.

    Each kind of check - the input checks, the error CUSUM - is read on its own: its crossings
    less than :data:`EPISODE_GAP_HOURS` apart form episodes, and the evidence of its last
    episode starts at the first row of its first input window over the limit, or at the target
    hour after the CUSUM last stood at 0 before it crossed. A kind whose last episode reaches
    back to the first hour it could be computed shows no quiet past to change from (a
    reference that does not fit this season) and places nothing; nor does one whose last
    episode ended more than :data:`EPISODE_GAP_HOURS` before the newest hour it was computed
    for (an incident that is over: the demo's first retraining placed the onset at an error
    episode 12 days past, when the CUSUM had not yet crossed for the present drift). The
    onset is the earliest of the kinds' starts: a check shows drift only once it has grown,
    so each start lies at or after the true onset, and the earliest one wastes the fewest
    drifted rows (the demo's delayed daily cycle crossed the input checks 17 h after its
    onset, the error CUSUM 50 h).

    Args:
        times: Consecutive issue hours.
        check_ratios: Per hour, the largest input-check ratio over the window of rows ending at
            it (NaN: not computable), as the API's monitor computes it.
        errors: Per hour, the forecast error of that hour's forecast (NaN: not realised).
        window: Rows per input-check window.
        horizon_hours: The forecast horizon (an error is realised this long after its issue).
        error_test: The forecast-error CUSUM's parameters.
        error_scale: The model's holdout RMSE.

    Returns:
        The onset, or None when no kind of check places one.
    """
    index = pd.DatetimeIndex(times)
    starts: list[pd.Timestamp] = []
    ratios = np.asarray(check_ratios, dtype=float)
    computed = np.flatnonzero(np.isfinite(ratios))
    if computed.size:
        crossed = [i for i in computed.tolist() if ratios[i] > 1.0]
        evidence = [(index[i], index[max(0, i - window + 1)]) for i in crossed]
        starts += _episode_start(
            evidence, first=index[max(0, computed[0] - window + 1)], last=index[computed[-1]]
        )
    errors = np.asarray(errors, dtype=float)
    realised = np.flatnonzero(np.isfinite(errors))
    if realised.size:
        lag = pd.Timedelta(hours=horizon_hours)
        path = error_cusum_path(
            errors[realised], scale=error_scale, allowance=error_test.allowance, cap=error_test.cap
        )
        evidence = []
        at_zero = -1
        for k, value in enumerate(path.tolist()):
            if value == 0.0:
                at_zero = k
            elif value > error_test.threshold:
                start = realised[min(at_zero + 1, k)]
                evidence.append((index[realised[k]] + lag, index[start] + lag))
        starts += _episode_start(
            evidence, first=index[realised[0]] + lag, last=index[realised[-1]] + lag
        )
    return min(starts) if starts else None


def _episode_start(
    evidence: list[tuple[pd.Timestamp, pd.Timestamp]],
    *,
    first: pd.Timestamp,
    last: pd.Timestamp,
) -> list[pd.Timestamp]:
    """The evidence start of the last episode of ``(crossed at, evidence from)`` pairs.

    Empty when nothing crossed, the evidence reaches back to ``first``, the earliest start
    possible (always on), or the episode's last crossing is more than the episode gap before
    ``last``, the newest hour checked (over).
    """
    if not evidence:
        return []
    evidence = sorted(evidence)
    gap = pd.Timedelta(hours=EPISODE_GAP_HOURS)
    if last - evidence[-1][0] > gap:
        return []
    episode = [evidence[-1]]
    for crossed, start in reversed(evidence[:-1]):
        if episode[-1][0] - crossed > gap:
            break
        episode.append((crossed, start))
    start = min(start for _, start in episode)
    return [] if start <= first else [start]


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


def refit_with_holdout(chosen: CandidateResult, data: PreparedData, tp: TrainParams) -> None:
    """Fit the chosen candidate again on its training rows plus the holdout (in place).

    For a drift run (``data.onset`` set): same hyperparameters (and, for a trajectory, the
    same rounds per group, fallbacks and interval), recency weights over both. The holdout
    forecasts and metrics stay those of the model before the refit.
    """
    from rps.models.candidates import fit_candidate
    from rps.models.horizons import refit_with_holdout as refit_trajectory

    if data.onset is None:
        raise ValueError("only a drift run refits with its holdout")
    keep = np.concatenate([data.train_pos, data.holdout_pos])
    index = data.index[keep]
    weights = recency_weights(index, data.onset, tp.adaptation.recent_weight_share)
    if chosen.trajectory is not None and data.horizons is not None:
        chosen.predictor = refit_trajectory(
            data.horizons,
            chosen.trajectory,
            chosen.name,
            chosen.hyper,
            weight_of=pd.Series(weights, index=index),
            seed=tp.seed,
        )
        chosen.trajectory.predictor = chosen.predictor
        return
    chosen.predictor, _ = fit_candidate(
        chosen.name,
        data.x[keep],
        data.y[keep],
        data.spec,
        chosen.hyper,
        seed=tp.seed,
        sample_weight=weights,
        regime=data.regime(keep),
    )


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
    found = _onset_from_champion(settings, params, observations, spec, since=end - lookback)
    return found if found is not None else Regime(end - lookback / 2, "default")


def inherits(times: pd.Series, onset: pd.Timestamp, holdout_fraction: float) -> bool:
    """Whether a scheduled run's holdout (the newest ``holdout_fraction`` of the rows at
    ``times``) would reach back before ``onset``: the rows after it are fewer than it."""
    after = int((times >= onset).sum())
    return 0 < after < holdout_fraction * len(times)


def inherited_regime(
    settings: Settings, params: Params, observations: pd.DataFrame
) -> Regime | None:
    """The champion's drift onset while a scheduled run still inherits it (module docstring).

    None: no champion, a champion not trained for a new regime, or one whose regime is by
    now longer than a scheduled run's holdout.
    """
    from rps.data.schema import TIME
    from rps.models import registry
    from rps.models.errors import ModelNotFoundError

    try:
        text = registry.version_info(settings, registry.CHAMPION)["drift_onset"]
    except ModelNotFoundError:
        return None
    if not text:
        return None
    onset = pd.Timestamp(text)
    onset = onset.tz_localize("UTC") if onset.tzinfo is None else onset
    times = pd.to_datetime(observations[TIME], utc=True)
    if not inherits(times, onset, params.train.holdout_fraction):
        return None
    return Regime(onset, "champion")


def _onset_from_champion(
    settings: Settings,
    params: Params,
    observations: pd.DataFrame,
    spec: FeatureSpec,
    *,
    since: pd.Timestamp,
) -> Regime | None:
    """The onset the champion's drift checks, else its errors, place (None: no champion)."""
    import tempfile
    from pathlib import Path

    from rps.models import registry
    from rps.models.bundle import BundleError, load_bundle
    from rps.models.errors import ModelNotFoundError, TrackingUnavailableError

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
    return champion_onset(bundle, observations, since=since, error_test=params.drift.error_test())


def champion_onset(
    bundle: ModelBundle, observations: pd.DataFrame, *, since: pd.Timestamp, error_test: ErrorTest
) -> Regime | None:
    """The drift onset in ``observations`` after ``since``, as the champion's checks see it.

    The champion's seasonal input checks and forecast-error CUSUM replayed hour by hour
    (:func:`detector_onset`); when they never crossed, the change point of its absolute
    errors (:func:`estimate_onset`). None: no complete rows, or neither finds an onset.
    """
    from rps.features.build import TARGET, build_features

    spec = bundle.feature_spec
    features = build_features(observations, spec)
    window_rows = _check_window(bundle)
    frame = features.loc[since - pd.Timedelta(hours=window_rows) :]
    rows = frame[bundle.feature_names].to_numpy(dtype=float)
    complete = np.all(np.isfinite(rows), axis=1)
    if not complete.any():
        return None
    times = pd.DatetimeIndex(frame.index)
    predictions = np.full(len(frame), np.nan)
    predictions[complete] = bundle.predictor.predict(rows[complete])
    errors = predictions - frame[TARGET].to_numpy(dtype=float)
    scale = float(bundle.metrics.get("holdout_rmse", float("nan")))
    onset = None
    if math.isfinite(scale) and scale > 0:
        onset = detector_onset(
            times,
            _check_ratios(bundle, rows, complete),
            errors,
            window=max(window_rows, 1),
            horizon_hours=spec.horizon_hours,
            error_test=error_test,
            error_scale=scale,
        )
    if onset is not None:
        return Regime(max(onset, since), "drift_checks")
    recent = np.asarray(times >= since) & np.isfinite(errors)
    estimated = estimate_onset(times[recent], np.abs(errors[recent]))
    return None if estimated is None else Regime(estimated, "champion_errors")


def _check_window(bundle: ModelBundle) -> int:
    """Rows per input-check window of the bundle's seasonal reference (0: it has none)."""
    from rps.serving.seasonal import SEASONAL_KEY

    raw = bundle.reference_stats.get(SEASONAL_KEY)
    return int(raw.get("window", 0)) if isinstance(raw, dict) else 0


def _check_ratios(bundle: ModelBundle, rows: np.ndarray, complete: np.ndarray) -> np.ndarray:
    """Per row, the largest input-check ratio over the window of complete rows ending at it.

    As the API's monitor computes it: its ring holds only the rows it could serve (complete
    ones). NaN where no window is full yet, and everywhere without a seasonal reference.
    """
    from rps.serving.drift import input_checks
    from rps.serving.seasonal import SEASONAL_KEY, SeasonalReference, SeasonalReferenceError

    ratios = np.full(len(rows), np.nan)
    raw = bundle.reference_stats.get(SEASONAL_KEY)
    if not isinstance(raw, dict):
        return ratios
    try:
        reference = SeasonalReference.from_json(bundle.feature_names, raw)
    except SeasonalReferenceError:
        return ratios
    served = np.flatnonzero(complete)
    for k in range(reference.window - 1, len(served)):
        window = rows[served[k - reference.window + 1 : k + 1]]
        checks, _ = input_checks(reference, window)
        ratios[served[k]] = max(checks.values(), default=np.nan)
    return ratios
