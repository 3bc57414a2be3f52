"""Serving the registry's champion (no model_dir): load by alias and hot reload after a
promotion, against a real MLflow server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.integration.conftest_mlflow import MlflowServer
from tests.integration.conftest_serving import ServerHandle

pytestmark = pytest.mark.slow

MODEL_NAME = "rps-serving-registry-test"


def _register(settings: Any, bundle_dir: Path) -> str:
    """Log a bundle as a pyfunc model version (the trainer's path, without training)."""
    import mlflow
    from mlflow.models import infer_signature

    from rps.models import registry
    from rps.models.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    example = pd.DataFrame(bundle.reference_sample[:2], columns=bundle.feature_names)
    output = pd.DataFrame({"prediction": [0.0, 0.0], "lower": [0.0, 0.0], "upper": [0.0, 0.0]})
    registry.configure_tracking(settings)
    registry.ensure_experiment(settings)
    with mlflow.start_run():
        return registry.log_and_register(
            settings,
            bundle_dir,
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=["rps"],
        )


def _set_champion(settings: Any, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=settings.tracking_uri).set_registered_model_alias(
        settings.registered_model_name, "champion", version
    )


def test_serves_the_champion_by_alias_and_reloads_after_a_promotion(
    mlflow_server: MlflowServer,
    serving_factory: Callable[..., ServerHandle],
    serving_bundle: Path,
    serving_bundle_v2: Path,
    tmp_path: Path,
) -> None:
    """Without model_dir the server downloads models:/<name>@champion; after the alias moves,
    POST /model/reload serves the new champion with its registry version."""
    settings = mlflow_server.settings(tmp_path, MODEL_NAME)
    first = _register(settings, serving_bundle)
    _set_champion(settings, first)

    server = serving_factory(
        model_dir=None,
        extra_env={
            "RPS_MLFLOW_TRACKING_URI": mlflow_server.url,
            "RPS_REGISTERED_MODEL_NAME": MODEL_NAME,
        },
    )
    client = server.client()
    info = client.get("/model/info").json()
    assert info["version"] == first
    assert info["source"].startswith(f"models:/{MODEL_NAME}@champion")

    second = _register(settings, serving_bundle_v2)
    _set_champion(settings, second)
    reload = client.post("/model/reload", headers=server.admin_headers(), timeout=120)
    assert reload.status_code == 200, reload.text
    assert reload.json()["model_version"] == second
    assert client.get("/health").json()["model_version"] == second
    cached = server.state_dir / "serving" / "bundles" / reload.json()["checksum"]
    assert (cached / "bundle.json").exists()  # served from the verified cache copy
