"""``POST /predict`` ahead of FastAPI's routing (rps.serving.fast_predict): the same answers,
headers and metrics as the route, for good and bad requests alike."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from rps.data.sources.synthetic import SyntheticSource
from rps.models.bundle import load_bundle
from rps.params import load_params
from rps.serving import routing
from rps.serving.app import create_app
from rps.serving.fast_predict import PredictFastPath, one_plain_row
from rps.serving.routers import predict as predict_router
from rps.serving.schemas import PredictRequest
from rps.serving.service import PredictionService
from rps.settings import Settings
from tests.unit.serving.bundles import PARAMS_FILE

Request = dict[str, Any]  # TestClient.post keyword arguments


def _settings(tmp_path: Path, bundle_dir: Path, *, fast: bool) -> Settings:
    return Settings(
        state_dir=tmp_path / f"state-{int(fast)}",
        params_path=PARAMS_FILE,
        model_dir=bundle_dir,
        api_token=None,
        max_batch_rows=2,
        fast_predict=fast,
    )


@pytest.fixture
def clients(tmp_path: Path, bundle_dir: Path) -> Iterator[tuple[TestClient, TestClient]]:
    """(fast path on, fast path off) over the same bundle, each with its own state."""
    with (
        TestClient(create_app(_settings(tmp_path, bundle_dir, fast=True))) as fast,
        TestClient(create_app(_settings(tmp_path, bundle_dir, fast=False))) as route,
    ):
        yield fast, route


@pytest.fixture
def route_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the requests the FastAPI route itself reads the body of."""
    calls: list[int] = []

    async def counted(request: Any, model: Any) -> Any:
        calls.append(1)
        return await routing.validated_body(request, model)

    monkeypatch.setattr(predict_router, "validated_body", counted)
    return calls


def _row(bundle_dir: Path, **changes: float | str | None) -> dict[str, Any]:
    names = load_bundle(bundle_dir).feature_names
    return {**dict.fromkeys(names, 10.0), "horizon_hours": 6.0, **changes}


def _observations(hours: int = 169) -> list[dict[str, Any]]:
    params = load_params(PARAMS_FILE)
    times = pd.date_range("2024-03-01", periods=hours, freq="h", tz="UTC")
    frame = SyntheticSource(variables=params.data.variables).generate(times)
    return [
        {
            "time": row["time"].isoformat(),
            **{str(k): float(v) for k, v in row.items() if k != "time"},
        }
        for row in frame.to_dict("records")
    ]


