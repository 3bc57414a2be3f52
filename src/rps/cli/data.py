"""Data commands: ingest, validate, transform, version, pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rps.cli.common import console, err_console, fail_on, load_config, run_step

SourceOpt = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here
    typer.Option("--source", "-s", help="open_meteo, replay or synthetic (default: RPS_SOURCE)"),
]
EndOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--end", help="last hour of the interval, ISO 8601 UTC (default: now)"),
]


def _errors() -> tuple[type[Exception], ...]:
    from rps.data.hub import HubError
    from rps.data.profiling import ProfilingError
    from rps.data.quality import QualityGateError
    from rps.data.sources.base import SourceError
    from rps.data.storage import StorageError
    from rps.data.versioning import VersioningError

    return (
        HubError,
        SourceError,
        QualityGateError,
        StorageError,
        VersioningError,
        ProfilingError,
        OSError,
        ValueError,
    )


def ingest(source: SourceOpt = None, end: EndOpt = None) -> None:
    """Fetch the interval from the source and store the raw file unmodified."""
    from rps.data.pipeline import Interval, step_extract

    settings, params = load_config()
    settings.ensure_dirs()
    with fail_on(*_errors()):
        interval = Interval.ending_at(end, params)
        raw = run_step("extracting", lambda: step_extract(settings, params, interval, source))
    console.print(f"raw file: {raw.path} ({raw.rows} rows from {raw.source})")
    for note in raw.notes:
        err_console.print(f"[yellow]note:[/yellow] {note}")


def validate(
    raw_file: Annotated[Path, typer.Argument(help="a raw_data_*.csv file")],
    now: Annotated[
        str | None, typer.Option(help="collection time (default: from the file name)")
    ] = None,
) -> None:
    """Run the quality gate on a raw file; exit 1 and keep the report if it fails."""
    import pandas as pd

    from rps.data.quality import QualityGateError, run_quality_gate

    _, params = load_config()
    if not raw_file.exists():
        err_console.print(f"[red]error:[/red] raw file not found: {raw_file}")
        raise typer.Exit(2)
    stamp = now or raw_file.stem.removeprefix("raw_data_")[:15]
    try:
        collected = pd.Timestamp(stamp if now else pd.to_datetime(stamp, format="%Y%m%d_%H%M%S"))
    except ValueError as exc:
        err_console.print(f"[red]error:[/red] cannot tell the collection time ({exc}); use --now")
        raise typer.Exit(2) from exc
    collected = collected.tz_localize("UTC") if collected.tzinfo is None else collected
    try:
        report = run_quality_gate(raw_file, params, now=collected)
    except QualityGateError as exc:
        err_console.print(exc.report.summary(), style="red", markup=False)
        err_console.print(f"report: {exc.report_path}", markup=False)
        raise typer.Exit(1) from exc
    console.print(report.summary())


def transform(raw_file: Annotated[Path, typer.Argument(help="a gate-passed raw file")]) -> None:
    """Clean a gate-passed raw file into the processed Parquet dataset."""
    from rps.data.pipeline import step_transform

    settings, params = load_config()
    with fail_on(*_errors()):
        path, summary = step_transform(settings, params, raw_file)
    console.print(
        f"processed: {path} ({summary.rows_out} hourly rows, "
        f"{summary.values_interpolated} values interpolated)"
    )


def version(processed: Annotated[Path, typer.Argument(help="a processed Parquet file")]) -> None:
    """Load the dataset into object storage and version it with DVC."""
    from rps.data.pipeline import step_load, step_version

    settings, _ = load_config()
    with fail_on(*_errors()):
        uri = run_step("storing", lambda: step_load(settings, processed))
        dataset = run_step("versioning", lambda: step_version(settings, processed, uri))
    console.print(f"stored: {uri}")
    console.print(f"dvc: md5 {dataset.md5}, pushed to {dataset.remote}")


def pipeline(
    source: SourceOpt = None,
    end: EndOpt = None,
    profile: Annotated[bool, typer.Option(help="profile the dataset into MLflow")] = True,
    task: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="run only this task (extract, validate, transform, profile, load, version), "
            "reading the previous task's manifest from --manifest-dir (the DVC stages do this)"
        ),
    ] = None,
    manifest_dir: Annotated[
        Path, typer.Option(help="where --task reads and writes the tasks' JSON manifests")
    ] = Path(".rps/stages"),
) -> None:
    """Run the data pipeline: extract, gate, transform, profile, load, version."""
    from rps.data.pipeline import Interval, run_pipeline, run_task_files

    settings, params = load_config()
    interval = Interval.ending_at(end, params)
    if task is not None:
        with fail_on(*_errors()):
            run_task_files(task, settings, params, interval, manifest_dir, source_name=source)
        console.print(f"  [green]ok[/green] {task:<9} {manifest_dir / (task + '.json')}")
        return
    console.print(
        f"data pipeline: {interval.start:%Y-%m-%d %H:%M} .. {interval.end:%Y-%m-%d %H:%M}"
        f" UTC from {source or settings.source}"
    )

    def on_step(step: str, location: str) -> None:
        console.print(f"  [green]ok[/green] {step:<9} {location}")

    with fail_on(*_errors()), console.status("running the data pipeline..."):
        run_pipeline(
            settings, params, interval, source_name=source, profile=profile, on_step=on_step
        )


def hub_check() -> None:
    """Check the hub's MLflow, DVC remote and git with RPS_HUB_USER / RPS_HUB_TOKEN."""
    from rps.data.hub import check_hub

    settings, _ = load_config()
    if not settings.hub_repo_url:
        err_console.print("[red]error:[/red] no hub configured: set RPS_HUB_REPO_URL")
        raise typer.Exit(2)
    with fail_on(*_errors()):
        lines = run_step("asking the hub", lambda: check_hub(settings))
    console.print(f"hub {settings.hub_name}: credentials accepted")
    for line in lines:
        console.print(f"  [green]ok[/green] {line}", markup=True)


def register(app: typer.Typer) -> None:
    """Add the data commands to the root app."""
    for command in (ingest, validate, transform, version, pipeline, hub_check):
        app.command()(command)
