"""Shared CLI plumbing: settings and params loading, error reporting, output."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

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
