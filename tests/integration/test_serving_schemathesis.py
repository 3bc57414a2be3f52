"""Property-based API test generated from the server's OpenAPI schema (schemathesis 4).

Positive and negative cases for every operation, sent to the real server; each response must
not be a 5xx, must reject schema-invalid requests with a 4xx, must use a documented status code
and content type, and must match its documented schema. The schema is built from the app
in-process (schemathesis' lazy ``from_fixture`` loader does not run under pytest 9) and checked
to be the one the server publishes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.conftest_serving import TRAIN_END, ServerHandle, replay_observations

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    negative_data_rejection,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _openapi() -> dict[str, Any]:
    """The schema of the app (built in-process; identical to what the server publishes)."""
    from rps.serving.app import create_app
    from rps.settings import Settings

    return create_app(Settings(state_dir=Path("/nonexistent"), model_dir=None)).openapi()


schema = schemathesis.openapi.from_dict(_openapi())


@pytest.fixture(scope="module", autouse=True)
def stored_observations(serving_server: ServerHandle) -> None:
    """Stored observations, so that GET /forecast can answer 200 (503 would be a server error)."""
    processed = serving_server.state_dir / "data" / "processed"
    processed.mkdir(parents=True, exist_ok=True)
    frame = replay_observations(TRAIN_END, TRAIN_END + pd.Timedelta(days=9))
    frame.to_parquet(processed / "observations.parquet", index=False)


def test_the_server_publishes_the_same_schema(serving_server: ServerHandle) -> None:
    """The schema under test is the one the running server serves."""
    served = httpx.get(f"{serving_server.url}/openapi.json", timeout=30).json()
    assert served == _openapi()


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_honours_its_openapi_schema(case: Any, serving_server: ServerHandle) -> None:
    """No generated request (valid or not) gets a 5xx or a response outside the schema."""
    case.call_and_validate(base_url=serving_server.url, checks=CHECKS, timeout=30)
