"""JSON request bodies, parsed and validated by pydantic-core in one pass.

A typed body parameter makes FastAPI decode the JSON (the standard library's ``json.loads``),
then validate the Python objects through its dependency machinery: for a one-row
``POST /predict`` that was the largest cost of the request in the service itself
(docs/BENCHMARKS.md, Serving). The endpoints that take a body read it with
:func:`validated_body` instead, which hands the raw bytes to ``model_validate_json``.

The answers stay those of a typed parameter: errors raise FastAPI's ``RequestValidationError``
with their locations under ``"body"`` (a 422); pydantic-core's JSON parser reads ``NaN``,
``Infinity`` and numbers beyond float range (not JSON, but what some clients send), so the
validation names the field that holds one; a body that is not JSON, or not UTF-8, is a
``json_invalid`` error at ``["body"]``.

:func:`json_body` documents such a body in the OpenAPI schema (``openapi_extra``) and
:func:`add_body_schemas` puts the models it names into the schema's components.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import (
    validation_error_definition,
    validation_error_response_definition,
)
from pydantic import BaseModel, ValidationError

BodyT = TypeVar("BodyT", bound=BaseModel)

_COMPONENTS = "#/components/schemas/"


async def validated_body(request: Request, model: type[BodyT]) -> BodyT:
    """The request's JSON body as ``model``.

    Raises:
        RequestValidationError: the body is not JSON or not a valid ``model``.
    """
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` of an operation whose required JSON body is a ``model``."""
    schema = {"$ref": f"{_COMPONENTS}{model.__name__}"}
    return {"requestBody": {"content": {"application/json": {"schema": schema}}, "required": True}}


#: the ``responses`` entry of the 422 that :func:`validated_body` raises (FastAPI's own)
VALIDATION_ERROR: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "Validation Error",
        "content": {"application/json": {"schema": {"$ref": f"{_COMPONENTS}HTTPValidationError"}}},
    }
}


def add_body_schemas(openapi: dict[str, Any], models: Iterable[type[BaseModel]]) -> None:
    """Add the JSON schemas of ``models`` (and the models they use) to ``openapi``'s components,
    with FastAPI's validation error schemas that :data:`VALIDATION_ERROR` names.

    A component FastAPI already generated (the same model used by a response) is kept.
    """
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ValidationError", validation_error_definition)
    components.setdefault("HTTPValidationError", validation_error_response_definition)
    for model in models:
        schema = model.model_json_schema(ref_template=_COMPONENTS + "{model}")
        for name, definition in schema.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault(model.__name__, schema)
