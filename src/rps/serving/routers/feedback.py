"""``POST /feedback``: realized values, joined to logged predictions for live accuracy."""

from __future__ import annotations

from fastapi import APIRouter, Request

from rps.serving.deps import ServiceDep
from rps.serving.responses import errors
from rps.serving.routing import VALIDATION_ERROR, json_body, validated_body
from rps.serving.schemas import FeedbackRequest, FeedbackResponse

router = APIRouter(tags=["monitoring"])


@router.post(
    "/feedback",
    responses={**errors(413, 503), **VALIDATION_ERROR},
    openapi_extra=json_body(FeedbackRequest),
    summary="Report realized values",
)
async def feedback(request: Request, service: ServiceDep) -> FeedbackResponse:
    """Store realized target values and update live RMSE/MAE.

    Each observation needs ``time`` and the target variable; predictions whose target time
    matches are joined, and the live metrics cover the newest ``live_accuracy_window`` joined
    predictions.
    """
    body = await validated_body(request, FeedbackRequest)
    return service.feedback(body.observations)
