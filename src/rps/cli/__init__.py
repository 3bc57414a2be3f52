"""The ``rps`` command line: one call into the library per command, plus output."""

from __future__ import annotations

import typer

from rps.cli import alerts as alerts_cli
from rps.cli import data as data_cli
from rps.cli import deploy as deploy_cli
from rps.cli import model as model_cli
from rps.cli import orchestrate as orchestrate_cli
from rps.cli import run as run_cli
from rps.cli import serve as serve_cli

app = typer.Typer(
    name="rps",
    help="RPS, the Real-Time Predictive System: ingest, validate, train, serve, monitor.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_cli.register(app)
alerts_cli.register(app)
model_cli.register(app)
orchestrate_cli.register(app)
serve_cli.register(app)
run_cli.register(app)
deploy_cli.register(app)
# Each command group registers itself here (one line per module).


def main() -> None:
    """Entry point of the ``rps`` script."""
    app()
