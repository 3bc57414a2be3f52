"""A small linear model bundle for the serving unit tests (no training needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rps.features.build import FeatureSpec
from rps.models.bundle import ModelBundle, Predictor
from rps.params import load_params

PARAMS_FILE = Path(__file__).resolve().parents[3] / "params.yaml"


def linear_bundle(directory: Path, *, version: str = "7", intercept: float = 0.5) -> Path:
    """A small linear bundle with reference statistics (fast; no training).

    Its forecast is the sum of the first two features (temperature, humidity) + ``intercept``.
    """
    params = load_params(PARAMS_FILE)
    spec = FeatureSpec.from_params(params.data.variables, params.data.target, params.features)
    names = spec.feature_names
    rng = np.random.default_rng(0)
    sample = rng.normal(10.0, 2.0, size=(200, len(names)))
    stats = {
        name: {
            "mean": float(sample[:, j].mean()),
            "std": float(sample[:, j].std()),
            "min": float(sample[:, j].min()),
            "max": float(sample[:, j].max()),
            "quantiles": {str(q): float(np.quantile(sample[:, j], q)) for q in (0.1, 0.5, 0.9)},
        }
        for j, name in enumerate(names)
    }
    coef = [0.0] * len(names)
    coef[0] = coef[1] = 1.0
    bundle = ModelBundle(
        predictor=Predictor(
            kind="linear",
            feature_names=names,
            params={
                "target": spec.target,
                "mean": [0.0] * len(names),
                "scale": [1.0] * len(names),
                "coef": coef,
                "intercept": intercept,
            },
        ),
        feature_spec=spec,
        interval={"alpha": 0.1, "lower": -2.0, "upper": 2.0},
        metrics={"holdout_rmse": 2.0},
        lineage={"run_id": "unit", "model_version": version},
        reference_stats=stats,
        reference_sample=sample,
    )
    bundle.save(directory)
    return directory


def trajectory_bundle(directory: Path, *, max_hours: int = 48) -> Path:
    """A persistence bundle that forecasts every hour 1..``max_hours`` (fast; no training).

    Its forecast is the temperature now at every horizon; its interval is the conditional one
    of :class:`rps.models.intervals.HorizonInterval`, ``exp(0.5 * log h) = sqrt(h)`` wide on
    either side of the forecast, times 1.645.
    """
    from rps.models.intervals import HorizonInterval, scale_columns, scale_terms

    params = load_params(PARAMS_FILE)
    spec = FeatureSpec.from_params(params.data.variables, params.data.target, params.features)
    columns = scale_columns(spec)
    coef = [0.0] * scale_terms(columns)
    coef[1] = 0.5  # log h
    bundle = ModelBundle(
        predictor=Predictor(
            kind="persistence", feature_names=spec.feature_names, params={"target": spec.target}
        ),
        feature_spec=spec,
        interval={"alpha": 0.1, "lower": -2.0, "upper": 2.0},
        metrics={"holdout_rmse": 2.0},
        lineage={"run_id": "unit", "model_version": "traj"},
        reference_stats={},
        reference_sample=np.full((4, len(spec.feature_names)), 6.0),
        horizon_interval=HorizonInterval(
            alpha=0.1,
            columns=columns,
            coef=coef,
            lower=[-1.645] * max_hours,
            upper=[1.645] * max_hours,
        ),
        metrics_by_horizon=[{"horizon_hours": 1.0, "rmse": 1.0, "persistence_rmse": 1.0}],
    )
    bundle.save(directory)
    return directory
