"""Orchestration: the Airflow DAG's task bodies, alerting, triggering and the local runner.

The DAG file (``airflow/dags/rps_pipeline_dag.py``) is wiring only; everything it calls lives
here so it can be tested without a scheduler. Nothing in this package imports Airflow at
module import time: Airflow reads its configuration when first imported, so
:func:`rps.orchestration.airflow_home.ensure_airflow_home` must run before.
"""

from __future__ import annotations

from typing import Any

DAG_ID = "rps_pipeline"
TASK_IDS: tuple[str, ...] = (
    "extract",
    "quality_gate",
    "transform",
    "profile",
    "load",
    "version",
    "train",
    "evaluate",
    "register",
    "promote",
    "notify",
)
"""The DAG's tasks, in order: each one is the only upstream of the next."""


def dag_schedule(value: str | None) -> str | None:
    """``settings.dag_schedule`` as Airflow wants it: ``None`` for "none"/"" (manual only)."""
    if value is None or value.strip().lower() in {"", "none", "null", "manual"}:
        return None
    return value.strip()


def dag_options() -> dict[str, Any]:
    """The DAG's ``schedule`` and ``catchup``, read from the settings (at DAG parse time)."""
    from rps.settings import Settings

    settings = Settings()
    return {"schedule": dag_schedule(settings.dag_schedule), "catchup": settings.dag_catchup}


__all__ = ["DAG_ID", "TASK_IDS", "dag_options", "dag_schedule"]
