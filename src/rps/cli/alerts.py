"""Alert commands: the Alertmanager webhook receiver that logs alerts and triggers retraining."""

from __future__ import annotations

from typing import Annotated

import typer

alerts_app = typer.Typer(
    help="The alert receiver (Alertmanager webhook -> log + retrain).", no_args_is_help=True
)


@alerts_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 9095,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Receive Alertmanager webhooks: log every alert; drift/accuracy alerts trigger retraining."""
    from rps.monitoring.alert_receiver import serve as serve_receiver

    serve_receiver(host=host, port=port, workers=workers)


def register(app: typer.Typer) -> None:
    """Add the ``alerts`` group to the root app."""
    app.add_typer(alerts_app, name="alerts")
