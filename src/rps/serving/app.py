"""The FastAPI application factory of the prediction service.

Run it with ``rps serve`` (one or several uvicorn workers) or, for one worker,
``uvicorn --factory rps.serving.app:create_app``. Nothing happens at import time: the model is
loaded and the prediction log opened in the app's lifespan.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from rps.params import Params
from rps.serving.errors import InputError, UnavailableError
from rps.serving.fast_predict import PredictFastPath
from rps.serving.middleware import ServingMiddleware
from rps.serving.responses import OrjsonResponse
from rps.serving.routers import feedback, forecast, health, metrics, model, predict
from rps.serving.routing import add_body_schemas
from rps.serving.schemas import FeedbackRequest, PredictRequest
from rps.serving.service import PredictionService
from rps.settings import Settings, get_settings

logger = logging.getLogger(__name__)

_PREDICT_PATHS = frozenset({"/predict"})


def _error_items(errors: object) -> list[dict[str, object]]:
    """Validation errors without the echoed input (which may be the whole body)."""
    items: list[dict[str, object]] = []
    for error in jsonable_encoder(errors):
        loc = error.get("loc", ())
        items.append(
            {
                "loc": [part if isinstance(part, int | str) else str(part) for part in loc],
                "msg": str(error.get("msg", "")),
                "type": str(error.get("type", "value_error")),
            }
        )
    return items


def _document_request_bodies(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Put the bodies the endpoints validate themselves (:mod:`rps.serving.routing`) into the
    OpenAPI schema's components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            add_body_schemas(generate(), models)
        return generate()  # FastAPI's cached schema, now with the bodies

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


def _install_error_handlers(app: FastAPI, service: PredictionService) -> None:
    def count(request: Request, reason: str) -> None:
        if request.url.path in _PREDICT_PATHS:
            service.metrics.prediction_errors.labels(reason=reason).inc()

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> OrjsonResponse:
        count(request, "validation")
        return OrjsonResponse({"detail": _error_items(exc.errors())}, status_code=422)

    @app.exception_handler(InputError)
    async def on_input_error(request: Request, exc: InputError) -> OrjsonResponse:
        count(request, str(exc.errors[0].get("type", "invalid_input")))
        return OrjsonResponse({"detail": _error_items(exc.errors)}, status_code=422)

    @app.exception_handler(UnavailableError)
    async def on_unavailable(request: Request, exc: UnavailableError) -> OrjsonResponse:
        count(request, "no_model")
        return OrjsonResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot decode (e.g. not UTF-8): a validation error
            count(request, "validation")
            error = {
                "loc": ["body"],
                "msg": f"invalid request body: {exc.detail}",
                "type": "json_invalid",
            }
            return OrjsonResponse({"detail": [error]}, status_code=422)
        if exc.status_code == 503:
            count(request, "no_model")
        return OrjsonResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> OrjsonResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        count(request, "internal")
        return OrjsonResponse({"detail": "internal server error"}, status_code=500)


def create_app(settings: Settings | None = None, params: Params | None = None) -> FastAPI:
    """Build the prediction API.

    Args:
        settings: Runtime settings; default :func:`rps.settings.get_settings`.
        params: Validated ``params.yaml``; default: read from ``settings.params_file``.

    Returns:
        The app; its lifespan loads the model and opens the prediction log.
    """
    settings = settings or get_settings()
    service = PredictionService.from_settings(settings, params)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="RPS prediction service",
        summary="Hourly temperature forecasts with drift, accuracy and model monitoring",
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.service = service
    # /predict first: a request is matched against the routes in order, and it is the hot path
    for router in (predict.router, health.router, forecast.router, feedback.router, model.router):
        app.include_router(router)
    app.include_router(metrics.router)
    _document_request_bodies(app, (PredictRequest, FeedbackRequest))
    _install_error_handlers(app, service)
    known_paths = {getattr(route, "path", "") for route in app.routes} - {""}
    if settings.fast_predict:
        # added before ServingMiddleware, so it runs inside it: the request metrics and the body
        # limit stay; FastAPI's own layers are skipped for a successful POST /predict
        app.add_middleware(PredictFastPath, service=service)
    app.add_middleware(
        ServingMiddleware,
        metrics=service.metrics,
        max_body_bytes=settings.max_body_bytes,
        known_paths=known_paths,
    )
    return app
