"""Bad input never yields a 5xx: each case gets its 4xx and a message naming the field."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

from tests.integration.conftest_serving import (
    TRAIN_END,
    ServerHandle,
    feature_rows,
    feature_spec,
    observation_window,
    replay_observations,
)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Inputs:
    row: dict[str, float]
    observations: list[dict[str, Any]]


@pytest.fixture(scope="module")
def inputs() -> Inputs:
    from rps.features.build import build_features

    spec = feature_spec()
    end = TRAIN_END + pd.Timedelta(days=9)
    frame = replay_observations(end - pd.Timedelta(days=9), end)
    features = build_features(frame, spec).dropna(subset=spec.feature_names)
    return Inputs(
        row=feature_rows(features.tail(1), spec.feature_names)[0],
        observations=observation_window(frame.tail(spec.window_hours)),
    )


@dataclass(frozen=True)
class Case:
    """A request: JSON ``body`` or raw ``content``, and the expected status and message part."""

    path: str
    status: int
    mentions: str
    body: Callable[[Inputs], Any] | None = None
    content: Callable[[Inputs], bytes | Iterator[bytes]] | None = None
    headers: dict[str, str] | None = None


def _row(inputs: Inputs, **changes: Any) -> dict[str, Any]:
    return {**inputs.row, **changes}


def _without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


def _obs(inputs: Inputs, index: int, **changes: Any) -> list[dict[str, Any]]:
    window = [dict(o) for o in inputs.observations]
    window[index].update(changes)
    return window


def _raw(text: str) -> Callable[[Inputs], bytes]:
    return lambda inputs: text.encode()


def _row_with_literal(value: str) -> Callable[[Inputs], bytes]:
    def build(inputs: Inputs) -> bytes:
        row = json.dumps({"rows": [inputs.row]})
        return row.replace('"temperature_2m": ', f'"temperature_2m": {value}, "_x": ', 1).encode()

    return build


def _chunks(size: int) -> Callable[[Inputs], Iterator[bytes]]:
    def build(inputs: Inputs) -> Iterator[bytes]:
        yield b'{"rows": [' + b" " * size
        yield b"]}"

    return build


CASES: dict[str, Case] = {
    "feature as a string": Case(
        "/predict",
        422,
        "temperature_2m",
        body=lambda i: {"rows": [_row(i, temperature_2m="12.5")]},
    ),
    "feature as a boolean": Case(
        "/predict", 422, "cloud_cover", body=lambda i: {"rows": [_row(i, cloud_cover=True)]}
    ),
    "feature as null": Case(
        "/predict", 422, "wind_u", body=lambda i: {"rows": [_row(i, wind_u=None)]}
    ),
    "missing feature": Case(
        "/predict",
        422,
        "dew_point_2m_lag24",
        body=lambda i: {"rows": [_without(i.row, "dew_point_2m_lag24")]},
    ),
    "unknown feature": Case(
        "/predict", 422, "precipitation", body=lambda i: {"rows": [_row(i, precipitation=0.0)]}
    ),
    "NaN feature": Case(
        "/predict",
        422,
        "finite",
        content=_row_with_literal("NaN"),
        headers={"content-type": "application/json"},
    ),
    "infinite feature": Case(
        "/predict",
        422,
        "finite",
        content=_row_with_literal("-Infinity"),
        headers={"content-type": "application/json"},
    ),
    "overflowing feature": Case(
        "/predict",
        422,
        "finite",
        content=_row_with_literal("1e999"),
        headers={"content-type": "application/json"},
    ),
    "empty batch": Case("/predict", 422, "rows", body=lambda i: {"rows": []}),
    "batch above max_batch_rows": Case(
        "/predict", 422, "max_batch_rows", body=lambda i: {"rows": [i.row] * 65}
    ),
    "rows not a list": Case("/predict", 422, "rows", body=lambda i: {"rows": i.row}),
    "row not an object": Case("/predict", 422, "rows", body=lambda i: {"rows": [[1.0, 2.0]]}),
    "neither rows nor observations": Case("/predict", 422, "exactly one", body=lambda i: {}),
    "both rows and observations": Case(
        "/predict",
        422,
        "exactly one",
        body=lambda i: {"rows": [i.row], "observations": i.observations},
    ),
    "unknown top-level field": Case(
        "/predict", 422, "features", body=lambda i: {"rows": [i.row], "features": {}}
    ),
    "issue_times of another length": Case(
        "/predict",
        422,
        "issue_times",
        body=lambda i: {"rows": [i.row], "issue_times": ["2023-05-01T00:00:00Z"] * 2},
    ),
    "observation window too short": Case(
        "/predict", 422, "169", body=lambda i: {"observations": i.observations[-24:]}
    ),
    "observation window with a gap": Case(
        "/predict",
        422,
        "gap",
        body=lambda i: {
            "observations": i.observations[:50] + i.observations[51:] + i.observations[-1:]
        },
    ),
    "observations not in time order": Case(
        "/predict",
        422,
        "increasing",
        body=lambda i: {"observations": i.observations[::-1]},
    ),
    "observation lacks a variable": Case(
        "/predict",
        422,
        "cloud_cover",
        body=lambda i: {"observations": [_without(o, "cloud_cover") for o in i.observations]},
    ),
    "observation has an unknown variable": Case(
        "/predict",
        422,
        "snow_depth",
        body=lambda i: {"observations": _obs(i, -1, snow_depth=0.0)},
    ),
    "observation time not on the hour": Case(
        "/predict",
        422,
        "on the hour",
        body=lambda i: {"observations": _obs(i, 0, time="2023-05-01T00:30:00Z")},
    ),
    "observation time not a time": Case(
        "/predict", 422, "time", body=lambda i: {"observations": _obs(i, 3, time="yesterday")}
    ),
    "issue time at the end of the calendar": Case(
        "/predict",
        422,
        "year",
        body=lambda i: {"rows": [i.row], "issue_times": ["9999-12-31T23:00:00Z"]},
    ),
    "observation window at the end of the calendar": Case(
        "/predict",
        422,
        "year",
        body=lambda i: {
            "observations": [
                {**o, "time": f"9999-12-{1 + k // 24:02d}T{k % 24:02d}:00:00Z"}
                for k, o in enumerate(i.observations)
            ]
        },
    ),
    "observation value as a string": Case(
        "/predict",
        422,
        "surface_pressure",
        body=lambda i: {"observations": _obs(i, 5, surface_pressure="high")},
    ),
    "body not JSON": Case(
        "/predict",
        422,
        "JSON",
        content=_raw("rows=1&x=2"),
        headers={"content-type": "application/json"},
    ),
    "body a JSON array": Case("/predict", 422, "body", body=lambda i: [i.row]),
    "empty body": Case(
        "/predict", 422, "body", content=_raw(""), headers={"content-type": "application/json"}
    ),
    "oversized body": Case(
        "/predict", 413, "max_body_bytes", body=lambda i: {"rows": [i.row] * 200}
    ),
    "oversized chunked body": Case(
        "/predict",
        413,
        "max_body_bytes",
        content=_chunks(400_000),
        headers={"content-type": "application/json"},
    ),
    "feedback without the target": Case(
        "/feedback",
        422,
        "temperature_2m",
        body=lambda i: {"observations": [{"time": "2023-05-01T00:00:00Z", "dew_point_2m": 3.0}]},
    ),
    "feedback target as a string": Case(
        "/feedback",
        422,
        "temperature_2m",
        body=lambda i: {"observations": [{"time": "2023-05-01T00:00:00Z", "temperature_2m": "x"}]},
    ),
    "feedback with no observations": Case(
        "/feedback", 422, "observations", body=lambda i: {"observations": []}
    ),
    "feedback without a time": Case(
        "/feedback", 422, "time", body=lambda i: {"observations": [{"temperature_2m": 3.0}]}
    ),
    "reload without a token": Case("/model/reload", 401, "bearer", body=lambda i: None),
    "reload with a wrong token": Case(
        "/model/reload",
        403,
        "token",
        body=lambda i: None,
        headers={"Authorization": "Bearer not-the-token"},
    ),
    "rollback with another scheme": Case(
        "/model/rollback",
        401,
        "bearer",
        body=lambda i: None,
        headers={"Authorization": "Basic dXNlcjpwYXNz"},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_a_4xx_naming_the_field(
    name: str, serving_server: ServerHandle, inputs: Inputs
) -> None:
    """Each malformed request gets its 4xx, with a message that names what is wrong."""
    case = CASES[name]
    with serving_server.client() as client:
        if case.content is not None:
            response = client.post(case.path, content=case.content(inputs), headers=case.headers)
        else:
            body = case.body(inputs) if case.body is not None else None
            kwargs: dict[str, Any] = {"headers": case.headers}
            if body is not None:
                kwargs["json"] = body
            response = client.post(case.path, **kwargs)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert case.mentions.lower() in response.text.lower(), response.text


def test_refused_predictions_are_counted_by_reason(
    serving_server: ServerHandle, inputs: Inputs
) -> None:
    """prediction_errors_total counts refused /predict requests by reason."""
    before = serving_server.metrics()
    with serving_server.client() as client:
        client.post("/predict", json={"rows": []})
        client.post("/predict", json={"rows": [_row(inputs, bogus=1.0)]})
    after = serving_server.metrics()
    for reason in ("validation", "unknown_feature"):
        key = f'prediction_errors_total{{reason="{reason}"}}'
        assert after[key] - before.get(key, 0.0) == 1
