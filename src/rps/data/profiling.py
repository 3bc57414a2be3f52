"""Data profiling: a ydata-profiling HTML report of a dataset, logged to MLflow.

:func:`profile_dataset` writes the report and, next to it, a small JSON summary (rows,
columns, null fractions) that :func:`log_profile_to_mlflow` turns into tags and metrics.
ydata-profiling is imported lazily (it takes seconds to import).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    import pandas as pd

    from rps.settings import Settings

logger = logging.getLogger(__name__)

ARTIFACT_DIR = "profiling"
_REMOTE_SCHEMES = {"http", "https", "databricks"}


class ProfilingError(RuntimeError):
    """A profile could not be built or logged."""


def summary_path(html_path: Path | str) -> Path:
    """The JSON summary written next to a profile: ``report.html`` -> ``report.summary.json``."""
    return Path(html_path).with_suffix(".summary.json")


def summarise(frame: pd.DataFrame) -> dict[str, Any]:
    """Rows, columns and per-column null fractions of a frame (JSON-serialisable)."""
    rows = len(frame)
    nulls = frame.isna().mean() if rows else frame.isna().sum().astype(float)
    return {
        "rows": rows,
        "columns": len(frame.columns),
        "null_fraction": {str(col): float(nulls[col]) for col in frame.columns},
        "null_fraction_total": float(frame.isna().to_numpy().mean()) if frame.size else 0.0,
    }


def profile_dataset(frame: pd.DataFrame, output_html: Path | str, *, title: str) -> Path:
    """Write a minimal-mode ydata-profiling report of ``frame`` to ``output_html``.

    Also writes :func:`summary_path` (rows, columns, null fractions) beside it. Both files are
    written atomically.

    Args:
        frame: the dataset (e.g. the cleaned hourly observations).
        output_html: where the HTML report goes (``.html``); parent folders are created.
        title: the report's title.

    Returns:
        The HTML report's path.

    Raises:
        ProfilingError: the frame is empty or the report could not be written.
    """
    output = Path(output_html)
    if output.suffix.lower() != ".html":
        raise ProfilingError(f"profile output must be an .html file, got {output}")
    if frame.empty:
        raise ProfilingError(f"cannot profile an empty frame (columns {list(frame.columns)})")
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "ydata_profiling is deprecated"
        from ydata_profiling import ProfileReport

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.tmp.html")
    try:
        report = ProfileReport(frame, title=title, minimal=True, progress_bar=False)
        report.to_file(tmp, silent=True)
        tmp.replace(output)
    except Exception as exc:
        raise ProfilingError(f"profiling {title!r} into {output} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    summary = summary_path(output)
    summary_tmp = summary.with_name(f".{summary.name}.tmp")
    summary_tmp.write_text(
        json.dumps({"title": title, **summarise(frame)}, indent=2) + "\n", encoding="utf-8"
    )
    summary_tmp.replace(summary)
    logger.info(
        "profiled %d rows x %d columns into %s in %.1f s",
        len(frame),
        len(frame.columns),
        output,
        time.perf_counter() - started,
    )
    return output


@contextlib.contextmanager
def _tracking_credentials(settings: Settings) -> Iterator[None]:
    """Export MLFLOW_TRACKING_USERNAME/PASSWORD from the settings for the duration."""
    wanted: dict[str, str] = {}
    if settings.mlflow_tracking_username:
        wanted["MLFLOW_TRACKING_USERNAME"] = settings.mlflow_tracking_username
    if settings.mlflow_tracking_password is not None:
        wanted["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow_tracking_password.get_secret_value()
    previous = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _experiment_id(client: Any, name: str, tracking_uri: str, artifact_root: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    scheme = urlparse(tracking_uri).scheme
    # a local store (SQLite, a database, a folder) would otherwise put artifacts under the cwd
    location = None if scheme in _REMOTE_SCHEMES else artifact_root
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:  # created concurrently by another process
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def log_profile_to_mlflow(
    settings: Settings, html_path: Path | str, *, dataset_md5: str, run_name: str
) -> str:
    """Log a profile report as an MLflow run of the experiment ``<mlflow_experiment>-data``.

    The HTML (and its JSON summary, when present) go under the artifact folder
    ``profiling/``; the run is tagged ``dataset_md5``, ``rows`` and ``columns``, and the null
    fractions become metrics (``null_fraction.<column>`` and ``null_fraction``).

    Args:
        settings: ``tracking_uri``, ``artifact_root``, ``mlflow_experiment`` and the
            optional tracking credentials.
        html_path: a report written by :func:`profile_dataset`.
        dataset_md5: the profiled dataset version.
        run_name: the MLflow run's name.

    Returns:
        The run id.

    Raises:
        ProfilingError: the report is missing or MLflow rejected the run.
    """
    import mlflow
    from mlflow.entities import Metric, RunStatus
    from mlflow.tracking import MlflowClient

    html = Path(html_path)
    if not html.is_file():
        raise ProfilingError(f"profile report not found: {html}")
    summary_file = summary_path(html)
    summary: dict[str, Any] = {}
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
    else:
        logger.warning("no summary %s beside the report: logging without row/null stats", html)

    tracking_uri = settings.tracking_uri
    experiment_name = f"{settings.mlflow_experiment}-data"
    tags = {"dataset_md5": dataset_md5, "rps.kind": "data-profile"}
    if summary:
        tags |= {"rows": str(summary["rows"]), "columns": str(summary["columns"])}
    now_ms = int(time.time() * 1000)
    metrics = [
        Metric(f"null_fraction.{column}", float(value), now_ms, 0)
        for column, value in summary.get("null_fraction", {}).items()
    ]
    if "null_fraction_total" in summary:
        metrics.append(Metric("null_fraction", float(summary["null_fraction_total"]), now_ms, 0))

    with _tracking_credentials(settings):
        mlflow.set_tracking_uri(tracking_uri)
        client = MlflowClient(tracking_uri=tracking_uri)
        try:
            experiment_id = _experiment_id(
                client, experiment_name, tracking_uri, settings.artifact_root
            )
            run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        except Exception as exc:
            raise ProfilingError(
                f"cannot start an MLflow run in {experiment_name!r} at {tracking_uri}: {exc}"
            ) from exc
        run_id = str(run.info.run_id)
        try:
            if metrics:
                client.log_batch(run_id, metrics=metrics)
            client.log_artifact(run_id, str(html), ARTIFACT_DIR)
            if summary_file.is_file():
                client.log_artifact(run_id, str(summary_file), ARTIFACT_DIR)
        except Exception as exc:
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise ProfilingError(
                f"logging profile {html} to MLflow run {run_id} failed: {exc}"
            ) from exc
        client.set_terminated(run_id)
    logger.info("logged profile %s to MLflow run %s (%s)", html.name, run_id, experiment_name)
    return run_id
