"""Run the DAG once in this process (``dag.test``): the embedded default needs no scheduler.

:func:`run_dag_locally` sets up the embedded Airflow home (:mod:`.airflow_home`), parses the
DAGs folder, runs one DAG run for a logical date (the interval's end) with the given conf and
reports every task's state and duration. The tasks run in this process and use the
``settings`` given here (see :func:`rps.orchestration.steps.using_settings`).

Airflow's task runner installs a SIGTERM handler, which Python allows only in the main
thread: called from any other thread (a web server's worker, say), :func:`run_dag_locally`
runs the same code in a child process (``python -m rps.orchestration.local_run``) with the
settings passed through the environment, and waits for it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from rps.data.sources.replay import current_time
from rps.files import write_atomic
from rps.orchestration import DAG_ID, TASK_IDS
from rps.orchestration.airflow_home import dags_folder, ensure_airflow_home

if TYPE_CHECKING:
    from rps.settings import Settings

logger = logging.getLogger(__name__)


class DagLoadError(RuntimeError):
    """The DAGs folder has import errors or lacks the pipeline DAG."""


@dataclass(frozen=True)
class TaskResult:
    """One task instance's outcome (``state`` None: never scheduled)."""

    task_id: str
    state: str | None
    duration_s: float | None
    try_number: int | None = None


@dataclass(frozen=True)
class DagRunResult:
    """One DAG run's outcome."""

    run_id: str
    state: str
    logical_date: str | None
    conf: dict[str, Any]
    tasks: list[TaskResult] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.state == "success"

    def task(self, task_id: str) -> TaskResult:
        """The result of ``task_id``.

        Raises:
            KeyError: the DAG has no such task.
        """
        for result in self.tasks:
            if result.task_id == task_id:
                return result
        raise KeyError(task_id)

    def failed_tasks(self) -> list[str]:
        return [t.task_id for t in self.tasks if t.state == "failed"]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DagRunResult:
        tasks = [TaskResult(**t) for t in data.get("tasks", [])]
        return cls(**{**data, "tasks": tasks})


def settings_env(settings: Settings) -> dict[str, str]:
    """``RPS_*`` variables that rebuild ``settings`` in a child process."""
    env: dict[str, str] = {}
    for name, raw in settings.model_dump().items():
        if raw is None:
            continue
        value = raw.get_secret_value() if hasattr(raw, "get_secret_value") else raw
        env[f"RPS_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def load_pipeline_dag(settings: Settings) -> Any:
    """Parse the DAGs folder (after :func:`ensure_airflow_home`) and return the pipeline DAG.

    Raises:
        DagLoadError: a DAG file failed to import or the DAG is missing.
    """
    ensure_airflow_home(settings)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_folder(settings)))
    if bag.import_errors:
        details = "; ".join(f"{path}: {err}" for path, err in bag.import_errors.items())
        raise DagLoadError(f"DAG import errors: {details}")
    found = bag.get_dag(DAG_ID)
    if found is None:
        raise DagLoadError(f"DAG {DAG_ID!r} not found in {dags_folder(settings)}")
    return found


def _logical_date(end: pd.Timestamp | str | datetime) -> datetime:
    stamp = pd.Timestamp(end)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.floor("h").to_pydatetime()


def _state(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


def run_dag_locally(
    settings: Settings,
    *,
    conf: dict[str, Any] | None = None,
    end: pd.Timestamp | str | datetime | None = None,
) -> DagRunResult:
    """Run the pipeline DAG once in this process and report each task.

    Args:
        settings: the project settings; the tasks run with exactly these.
        conf: the run's conf (``reason``, ``source``, ``promote``, ``adapt``, ``drift_onset``);
            validated by the first task.
        end: the interval's end (the run's logical date, floored to the hour); default: now.

    Returns:
        The run's id, final state and per-task states and durations. A failed run is
        returned, not raised (its failure alert has been sent by the DAG's callback).

    Raises:
        DagLoadError: the DAG cannot be loaded.
        RuntimeError: the child process (off the main thread) failed before reporting.
    """
    run_conf = dict(conf or {})
    logical = _logical_date(end if end is not None else current_time(settings))
    if threading.current_thread() is not threading.main_thread():
        return _run_in_child(settings, run_conf, logical)
    from rps.orchestration.steps import using_settings

    dag_obj = load_pipeline_dag(settings)
    started = time.perf_counter()
    with using_settings(settings):
        dag_run = dag_obj.test(logical_date=logical, run_conf=run_conf)
    wall = time.perf_counter() - started
    order = {task_id: i for i, task_id in enumerate(TASK_IDS)}
    tis = sorted(dag_run.get_task_instances(), key=lambda t: order.get(t.task_id, len(order)))
    tasks = [
        TaskResult(
            task_id=ti.task_id,
            state=_state(ti.state),
            duration_s=float(ti.duration) if ti.duration is not None else None,
            try_number=ti.try_number,
        )
        for ti in tis
    ]
    result = DagRunResult(
        run_id=str(dag_run.run_id),
        state=_state(dag_run.state) or "unknown",
        logical_date=logical.isoformat(),
        conf=run_conf,
        tasks=tasks,
        wall_s=wall,
    )
    log = logger.info if result.succeeded else logger.error
    log("DAG run %s finished %s in %.1f s", result.run_id, result.state, wall)
    return result


def _run_in_child(settings: Settings, conf: dict[str, Any], logical: datetime) -> DagRunResult:
    """:func:`run_dag_locally` in a child process (``python -m rps.orchestration.local_run``).

    Raises:
        RuntimeError: the child exited without a result (its stderr tail is in the message).
    """
    with tempfile.TemporaryDirectory(prefix="rps-dag-run-") as tmp:
        result_file = Path(tmp) / "result.json"
        command = [
            sys.executable,
            "-m",
            "rps.orchestration.local_run",
            "--conf",
            json.dumps(conf),
            "--result-file",
            str(result_file),
            "--end",
            logical.isoformat(),
        ]
        env = {**os.environ, **settings_env(settings)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if not result_file.is_file():
            tail = (done.stderr or done.stdout).strip()[-2000:]
            raise RuntimeError(f"the DAG run's child process failed ({done.returncode}): {tail}")
        return DagRunResult.from_json(json.loads(result_file.read_text(encoding="utf-8")))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rps.orchestration.local_run``: one in-process DAG run, result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default="{}", help="the run's conf as JSON")
    parser.add_argument("--end", default=None, help="the interval's end (ISO 8601)")
    parser.add_argument("--result-file", type=Path, required=True)
    args = parser.parse_args(argv)
    from rps.settings import Settings

    result = run_dag_locally(Settings(), conf=json.loads(args.conf), end=args.end)
    write_atomic(args.result_file, json.dumps(result.to_json()))
    return 0 if result.succeeded else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(main())
