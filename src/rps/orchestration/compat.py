"""Shims for Airflow 3.2's in-process task runs with this project's locked dependencies.

1. pydantic >= 2.14. Airflow 3.2's execution API declares the task-instance state update as
``Annotated[Union[...], Field(discriminator=<function>)]``. pydantic 2.14 only accepts a field
*name* or a ``pydantic.Discriminator`` there, so building the execution API (which every task
run goes through, ``dag.test`` included) fails with "Model 'TITerminalStatePayload' needs a
discriminator field". :func:`patch_airflow_for_pydantic` wraps the function in
``Discriminator`` before the API's routes are imported. It does nothing when the original
annotation already works (a fixed Airflow or an older pydantic).

2. The in-process execution API (``dag.test``) starts its app's lifespan on a background
event loop without waiting for it, and builds a new app for every task. With FastAPI 0.16x
the first request can overtake the lifespan and fail with "'State' object has no attribute
'svcs_registry'". :func:`patch_in_process_api` makes the supervisor reuse one API whose
lifespan has started (faster too: the app is built once per process).

:func:`apply_airflow_shims` applies both; the embedded runner calls it before ``dag.test``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Annotated, Any, get_args

logger = logging.getLogger(__name__)

_DATAMODELS = "airflow.api_fastapi.execution_api.datamodels.taskinstance"
_ROUTES = "airflow.api_fastapi.execution_api.routes.task_instances"
_SUPERVISOR = "airflow.sdk.execution_time.supervisor"
LIFESPAN_TIMEOUT_S = 60.0
_api_lock = threading.Lock()
_api: list[Any] = []  # the shared, started in-process execution API


def patch_airflow_for_pydantic() -> bool:
    """Make Airflow's ``TIStateUpdate`` usable with this pydantic; True when patched.

    Must run after :func:`rps.orchestration.airflow_home.ensure_airflow_home` and before
    Airflow builds its execution API (the first task run in the process).
    """
    import importlib

    from pydantic import Discriminator, TypeAdapter
    from pydantic.errors import PydanticUserError

    try:
        models: Any = importlib.import_module(_DATAMODELS)
    except ImportError:  # pragma: no cover - not this Airflow layout
        return False
    try:
        TypeAdapter(models.TIStateUpdate)
    except PydanticUserError:
        pass
    else:
        return False
    if _ROUTES in sys.modules:
        logger.warning("Airflow's execution API was imported before the pydantic shim")
    union, *_ = get_args(models.TIStateUpdate)
    models.TIStateUpdate = Annotated[union, Discriminator(models.ti_state_discriminator)]
    TypeAdapter(models.TIStateUpdate)  # fails loudly if the shim no longer fits
    logger.debug("patched %s.TIStateUpdate for pydantic's Discriminator", _DATAMODELS)
    return True


def _started_in_process_api() -> Any:
    """One in-process execution API per process, returned once its lifespan has started."""
    with _api_lock:
        if not _api:
            from airflow.api_fastapi.execution_api.app import InProcessExecutionAPI

            api = InProcessExecutionAPI()
            _ = api.transport  # schedules the app's lifespan on the a2wsgi event loop
            deadline = time.monotonic() + LIFESPAN_TIMEOUT_S
            while getattr(api.app.state, "svcs_registry", None) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("Airflow's in-process execution API did not start")
                time.sleep(0.01)
            _api.append(api)
        return _api[0]


def patch_in_process_api() -> bool:
    """Make ``dag.test`` reuse one started in-process execution API; True when patched."""
    import importlib

    try:
        supervisor: Any = importlib.import_module(_SUPERVISOR)
    except ImportError:  # pragma: no cover - not this Airflow layout
        return False
    if not hasattr(supervisor, "in_process_api_server"):
        return False
    if supervisor.in_process_api_server is not _started_in_process_api:
        supervisor.in_process_api_server = _started_in_process_api
    return True


def apply_airflow_shims() -> None:
    """Apply every shim (idempotent); call after ensure_airflow_home, before ``dag.test``."""
    patch_airflow_for_pydantic()
    patch_in_process_api()
