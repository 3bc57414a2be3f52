"""The promotion gate: champion and challenger on one holdout, a paired test, a decision.

Promotion rule, in order (``alpha`` = ``train.promotion.significance``, ``m`` =
``train.promotion.non_inferiority_margin``; DM = one-sided Diebold-Mariano test on
per-sample squared errors, :func:`rps.models.evaluation.diebold_mariano`):

1. The candidate must beat persistence on the holdout: lower RMSE *and* DM p-value of
   "candidate more accurate than persistence" < ``alpha``. (Exempt: the candidate *is*
   the persistence baseline, registered when no learned model beats it.)
2. No champion yet: promote.
3. The champion forecasts another target or horizon, cannot be loaded, or shares fewer
   than :data:`MIN_COMPARE_ROWS` holdout rows: refuse (promote manually after review).
4. DM p-value of "candidate more accurate than champion" < ``alpha``: promote (superior).
5. RMSE_candidate <= RMSE_champion x (1 + m) *and* DM p-value of "champion more
   accurate than candidate" >= ``alpha``: promote (non-inferior). Not for a drift-triggered
   run when ``train.promotion.drift_requires_superiority`` is set (the default): there the
   holdout is the newest ``train.promotion.recent_window_hours`` after the drift onset
   (:mod:`rps.models.adaptation`) and only rule 4 promotes. A drift-triggered run so soon
   after the onset that its holdout reaches back before it is refused before rule 4 (too
   early: the holdout is not the new regime; a later run decides).
6. Otherwise refuse.

A trajectory candidate is also held to :func:`check_horizons` (applied by
:func:`rps.models.stages.evaluate_run`): not worse than persistence at any horizon.

The champion's forecasts are *recomputed* on the candidate's holdout from its bundle (all
bundles share the feature code, so any champion can be rebuilt).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rps.data.schema import TIME
from rps.features.build import TARGET, FeatureError, FeatureSpec, build_features
from rps.models import evaluation as ev
from rps.models.bundle import BundleError, ModelBundle, load_bundle
from rps.models.errors import RegistryError, TrackingUnavailableError
from rps.models.registry import CHAMPION, alias_or_none, download_bundle
from rps.models.tracking import get_client
from rps.settings import Settings

if TYPE_CHECKING:
    from rps.params import Params

HOLDOUT_OBSERVATIONS = "evaluation/holdout_observations.parquet"
#: the chosen model's holdout forecasts as training recorded them (before a refit)
HOLDOUT_PREDICTIONS = "evaluation/holdout_predictions.csv"
MIN_COMPARE_ROWS = 24


@dataclass(frozen=True)
class Holdout:
    """The holdout a candidate was evaluated on, enough to re-score any other bundle."""

    issue_times: pd.DatetimeIndex
    y: np.ndarray
    y_now: np.ndarray  # the target at issue time: persistence forecasts
    horizon_hours: int
    target: str
    observations: pd.DataFrame  # covers the holdout plus the feature window before it


@dataclass(frozen=True)
class GateDecision:
    """The promotion gate's verdict and the evidence behind it."""

    promote: bool
    rule: str  # first_champion | superior | non_inferior | refused_*
    reason: str
    n: int
    candidate_rmse: float
    persistence_rmse: float
    champion_rmse: float | None = None
    champion_version: str | None = None
    dm_vs_persistence: ev.DMResult | None = None
    dm_vs_champion: ev.DMResult | None = None
    significance: float = 0.05
    margin: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (nested dataclasses become dicts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateDecision:
        """The decision :meth:`to_dict` wrote (the evaluate stage's stored evidence)."""
        values = dict(data)
        for key in ("dm_vs_persistence", "dm_vs_champion"):
            if isinstance(values.get(key), dict):
                values[key] = ev.DMResult(**values[key])
        return cls(**values)


def decide_promotion(
    y: np.ndarray,
    candidate_pred: np.ndarray,
    persistence_pred: np.ndarray,
    champion_pred: np.ndarray | None = None,
    *,
    horizon: int,
    significance: float,
    margin: float,
    candidate_is_persistence: bool = False,
    champion_version: str | None = None,
    require_superiority: bool = False,
) -> GateDecision:
    """Apply the promotion rule (module docstring) to forecasts on one holdout.

    With ``require_superiority`` (drift-triggered runs) rule 5 does not apply: only a
    significantly better candidate replaces the champion.
    """
    y = np.asarray(y, dtype=float)
    cand = np.asarray(candidate_pred, dtype=float)
    pers = np.asarray(persistence_pred, dtype=float)
    n = int(y.size)
    cand_rmse, pers_rmse = ev.rmse(y, cand), ev.rmse(y, pers)
    common: dict[str, Any] = {
        "n": n,
        "candidate_rmse": cand_rmse,
        "persistence_rmse": pers_rmse,
        "champion_version": champion_version,
        "significance": significance,
        "margin": margin,
    }
    dm_p = None
    if not candidate_is_persistence:
        dm_p = ev.diebold_mariano(y - cand, y - pers, horizon=horizon)
        common["dm_vs_persistence"] = dm_p
        if not (cand_rmse < pers_rmse and dm_p.p_value_better < significance):
            return GateDecision(
                promote=False,
                rule="refused_persistence",
                reason=(
                    f"does not beat persistence: RMSE {cand_rmse:.4f} vs {pers_rmse:.4f}, "
                    f"DM p={dm_p.p_value_better:.3g} (needs < {significance})"
                ),
                **common,
            )
    if champion_pred is None:
        what = "is the persistence baseline" if candidate_is_persistence else "beats persistence"
        return GateDecision(
            promote=True,
            rule="first_champion",
            reason=f"no champion yet; the candidate {what} (RMSE {cand_rmse:.4f})",
            **common,
        )
    champ = np.asarray(champion_pred, dtype=float)
    champ_rmse = ev.rmse(y, champ)
    dm_c = ev.diebold_mariano(y - cand, y - champ, horizon=horizon)
    common.update(champion_rmse=champ_rmse, dm_vs_champion=dm_c)
    label = f"champion v{champion_version}" if champion_version else "the champion"
    versus = f"RMSE {cand_rmse:.4f} vs {champ_rmse:.4f} ({label})"
    if dm_c.p_value_better < significance:
        return GateDecision(
            promote=True,
            rule="superior",
            reason=f"significantly better than {label}: {versus}, DM p={dm_c.p_value_better:.3g}",
            **common,
        )
    if require_superiority:
        return GateDecision(
            promote=False,
            rule="refused_not_superior",
            reason=(
                f"not significantly better than {label} on the window after the drift onset: "
                f"{versus}, DM p={dm_c.p_value_better:.3g} (needs < {significance})"
            ),
            **common,
        )
    if cand_rmse <= champ_rmse * (1 + margin) and dm_c.p_value_worse >= significance:
        return GateDecision(
            promote=True,
            rule="non_inferior",
            reason=(
                f"non-inferior to {label}: {versus} within {margin:.0%}, and {label} is not "
                f"significantly better (DM p={dm_c.p_value_worse:.3g})"
            ),
            **common,
        )
    return GateDecision(
        promote=False,
        rule="refused_champion",
        reason=(
            f"worse than {label}: {versus}; margin {margin:.0%}, DM p(champion better)="
            f"{dm_c.p_value_worse:.3g}"
        ),
        **common,
    )


def _refuse(
    reason: str,
    holdout: Holdout,
    candidate_pred: np.ndarray,
    version: str,
    rule: str = "refused_incomparable",
) -> GateDecision:
    return GateDecision(
        promote=False,
        rule=rule,
        reason=reason,
        n=len(holdout.y),
        candidate_rmse=ev.rmse(holdout.y, candidate_pred),
        persistence_rmse=ev.rmse(holdout.y, holdout.y_now),
        champion_version=version,
    )


def predict_bundle(
    bundle: ModelBundle, observations: pd.DataFrame, issue_times: pd.DatetimeIndex
) -> np.ndarray:
    """A bundle's forecasts at ``issue_times`` from raw observations (NaN where incomplete)."""
    features = build_features(observations, bundle.feature_spec, with_target=False)
    rows = features.reindex(issue_times)[bundle.feature_names]
    ok = rows.notna().all(axis=1).to_numpy()
    out = np.full(len(issue_times), np.nan)
    if ok.any():
        out[ok] = bundle.predictor.predict(rows.to_numpy(dtype=float)[ok])
    return out


def recorded_forecasts(recorded: pd.DataFrame, issue_times: pd.DatetimeIndex) -> np.ndarray:
    """The ``prediction`` column of :data:`HOLDOUT_PREDICTIONS` at ``issue_times`` (NaN: none)."""
    stamps = pd.to_datetime(recorded["issue_time"], utc=True)
    by_time = pd.Series(recorded["prediction"].to_numpy(dtype=float), index=stamps)
    return by_time.reindex(issue_times).to_numpy(dtype=float)


def bundle_holdout(
    bundle: ModelBundle, observations: pd.DataFrame
) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Issue times, labels and persistence forecasts of a bundle's recorded holdout.

    Raises:
        RegistryError: the bundle's lineage records no holdout period.
    """
    for key in ("holdout_start", "holdout_end"):
        if key not in bundle.lineage:
            raise RegistryError(f"the bundle records no {key} in its lineage")
    spec = bundle.feature_spec
    features = build_features(observations, spec)
    start = pd.Timestamp(bundle.lineage["holdout_start"])
    end = pd.Timestamp(bundle.lineage["holdout_end"])
    window = features.loc[start:end]
    window = window.dropna(subset=[*spec.feature_names, TARGET])
    index = pd.DatetimeIndex(window.index)
    return index, window[TARGET].to_numpy(dtype=float), window[spec.target].to_numpy(dtype=float)


def holdout_observations(
    observations: pd.DataFrame, spec: FeatureSpec, issue_times: pd.DatetimeIndex
) -> pd.DataFrame:
    """The observations needed to rebuild features over the holdout (stored with the run)."""
    margin = pd.Timedelta(hours=max(spec.window_hours, 14 * 24))
    times = pd.to_datetime(observations[TIME], utc=True)
    start = issue_times[0] - margin
    end = issue_times[-1] + pd.Timedelta(hours=spec.horizon_hours)
    keep = ((times >= start) & (times <= end)).to_numpy()
    return observations.loc[keep].reset_index(drop=True)


def evaluate_gate(
    settings: Settings,
    params: Params,
    holdout: Holdout,
    candidate_pred: np.ndarray,
    *,
    candidate_is_persistence: bool,
    drift_onset: pd.Timestamp | None = None,
) -> GateDecision:
    """Run the promotion gate for a candidate against the current champion (read-only).

    ``drift_onset``: the holdout is the window after this drift onset; the rule then needs
    superiority when ``train.promotion.drift_requires_superiority`` is set. A holdout that
    starts before the onset (a run so soon after it that the newest hours cannot fill the
    smallest holdout) cannot judge the new regime: the candidate is refused as too early,
    and a later run, with more of the new regime, decides.

    Raises:
        RegistryError: the registry cannot be read.
    """
    client = get_client(settings)
    name = settings.registered_model_name
    promotion = params.train.promotion
    champion = alias_or_none(client, name, CHAMPION)
    kwargs: dict[str, Any] = {
        "horizon": holdout.horizon_hours,
        "significance": promotion.significance,
        "margin": promotion.non_inferiority_margin,
        "candidate_is_persistence": candidate_is_persistence,
    }
    superiority = drift_onset is not None and promotion.drift_requires_superiority
    if champion is None:
        return decide_promotion(holdout.y, candidate_pred, holdout.y_now, None, **kwargs)
    version = str(champion.version)
    early = too_early(holdout.issue_times, drift_onset)
    if early is not None:
        return _refuse(early, holdout, candidate_pred, version, rule="refused_too_early")
    champ_pred = _champion_forecasts(settings, version, holdout)
    if isinstance(champ_pred, str):  # a champion that cannot be compared: a human decides
        return _refuse(champ_pred, holdout, candidate_pred, version)
    ok = np.isfinite(champ_pred)
    if ok.sum() < MIN_COMPARE_ROWS:
        return _refuse(
            f"champion v{version} forecasts only {int(ok.sum())} holdout rows "
            f"(< {MIN_COMPARE_ROWS})",
            holdout,
            candidate_pred,
            version,
        )
    return decide_promotion(
        holdout.y[ok],
        np.asarray(candidate_pred)[ok],
        holdout.y_now[ok],
        champ_pred[ok],
        champion_version=version,
        require_superiority=superiority,
        **kwargs,
    )


def too_early(issue_times: pd.DatetimeIndex, drift_onset: pd.Timestamp | None) -> str | None:
    """Why a drift run's holdout cannot judge the new regime (it starts before the onset), or
    None (no drift run, or the whole holdout lies after the onset)."""
    if drift_onset is None or issue_times[0] >= drift_onset:
        return None
    after = int(np.count_nonzero(issue_times >= drift_onset))
    return (
        f"too early to judge the new regime: the holdout starts at {issue_times[0]}, before "
        f"the drift onset {drift_onset} ({after} of its {len(issue_times)} hours after it); "
        "a later run decides"
    )


def _champion_forecasts(settings: Settings, version: str, holdout: Holdout) -> np.ndarray | str:
    """The champion's forecasts of the holdout, or why it cannot make them (a refusal reason).

    Raises:
        TrackingUnavailableError: the registry cannot be reached.
    """
    try:
        with tempfile.TemporaryDirectory(prefix="rps-champion-") as tmp:
            bundle = load_bundle(download_bundle(settings, version, dst=Path(tmp)))
    except TrackingUnavailableError:
        raise
    except (BundleError, OSError, RegistryError) as exc:
        # a broken champion must not block training: refuse, and let a human decide
        return f"champion v{version} cannot be loaded ({exc}); promote manually"
    spec = bundle.feature_spec
    if spec.target != holdout.target or spec.horizon_hours != holdout.horizon_hours:
        return (
            f"champion v{version} forecasts {spec.target} at +{spec.horizon_hours} h, the "
            f"candidate {holdout.target} at +{holdout.horizon_hours} h; promote manually"
        )
    try:
        return predict_bundle(bundle, holdout.observations, holdout.issue_times)
    except (FeatureError, ValueError) as exc:
        return f"champion v{version} cannot forecast the holdout: {exc}"


def check_horizons(metrics_by_horizon: Sequence[Mapping[str, float]]) -> str | None:
    """The per-horizon rule: a challenger may not be worse than persistence at any horizon.

    Args:
        metrics_by_horizon: holdout scores per horizon (``rmse``, ``persistence_rmse``).

    Returns:
        None when the rule holds (also without horizons), else the refusal's reason.
    """
    worse = [r for r in metrics_by_horizon if r["rmse"] > r["persistence_rmse"]]
    if not worse:
        return None
    listed = ", ".join(
        f"+{int(r['horizon_hours'])} h ({r['rmse']:.3f} vs {r['persistence_rmse']:.3f})"
        for r in worse[:5]
    )
    return f"worse than persistence at {len(worse)} horizon(s): {listed}"


def apply_horizon_gate(
    decision: GateDecision, metrics_by_horizon: Sequence[Mapping[str, float]]
) -> GateDecision:
    """The decision, turned into a refusal (rule ``refused_horizon``) when
    :func:`check_horizons` finds a horizon where the candidate loses to persistence."""
    reason = check_horizons(metrics_by_horizon)
    if reason is None or not decision.promote:
        return decision
    return replace(decision, promote=False, rule="refused_horizon", reason=reason)
