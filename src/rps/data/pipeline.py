"""The data half of the pipeline: one sequence of tasks, run three ways.

:data:`DATA_TASKS` (extract -> validate -> transform -> profile -> load -> version) are
implemented once, by :func:`run_data_task`, which takes the previous tasks' manifest (a JSON
dict of paths and hashes) and returns it extended. ``rps pipeline`` runs them in-process
(:func:`run_pipeline`), the Airflow DAG runs one per task, and the DVC stages in ``dvc.yaml``
run one per stage (``rps pipeline --task NAME``, manifests as files: :func:`run_task_files`).

Tasks take the run's interval (``start``/``end``) and collection time explicitly, never the
wall clock, so running the same interval twice yields the same files and the same dataset
hash. ``load`` puts the dataset into the object store, which is the DVC remote; ``version``
commits its ``.dvc`` pointer in the data registry (:mod:`rps.data.versioning`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from rps.data.extract import RawArtifact, extract, sidecar
from rps.data.quality import QualityReport, read_checked, run_quality_gate
from rps.data.schema import TIME
from rps.data.transform import CleaningSummary, clean_observations

if TYPE_CHECKING:
    from rps.data.versioning import DatasetVersion
    from rps.params import Params
    from rps.settings import Settings

from rps.files import file_digest, write_atomic

logger = logging.getLogger(__name__)
LATEST_OBSERVATIONS = "observations.parquet"
DATA_TASKS = ("extract", "validate", "transform", "profile", "load", "version")
Manifest = dict[str, Any]


class PipelineTaskError(ValueError):
    """A data task was asked for by an unknown name or without its inputs."""


@dataclass(frozen=True)
class Interval:
    """The hours a run covers and the collection time that names its files."""

    start: pd.Timestamp
    end: pd.Timestamp

    @property
    def collected_at(self) -> pd.Timestamp:
        return self.end

    @classmethod
    def ending_at(cls, end: pd.Timestamp | str | None, params: Params) -> Interval:
        """``history_days`` of hours ending at ``end`` (default: the current hour)."""
        stamp = pd.Timestamp.now(tz="UTC") if end is None else pd.Timestamp(end)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        stamp = stamp.floor("h")
        return cls(start=stamp - pd.Timedelta(days=params.data.history_days), end=stamp)


@dataclass
class PipelineResult:
    """Where every task's output went, and the final manifest."""

    raw_path: Path | None = None
    processed_path: Path | None = None
    dataset_md5: str | None = None
    profile_html: Path | None = None
    profile_run_id: str | None = None
    storage_uri: str | None = None
    version: DatasetVersion | None = None
    locations: dict[str, str] = field(default_factory=dict)
    manifest: Manifest = field(default_factory=dict)


def file_md5(path: Path) -> str:
    """MD5 of a file's bytes: the hash DVC records for it."""
    return file_digest(path, "md5")


def step_extract(
    settings: Settings, params: Params, interval: Interval, source_name: str | None = None
) -> RawArtifact:
    from rps.data.sources import make_source

    source = make_source(settings, params, source_name)
    return extract(
        source,
        settings.raw_dir,
        start=interval.start,
        end=interval.end,
        collected_at=interval.collected_at,
    )


def step_validate(params: Params, raw_path: Path, interval: Interval) -> QualityReport:
    return run_quality_gate(raw_path, params, now=interval.collected_at)


def step_transform(
    settings: Settings, params: Params, raw_path: Path
) -> tuple[Path, CleaningSummary]:
    """Clean a gate-passed raw file into ``processed/<raw stem>.parquet`` and the latest copy
    the API reads; the status file's ``last_observation_at`` (DataStale) follows that copy."""
    cleaned, summary = clean_observations(read_checked(raw_path), params)
    settings.processed_dir.mkdir(parents=True, exist_ok=True)
    path = settings.processed_dir / f"{raw_path.stem.replace('raw_data_', 'observations_')}.parquet"
    payload = cleaned.to_parquet(index=False)
    if not path.exists() or path.read_bytes() != payload:
        write_atomic(path, payload)
    write_atomic(settings.processed_dir / LATEST_OBSERVATIONS, payload)
    if len(cleaned):
        write_status(settings, last_observation_at=pd.Timestamp(cleaned[TIME].max()).isoformat())
    return path, summary


def step_profile(
    settings: Settings, processed_path: Path, params: Params | None = None
) -> tuple[Path, str]:
    """Profile the processed dataset and log the HTML to MLflow; returns (html, run id).

    Scatter interactions are drawn against ``params.data.target`` (read from the settings'
    params file when ``params`` is not given).
    """
    from rps.data.profiling import log_profile_to_mlflow, profile_dataset
    from rps.params import load_params

    md5 = file_md5(processed_path)
    frame = pd.read_parquet(processed_path)
    target = (params or load_params(settings.params_file)).data.target
    html = profile_dataset(
        frame,
        processed_path.with_suffix(".profile.html"),
        title=f"RPS observations {md5[:8]}",
        targets=[target],
    )
    run_id = log_profile_to_mlflow(
        settings, html, dataset_md5=md5, run_name=f"profile-{processed_path.stem}"
    )
    return html, run_id


