"""Data profiling: a data-profiling HTML report of a dataset, logged to MLflow.

:func:`profile_dataset` writes the report and, next to it, a small JSON summary (rows,
columns, null fractions) that :func:`log_profile_to_mlflow` turns into tags and metrics.
The report comes from fg-data-profiling (ydata-profiling's maintained successor, module
``data_profiling``), imported lazily (it takes seconds to import).

The report is the full one, not minimal mode: variable statistics, Pearson and Spearman
correlations (the ones that matter for continuous weather variables; phi_k, Kendall and
Cramér's V are off), the missing-value count bar and nullity matrix (and the nullity heatmap
when two or more columns have gaps), duplicates and samples. Scatter interactions are drawn
only against the target (n - 1 plots instead of n^2), over at most
:data:`INTERACTION_SAMPLE` points. docs/DATA.md has the time on the replay year.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from rps.files import write_atomic

if TYPE_CHECKING:
    import pandas as pd

    from rps.settings import Settings

logger = logging.getLogger(__name__)

ARTIFACT_DIR = "profiling"
_REMOTE_SCHEMES = {"http", "https", "databricks"}
#: scatter plots sample at most this many rows (the profile's statistics use every row)
INTERACTION_SAMPLE = 2000
#: the correlation measures computed (each adds a matrix, a heatmap and its alerts)
CORRELATIONS = ("pearson", "spearman")


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


def _report_config(targets: Sequence[str]) -> dict[str, Any]:
    """Keyword settings of ``ProfileReport``: the full report, in budget (see the module doc)."""
    return {
        "minimal": False,
        "progress_bar": False,
        "correlations": {
            name: {"calculate": name in CORRELATIONS}
            for name in ("auto", "pearson", "spearman", "kendall", "phi_k", "cramers")
        },
        "missing_diagrams": {"bar": True, "matrix": True, "heatmap": True},
        "interactions": {"continuous": bool(targets), "targets": list(targets)},
        "plot": {"scatter_threshold": INTERACTION_SAMPLE, "histogram": {"max_bins": 50}},
        "samples": {"head": 10, "tail": 10, "random": 0},
        "duplicates": {"head": 10},
    }


def profile_dataset(
    frame: pd.DataFrame,
    output_html: Path | str,
    *,
    title: str,
    targets: Sequence[str] = (),
) -> Path:
    """Write the profiling report of ``frame`` to ``output_html`` (see the module doc).

    Also writes :func:`summary_path` (rows, columns, null fractions) beside it. Both files are
    written atomically.

    Args:
        frame: the dataset (e.g. the cleaned hourly observations).
        output_html: where the HTML report goes (``.html``); parent folders are created.
        title: the report's title.
        targets: the columns the scatter interactions are drawn against (the forecast target);
            columns absent from ``frame`` are ignored; none draws no interactions.

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
    from data_profiling import ProfileReport

    present = [column for column in targets if column in frame.columns]
    try:
        report = ProfileReport(frame, title=title, **_report_config(present))
        html = report.to_html()
    except Exception as exc:
        raise ProfilingError(f"profiling {title!r} into {output} failed: {exc}") from exc
    write_atomic(output, html)
    write_atomic(
        summary_path(output), json.dumps({"title": title, **summarise(frame)}, indent=2) + "\n"
    )
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
