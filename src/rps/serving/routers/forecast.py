"""``GET /forecast``: the forecast for the configured place from the stored observations."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from rps.serving.deps import ModelDep, ServiceDep
from rps.serving.responses import OrjsonResponse, errors
from rps.serving.schemas import MAX_HORIZON_HOURS, ForecastResponse

HoursQuery = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_HORIZON_HOURS,
        description="Also return the trajectory: every hour 1..N, each with its interval "
        "(N at most the model's `max_horizon_hours`, GET /model/info).",
    ),
]

router = APIRouter(tags=["predictions"])


@router.get(
    "/forecast",
    response_model=ForecastResponse,
    responses=errors(503),  # 422: FastAPI's validation error, also for hours beyond the model
    summary="Forecast (and the trajectory) from the newest stored observations",
)
async def forecast(
    service: ServiceDep, model: ModelDep, hours: HoursQuery = None
) -> OrjsonResponse:
    """Read the newest cleaned observations the pipeline stored and forecast from them.

    With ``?hours=N`` the answer also holds the trajectory: the forecast and its interval for
    every hour 1..N. 422 when N is more than the served model forecasts; 503 when no
    observations are stored yet, their newest hours have gaps, or this installation cannot
    read parquet (the lean serving image has no pyarrow).
    """
    # reading a changed parquet file takes milliseconds: keep it off the event loop
    await asyncio.to_thread(service.stored_window, model)
    # the body (typed as ForecastBody) goes straight to orjson, as POST /predict's does; the
    # schemathesis test checks the answers against ForecastResponse
    return OrjsonResponse(service.forecast(model, hours))