def _chunks(*parts: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: iter(parts)


def _requests(bundle_dir: Path) -> dict[str, tuple[Request, int]]:
    """Requests by name: the keyword arguments of ``post`` and the status the route answers."""
    row = _row(bundle_dir)
    first = next(iter(row))
    times = ["2024-03-01T00:00:00Z", "2024-03-01T01:00:00Z"]
    missing = dict(row)
    del missing[first]
    ints = {"horizon_hours": 6}
    return {
        "one row": ({"json": {"rows": [row]}}, 200),
        "one row, out of range": ({"json": {"rows": [{**row, first: 1e6}]}}, 200),
        "two rows with issue times": (
            {"json": {"rows": [row, {**row, first: 12.5}], "issue_times": times}},
            200,
        ),
        "observations": ({"json": {"observations": _observations()}}, 200),
        "chunked row": (
            {
                "content": _chunks(b'{"rows": [', json.dumps(row).encode(), b"]}"),
                "headers": {"content-type": "application/json"},
            },
            200,
        ),
        "one row of integers": ({"json": {"rows": [dict.fromkeys(row, 10) | ints]}}, 200),
        "one row, repeated key": (
            {
                "content": b'{"rows": [%s, "%s": 11.5}]}'
                % (json.dumps(row)[:-1].encode(), first.encode())
            },
            200,
        ),
        "missing feature": ({"json": {"rows": [missing]}}, 422),
        "boolean value": ({"json": {"rows": [{**row, first: True}]}}, 422),
        "null value": ({"json": {"rows": [{**row, first: None}]}}, 422),
        "number beyond float range": (
            {"content": json.dumps({"rows": [row]}).replace("10.0", "1e999", 1).encode()},
            422,
        ),
        "repeated rows key": (
            {"content": b'{"rows": [], "rows": [%s]}' % json.dumps(row).encode()},
            200,
        ),
        "one row, non-finite forecast": (
            {"json": {"rows": [_row(bundle_dir, **_huge(row))]}},
            422,
        ),
        "unknown feature": ({"json": {"rows": [{**row, "nope": 1.0}]}}, 422),
        "string value": ({"json": {"rows": [{**row, first: "10"}]}}, 422),
        "NaN literal": ({"content": b'{"rows": [{"%s": NaN}]}' % first.encode()}, 422),
        "not JSON": ({"content": b"rows=1"}, 422),
        "not UTF-8": ({"content": b'{"rows": [{"\xff": 1}]}'}, 422),
        "empty body": ({"content": b""}, 422),
        "no rows": ({"json": {"rows": []}}, 422),
        "extra field": ({"json": {"rows": [row], "extra": 1}}, 422),
        "both inputs": ({"json": {"rows": [row], "observations": _observations(2)}}, 422),
        "other lead time": ({"json": {"rows": [_row(bundle_dir, horizon_hours=5.0)]}}, 422),
        "too many rows": ({"json": {"rows": [row, row, row]}}, 422),
        "non-finite forecast": ({"json": {"rows": [_row(bundle_dir, **_huge(row))]}}, 422),
    }


def _huge(row: dict[str, Any]) -> dict[str, float]:
    first, second = list(row)[:2]
    return {first: 1.7e308, second: 1.7e308}


def test_the_fast_path_answers_as_the_route(
    clients: tuple[TestClient, TestClient], bundle_dir: Path, route_calls: list[int]
) -> None:
    """Status, headers and body are the same with and without the fast path, for every case;
    the route sees only the requests that do not succeed."""
    fast, route = clients
    for name, (request, status) in _requests(bundle_dir).items():
        body = request.get("content")
        answers = []
        for client in (fast, route):
            kwargs = {**request, "content": body()} if callable(body) else request
            answers.append(client.post("/predict", **kwargs))
        quick, slow = answers
        assert slow.status_code == status, (name, slow.text)
        assert (quick.status_code, quick.content) == (slow.status_code, slow.content), name
        assert dict(quick.headers) == dict(slow.headers), name
    cases = _requests(bundle_dir).values()
    failing = sum(status != 200 for _request, status in cases)
    # the route app's route read every body, the fast app's route only the failing ones
    assert len(route_calls) == len(cases) + failing


def _series(client: TestClient) -> dict[str, str]:
    """The request, prediction and error series of ``/metrics`` (latency: the count only)."""
    wanted = re.compile(
        r"^(api_requests_total|api_request_latency_seconds_count|predictions_total|"
        r"prediction_errors_total|prediction_confidence_(count|sum))\b"
    )
    lines = client.get("/metrics").text.splitlines()
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in lines if wanted.match(line)}


def test_the_fast_path_moves_the_same_metrics(
    clients: tuple[TestClient, TestClient], bundle_dir: Path
) -> None:
    """Requests, latencies, predictions, interval widths, errors by reason, the drift window and
    the prediction log move the same with and without the fast path."""
    fast, route = clients
    row = _row(bundle_dir)
    first = next(iter(row))
    for client in (fast, route):
        for i in range(5):
            client.post("/predict", json={"rows": [{**row, first: 10.0 + i}]})
        client.post("/predict", json={"rows": [{**row, "nope": 1.0}]})
        client.post("/predict", content=b"{")
        logged = {"rows": [row], "issue_times": ["2024-03-01T00:00:00Z"]}
        assert client.post("/predict", json=logged).status_code == 200
    series = _series(fast)
    assert series == _series(route)
    predict_ok = 'api_requests_total{endpoint="/predict",method="POST",status="200"}'
    assert float(series[predict_ok]) == 6.0
    assert float(series["predictions_total"]) == 6.0
    assert float(series['prediction_errors_total{reason="validation"}']) == 1.0
    assert float(series['prediction_errors_total{reason="unknown_feature"}']) == 1.0
    services: list[PredictionService] = [c.app.state.service for c in (fast, route)]  # type: ignore[attr-defined]
    assert [s.drift.samples if s.drift else None for s in services] == [6, 6]
    for client in (fast, route):  # the logged forecast is joined by the realized value
        feedback = {"observations": [{"time": "2024-03-01T06:00:00Z", "temperature_2m": 20.0}]}
        assert client.post("/feedback", json=feedback).json()["joined"] == 1


