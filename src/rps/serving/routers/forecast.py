"""``GET /forecast``: the forecast for the configured place from the stored observations."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from rps.serving.deps import ModelDep, ServiceDep
from rps.serving.responses import errors
from rps.serving.schemas import ForecastResponse

router = APIRouter(tags=["predictions"])


@router.get(
    "/forecast",
    response_model=ForecastResponse,
    responses=errors(503),
    summary="Forecast from the newest stored observations",
)
async def forecast(service: ServiceDep, model: ModelDep) -> ForecastResponse:
    """Read the newest cleaned observations the pipeline stored and forecast from them.

    503 when no observations are stored yet, their newest hours have gaps, or this
    installation cannot read parquet (the lean serving image has no pyarrow).
    """
    # reading a changed parquet file takes milliseconds: keep it off the event loop
    await asyncio.to_thread(service.stored_window, model)
    return service.forecast(model)
