"""``GET /health``, ``/health/live`` and ``/health/ready``: liveness, readiness and the registry."""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, Response, status

from rps.serving.deps import ServiceDep
from rps.serving.schemas import HealthResponse, LiveResponse, ReadyResponse, RegistryHealth

router = APIRouter(prefix="/health", tags=["health"])


@router.get(
    "",
    responses={503: {"model": HealthResponse, "description": "No model loaded"}},
    summary="The served model and the registry's state",
)
async def health(service: ServiceDep, response: Response) -> HealthResponse:
    """200 when a model is loaded (``degraded`` while the registry does not answer), else 503
    with the reason."""
    manager = service.manager
    model = manager.current
    checked = manager.registry
    registry = (
        RegistryHealth(
            reachable=checked.reachable,
            champion_version=checked.champion_version,
            checked_at=checked.checked_at,
            detail=checked.detail,
        )
        if checked is not None
        else None
    )
    uptime = max(0.0, time.time() - service.started_at)
    source = "registry" if manager.mode == "registry" else "model_dir"
    if model is None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return HealthResponse(
            status="unavailable",
            model_loaded=False,
            model_name=manager.name,
            model_source=source,
            registry=registry,
            uptime_seconds=uptime,
            worker_pid=os.getpid(),
            detail=manager.last_error or "model still loading",
        )
    down = registry is not None and not registry.reachable
    return HealthResponse(
        status="degraded" if down else "ok",
        model_loaded=True,
        model_name=model.name,
        model_version=model.version,
        model_source=source,
        registry=registry,
        uptime_seconds=uptime,
        worker_pid=os.getpid(),
        detail=f"registry unreachable, serving on: {registry.detail}"
        if down and registry is not None
        else None,
    )


@router.get("/live", summary="Liveness: the process is up")
async def live(service: ServiceDep) -> LiveResponse:
    """Always 200 while the process answers (no model needed)."""
    return LiveResponse(status="alive", uptime_seconds=max(0.0, time.time() - service.started_at))


@router.get(
    "/ready",
    responses={503: {"model": ReadyResponse, "description": "No model loaded yet"}},
    summary="Readiness: a model is loaded",
)
async def ready(service: ServiceDep, response: Response) -> ReadyResponse:
    """200 when this worker has a model to predict with, else 503 (e.g. no champion yet)."""
    model = service.manager.current
    if model is None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return ReadyResponse(
            status="not_ready", detail=service.manager.last_error or "model still loading"
        )
    return ReadyResponse(status="ready", model_version=model.version)
