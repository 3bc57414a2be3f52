"""``POST /predict``: forecasts for feature rows or for a window of raw observations."""

from __future__ import annotations

from fastapi import APIRouter, Request

from rps.serving.deps import current_service
from rps.serving.responses import OrjsonResponse, errors
from rps.serving.routing import VALIDATION_ERROR, json_body, validated_body
from rps.serving.schemas import PredictRequest, PredictResponse

router = APIRouter(tags=["predictions"])


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses={**errors(413, 503), **VALIDATION_ERROR},
    openapi_extra=json_body(PredictRequest),
    summary="Forecast feature rows or an observation window",
)
async def predict(request: Request) -> OrjsonResponse:
    """Forecast the target ``horizon_hours`` ahead.

    Send either ``rows`` (every feature of the model per row, at most ``max_batch_rows``) or
    ``observations`` (at least ``window_hours`` consecutive hourly observations, oldest first);
    the server then builds the feature row for the newest hour, and the prediction is logged
    for live accuracy. With ``observations``, ``horizon_hours`` asks for another lead time
    (1 .. the model's ``max_horizon_hours``; only the model's own horizon is logged). Each
    forecast comes with its interval and the features that lie outside the training range.
    """
    # the body, the service and the model are read here, not through FastAPI's typed parameters
    # and Depends: their machinery is a visible share of a one-row request (rps.serving.routing).
    # A valid request is usually answered before it gets here, by rps.serving.fast_predict
    # (the same service code); this route answers the rest, every error included.
    body = await validated_body(request, PredictRequest)
    service = current_service(request)
    model = service.current_model()  # no model: UnavailableError, a 503
    # the body (typed as PredictBody) goes straight to orjson, 3-4x cheaper than building and
    # dumping the pydantic PredictResponse (bench/bench_serialization.py); the schemathesis
    # test checks the answers against PredictResponse
    return OrjsonResponse(service.answer(model, body))
