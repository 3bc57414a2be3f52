"""ASGI middleware: request metrics by route template, and the request body size limit."""

from __future__ import annotations

import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rps.serving.metrics import ServingMetrics

OTHER_ENDPOINT = "other"


class _BodyTooLargeError(Exception):
    pass


class ServingMiddleware:
    """Counts and times every HTTP request; refuses bodies above ``max_body_bytes`` with 413.

    The limit is enforced before the body is parsed: from ``Content-Length`` when the client
    sends one, else (chunked uploads) by reading at most ``max_body_bytes + 1`` bytes here.
    """

    def __init__(
        self, app: ASGIApp, *, metrics: ServingMetrics, max_body_bytes: int, known_paths: set[str]
    ) -> None:
        """Wrap ``app``.

        Args:
            app: The ASGI app.
            metrics: Where requests are counted.
            max_body_bytes: Largest accepted request body.
            known_paths: Route templates, to label requests refused before routing.
        """
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_and_record(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            receive_body = await self._limit_body(scope, receive)
            await self.app(scope, receive_body, send_and_record)
        except _BodyTooLargeError:
            if response_started:
                raise
            await self._reject_too_large(send_and_record)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None)
            if not isinstance(endpoint, str):
                path = scope.get("path", "")
                endpoint = path if path in self.known_paths else OTHER_ENDPOINT
            self.metrics.observe_request(
                scope.get("method", "GET"), endpoint, status, time.perf_counter() - started
            )

    async def _limit_body(self, scope: Scope, receive: Receive) -> Receive:
        length: int | None = None
        chunked = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if length is not None:
            if length > self.max_body_bytes:
                raise _BodyTooLargeError
            return receive  # the server delivers no more than Content-Length bytes
        if not chunked:
            return receive
        # chunked: buffer at most the limit, then replay the body to the app
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body_bytes:
                raise _BodyTooLargeError
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _reject_too_large(self, send: Send) -> None:
        body = orjson.dumps(
            {
                "detail": f"request body exceeds max_body_bytes={self.max_body_bytes} bytes "
                "(RPS_MAX_BODY_BYTES)"
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