def step_load(settings: Settings, processed_path: Path) -> str:
    """Put the processed dataset into the object store (the DVC remote); returns its URI."""
    from rps.data.versioning import push_dataset

    return push_dataset(settings, processed_path)


def step_version(
    settings: Settings, processed_path: Path, storage_uri: str | None = None
) -> DatasetVersion:
    from rps.data.versioning import version_dataset

    return version_dataset(
        settings,
        processed_path,
        message=f"dataset {processed_path.name} ({storage_uri or 'local'})",
    )


def write_status(settings: Settings, **values: Any) -> None:
    """Update ``pipeline_status.json`` (read by the API's freshness and failure metrics)."""
    path = settings.state_path / "pipeline_status.json"
    status: dict[str, Any] = {}
    if path.exists():
        try:
            status = json.loads(path.read_text())
        except ValueError:
            status = {}
    status.update(values)
    write_atomic(path, json.dumps(status, indent=2, default=str).encode())


def find_profile_run(settings: Settings, dataset_md5: str) -> str | None:
    """A finished MLflow profile run of this dataset, if one exists (reruns reuse it)."""
    from rps.models.tracking import finished_runs

    runs = finished_runs(
        settings,
        f"{settings.mlflow_experiment}-data",
        {"dataset_md5": dataset_md5, "rps.kind": "data-profile"},
    )
    return str(runs[0].info.run_id) if runs else None


def _needs(manifest: Manifest, task: str, *keys: str) -> list[Any]:
    missing = [key for key in keys if key not in manifest]
    if missing:
        raise PipelineTaskError(
            f"task {task!r} needs {', '.join(missing)} from the earlier tasks' manifest"
        )
    return [manifest[key] for key in keys]


def _task_extract(ctx: _TaskContext, manifest: Manifest) -> Manifest:
    raw = step_extract(ctx.settings, ctx.params, ctx.interval, ctx.source_name)
    return {
        **manifest,
        "data_source": raw.source,
        "interval_start": ctx.interval.start.isoformat(),
        "interval_end": ctx.interval.end.isoformat(),
        "raw_path": str(raw.path),
        "raw_sha256": raw.sha256,
        "raw_rows": raw.rows,
        "notes": list(raw.notes),
    }


def _task_validate(ctx: _TaskContext, manifest: Manifest) -> Manifest:
    (raw_path,) = _needs(manifest, "validate", "raw_path")
    report = step_validate(ctx.params, Path(raw_path), ctx.interval)  # raises QualityGateError
    logger.info("%s", report.summary())
    return {**manifest, "quality_report": str(sidecar(Path(raw_path), "quality.json"))}


def _task_transform(ctx: _TaskContext, manifest: Manifest) -> Manifest:
    raw_path = _needs(manifest, "transform", "raw_path", "quality_report")[0]
    processed, summary = step_transform(ctx.settings, ctx.params, Path(raw_path))
    logger.info("processed %s: %d rows", processed, summary.rows_out)
    return {
        **manifest,
        "processed_path": str(processed),
        "dataset_md5": file_md5(processed),
        "rows": summary.rows_out,
        "values_interpolated": summary.values_interpolated,
    }


def _task_profile(ctx: _TaskContext, manifest: Manifest) -> Manifest:
    processed_path, md5 = _needs(manifest, "profile", "processed_path", "dataset_md5")
    processed = Path(processed_path)
    html = processed.with_suffix(".profile.html")
    run_id = find_profile_run(ctx.settings, md5) if html.is_file() else None
    if run_id is not None:
        logger.info("dataset %s already profiled in run %s", md5, run_id)
    else:
        html, run_id = step_profile(ctx.settings, processed, ctx.params)
    return {**manifest, "profile_html": str(html), "profile_run_id": run_id}


def _task_load(ctx: _TaskContext, manifest: Manifest) -> Manifest:
    (processed_path,) = _needs(manifest, "load", "processed_path")
    return {**manifest, "storage_uri": step_load(ctx.settings, Path(processed_path))}


def _task_version(ctx: _TaskContext, manifest: Manifest) -> Manifest:
    (processed_path,) = _needs(manifest, "version", "processed_path")
    processed = Path(processed_path)
    dataset = step_version(ctx.settings, processed, manifest.get("storage_uri"))
    write_status(
        ctx.settings,
        last_run_failed=False,
        last_success_at=pd.Timestamp.now(tz="UTC").isoformat(),
        last_dataset_md5=dataset.md5,
    )
    return {
        **manifest,
        "dataset_md5": dataset.md5,
        "dvc_git_rev": dataset.git_rev,
        "dvc_storage_uri": dataset.storage_uri,
    }


