"""The service paths in-process (TestClient): observations, feedback, forecast, body limits,
reload and rollback. The real-server versions of these live in tests/integration."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from rps.data.sources.synthetic import SyntheticSource
from rps.params import load_params
from rps.serving.app import create_app
from rps.settings import Settings
from tests.unit.serving.bundles import PARAMS_FILE, linear_bundle

TOKEN = {"Authorization": "Bearer unit-token"}


def _client(tmp_path: Path, model_dir: Path, **settings: object) -> Iterator[TestClient]:
    app = create_app(
        Settings(
            state_dir=tmp_path / "state",
            params_path=PARAMS_FILE,
            model_dir=model_dir,
            api_token=SecretStr("unit-token"),
            **settings,  # type: ignore[arg-type]
        )
    )
    with TestClient(app) as client:
        yield client


@pytest.fixture
def client(tmp_path: Path, bundle_dir: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path, bundle_dir, max_body_bytes=200_000)


def _observations(hours: int = 169) -> pd.DataFrame:
    params = load_params(PARAMS_FILE)
    times = pd.date_range("2024-03-01", periods=hours, freq="h", tz="UTC")
    return SyntheticSource(variables=params.data.variables).generate(times)


def _as_json(frame: pd.DataFrame) -> list[dict[str, object]]:
    return [
        {"time": row["time"].isoformat(), **{k: float(v) for k, v in row.items() if k != "time"}}
        for row in frame.to_dict("records")
    ]


def test_observation_window_forecast_is_logged_and_joined_by_feedback(
    client: TestClient,
) -> None:
    """The newest hour's row is forecast, its target time logged, and feedback scores it."""
    frame = _observations()
    response = client.post("/predict", json={"observations": _as_json(frame)})
    assert response.status_code == 200, response.text
    item = response.json()["predictions"][0]
    last = frame.iloc[-1]
    expected = last["temperature_2m"] + last["relative_humidity_2m"] + 0.5
    assert item["prediction"] == pytest.approx(expected)
    assert pd.Timestamp(item["target_time"]) == last["time"] + pd.Timedelta(hours=6)

    actual = expected - 3.0
    feedback = client.post(
        "/feedback",
        json={"observations": [{"time": item["target_time"], "temperature_2m": actual}]},
    ).json()
    assert (feedback["joined"], feedback["live_samples"]) == (1, 1)
    assert feedback["live_rmse"] == pytest.approx(3.0)
    assert "live_rmse 3.0" in client.get("/metrics").text


def test_forecast_reads_the_newest_stored_observations(client: TestClient, tmp_path: Path) -> None:
    """GET /forecast answers from processed/observations.parquet."""
    assert client.get("/forecast").status_code == 503
    processed = tmp_path / "state" / "data" / "processed"
    processed.mkdir(parents=True)
    frame = _observations(200)
    frame.to_parquet(processed / "observations.parquet", index=False)
    body = client.get("/forecast").json()
    assert pd.Timestamp(body["issue_time"]) == frame["time"].iloc[-1]
    assert body["location"] == "Greensboro, NC"
    assert client.get("/forecast").json() == body  # cached read, same answer


def test_bodies_above_the_limit_are_refused_before_parsing(client: TestClient) -> None:
    """413 from Content-Length and from a chunked upload; a small chunked body passes."""
    big = b'{"rows": [' + b" " * 250_000 + b"]}"
    assert client.post("/predict", content=big).status_code == 413

    def chunks(size: int) -> Iterator[bytes]:
        yield b'{"rows": ['
        yield b" " * size
        yield b"]}"

    chunked = client.post(
        "/predict", content=chunks(250_000), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413
    assert "max_body_bytes" in chunked.text
    small = client.post(
        "/predict", content=chunks(10), headers={"content-type": "application/json"}
    )
    assert small.status_code == 422  # parsed: an empty batch


def _version_of(client: TestClient) -> Callable[[], str]:
    return lambda: str(client.get("/health").json()["model_version"])


def test_reload_and_rollback_swap_in_process(tmp_path: Path, bundle_dir: Path) -> None:
    """Reload follows the model_dir link; a corrupt bundle is refused; rollback goes back."""
    second = linear_bundle(tmp_path / "v8", version="8", intercept=1.5)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(second, corrupt)
    (corrupt / "params.json").write_text('{"tampered": true}')
    link = tmp_path / "current"
    link.symlink_to(bundle_dir)
    for client in _client(tmp_path, link):
        version = _version_of(client)
        assert version() == "7"
        link.unlink()
        link.symlink_to(second)
        swapped = client.post("/model/reload", headers=TOKEN).json()
        assert (swapped["changed"], swapped["previous_version"], version()) == (True, "7", "8")
        link.unlink()
        link.symlink_to(corrupt)
        refused = client.post("/model/reload", headers=TOKEN)
        assert refused.status_code == 409
        assert "checksum" in refused.json()["detail"]
        assert version() == "8"
        assert client.post("/model/rollback", headers=TOKEN).status_code == 200
        assert version() == "7"
        assert client.post("/model/rollback", headers=TOKEN).status_code == 409
