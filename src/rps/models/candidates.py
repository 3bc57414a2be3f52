"""The candidates: baselines and learned models, each a :class:`Forecaster` class.

Candidate names map to forecaster classes (:data:`rps.models.forecasters.CANDIDATES`); this
module fits one by name and reports its feature importance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rps.features.spec import FeatureSpec
from rps.models.errors import TrainingError
from rps.models.forecasters import (
    CANDIDATES,
    FitInfo,
    Forecaster,
    ForecasterError,
    TrainingRows,
    seasonal_feature,
)

BASELINES: tuple[str, ...] = ("persistence", "seasonal_naive", "climatology")
LEARNED: tuple[str, ...] = ("ridge", "lightgbm")
#: candidate name -> bundle predictor kind
KIND_OF: dict[str, str] = {name: cls.kind for name, cls in CANDIDATES.items()}

__all__ = [
    "BASELINES",
    "KIND_OF",
    "LEARNED",
    "feature_importance",
    "fit_candidate",
    "seasonal_feature",
]


def fit_candidate(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    spec: FeatureSpec,
    hyper: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    valid: tuple[np.ndarray, np.ndarray] | None = None,
    sample_weight: np.ndarray | None = None,
    regime: np.ndarray | None = None,
) -> tuple[Forecaster, FitInfo]:
    """Fit one candidate on rows ``x`` (``spec.feature_names`` order) and labels ``y``.

    Args:
        name: one of :data:`BASELINES` or :data:`LEARNED`.
        x: feature rows.
        y: labels.
        spec: the feature spec (column names, target).
        hyper: hyperparameters (ridge: ``alpha``; LightGBM: its parameters plus
            ``n_estimators`` as the number of boosting rounds).
        seed: the random seed.
        valid: validation rows and labels; LightGBM then stops early on them.
        sample_weight: one weight per row (None: equal weights); baselines that learn
            nothing ignore it.
        regime: True for the rows of a new regime (a drift run's post-onset rows); with
            ``regime_alpha`` in ``hyper`` the ridge learns that regime's coefficients
            (:func:`rps.models.regime.regime_ridge`); other candidates ignore it.

    Returns:
        The forecaster and fit details (LightGBM: ``best_iteration``).

    Raises:
        TrainingError: an unknown candidate, or one the feature spec cannot support.
    """
    cls = CANDIDATES.get(name)
    if cls is None:
        raise TrainingError(f"unknown candidate {name!r}")
    try:
        rows = TrainingRows(x, y, spec, dict(hyper or {}), sample_weight, regime)
        forecaster, info = cls.fit(rows, seed=seed, valid=valid)
    except ForecasterError as exc:
        raise TrainingError(str(exc)) from exc
    return forecaster, dict(info)


def feature_importance(predictor: Forecaster) -> np.ndarray:
    """Importance per feature: LightGBM gain, |standardized coefficient|, or the one input."""
    return predictor.importance()
