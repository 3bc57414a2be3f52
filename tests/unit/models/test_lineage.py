"""A run's dataset inputs for each kind of dataset reference (local SQLite tracking store)."""

from __future__ import annotations

import json
import warnings

import mlflow
import pandas as pd
import pytest

from rps.models.dataset import IN_MEMORY_URI, DatasetRef, frame_md5
from rps.models.lineage import HOLDOUT_CONTEXT, TRAINING_CONTEXT, log_dataset_inputs
from rps.models.splits import prepare_data
from rps.models.tracking import configure_tracking, ensure_experiment
from rps.settings import Settings

pytestmark = pytest.mark.slow  # an MLflow SQLite store is created per test


def _inputs(settings: Settings, dataset: DatasetRef, observations, spec, params) -> dict:  # type: ignore[no-untyped-def]
    configure_tracking(settings)
    data = prepare_data(observations, spec, params.train)
    with (
        mlflow.start_run(experiment_id=ensure_experiment(settings)) as run,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        log_dataset_inputs(dataset, observations, data)
    assert not [w for w in caught if "dataset source" in str(w.message)], caught
    logged = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    return {
        {tag.key: tag.value for tag in found.tags}["mlflow.data.context"]: found.dataset
        for found in logged
    }


def test_a_stored_version_is_logged_with_its_uri_and_md5(
    settings: Settings, small_obs: pd.DataFrame, spec, params
) -> None:
    uri = "file:///srv/dvc-remote/files/md5/0f/" + "1" * 30
    inputs = _inputs(settings, DatasetRef(md5="0f" + "1" * 30, uri=uri), small_obs, spec, params)
    training, holdout = inputs[TRAINING_CONTEXT], inputs[HOLDOUT_CONTEXT]
    assert training.digest == "0f" + "1" * 30 and training.source_type == "local"
    assert json.loads(training.source) == {"uri": uri} == json.loads(holdout.source)
    assert json.loads(training.profile)["num_rows"] == len(small_obs)
    assert len(holdout.digest) == 32 and holdout.digest != training.digest


def test_observations_passed_in_memory_name_the_code_as_their_source(
    settings: Settings, small_obs: pd.DataFrame, spec, params
) -> None:
    md5 = frame_md5(small_obs)
    inputs = _inputs(settings, DatasetRef(md5=md5, uri=IN_MEMORY_URI), small_obs, spec, params)
    assert inputs[TRAINING_CONTEXT].digest == md5
    assert {d.source_type for d in inputs.values()} == {"code"}
