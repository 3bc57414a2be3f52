"""The two ways a request fails after validation: unusable input (422) or unavailable (503)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class InputError(ValueError):
    """A request that is valid JSON of the right shape but unusable with the served model;
    becomes a 422.

    Attributes:
        errors: FastAPI-style ``{"loc", "msg", "type"}`` items naming the offending fields.
    """

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(str(e["msg"]) for e in errors))
        self.errors = errors

    @classmethod
    def at(cls, loc: Sequence[str | int], msg: str, kind: str = "value_error") -> InputError:
        return cls([error_item(loc, msg, kind)])


def error_item(loc: Sequence[str | int], msg: str, kind: str = "value_error") -> dict[str, Any]:
    """One FastAPI-style error item for the request body field at ``loc``."""
    return {"loc": ["body", *loc], "msg": msg, "type": kind}


class UnavailableError(RuntimeError):
    """The service cannot answer now (no model, no stored observations); becomes a 503."""
