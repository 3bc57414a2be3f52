"""``GET /metrics``: the Prometheus exposition (all workers aggregated)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from rps.serving.deps import ServiceDep

router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics",
)
async def metrics(service: ServiceDep) -> Response:
    """Counters, histograms and gauges of the service (see docs/MONITORING.md)."""
    service.refresh_drift()  # this worker's window, current as of the scrape
    service.join_stored_actuals()  # truth that arrived with newly ingested observations
    # the trajectory of the stored window; reading a changed parquet file takes milliseconds
    await asyncio.to_thread(service.refresh_trajectory)
    body, content_type = service.metrics.render()
    return Response(body, media_type=content_type)
