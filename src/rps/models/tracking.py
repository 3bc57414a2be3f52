"""MLflow tracking: one configuration, one health probe, one cached client, typed errors.

Everything importing MLflow does so inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from rps.models.errors import ModelNotFoundError, RegistryError, TrackingUnavailableError
from rps.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

PROBE_TIMEOUT_S = 5.0


#: set (unless already set) whenever the tracking server is remote: fail fast, never hang
REMOTE_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}

#: set unless already set: no run URLs on stdout, no download progress bars (CLI and task logs)
QUIET_ENV = {
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def is_remote(uri: str) -> bool:
    """True for an HTTP(S) tracking server (as opposed to a local file or database)."""
    return uri.startswith(("http://", "https://"))


def probe(uri: str, settings: Settings) -> None:
    import httpx

    auth = None
    if settings.mlflow_tracking_username and settings.mlflow_tracking_password:
        auth = (
            settings.mlflow_tracking_username,
            settings.mlflow_tracking_password.get_secret_value(),
        )
    try:
        response = httpx.get(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S, auth=auth)
    except httpx.HTTPError as exc:
        raise TrackingUnavailableError(f"MLflow server {uri} is unreachable: {exc}") from exc
    if response.status_code >= 500:
        raise TrackingUnavailableError(
            f"MLflow server {uri} is unhealthy: HTTP {response.status_code} on /health"
        )


def configure_tracking(settings: Settings) -> None:
    """Point MLflow at the settings' tracking and registry URIs.

    For a remote server: probe ``/health`` (5 s timeout), disable HTTP retries and cap the
    request timeout (unless the environment sets them), and pass credentials. Also silences
    MLflow's run-URL printing and download progress bars (unless set, :data:`QUIET_ENV`).

    Raises:
        TrackingUnavailableError: the server does not answer.
    """
    import mlflow

    tracking = settings.tracking_uri
    registry = settings.mlflow_registry_uri or tracking
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if settings.mlflow_tracking_username:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", settings.mlflow_tracking_username)
    if settings.mlflow_tracking_password:
        os.environ.setdefault(
            "MLFLOW_TRACKING_PASSWORD", settings.mlflow_tracking_password.get_secret_value()
        )
    for uri in dict.fromkeys((tracking, registry)):
        if is_remote(uri):
            for key, value in REMOTE_HTTP_ENV.items():
                os.environ.setdefault(key, value)
            probe(uri, settings)
        elif uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


def get_client(settings: Settings) -> MlflowClient:
    """The MLflow client of the settings' URIs (configured and probed; one per URI pair).

    Raises:
        TrackingUnavailableError: the server does not answer.
    """
    configure_tracking(settings)
    tracking = settings.tracking_uri
    return _cached_client(tracking, settings.mlflow_registry_uri or tracking)


@lru_cache(maxsize=8)
def _cached_client(tracking_uri: str, registry_uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


@contextmanager
def mlflow_errors(what: str) -> Iterator[None]:
    """Turn MLflow's exceptions into the registry's typed errors."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if code == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFoundError(f"{what}: {message}") from exc
        if "Max retries" in message or "Connection" in message or "timed out" in message:
            raise TrackingUnavailableError(f"{what}: {message}") from exc
        raise RegistryError(f"{what}: {message}") from exc


def ensure_experiment(settings: Settings) -> str:
    """The id of ``settings.mlflow_experiment`` (created on first use).

    A local store keeps artifacts under ``settings.artifact_root``; a remote server uses
    its own default artifact root.
    """
    import mlflow

    name = settings.mlflow_experiment
    with mlflow_errors(f"experiment {name}"):
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            location = None if is_remote(settings.tracking_uri) else settings.artifact_root
            return str(mlflow.create_experiment(name, artifact_location=location))
    if experiment.lifecycle_stage != "active":
        raise RegistryError(f"experiment {name} is deleted; restore it or choose another name")
    return str(experiment.experiment_id)


def finished_runs(
    settings: Settings, experiment: str, tags: Mapping[str, str], *, max_results: int = 1
) -> list[Run]:
    """The finished runs of ``experiment`` carrying every tag in ``tags``, newest first.

    Empty when the experiment does not exist yet.
    """
    client = get_client(settings)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    conditions = [f"tags.`{key}` = '{value}'" for key, value in tags.items()]
    return list(
        client.search_runs(
            [found.experiment_id],
            filter_string=" and ".join([*conditions, "attributes.status = 'FINISHED'"]),
            order_by=["attributes.start_time DESC"],
            max_results=max_results,
        )
    )
