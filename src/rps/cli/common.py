"""Shared CLI plumbing: settings and params loading, error reporting, output."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console

from rps.params import Params, ParamsError, load_params
from rps.settings import Settings, get_settings

if TYPE_CHECKING:
    from rps.orchestration.local_run import DagRunResult

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")


def load_config() -> tuple[Settings, Params]:
    """Settings from the environment and the validated params file; exit 2 when invalid."""
    settings = get_settings()
    try:
        params = load_params(settings.params_file)
    except ParamsError as exc:
        err_console.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(2) from exc
    return settings, params


@contextmanager
def fail_on(*errors: type[Exception], code: int = 1) -> Iterator[None]:
    """Turn the library's typed errors into a one-line message and a non-zero exit."""
    try:
        yield
    except errors as exc:
        err_console.print(f"error: {type(exc).__name__}: {exc}", style="red", markup=False)
        raise typer.Exit(code) from exc


def run_step(label: str, func: Callable[[], T]) -> T:
    """Run one step with a spinner (steps take seconds), then report it done."""
    with console.status(f"{label}..."):
        result = func()
    return result


@contextmanager
def output_to(log_file: Path) -> Iterator[Path]:
    """Send everything written to stdout/stderr (also by libraries and children) to a file.

    Airflow's in-process runs log every task's lines to the terminal; the commands keep those in
    a log file and print a summary table instead.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log_file.open("ab") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield log_file
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_dag_with_summary(
    settings: Settings, conf: dict[str, Any], *, end: str | None = None
) -> DagRunResult:
    """Run the pipeline DAG in-process and print each task's state; exit 1 when it failed.

    The tasks' own output goes to ``<state>/logs/dag-runs.log`` (its path is printed below the
    table); a run that cannot start (no DAG, no Airflow home, a bad ``end``) exits 1 with its
    error.
    """
    from rps.orchestration.local_run import run_dag_locally

    log_file = settings.state_path / "logs" / "dag-runs.log"
    # DagLoadError and AirflowHomeError are RuntimeErrors; ValueError: an unreadable ``end``
    with fail_on(RuntimeError, ValueError, OSError), output_to(log_file):
        result = run_dag_locally(settings, conf=conf, end=end)
    console.print(f"\nDAG run {result.run_id}: {result.state} ({result.wall_s:.1f} s)")
    console.print(f"  {'task':<14}{'state':<17}{'duration':>9}")
    for task in result.tasks:
        duration = f"{task.duration_s:.1f} s" if task.duration_s is not None else "-"
        console.print(f"  {task.task_id:<14}{task.state or 'not run':<17}{duration:>9}")
    console.print(f"  task logs: {log_file}", markup=False)
    if not result.succeeded:
        err_console.print(
            f"failed tasks: {', '.join(result.failed_tasks()) or 'none'}; see {settings.alert_log}",
            markup=False,
        )
        raise typer.Exit(1)
    return result