@pytest.mark.parametrize(
    ("body", "plain"),
    [
        (b'{"rows": [{"a": 1.5, "b": 2}]}', {"a": 1.5, "b": 2}),
        (b' {"rows": [{"a": 1.5, "a": -0.0}]} ', {"a": -0.0}),
        (b'{"rows": [{}]}', {}),  # not the model's features: answer_row says None
        (b'{"rows": [{"a": 1.5}, {"a": 2.5}]}', None),  # batches: the request model
        (b'{"rows": [{"a": true}]}', None),
        (b'{"rows": [{"a": "1.5"}]}', None),
        (b'{"rows": [{"a": null}]}', None),
        (b'{"rows": [{"a": [1.5]}]}', None),
        (b'{"rows": [{"a": NaN}]}', None),
        (b'{"rows": [{"a": 1e999}]}', None),
        (b'{"rows": [{"a": 1.5}], "issue_times": ["2024-03-01T00:00:00Z"]}', None),
        (b'{"rows": {"a": 1.5}}', None),
        (b'[{"a": 1.5}]', None),
        (b"", None),
    ],
)
def test_one_plain_row_takes_only_what_the_request_model_takes(
    body: bytes, plain: dict[str, float] | None
) -> None:
    """The one-row parse accepts a subset of what PredictRequest accepts, with the same row."""
    row = one_plain_row(body)
    assert row == plain
    if row is not None:
        assert PredictRequest.model_validate_json(body).rows == [row]


def test_answer_row_is_answer(clients: tuple[TestClient, TestClient], bundle_dir: Path) -> None:
    """The one-row path of the service gives the answer of the general one; None (not an error)
    for a row without exactly the model's features."""
    fast, route = clients
    services: list[PredictionService] = [c.app.state.service for c in (fast, route)]  # type: ignore[attr-defined]
    row = _row(bundle_dir)
    one, other = services
    model = one.current_model()
    assert one.answer_row(model, row) == other.answer(model, PredictRequest(rows=[row]))
    assert one.answer_row(model, {**row, "nope": 1.0}) is None
    assert one.answer_row(model, {k: v for k, v in row.items() if k != "horizon_hours"}) is None


def _scope() -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/predict", "root_path": "", "headers": []}


def test_a_body_in_several_messages_is_read_whole_and_replayed(
    clients: tuple[TestClient, TestClient], bundle_dir: Path
) -> None:
    """The ASGI layer reads every message of the body; what it does not answer reaches the app
    with the same messages, in order (here: a client that went away mid-body)."""
    fast, _route = clients
    service: PredictionService = fast.app.state.service  # type: ignore[attr-defined]
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                return

    body = json.dumps({"rows": [_row(bundle_dir)]}).encode()

    def messages(*chunks: dict[str, Any]) -> Any:
        pending = list(chunks)

        async def receive() -> dict[str, Any]:
            return pending.pop(0)

        return receive

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    layer = PredictFastPath(app, service=service)
    half = len(body) // 2
    whole = messages(
        {"type": "http.request", "body": body[:half], "more_body": True},
        {"type": "http.request", "body": body[half:], "more_body": False},
    )
    asyncio.run(layer(_scope(), whole, send))
    assert (sent[0]["status"], seen) == (200, [])
    assert orjson.loads(sent[1]["body"])["predictions"][0]["prediction"] == pytest.approx(20.5)

    gone: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[:half], "more_body": True},
        {"type": "http.disconnect"},
    ]
    asyncio.run(layer(_scope(), messages(*gone), send))
    assert seen == gone
    assert len(sent) == 2  # nothing more was sent
