"""``rps serve``: run the prediction API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rps.cli.common import console, load_config


def serve(
    *,
    host: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional here
        typer.Option(help="address to bind (default: RPS_API_HOST)"),
    ] = None,
    port: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="port (default: RPS_API_PORT)"),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="worker processes; metrics and model swaps are shared")
    ] = 1,
    model_dir: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="serve this bundle directory (default: RPS_MODEL_DIR, else registry)"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    access_log: Annotated[bool, typer.Option(help="log every request")] = False,
) -> None:
    """Run the prediction API (FastAPI under uvicorn) until interrupted."""
    from rps.serving.launcher import run

    settings, _params = load_config()  # fail fast on an invalid params.yaml
    if model_dir is not None and not model_dir.exists():
        raise typer.BadParameter(f"{model_dir} does not exist", param_hint="--model-dir")
    console.print(
        f"serving on http://{host or settings.api_host}:{port or settings.api_port} "
        f"with {workers} worker(s)"
    )
    run(
        host=host,
        port=port,
        workers=workers,
        model_dir=model_dir,
        log_level=log_level,
        access_log=access_log,
        settings=settings,
    )


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command()(serve)
