"""MLflow lineage against a real MLflow server: the run's dataset inputs, and the registered
pyfunc served by ``mlflow models serve`` in a fresh environment without the ``rps`` package.

Data: the newest 75 days of replayed Greensboro weather, versioned with real git + DVC (a
local-folder remote), trained with n_trials=2, two CV folds and a 12 h trajectory (seconds).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import psutil
import pytest
from mlflow import MlflowClient

from rps.data.versioning import DatasetVersion, version_dataset
from rps.features.build import build_features
from rps.files import file_digest
from rps.models.bundle import find_bundle_dir, load_bundle
from rps.models.dataset import frame_md5
from rps.models.gate import HOLDOUT_OBSERVATIONS
from rps.models.lineage import (
    ARTIFACT_TAG,
    DATASET_NAME,
    HOLDOUT_CONTEXT,
    HOLDOUT_NAME,
    TRAINING_CONTEXT,
)
from rps.models.train import TrainResult, train
from rps.params import Params
from tests.integration.conftest_mlflow import (
    MlflowServer,
    free_port,
    stop_process_group,
    wait_until_healthy,
)

pytestmark = pytest.mark.slow

MODEL_NAME = "rps-lineage-test"
SPRING_DAYS = 75
CONTEXT_TAG = "mlflow.data.context"
SERVE_READY_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class Trained:
    settings: Any
    version: DatasetVersion
    observations: pd.DataFrame
    result: TrainResult


@pytest.fixture(scope="module")
def trained(
    mlflow_server: MlflowServer,
    params: Params,
    observations: pd.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
) -> Trained:
    """A dataset versioned with DVC, trained on by its md5 and registered as version 1."""
    root = tmp_path_factory.mktemp("lineage")
    settings = mlflow_server.settings(root, MODEL_NAME)
    spring = observations.iloc[-SPRING_DAYS * 24 :].reset_index(drop=True)
    parquet = root / "observations.parquet"
    spring.to_parquet(parquet, index=False)
    version = version_dataset(settings, parquet, message="lineage test")
    short = {"max_hours": 12, "group_starts": (1, 4, 7), "interval_folds": 2}
    fast = params.model_copy(
        update={
            "train": params.train.model_copy(update={"n_trials": 2, "cv_folds": 2}),
            "horizons": params.horizons.model_copy(update=short),
        }
    )
    result = train(settings, fast, dataset_md5=version.md5)
    assert result.version == "1" and result.dataset_md5 == version.md5
    return Trained(settings=settings, version=version, observations=spring, result=result)


def test_the_run_logs_the_dataset_version_and_its_holdout_as_inputs(
    trained: Trained, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """The training input carries the DVC md5 and the remote URI of the version the run
    loaded (and that URI yields those bytes); the holdout input's digest is that of the
    holdout rows stored with the run."""
    run = MlflowClient(mlflow_server.url).get_run(trained.result.run_id)
    by_context = {
        {tag.key: tag.value for tag in found.tags}[CONTEXT_TAG]: found
        for found in run.inputs.dataset_inputs
    }
    assert set(by_context) == {TRAINING_CONTEXT, HOLDOUT_CONTEXT}

    training = by_context[TRAINING_CONTEXT].dataset
    assert training.name == DATASET_NAME
    assert training.digest == trained.version.md5 == run.data.tags["rps.dataset_md5"]
    assert training.source_type == "local"
    assert trained.version.storage_uri.startswith("file://")
    assert json.loads(training.source)["uri"] == trained.version.storage_uri
    assert run.data.tags["rps.dataset_uri"] == trained.version.storage_uri
    assert json.loads(training.profile)["num_rows"] == len(trained.observations)
    assert json.loads(training.schema)["mlflow_colspec"][0]["name"] == "time"
    source_file = mlflow.data.get_source(by_context[TRAINING_CONTEXT]).load(
        dst_path=str(tmp_path / "source")
    )
    assert file_digest(Path(source_file), "md5") == trained.version.md5

    holdout = by_context[HOLDOUT_CONTEXT].dataset
    assert holdout.name == HOLDOUT_NAME
    holdout_tags = {tag.key: tag.value for tag in by_context[HOLDOUT_CONTEXT].tags}
    assert holdout_tags[ARTIFACT_TAG] == HOLDOUT_OBSERVATIONS
    assert json.loads(holdout.source)["uri"] == trained.version.storage_uri
    stored = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path=HOLDOUT_OBSERVATIONS, dst_path=str(tmp_path)
    )
    holdout_rows = pd.read_parquet(stored)
    assert holdout.digest == frame_md5(holdout_rows)
    assert json.loads(holdout.profile)["num_rows"] == len(holdout_rows)
    assert len(holdout_rows) < len(trained.observations)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


@pytest.fixture
def served(
    trained: Trained, mlflow_server: MlflowServer, tmp_path: Path
) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """``mlflow models serve -m models:/<name>/1 --env-manager uv`` in a new environment root.

    Yields the base URL, the environment root and the serving process.
    """
    uv = shutil.which("uv")
    assert uv, "mlflow models serve --env-manager uv needs the uv executable on PATH"
    env_root = tmp_path / "envs"
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV") and not key.startswith("RPS_")
    }
    env.update(MLFLOW_TRACKING_URI=mlflow_server.url, MLFLOW_ENV_ROOT=str(env_root))
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "models",
        "serve",
        "-m",
        f"models:/{MODEL_NAME}/{trained.result.version}",
        "--env-manager",
        "uv",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        # a neutral working directory: nothing of the project is importable from it
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(
            f"{url}/ping",
            process,
            log_path,
            what="mlflow models serve",
            timeout=SERVE_READY_TIMEOUT_S,
        )
        yield url, env_root, process
    finally:
        stop_process_group(process)


def test_the_registered_version_is_served_in_a_fresh_environment_without_rps(
    trained: Trained,
    served: tuple[str, Path, subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """The scoring server runs on an interpreter of the new environment, which has no ``rps``
    distribution and cannot import ``rps`` on its own; its predictions equal the bundle's."""
    url, env_root, process = served
    scorers = [p for p in _descendants(process.pid) if "uvicorn" in " ".join(p.cmdline())]
    assert scorers, "no scoring server process under mlflow models serve"
    launcher = Path(scorers[0].cmdline()[0])  # the venv's python (a symlink: not resolved)
    assert env_root in launcher.parents, f"the scoring server runs {launcher}, not in {env_root}"
    env_python = launcher.with_name("python")
    probe = (
        "import importlib.metadata as m, importlib.util as u\n"
        "try:\n    m.distribution('rps'); print('rps installed')\n"
        "except m.PackageNotFoundError:\n    print('no rps distribution')\n"
        "print('importable' if u.find_spec('rps') else 'not importable')\n"
    )
    seen = subprocess.run(
        [str(env_python), "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        timeout=60,
        check=True,
    ).stdout.split()
    assert " ".join(seen) == "no rps distribution not importable"

    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{MODEL_NAME}/{trained.result.version}", dst_path=str(tmp_path / "model")
        )
    )
    assert (model_dir / "code" / "rps" / "models" / "pyfunc.py").is_file()
    assert not (model_dir / "uv.lock").exists()  # else --env-manager uv restores the project
    names = [pin.split("==")[0] for pin in (model_dir / "requirements.txt").read_text().split()]
    assert "rps" not in names and "mlflow-skinny" in names
    assert ("lightgbm" in names) == trained.result.model_kind.startswith("lightgbm")
    bundle = load_bundle(find_bundle_dir(model_dir))
    features = build_features(trained.observations, bundle.feature_spec).dropna().iloc[-24:]
    rows = features[bundle.feature_names].reset_index(drop=True)
    response = httpx.post(
        f"{url}/invocations",
        json={"dataframe_split": rows.to_dict(orient="split")},
        timeout=60.0,
    )
    assert response.status_code == 200, response.text
    predictions = pd.DataFrame(response.json()["predictions"])
    point, lower, upper = bundle.predict_with_interval(rows.to_numpy(dtype=float))
    np.testing.assert_allclose(predictions["prediction"], point, rtol=1e-9)
    np.testing.assert_allclose(predictions["lower"], lower, rtol=1e-9)
    np.testing.assert_allclose(predictions["upper"], upper, rtol=1e-9)
