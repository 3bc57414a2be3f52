"""The prediction service: a FastAPI app with Prometheus metrics, drift, live accuracy and
hot model reload.

Import :func:`create_app` from :mod:`rps.serving.app`; this package imports nothing heavy so that
the launcher can set up the Prometheus multiprocess folder before ``prometheus_client`` loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rps.serving.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from rps.serving.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
