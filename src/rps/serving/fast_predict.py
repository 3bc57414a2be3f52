"""``POST /predict`` answered in ASGI, ahead of FastAPI's routing, when the request succeeds.

For a one-row request FastAPI's machinery (the exception middleware, route matching, the
``Request`` object, the dependency solver, the response class) cost about as much server CPU as
the forecast itself (docs/BENCHMARKS.md, Serving). :class:`PredictFastPath` sits inside the
app's middleware (so the request metrics, the body size limit and the 500 handler apply as
before) and answers a ``POST /predict`` whose body is valid for the served model from the same
pieces the route uses: ``PredictRequest.model_validate_json`` and
:meth:`~rps.serving.service.PredictionService.answer`, serialized as
:class:`~rps.serving.responses.OrjsonResponse` would (the same bytes and headers). The most
common body, one feature row of numbers, skips the request model and the dict -> array loop:
:func:`one_plain_row` checks it after orjson and
:meth:`~rps.serving.service.PredictionService.answer_row` builds the array in one pass.

Every other request, and every ``POST /predict`` that does not succeed (a validation error, no
model, input the model cannot use, a client that disconnects), goes on to FastAPI with the body
it sent replayed: the route answers it exactly as without this path (status, error body, error
count). That is safe because ``service.answer`` raises before it counts, monitors or logs
anything. An unexpected exception propagates to the app's 500 handler, as from the route.
"""

from __future__ import annotations

from collections import deque

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rps.serving.errors import InputError
from rps.serving.schemas import PredictRequest
from rps.serving.service import PredictionService

PATH = "/predict"
#: the headers Starlette's ``JSONResponse`` sends (content-length first), for the same answer
_CONTENT_TYPE = (b"content-type", b"application/json")
_NUMBERS = frozenset({float, int})


async def _read_body(receive: Receive) -> tuple[bytes | None, list[Message]]:
    """The whole request body (None if the client went away first) and the messages read."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks), messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that first hands out ``messages`` again."""
    pending = deque(messages)

    async def replayed() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replayed


class PredictFastPath:
    """ASGI middleware: successful ``POST /predict`` requests answered without FastAPI."""

    def __init__(self, app: ASGIApp, *, service: PredictionService) -> None:
        """Wrap ``app``.

        Args:
            app: The rest of the ASGI stack (FastAPI's exception middleware and router).
            service: The app's prediction service.
        """
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a successful ``POST /predict``; hand everything else to ``app``."""
        if (
            scope["type"] != "http"
            or scope["path"] != PATH
            or scope["method"] != "POST"
            or scope.get("root_path")  # mounted below a prefix: leave the matching to Starlette
        ):
            await self.app(scope, receive, send)
            return
        body, messages = await _read_body(receive)
        answer = self._answer(body) if body is not None else None
        if answer is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode()), _CONTENT_TYPE],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    def _answer(self, body: bytes) -> bytes | None:
        """The JSON answer to a request body, or None when the route must answer it."""
        service = self.service
        model = service.manager.current
        if model is None:
            return None
        try:
            row = one_plain_row(body)
            answer = service.answer_row(model, row) if row is not None else None
            if answer is None:
                answer = service.answer(model, PredictRequest.model_validate_json(body))
        except (ValidationError, InputError):
            return None
        return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


def one_plain_row(body: bytes) -> dict[str, float] | None:
    """The row of the common body, ``{"rows": [{name: number, ...}]}`` (one row, numbers only),
    checked without pydantic; None for any other body (``PredictRequest`` validates it).

    Whatever this accepts, ``PredictRequest.model_validate_json`` accepts with the same row:
    both parsers keep the last of repeated keys, refuse ``NaN``, infinities and numbers beyond
    float range (orjson refuses them, so every float here is finite), and take integers as
    numbers; a boolean is not a number here, as there.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or len(data) != 1:
        return None
    rows = data.get("rows")
    if type(rows) is not list or len(rows) != 1:
        return None
    row = rows[0]
    # exact types: a bool is an int subclass, and a string numpy would convert
    if type(row) is not dict or not set(map(type, row.values())) <= _NUMBERS:
        return None
    return row
