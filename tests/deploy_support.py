"""Small real model bundles for the deployment tests (container build, verify, rollback).

A LightGBM model fitted in about a second on a slice of the replayed weather, wrapped in a
:class:`rps.models.bundle.ModelBundle` with reference statistics, so the server loads it
exactly as it loads a trained champion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rps.features import build
from rps.models.bundle import ModelBundle, Predictor
from rps.params import Params

QUANTILE_LEVELS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def training_frame(observations: pd.DataFrame, params: Params) -> tuple[build.FeatureSpec, Any]:
    """The feature spec and the complete feature rows (with target) of ``observations``."""
    spec = build.FeatureSpec.from_params(params.data.variables, params.data.target, params.features)
    frame = build.build_features(observations, spec).dropna()
    return spec, frame


def reference_stats(features: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per feature ``mean``/``std``/``min``/``max``/``quantiles`` (the bundle's format)."""
    stats: dict[str, dict[str, Any]] = {}
    for name in features.columns:
        column = features[name].to_numpy(dtype=float)
        stats[name] = {
            "mean": float(column.mean()),
            "std": float(column.std(ddof=1)),
            "min": float(column.min()),
            "max": float(column.max()),
            "quantiles": {str(q): float(np.quantile(column, q)) for q in QUANTILE_LEVELS},
        }
    return stats


def make_bundle(
    observations: pd.DataFrame,
    params: Params,
    dest: Path,
    *,
    version: str = "1",
    name: str = "rps-temperature-forecaster",
    broken: bool = False,
    rows: int = 2000,
) -> ModelBundle:
    """Fit a small LightGBM model and save it as a bundle in ``dest``.

    Args:
        observations: Hourly replayed observations (the ``observations`` fixture).
        params: The project's params.
        dest: Empty or missing directory to write the bundle into.
        version: The registry version recorded in the bundle's lineage.
        name: The registered model name recorded in the lineage.
        broken: Write a model whose predictions are NaN (a linear model with a NaN intercept)
            instead: loads and checksums fine, fails any sanity check of its output.
        rows: Training rows (the newest ``rows`` complete feature rows).

    Returns:
        The saved bundle (its ``checksum`` set).
    """
    spec, frame = training_frame(observations, params)
    frame = frame.tail(rows)
    names = spec.feature_names
    x = frame[names].to_numpy(dtype=float)
    y = frame[build.TARGET].to_numpy(dtype=float)
    if broken:
        predictor = Predictor(
            kind="linear",
            feature_names=names,
            params={
                "target": spec.target,
                "mean": [0.0] * len(names),
                "scale": [1.0] * len(names),
                "coef": [0.0] * len(names),
                "intercept": float("nan"),
            },
        )
    else:
        import lightgbm

        booster = lightgbm.train(
            {"objective": "regression", "num_leaves": 15, "learning_rate": 0.1, "verbose": -1},
            lightgbm.Dataset(x, y, feature_name=names),
            num_boost_round=30,
        )
        predictor = Predictor(
            kind="lightgbm",
            feature_names=names,
            params={"target": spec.target, "num_boost_round": 30},
            booster=booster,
        )
    residuals = y - predictor.predict(x) if not broken else np.zeros(len(y))
    bundle = ModelBundle(
        predictor=predictor,
        feature_spec=spec,
        interval={
            "alpha": 0.1,
            "lower": float(np.quantile(residuals, 0.05)),
            "upper": float(np.quantile(residuals, 0.95)),
        },
        metrics={"rmse": float(np.sqrt(np.mean(residuals**2)))},
        lineage={
            "model_name": name,
            "registered_model_name": name,
            "model_version": version,
            "version": version,
            "run_id": f"test-run-{version}",
            "trained_at": pd.Timestamp.now(tz="UTC").isoformat(),
        },
        reference_stats=reference_stats(frame[names]),
        reference_sample=x[-200:],
    )
    bundle.save(dest)
    return bundle
