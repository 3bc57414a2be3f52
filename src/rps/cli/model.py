"""``rps train`` and ``rps model ...``: training, the registry and its promotion gate.

Heavy libraries (MLflow, LightGBM, Optuna) load inside the commands, so ``rps --help``
stays fast.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from rps.cli.common import console, fail_on, load_config


def _errors() -> tuple[type[Exception], ...]:
    from rps.features.spec import FeatureError
    from rps.models.bundle import BundleError
    from rps.models.errors import RegistryError, TrainingError

    return (TrainingError, RegistryError, BundleError, FeatureError)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def train_command(
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="dataset version md5 (default: the latest)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the full result as JSON")] = False,
) -> None:
    """Train the candidates, log the run, register the best and apply the promotion gate."""
    settings, params = load_config()
    from rps.models.train import train

    with fail_on(*_errors()), console.status("training..."):
        result = train(settings, params, dataset_md5=dataset)
    if as_json:
        _print_json(result.to_dict())
        return
    m = result.metrics
    table = Table(title=f"{result.model_name} v{result.version}", show_header=False)
    for key, value in (
        ("model", f"{result.candidate} ({result.model_kind})"),
        (
            "gate",
            ("PROMOTED to champion" if result.promoted else "refused") + f": {result.gate_reason}",
        ),
        ("holdout RMSE", m.get("holdout_rmse")),
        ("persistence RMSE", m.get("persistence_holdout_rmse")),
        ("skill vs persistence", m.get("holdout_skill_vs_persistence")),
        ("interval coverage", m.get("interval_coverage")),
        ("dataset", f"{result.dataset_md5} ({result.dataset_uri})"),
        ("run", result.run_id),
        ("duration", f"{result.duration_s:.1f} s"),
    ):
        table.add_row(key, _fmt(value))
    console.print(table)


def list_command() -> None:
    """List every registered version, newest first."""
    settings, _ = load_config()
    from rps.models import registry

    with fail_on(*_errors()):
        rows = registry.list_versions(settings)
    table = Table(title=settings.registered_model_name)
    columns = (
        "version",
        "aliases",
        "role",
        "model_kind",
        "holdout_rmse",
        "gate_decision",
        "created",
    )
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(", ".join(row[c]) if c == "aliases" else str(row[c]) for c in columns))
    console.print(table)


def promote_command(
    version: Annotated[str, typer.Argument(help="the version number to make champion")],
    by: Annotated[str | None, typer.Option("--by", help="who (default: the login user)")] = None,
    reason: Annotated[str, typer.Option("--reason", help="why")] = "manual promotion",
) -> None:
    """Make VERSION champion by hand (bypasses the gate; recorded in the history)."""
    settings, _ = load_config()
    from rps.models import registry

    with fail_on(*_errors()):
        event = registry.promote(settings, version, by=by or _user(), reason=reason)
    console.print(
        f"champion: v{event['previous'] or '-'} -> v{event['version']} (by {event['by']})"
    )


def rollback_command(
    by: Annotated[str | None, typer.Option("--by", help="who (default: the login user)")] = None,
    reason: Annotated[str, typer.Option("--reason", help="why")] = "manual rollback",
) -> None:
    """Move champion back to the previous champion version."""
    settings, _ = load_config()
    from rps.models import registry

    with fail_on(*_errors()):
        event = registry.rollback(settings, by=by or _user(), reason=reason)
    console.print(f"champion rolled back: v{event['previous']} -> v{event['version']}")


def history_command(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Champion moves (gate, promote, rollback), newest first."""
    settings, _ = load_config()
    from rps.models import registry

    with fail_on(*_errors()):
        events = registry.history(settings)
    if as_json:
        _print_json(events)
        return
    table = Table(title=f"{settings.registered_model_name} champion history")
    for column in ("at", "action", "from", "to", "by", "reason"):
        table.add_column(column)
    for e in events:
        table.add_row(
            str(e.get("at", "")),
            str(e.get("action", "")),
            str(e.get("previous") or "-"),
            str(e.get("version", "")),
            str(e.get("by", "")),
            str(e.get("reason", "")),
        )
    console.print(table)


def compare_command(
    candidate: Annotated[str, typer.Option("--candidate", help="version or alias")],
    against: Annotated[str, typer.Option("--against", help="version or alias")] = "champion",
    output: Annotated[
        Path | None, typer.Option("--output", help="write a Markdown report (PNGs beside it)")
    ] = None,
) -> None:
    """Compare two versions on the candidate's holdout; exit 1 when the gate would refuse."""
    settings, params = load_config()
    from rps.models.compare import compare_versions

    with fail_on(*_errors()):
        result = compare_versions(settings, params, candidate, against, output=output)
    table = Table(title=f"v{result.candidate_version} vs {against} (v{result.against_version})")
    labels = list(result.metrics)
    table.add_column("metric")
    for label in labels:
        table.add_column(label)
    for key in ("rmse", "mae", "r2", "skill_vs_persistence", "interval_coverage"):
        table.add_row(key, *(_fmt(result.metrics[label].get(key, "")) for label in labels))
    console.print(table)
    verdict = "PASS" if result.decision.promote else "REFUSED"
    console.print(f"gate: {verdict} ({result.decision.rule}): {result.decision.reason}")
    if result.report is not None:
        console.print(f"report: {result.report}")
    if result.candidate_worse:
        raise typer.Exit(1)


def info_command(
    ref: Annotated[str, typer.Argument(help="a version number or an alias (champion, ...)")],
) -> None:
    """Lineage and metrics of a version: run, dataset, code, params, metrics."""
    settings, _ = load_config()
    from rps.models import registry

    with fail_on(*_errors()):
        info = registry.version_info(settings, ref)
    _print_json(info)


def register(app: typer.Typer) -> None:
    """Add ``train`` and the ``model`` command group to the root app."""
    app.command("train")(train_command)
    model_app = typer.Typer(
        name="model",
        help="The model registry: list, promote, rollback, history, compare, info.",
        no_args_is_help=True,
    )
    model_app.command("list")(list_command)
    model_app.command("promote")(promote_command)
    model_app.command("rollback")(rollback_command)
    model_app.command("history")(history_command)
    model_app.command("compare")(compare_command)
    model_app.command("info")(info_command)
    app.add_typer(model_app, name="model")
