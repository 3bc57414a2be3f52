"""``GET /health``: liveness and readiness."""

from __future__ import annotations

import time

from fastapi import APIRouter

from rps.serving.deps import ServiceDep
from rps.serving.responses import OrjsonResponse
from rps.serving.schemas import HealthResponse

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "No model loaded"}},
    summary="Liveness and readiness",
)
async def health(service: ServiceDep) -> OrjsonResponse:
    """200 when a model is loaded and the service can predict, else 503 with the reason."""
    model = service.manager.current
    uptime = max(0.0, time.time() - service.started_at)
    if model is None:
        body = {
            "status": "unavailable",
            "model_loaded": False,
            "model_name": service.manager.name,
            "model_version": None,
            "uptime_seconds": uptime,
            "detail": service.manager.last_error or "model still loading",
        }
        return OrjsonResponse(body, status_code=503)
    return OrjsonResponse(
        {
            "status": "ok",
            "model_loaded": True,
            "model_name": model.name,
            "model_version": model.version,
            "uptime_seconds": uptime,
            "detail": None,
        }
    )
