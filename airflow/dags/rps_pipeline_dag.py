"""RPS pipeline: the scheduled ETL and retraining DAG (Airflow 3, TaskFlow).

extract -> quality_gate -> transform -> profile -> load -> version -> train -> evaluate
-> register -> promote -> notify

Wiring only: each task imports ``rps`` inside its body and makes one call into
``rps.orchestration.steps``; XCom carries a small manifest of paths and IDs. Every task works
on the run's data interval, never the wall clock. train logs a run and its candidate,
evaluate computes the gate's evidence, register creates a version (alias challenger),
promote applies the gate and moves champion.

Conf keys (unknown keys fail the run): ``reason`` (text; a drift alert's name such as
``"DataDriftDetected: ..."`` makes the run adapt to the new regime), ``source``,
``promote`` (``false`` stops before promote: champion stays), ``adapt`` (true: retrain for a
drift) and ``drift_onset`` (ISO 8601; default: estimated from the champion's errors).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import dag, get_current_context, task


def _options() -> dict[str, Any]:
    from rps.orchestration import dag_options

    return dag_options()


_OPTIONS = _options()


def _on_failure(context: Any) -> None:
    from rps.orchestration.steps import on_failure

    on_failure(context)


@task(
    retries=3,
    retry_delay=timedelta(seconds=30),
    retry_exponential_backoff=2.0,
    max_retry_delay=timedelta(minutes=10),
)
def extract() -> dict[str, Any]:
    from rps.orchestration import steps

    return steps.extract(get_current_context())


@task
def quality_gate(manifest: dict[str, Any]) -> dict[str, Any]:
    from rps.orchestration import steps

    return steps.quality_gate(get_current_context(), manifest)


@task
def transform(manifest: dict[str, Any]) -> dict[str, Any]:
    from rps.orchestration import steps

    return steps.transform(get_current_context(), manifest)


@task
def profile(manifest: dict[str, Any]) -> dict[str, Any]:
    from rps.orchestration import steps

    return steps.profile(get_current_context(), manifest)


@task
def load(manifest: dict[str, Any]) -> dict[str, Any]:
    from rps.orchestration import steps

    return steps.load(get_current_context(), manifest)


@task
def version(manifest: dict[str, Any]) -> dict[str, Any]:
    from rps.orchestration import steps

    return steps.version(get_current_context(), manifest)


@task
def train(manifest: dict[str, Any]) -> dict[str, Any]:
    from rps.orchestration import steps

    return steps.train(get_current_context(), manifest)


@task
def evaluate(manifest: dict[str, Any]) -> dict[str, Any]:
    from rps.orchestration import steps

    return steps.evaluate(get_current_context(), manifest)


@task
def register(manifest: dict[str, Any]) -> dict[str, Any]:
    from rps.orchestration import steps

    return steps.register(get_current_context(), manifest)


@task
def promote(manifest: dict[str, Any]) -> dict[str, Any]:
    from rps.orchestration import steps

    return steps.promote(get_current_context(), manifest)


@task
def notify(manifest: dict[str, Any]) -> dict[str, Any]:
    from rps.orchestration import steps

    return steps.notify(get_current_context(), manifest)


@dag(
    dag_id="rps_pipeline",
    description="RPS: extract, gate, transform, profile, load, version, train, promote",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    max_active_runs=1,
    default_args={"retries": 0, "on_failure_callback": _on_failure},
    tags=["rps", "etl", "training"],
    doc_md=__doc__,
    schedule=_OPTIONS["schedule"],
    catchup=_OPTIONS["catchup"],
)
def rps_pipeline() -> None:
    manifest = extract()
    for step in (quality_gate, transform, profile, load, version):
        manifest = step(manifest)
    for step in (train, evaluate, register, promote, notify):
        manifest = step(manifest)


rps_pipeline()