@dataclass(frozen=True)
class _TaskContext:
    settings: Settings
    params: Params
    interval: Interval
    source_name: str | None


_TASKS: dict[str, Callable[[_TaskContext, Manifest], Manifest]] = {
    "extract": _task_extract,
    "validate": _task_validate,
    "transform": _task_transform,
    "profile": _task_profile,
    "load": _task_load,
    "version": _task_version,
}


def run_data_task(
    task: str,
    settings: Settings,
    params: Params,
    interval: Interval,
    manifest: Manifest | None = None,
    *,
    source_name: str | None = None,
) -> Manifest:
    """Run one of :data:`DATA_TASKS` on the earlier tasks' manifest; returns it extended.

    Raises:
        PipelineTaskError: unknown task, or the manifest lacks the task's inputs.
        QualityGateError: ``validate`` refused the raw file.
        SourceError, ProfilingError, VersioningError: the task's own failures.
    """
    if task not in _TASKS:
        raise PipelineTaskError(f"unknown data task {task!r}; one of {', '.join(DATA_TASKS)}")
    settings.ensure_dirs()
    return _TASKS[task](_TaskContext(settings, params, interval, source_name), manifest or {})


def manifest_path(manifest_dir: Path, task: str) -> Path:
    """Where a task's manifest goes when tasks run as separate processes (DVC stages)."""
    return manifest_dir / f"{task}.json"


def run_task_files(
    task: str,
    settings: Settings,
    params: Params,
    interval: Interval,
    manifest_dir: Path,
    *,
    source_name: str | None = None,
) -> Manifest:
    """Run one task reading the previous task's manifest file and writing its own.

    Raises:
        PipelineTaskError: unknown task, or the previous task's manifest is missing.
    """
    if task not in _TASKS:
        raise PipelineTaskError(f"unknown data task {task!r}; one of {', '.join(DATA_TASKS)}")
    index = DATA_TASKS.index(task)
    manifest: Manifest = {}
    if index:
        previous = manifest_path(manifest_dir, DATA_TASKS[index - 1])
        if not previous.is_file():
            raise PipelineTaskError(
                f"task {task!r} needs {previous} (run task {DATA_TASKS[index - 1]!r} first)"
            )
        manifest = json.loads(previous.read_text(encoding="utf-8"))
    result = run_data_task(task, settings, params, interval, manifest, source_name=source_name)
    write_atomic(
        manifest_path(manifest_dir, task),
        json.dumps(result, indent=2, sort_keys=True, default=str) + "\n",
    )
    return result


def run_pipeline(
    settings: Settings,
    params: Params,
    interval: Interval,
    *,
    source_name: str | None = None,
    profile: bool = True,
    on_step: Callable[[str, str], None] | None = None,
) -> PipelineResult:
    """Run :data:`DATA_TASKS` in order, in-process (``profile=False`` skips ``profile``).

    With a hub configured (``RPS_HUB_REPO_URL``) its credentials are checked first.

    Raises:
        HubError: the hub refused the credentials or did not answer; nothing ran.
        QualityGateError: the gate refused the raw file; nothing downstream ran.
    """
    from rps.data.hub import check_hub
    from rps.data.versioning import list_datasets, remote_url

    check_hub(settings)
    result = PipelineResult()
    manifest: Manifest = {}
    described: dict[str, Callable[[Manifest], str]] = {
        "extract": lambda m: m["raw_path"],
        "validate": lambda m: m["quality_report"],
        "transform": lambda m: m["processed_path"],
        "profile": lambda m: f"{m['profile_html']} (MLflow run {m['profile_run_id']})",
        "load": lambda m: m["storage_uri"],
        "version": lambda m: f"md5 {m['dataset_md5']} -> {remote_url(settings)}",
    }
    try:
        for task in DATA_TASKS:
            if task == "profile" and not profile:
                continue
            manifest = run_data_task(
                task, settings, params, interval, manifest, source_name=source_name
            )
            result.locations[task] = str(described[task](manifest))
            if on_step is not None:
                on_step(task, result.locations[task])
    except Exception:
        write_status(settings, last_run_failed=True, last_failure_at=pd.Timestamp.now(tz="UTC"))
        raise
    result.raw_path = Path(manifest["raw_path"])
    result.processed_path = Path(manifest["processed_path"])
    result.dataset_md5 = str(manifest["dataset_md5"])
    result.storage_uri = str(manifest["storage_uri"])
    if "profile_html" in manifest:
        result.profile_html = Path(manifest["profile_html"])
        result.profile_run_id = str(manifest["profile_run_id"])
    result.version = next(v for v in list_datasets(settings) if v.md5 == result.dataset_md5)
    result.manifest = manifest
    return result
