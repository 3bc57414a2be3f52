"""``POST /feedback``: realized values, joined to logged predictions for live accuracy."""

from __future__ import annotations

from fastapi import APIRouter

from rps.serving.deps import ServiceDep
from rps.serving.responses import errors
from rps.serving.routing import OrjsonRoute
from rps.serving.schemas import FeedbackRequest, FeedbackResponse

router = APIRouter(tags=["monitoring"], route_class=OrjsonRoute)


@router.post("/feedback", responses=errors(413, 503), summary="Report realized values")
async def feedback(body: FeedbackRequest, service: ServiceDep) -> FeedbackResponse:
    """Store realized target values and update live RMSE/MAE.

    Each observation needs ``time`` and the target variable; predictions whose target time
    matches are joined, and the live metrics cover the newest ``live_accuracy_window`` joined
    predictions.
    """
    return service.feedback(body.observations)
