"""Request dependencies, as ``Annotated`` aliases for the routers."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rps.serving.errors import UnavailableError
from rps.serving.predictor import ServedModel
from rps.serving.service import PredictionService

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The value of RPS_API_TOKEN; required by POST /model/reload and /model/rollback.",
)


def current_service(request: Request) -> PredictionService:
    """The app's prediction service."""
    service: PredictionService = request.app.state.service
    return service


async def get_service(request: Request) -> PredictionService:
    """The app's prediction service (as a dependency)."""
    return current_service(request)


ServiceDep = Annotated[PredictionService, Depends(get_service)]


async def get_model(service: ServiceDep) -> ServedModel:
    """The current model, read once for the whole request (503 when none is loaded)."""
    try:
        return service.current_model()
    except UnavailableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


ModelDep = Annotated[ServedModel, Depends(get_model)]


async def require_admin(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Allow the request only with ``Authorization: Bearer <RPS_API_TOKEN>``.

    Raises:
        HTTPException: 503 when no token is configured, 401 without a bearer token, 403 with a
            wrong one.
    """
    token = service.settings.api_token
    expected = token.get_secret_value() if token is not None else ""
    if not expected:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "model management is disabled: RPS_API_TOKEN is not configured",
        )
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer <RPS_API_TOKEN>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid bearer token")


AdminDep = Annotated[None, Depends(require_admin)]
