"""The JSON response class (orjson) and the documented error responses."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse

from rps.serving.schemas import ErrorResponse


class OrjsonResponse(JSONResponse):
    """JSON rendered with orjson (numpy arrays and datetimes natively)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialize ``content``."""
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error codes answered with ``ErrorResponse``."""
    descriptions = {
        401: "Missing bearer token",
        403: "Invalid bearer token",
        409: "The candidate model was refused; the current model stays",
        413: "Request body larger than max_body_bytes",
        503: "Not available (no model loaded, or nothing stored yet)",
    }
    return {
        code: {"model": ErrorResponse, "description": descriptions.get(code, "Error")}
        for code in codes
    }
