"""The route class of every router: request bodies decoded with orjson.

FastAPI decodes a JSON body with ``Request.json()``, which is the standard library's
``json.loads``: for a one-row ``POST /predict`` (95 features) that was the largest single cost
of the request in the service itself. :class:`OrjsonRoute` hands the endpoint an
:class:`OrjsonRequest` instead (FastAPI's documented way to customise the request: a custom
``APIRoute.get_route_handler``). A body orjson refuses is decoded again by the standard
library, which reads ``NaN``, ``Infinity`` and numbers beyond float range (not JSON, but what
some clients send): the validation then names the field that holds one, as before. A body
neither can decode raises ``json.JSONDecodeError``, which FastAPI answers with a 422
``json_invalid``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute


class OrjsonRequest(Request):
    """A request whose ``json()`` is decoded by orjson."""

    async def json(self) -> Any:
        """The decoded body (cached, as Starlette does)."""
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:  # the error path only: see the module docstring
                self._json = json.loads(body)
        return self._json


class OrjsonRoute(APIRoute):
    """An API route whose endpoint receives an :class:`OrjsonRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given the request as an :class:`OrjsonRequest`."""
        handler = super().get_route_handler()

        async def orjson_route_handler(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return orjson_route_handler
