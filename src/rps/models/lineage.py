"""The data a training run read, logged as MLflow dataset inputs (``mlflow.log_inputs``).

Each training run gets two inputs, both derived from the observations it loaded:

* ``observations``, context ``training``: the dataset version the run trained on (its
  training rows and its holdout). Digest: the version's md5, DVC's content hash of the
  parquet file (:class:`rps.data.catalog.DatasetVersion`, the run's ``rps.dataset_md5``
  tag). Source: the object's URI on the DVC remote (``file://...`` or ``s3://...``, the
  run's ``rps.dataset_uri`` tag).
* ``observations-holdout``, context ``holdout``: the rows the gate evaluates the model on,
  stored with the run as ``evaluation/holdout_observations.parquet`` (the input's
  ``rps.artifact`` tag). Digest: :func:`rps.models.dataset.frame_md5` of those rows.
  Source: the same dataset version.

Both carry the frame's schema and MLflow's profile (rows, elements). Observations passed
in memory (``rps.dataset_uri`` is ``in-memory``) have no storage URI: their source is
MLflow's default, the code that logged them.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import pandas as pd

from rps.models.dataset import IN_MEMORY_URI, DatasetRef, frame_md5
from rps.models.tracking import mlflow_errors

if TYPE_CHECKING:
    from rps.models.splits import PreparedData

__all__ = [
    "ARTIFACT_TAG",
    "DATASET_NAME",
    "HOLDOUT_CONTEXT",
    "HOLDOUT_NAME",
    "TRAINING_CONTEXT",
    "log_dataset_inputs",
]

DATASET_NAME = "observations"
HOLDOUT_NAME = "observations-holdout"
TRAINING_CONTEXT = "training"
HOLDOUT_CONTEXT = "holdout"
#: the holdout input's tag naming the run artifact that holds its rows
ARTIFACT_TAG = "rps.artifact"


def dataset_source(uri: str) -> Any:
    """MLflow's dataset source for a stored dataset's URI (None: passed in memory).

    Raises:
        mlflow.exceptions.MlflowException: MLflow knows no source for the URI's scheme.
    """
    if uri == IN_MEMORY_URI:
        return None
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        # MLflow registers its local artifact source for two schemes ("" and "file"), so
        # a file:// URI matches twice, with the same class; nothing is ambiguous
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        return resolve_dataset_source(uri)


def log_dataset_inputs(dataset: DatasetRef, observations: pd.DataFrame, data: PreparedData) -> None:
    """Log the dataset version and the holdout as inputs of the active run.

    Args:
        dataset: the version the observations were loaded from.
        observations: the observations the run trains on.
        data: the run's split (its holdout's issue times select the holdout rows).

    Raises:
        rps.models.errors.RegistryError: the tracking server refused the inputs.
    """
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    from rps.models.gate import HOLDOUT_OBSERVATIONS, holdout_observations

    holdout = holdout_observations(observations, data.spec, data.index[data.holdout_pos])
    with mlflow_errors("logging the run's dataset inputs"):
        source = dataset_source(dataset.uri)
        training = from_pandas(observations, source=source, name=DATASET_NAME, digest=dataset.md5)
        held_out = from_pandas(holdout, source=source, name=HOLDOUT_NAME, digest=frame_md5(holdout))
        mlflow.log_inputs(
            datasets=[training, held_out],
            contexts=[TRAINING_CONTEXT, HOLDOUT_CONTEXT],
            tags_list=[None, {ARTIFACT_TAG: HOLDOUT_OBSERVATIONS}],
        )
