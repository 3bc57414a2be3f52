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
