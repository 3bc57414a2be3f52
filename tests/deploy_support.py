"""Bundles for the deployment tests, on top of the serving fixtures' real LightGBM bundles.

:func:`tests.integration.conftest_serving.build_bundle` trains the good models. A *bad*
release here is one the server accepts (checksums verify, the smoke prediction is finite) but
whose forecasts are physically absurd: exactly what only a post-deploy verification catches.
"""

from __future__ import annotations

from pathlib import Path

from rps.models.bundle import ModelBundle, Predictor, load_bundle

ABSURD_DEGC = 500.0


def absurd_bundle(source: Path, target: Path, *, version: str) -> Path:
    """A copy of the bundle in ``source`` whose model always forecasts 500 degC.

    Args:
        source: A good bundle (its feature spec, reference statistics and sample are reused).
        target: Where to save the bad bundle.
        version: The ``model_version`` in its lineage (the version the server reports).

    Returns:
        ``target``.
    """
    good = load_bundle(source)
    n = len(good.feature_names)
    bundle = ModelBundle(
        predictor=Predictor(
            kind="linear",
            feature_names=good.feature_names,
            params={
                "target": good.feature_spec.target,
                "mean": [0.0] * n,
                "scale": [1.0] * n,
                "coef": [0.0] * n,
                "intercept": ABSURD_DEGC,
            },
        ),
        feature_spec=good.feature_spec,
        interval={"alpha": 0.1, "lower": -1.0, "upper": 1.0},
        metrics={"holdout_rmse": 1.0},
        lineage={"model_version": version, "run_id": f"absurd-{version}"},
        reference_stats=good.reference_stats,
        reference_sample=good.reference_sample,
    )
    bundle.save(target)
    return target


def linear_bundle(
    dest: Path, *, version: str | None = "1", intercept: float = 15.0, sample_rows: int = 8
) -> Path:
    """A tiny valid bundle (constant linear model, no training) for fast unit tests.

    Args:
        dest: Where to save it.
        version: ``model_version`` in its lineage (None: no version recorded, as a freshly
            trained bundle before registration).
        intercept: The constant forecast (degC).
        sample_rows: Rows of its reference sample (each row ``i`` is ``i + 1`` everywhere).

    Returns:
        ``dest``.
    """
    import numpy as np

    from rps.features.build import FeatureSpec
    from rps.params import load_params

    repo_root = Path(__file__).resolve().parents[1]
    params = load_params(repo_root / "params.yaml")
    spec = FeatureSpec.from_params(params.data.variables, params.data.target, params.features)
    names = spec.feature_names
    n = len(names)
    sample = np.tile(np.arange(1.0, sample_rows + 1.0)[:, None], (1, n))
    lineage: dict[str, str] = {"run_id": "unit"}
    if version is not None:
        lineage["model_version"] = version
    ModelBundle(
        predictor=Predictor(
            kind="linear",
            feature_names=names,
            params={
                "target": spec.target,
                "mean": [0.0] * n,
                "scale": [1.0] * n,
                "coef": [0.0] * n,
                "intercept": intercept,
            },
        ),
        feature_spec=spec,
        interval={"alpha": 0.1, "lower": -2.0, "upper": 2.0},
        metrics={"holdout_rmse": 1.5},
        lineage=lineage,
        reference_stats={
            name: {"mean": 1.0, "std": 1.0, "min": 0.0, "max": float(sample_rows + 1)}
            for name in names
        },
        reference_sample=sample,
    ).save(dest)
    return dest
