"""``/model``: what is served, and hot reload or rollback (bearer token)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import APIRouter, HTTPException, status

from rps.serving.deps import AdminDep, ModelDep, ServiceDep
from rps.serving.predictor import ModelLoadError, NoPreviousModelError, SwapResult
from rps.serving.responses import errors
from rps.serving.schemas import ModelInfoResponse, ModelSwapResponse

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/model", tags=["model"])


@router.get("/info", responses=errors(503), summary="The served model and its lineage")
async def model_info(model: ModelDep) -> ModelInfoResponse:
    """Name, version, alias, run, dataset hash, code SHA, metrics, features and checksum."""
    return model.info()


async def _swap(
    service: ServiceDep,
    action: Literal["reload", "rollback"],
    swap: Callable[[], Awaitable[SwapResult]],
    refusals: tuple[type[Exception], ...],
) -> ModelSwapResponse:
    """Run one swap and count it; a refusal is a 409 naming the model still served."""
    try:
        result = await swap()
    except refusals as exc:
        service.metrics.model_swaps.labels(action=action, result="refused").inc()
        current = service.manager.current
        keeping = f"; still serving version {current.version}" if current else ""
        logger.warning("%s refused: %s", action, exc)
        raise HTTPException(status.HTTP_409_CONFLICT, f"{action} refused: {exc}{keeping}") from exc
    service.metrics.model_swaps.labels(action=action, result="ok").inc()
    return ModelSwapResponse(
        action=action,
        changed=result.changed,
        previous_version=result.previous.version if result.previous else None,
        model_version=result.current.version,
        checksum=result.current.checksum,
        detail=result.detail,
    )


@router.post(
    "/reload", responses=errors(401, 403, 409, 503), summary="Hot-swap to the current champion"
)
async def reload_model(service: ServiceDep, _admin: AdminDep) -> ModelSwapResponse:
    """Load the champion (``model_dir`` or the registry alias) and swap to it atomically.

    The candidate must download, pass its checksums, load and predict finite values on its
    reference sample; otherwise the answer is 409 naming the failed check, the refusal is
    counted in ``model_reload_failures_total{reason}`` and the current model stays. Requests in
    flight finish on the model they started with. Other workers follow within about a second.
    """
    return await _swap(service, "reload", service.manager.reload, (ModelLoadError,))


@router.post(
    "/rollback", responses=errors(401, 403, 409, 503), summary="Swap back to the previous model"
)
async def rollback_model(service: ServiceDep, _admin: AdminDep) -> ModelSwapResponse:
    """Serve the model that was served before the current one (409 when there is none)."""
    refusals = (ModelLoadError, NoPreviousModelError)
    return await _swap(service, "rollback", service.manager.rollback, refusals)
