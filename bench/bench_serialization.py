"""Serializing the ``POST /predict`` answer: orjson on the TypedDict body vs the pydantic model.

Three ways, per answer of 1 and of 100 forecasts (median of timed batches, microseconds):

* ``orjson``: what the route does, ``orjson.dumps`` of the dict the service builds;
* ``pydantic``: FastAPI's typed path (route returns a ``PredictResponse``, no custom response
  class): build the model from the same values, re-validate it as FastAPI does, then
  ``dump_json`` in pydantic-core;
* ``pydantic_from_dict``: validate the dict into the model, then ``dump_json``.

Usage: ``.venv/bin/python bench/bench_serialization.py``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import TypeAdapter

from rps.serving.schemas import Prediction, PredictResponse


def _per_call(func: Callable[[], object], seconds: float = 1.0) -> float:
    func()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 7:
        start = time.perf_counter()
        for _ in range(100):
            func()
        samples.append((time.perf_counter() - start) / 100)
    return statistics.median(samples) * 1e6


def _body(n: int) -> dict[str, Any]:
    issued = datetime(2024, 5, 1, 12, tzinfo=UTC)
    return {
        "model_name": "rps-temperature-forecaster",
        "model_version": "3",
        "target": "temperature_2m",
        "horizon_hours": 6,
        "interval_alpha": 0.1,
        "predictions": [
            {
                "prediction": 21.123456 + i,
                "lower": 19.5,
                "upper": 23.7,
                "ood_features": [],
                "issue_time": issued,
                "target_time": issued + timedelta(hours=6),
            }
            for i in range(n)
        ],
    }


def main() -> None:
    adapter = TypeAdapter(PredictResponse)
    results: dict[str, dict[str, float]] = {}
    for n in (1, 100):
        body = _body(n)

        def typed(body: dict[str, Any] = body) -> bytes:
            model = PredictResponse(
                model_name=body["model_name"],
                model_version=body["model_version"],
                target=body["target"],
                horizon_hours=body["horizon_hours"],
                interval_alpha=body["interval_alpha"],
                predictions=[Prediction(**item) for item in body["predictions"]],
            )
            return adapter.dump_json(adapter.validate_python(model))

        results[f"{n}_forecasts"] = {
            "orjson_us": _per_call(lambda body=body: orjson.dumps(body)),  # type: ignore[misc]
            "pydantic_us": _per_call(typed),
            "pydantic_from_dict_us": _per_call(
                lambda body=body: adapter.dump_json(adapter.validate_python(body))  # type: ignore[misc]
            ),
        }
    sys.stdout.write(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
