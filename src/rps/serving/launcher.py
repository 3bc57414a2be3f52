"""Start the prediction service under uvicorn, with one or several worker processes.

With several workers the launcher prepares what they share before any of them starts: an
emptied Prometheus multiprocess folder (``PROMETHEUS_MULTIPROC_DIR``, so ``/metrics`` sums all
workers), a server instance id (``RPS_SERVE_INSTANCE``, which scopes the shared model stack
used by hot reload and rollback) and the start time (``RPS_SERVE_STARTED_AT``, for uptime).
This module imports neither ``prometheus_client`` nor the app: workers import them after the
environment is set.
"""

from __future__ import annotations

import copy
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from rps.settings import Settings, get_settings

logger = logging.getLogger(__name__)

APP_FACTORY = "rps.serving.app:create_app"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
INSTANCE_ENV = "RPS_SERVE_INSTANCE"
STARTED_AT_ENV = "RPS_SERVE_STARTED_AT"
# uvicorn's supervisor kills a worker that does not answer its ping within this many seconds;
# its default (5 s) kills workers still importing LightGBM on a busy host, again and again
WORKER_HEALTHCHECK_TIMEOUT_S = 60


def prepare_multiprocess_dir(path: Path) -> Path:
    """Create ``path`` and delete the metric files a previous run left there.

    Args:
        path: The folder for ``prometheus_client``'s memory-mapped metric files.

    Returns:
        The folder, absolute.
    """
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


def prepare_environment(
    settings: Settings, *, workers: int, model_dir: Path | None = None
) -> dict[str, str]:
    """Set the variables the workers read, in ``os.environ``; return what was set.

    Args:
        settings: Settings (for the default multiprocess folder under the state folder).
        workers: Number of worker processes.
        model_dir: A bundle directory that overrides ``RPS_MODEL_DIR``.
    """
    updates: dict[str, str] = {
        INSTANCE_ENV: uuid.uuid4().hex,
        STARTED_AT_ENV: repr(time.time()),
    }
    if model_dir is not None:
        updates["RPS_MODEL_DIR"] = str(model_dir.resolve())
    if workers > 1 or os.environ.get(MULTIPROC_ENV):
        folder = Path(
            os.environ.get(MULTIPROC_ENV) or settings.state_path / "serving" / "prometheus"
        )
        updates[MULTIPROC_ENV] = str(prepare_multiprocess_dir(folder))
    os.environ.update(updates)
    get_settings.cache_clear()  # the app factory reads the updated environment
    return updates


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration plus the ``rps`` loggers on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["rps"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def run(
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int = 1,
    model_dir: Path | None = None,
    log_level: str = "info",
    access_log: bool = False,
    settings: Settings | None = None,
) -> None:
    """Run the API until interrupted.

    Args:
        host: Address to bind; default ``settings.api_host``.
        port: Port; default ``settings.api_port``.
        workers: Worker processes (each loads the model and keeps its own drift window).
        model_dir: Serve this bundle directory instead of ``RPS_MODEL_DIR``/the registry.
        log_level: uvicorn's log level.
        access_log: Log every request (off by default: it costs throughput).
        settings: Settings; default :func:`rps.settings.get_settings`.
    """
    settings = settings or get_settings()
    if workers < 1:
        raise ValueError("workers must be at least 1")
    updates = prepare_environment(settings, workers=workers, model_dir=model_dir)
    if MULTIPROC_ENV in updates:
        logger.info("Prometheus multiprocess folder: %s", updates[MULTIPROC_ENV])
    import uvicorn

    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers,
        log_level=log_level.lower(),
        log_config=uvicorn_log_config(log_level),
        access_log=access_log,
        timeout_graceful_shutdown=10,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_TIMEOUT_S,
    )
