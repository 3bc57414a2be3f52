"""Orchestration commands: ``rps trigger retrain``, ``rps dag run``, ``rps dag env``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rps.cli.common import console, fail_on, load_config, run_dag_with_summary

trigger_app = typer.Typer(help="Start pipeline runs (Airflow REST API or in-process).")
dag_app = typer.Typer(help="The Airflow pipeline DAG on the embedded default.")


def _errors() -> tuple[type[Exception], ...]:
    from rps.orchestration.airflow_home import AirflowHomeError
    from rps.orchestration.local_run import DagLoadError
    from rps.orchestration.trigger import TriggerError

    return (TriggerError, AirflowHomeError, DagLoadError, ValueError, OSError)


@trigger_app.command("retrain")
def retrain(
    reason: Annotated[str, typer.Option("--reason", help="why (e.g. drift); the run's conf")],
) -> None:
    """Retrain now: a DAG run with conf {"reason": ...} (REST API if configured)."""
    from rps.orchestration.trigger import start_retrain

    settings, _ = load_config()
    with fail_on(*_errors()):
        result = start_retrain(reason, settings)
    console.print(f"run {result.run_id} ({result.via}): {result.state or 'started'}")
    if result.state == "failed":
        raise typer.Exit(1)


@dag_app.command("run")
def run(
    *,
    end: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional here
        typer.Option("--end", help="the interval's end, ISO 8601 UTC (default: now)"),
    ] = None,
    source: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--source", "-s", help="open_meteo, replay or synthetic"),
    ] = None,
    reason: Annotated[str, typer.Option(help="the run's conf reason")] = "manual",
    promote: Annotated[
        bool,
        typer.Option(
            "--promote/--no-promote",
            help="--no-promote stops before the promote task: champion stays where it is",
        ),
    ] = True,
    adapt: Annotated[
        bool, typer.Option("--adapt", help="retrain for a drift (recency-weighted, recent gate)")
    ] = False,
    drift_onset: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--drift-onset", help="the drift's onset, ISO 8601 (implies --adapt)"),
    ] = None,
) -> None:
    """Run the DAG once in-process (dag.test) and print each task's state."""
    settings, _ = load_config()
    conf: dict[str, str | bool] = {"reason": reason}
    if source:
        conf["source"] = source
    if not promote:
        conf["promote"] = False
    if adapt:
        conf["adapt"] = True
    if drift_onset:
        conf["drift_onset"] = drift_onset
    run_dag_with_summary(settings, conf, end=end)


@dag_app.command("env")
def env() -> None:
    """Print the embedded Airflow's environment as shell exports (for airflow standalone)."""
    import shlex

    from rps.orchestration.airflow_home import AirflowHomeError, airflow_env

    settings, _ = load_config()
    with fail_on(AirflowHomeError):
        values = airflow_env(settings)
    for key, value in values.items():
        console.print(f"export {key}={shlex.quote(value)}", markup=False)


def register(app: typer.Typer) -> None:
    """Add the ``trigger`` and ``dag`` command groups to the root app."""
    app.add_typer(trigger_app, name="trigger")
    app.add_typer(dag_app, name="dag")
