"""The embedded Airflow home: a project folder with a SQLite metadata database.

Airflow reads its configuration once, when it is first imported, so
:func:`ensure_airflow_home` must run before anything in the process imports ``airflow``. It
points ``AIRFLOW_HOME``, the DAGs folder and the database at the project, turns the example
DAGs off and runs ``airflow db migrate`` (in a subprocess) the first time only: a marker file
records the Airflow version and the database it migrated.

The distributed setup (Postgres, Celery or Kubernetes executors) configures Airflow through
its own environment and never calls this module.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from rps.files import file_lock, write_atomic

if TYPE_CHECKING:
    from rps.settings import Settings

logger = logging.getLogger(__name__)

DAG_FILE = "rps_pipeline_dag.py"
MARKER = ".rps-db-migrated"
# the first line of the airflow_local_settings.py that earlier versions wrote into the home
STALE_LOCAL_SETTINGS_HEADER = "# written by rps.orchestration.airflow_home"
MIGRATE_TIMEOUT_S = 600.0


class AirflowHomeError(RuntimeError):
    """The embedded Airflow home cannot be set up (no DAGs folder, migration failed, ...)."""


def _source_checkout_dags() -> Path:
    # src/rps/orchestration/airflow_home.py -> <repo>/airflow/dags
    return Path(__file__).resolve().parents[3] / "airflow" / "dags"


def dags_folder(settings: Settings) -> Path:
    """The folder holding ``rps_pipeline_dag.py``.

    ``<project_root>/airflow/dags`` when it holds the DAG file, else the source checkout's
    ``airflow/dags`` (this package installed in editable mode).

    Raises:
        AirflowHomeError: neither location holds the DAG file.
    """
    candidates = [settings.project_root / "airflow" / "dags", _source_checkout_dags()]
    for folder in candidates:
        if (folder / DAG_FILE).is_file():
            return folder.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise AirflowHomeError(f"no DAGs folder with {DAG_FILE} found (looked in {tried})")


def sqlite_url(settings: Settings) -> str:
    """The metadata database: ``<airflow home>/airflow.db``."""
    return f"sqlite:///{settings.airflow_home_path.absolute() / 'airflow.db'}"


def airflow_env(settings: Settings) -> dict[str, str]:
    """The environment the embedded Airflow runs with (also printed by ``rps dag env``)."""
    return {
        "AIRFLOW_HOME": str(settings.airflow_home_path.absolute()),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder(settings)),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlite_url(settings),
        # the tasks find the project (params.yaml, the state folder) wherever they run
        "RPS_PROJECT_ROOT": str(settings.project_root.absolute()),
        "RPS_STATE_DIR": str(settings.state_path.absolute()),
        "RPS_PARAMS_PATH": str(settings.params_file.absolute()),
    }


def _airflow_version() -> str:
    for dist in ("apache-airflow-core", "apache-airflow"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    raise AirflowHomeError("Apache Airflow is not installed (install the 'airflow' extra)")


def _check_not_configured_elsewhere(url: str) -> None:
    """Refuse when this process already imported Airflow with another database."""
    if "airflow.configuration" not in sys.modules:
        return
    from airflow.configuration import conf

    current = conf.get("database", "sql_alchemy_conn", fallback=None)
    if current != url:
        raise AirflowHomeError(
            f"Airflow was imported in this process before ensure_airflow_home() and uses "
            f"{current!r}, not {url!r}: call ensure_airflow_home() before importing airflow"
        )


def _remove_stale_local_settings(home: Path) -> None:
    """Delete the Airflow patch loader earlier versions wrote (a user's own file stays)."""
    path = home / "config" / "airflow_local_settings.py"
    if path.is_file() and path.read_text(encoding="utf-8").startswith(STALE_LOCAL_SETTINGS_HEADER):
        path.unlink()
        logger.info("removed %s (Airflow now runs unpatched)", path)


def _migrate(home: Path, env: dict[str, str]) -> None:
    logger.info("migrating the Airflow metadata database in %s (first use)", home)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=MIGRATE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AirflowHomeError(f"airflow db migrate could not run: {exc}") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise AirflowHomeError(f"airflow db migrate failed ({result.returncode}): {tail}")


def ensure_airflow_home(settings: Settings) -> Path:
    """Configure this process for the embedded Airflow and migrate its database once.

    Sets ``AIRFLOW_HOME`` (``settings.airflow_home_path``), ``AIRFLOW__CORE__DAGS_FOLDER``
    (the repository's ``airflow/dags``), ``AIRFLOW__CORE__LOAD_EXAMPLES=False`` and a SQLite
    ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` in ``os.environ``, then runs ``airflow db migrate``
    unless the marker file says this Airflow version already migrated this database. Safe
    to call from several processes at once (a file lock serialises them).

    Args:
        settings: supplies the Airflow home and the project folder.

    Returns:
        The Airflow home folder.

    Raises:
        AirflowHomeError: Airflow is missing, was already imported with another database,
            the DAGs folder is missing, or the migration failed.
    """
    home = settings.airflow_home_path.absolute()
    env = airflow_env(settings)
    version = _airflow_version()
    _check_not_configured_elsewhere(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    home.mkdir(parents=True, exist_ok=True)
    _remove_stale_local_settings(home)
    os.environ.update(env)
    marker = home / MARKER
    wanted = {"airflow": version, "database": env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]}
    with file_lock(home / ".rps-migrate.lock"):
        done = marker.is_file() and (home / "airflow.db").is_file()
        if done:
            try:
                done = json.loads(marker.read_text(encoding="utf-8")) == wanted
            except ValueError:
                done = False
        if not done:
            _migrate(home, env)
            write_atomic(marker, json.dumps(wanted) + "\n")
    return home
