"""The data pipeline's steps and the runner that chains them.

Each step is one call that the CLI and the Airflow DAG share. Steps take the run's interval
(``start``/``end``) and collection time explicitly, never the wall clock, so running the same
interval twice yields the same files and the same dataset hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from rps.data.extract import RawArtifact, extract, write_atomic
from rps.data.quality import QualityReport, read_checked, run_quality_gate
from rps.data.transform import CleaningSummary, clean_observations

if TYPE_CHECKING:
    from rps.data.versioning import DatasetVersion
    from rps.params import Params
    from rps.settings import Settings

logger = logging.getLogger(__name__)
LATEST_OBSERVATIONS = "observations.parquet"


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
    """Where every step's output went."""

    raw: RawArtifact | None = None
    quality: QualityReport | None = None
    processed_path: Path | None = None
    cleaning: CleaningSummary | None = None
    dataset_md5: str | None = None
    profile_html: Path | None = None
    profile_run_id: str | None = None
    storage_uri: str | None = None
    version: DatasetVersion | None = None
    locations: dict[str, str] = field(default_factory=dict)


def file_md5(path: Path) -> str:
    """MD5 of a file's bytes: the hash DVC records for it."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    """Clean a gate-passed raw file into ``processed/<raw stem>.parquet`` (and the latest copy)."""
    cleaned, summary = clean_observations(read_checked(raw_path), params)
    settings.processed_dir.mkdir(parents=True, exist_ok=True)
    path = settings.processed_dir / f"{raw_path.stem.replace('raw_data_', 'observations_')}.parquet"
    payload = cleaned.to_parquet(index=False)
    if not path.exists() or path.read_bytes() != payload:
        write_atomic(path, payload)
    write_atomic(settings.processed_dir / LATEST_OBSERVATIONS, payload)
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
    """Put the processed dataset into object storage under its content hash."""
    from rps.data.storage import dataset_key, make_store

    store = make_store(settings)
    return store.put_file(processed_path, dataset_key(file_md5(processed_path)))


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


def run_pipeline(
    settings: Settings,
    params: Params,
    interval: Interval,
    *,
    source_name: str | None = None,
    profile: bool = True,
    on_step: Any = None,
) -> PipelineResult:
    """extract -> quality gate -> transform -> profile -> load -> version.

    Raises:
        QualityGateError: the gate refused the raw file; nothing downstream ran.
    """
    settings.ensure_dirs()
    result = PipelineResult()

    def announce(step: str, location: str) -> None:
        result.locations[step] = location
        if on_step is not None:
            on_step(step, location)

    try:
        result.raw = step_extract(settings, params, interval, source_name)
        announce("extract", str(result.raw.path))
        result.quality = step_validate(params, result.raw.path, interval)
        announce("validate", str(result.raw.path.with_name(result.raw.path.stem + ".quality.json")))
        result.processed_path, result.cleaning = step_transform(settings, params, result.raw.path)
        result.dataset_md5 = file_md5(result.processed_path)
        announce("transform", str(result.processed_path))
        if profile:
            result.profile_html, result.profile_run_id = step_profile(
                settings, result.processed_path, params
            )
            announce("profile", f"{result.profile_html} (MLflow run {result.profile_run_id})")
        result.storage_uri = step_load(settings, result.processed_path)
        announce("load", result.storage_uri)
        result.version = step_version(settings, result.processed_path, result.storage_uri)
        announce("version", f"md5 {result.version.md5} -> {result.version.remote}")
    except Exception:
        write_status(settings, last_run_failed=True, last_failure_at=pd.Timestamp.now(tz="UTC"))
        raise
    last_obs = pd.read_parquet(result.processed_path, columns=["time"])["time"].max()
    write_status(
        settings,
        last_run_failed=False,
        last_success_at=pd.Timestamp.now(tz="UTC").isoformat(),
        last_observation_at=pd.Timestamp(last_obs).isoformat(),
        last_dataset_md5=result.version.md5,
    )
    return result
