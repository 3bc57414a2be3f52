"""Shared CLI plumbing: settings and params loading, error reporting, output."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from rps.params import Params, ParamsError, load_params
from rps.settings import Settings, get_settings

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


def print_dag_result(result: Any) -> None:
    """Print a DAG run's tasks with their states and durations."""
    console.print(f"\nDAG run {result.run_id}: {result.state} ({result.wall_s:.1f} s)")
    console.print(f"  {'task':<14}{'state':<17}{'duration':>9}")
    for task in result.tasks:
        duration = f"{task.duration_s:.1f} s" if task.duration_s is not None else "-"
        console.print(f"  {task.task_id:<14}{task.state or 'not run':<17}{duration:>9}")
