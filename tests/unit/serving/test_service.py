"""The service paths in-process (TestClient): observations, feedback, forecast, body limits,
reload and rollback. The real-server versions of these live in tests/integration."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from rps.data.sources.synthetic import SyntheticSource
from rps.params import load_params
from rps.serving.app import create_app
from rps.settings import Settings
from tests.unit.serving.bundles import PARAMS_FILE, linear_bundle, trajectory_bundle

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


@pytest.fixture
def trajectory_client(tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path, trajectory_bundle(tmp_path / "trajectory"))


def _store(tmp_path: Path, frame: pd.DataFrame) -> None:
    processed = tmp_path / "state" / "data" / "processed"
    processed.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(processed / "observations.parquet", index=False)


def test_forecast_hours_returns_the_trajectory_with_an_interval_per_hour(
    trajectory_client: TestClient, tmp_path: Path
) -> None:
    """?hours=48: every hour 1..48, lower < prediction < upper, wider further ahead."""
    frame = _observations(200)
    _store(tmp_path, frame)
    body = trajectory_client.get("/forecast", params={"hours": 48}).json()
    points = body["trajectory"]
    issue = frame["time"].iloc[-1]
    assert [p["horizon_hours"] for p in points] == list(range(1, 49))
    assert all(p["lower"] < p["prediction"] < p["upper"] for p in points)
    assert pd.Timestamp(points[23]["target_time"]) == issue + pd.Timedelta(hours=24)
    now = frame["temperature_2m"].iloc[-1]
    assert all(p["prediction"] == pytest.approx(now) for p in points)  # persistence
    widths = [p["upper"] - p["lower"] for p in points]
    assert widths[47] == pytest.approx(widths[0] * np.sqrt(48))
    six = points[5]
    assert (body["prediction"], body["lower"], body["upper"]) == (
        six["prediction"],
        six["lower"],
        six["upper"],
    )
    assert body["horizon_hours"] == 6 and body["interval_alpha"] == 0.1
    assert trajectory_client.get("/forecast").json()["trajectory"] is None
    info = trajectory_client.get("/model/info").json()
    assert info["max_horizon_hours"] == 48 and info["horizon_interval"]["alpha"] == 0.1


def test_trajectory_forecasts_are_logged_and_their_errors_rescale_each_horizon(
    trajectory_client: TestClient, tmp_path: Path
) -> None:
    """Every hour of a /forecast trajectory is logged; once realized values are joined, the
    next forecasts' intervals are rescaled by each horizon's factor (here: errors at three
    quarters of the upper offset -> intervals 0.75 as wide), which /metrics publishes."""
    from prometheus_client.parser import text_string_to_metric_families

    from rps.models.interval_rescale import Rescale

    _store(tmp_path, _observations(200))

    def factors() -> dict[str, float]:
        return {
            sample.labels["horizon_hours"]: sample.value
            for family in text_string_to_metric_families(trajectory_client.get("/metrics").text)
            if family.name == "interval_rescale_factor"
            for sample in family.samples
        }

    assert factors() == {str(h): 1.0 for h in range(1, 49)}  # nothing joined yet: as trained
    before = trajectory_client.get("/forecast", params={"hours": 48}).json()["trajectory"]
    service = trajectory_client.app.state.service  # type: ignore[attr-defined]
    service.prediction_log.rescale = Rescale(window=1, min_samples=1)  # one error decides
    service.interval_factors.ttl_s = 0
    realized = [
        {
            "time": p["target_time"],
            "temperature_2m": p["prediction"] + 0.75 * (p["upper"] - p["prediction"]),
        }
        for p in before
    ]
    feedback = trajectory_client.post("/feedback", json={"observations": realized}).json()
    assert feedback["joined"] == 48 and feedback["live_samples"] == 1  # +6 h only
    after = trajectory_client.get("/forecast", params={"hours": 48}).json()["trajectory"]
    for old, new in zip(before, after, strict=True):
        assert new["prediction"] == old["prediction"]
        assert new["upper"] - new["lower"] == pytest.approx(0.75 * (old["upper"] - old["lower"]))
    published = factors()
    assert set(published) == {str(h) for h in range(1, 49)}
    assert all(value == pytest.approx(0.75) for value in published.values())


def test_no_interval_factor_is_published_with_the_rescale_off(
    trajectory_client: TestClient,
) -> None:
    service = trajectory_client.app.state.service  # type: ignore[attr-defined]
    assert "interval_rescale_factor{" in trajectory_client.get("/metrics").text
    service.prediction_log.rescale = None  # horizons.rescale.enabled: false
    assert "interval_rescale_factor" not in trajectory_client.get("/metrics").text


@pytest.mark.parametrize("hours", [0, 49, 200])
def test_forecast_hours_beyond_the_trajectory_are_refused(
    trajectory_client: TestClient, tmp_path: Path, hours: int
) -> None:
    _store(tmp_path, _observations(200))
    response = trajectory_client.get("/forecast", params={"hours": hours})
    assert response.status_code == 422
    assert "hours" in str(response.json()["detail"][0]["loc"])


def test_a_single_horizon_model_refuses_a_trajectory_and_keeps_its_forecast(
    client: TestClient, tmp_path: Path
) -> None:
    _store(tmp_path, _observations(200))
    refused = client.get("/forecast", params={"hours": 6})
    assert refused.status_code == 422 and "+6 h only" in refused.text
    assert client.get("/forecast").status_code == 200
    window = {"observations": _as_json(_observations())}
    assert client.post("/predict", json={**window, "horizon_hours": 12}).status_code == 422
    assert client.post("/predict", json={**window, "horizon_hours": 6}).status_code == 200


def test_predict_horizon_hours_matches_the_offline_row_and_is_not_logged(
    trajectory_client: TestClient, tmp_path: Path
) -> None:
    """horizon_hours=24 forecasts the offline row of +24 h; only +6 h forecasts are logged."""
    from rps.features.build import build_features
    from rps.models.bundle import load_bundle

    frame = _observations()
    window = {"observations": _as_json(frame)}
    body = trajectory_client.post("/predict", json={**window, "horizon_hours": 24}).json()
    item = body["predictions"][0]
    assert body["horizon_hours"] == 24
    last = frame["time"].iloc[-1]
    assert pd.Timestamp(item["target_time"]) == last + pd.Timedelta(hours=24)
    bundle = load_bundle(tmp_path / "trajectory")
    row = build_features(frame, bundle.feature_spec.at_horizon(24)).loc[[last]]
    point, lower, upper = bundle.predict_with_interval(row[bundle.feature_names].to_numpy())
    assert (item["prediction"], item["lower"], item["upper"]) == pytest.approx(
        (point[0], lower[0], upper[0]), rel=1e-9
    )
    feedback = trajectory_client.post(
        "/feedback",
        json={"observations": [{"time": item["target_time"], "temperature_2m": 1.0}]},
    ).json()
    assert feedback["joined"] == 0  # the +24 h forecast was not logged
    rows = {"rows": [{"x": 1.0}], "horizon_hours": 3}
    refused = trajectory_client.post("/predict", json=rows)
    assert refused.status_code == 422 and "goes with 'observations'" in refused.text


def test_feature_rows_carry_their_lead_time_and_a_wrong_one_is_refused(
    client: TestClient, trajectory_client: TestClient
) -> None:
    """A row's horizon_hours feature: any served horizon for a trajectory model (its target
    time follows), only the model's own for a single-horizon one; else a 422 naming it."""
    names = trajectory_client.get("/model/info").json()["features"]
    row = dict.fromkeys(names, 5.0)
    issued = ["2024-03-01T00:00:00Z"]
    for lead, status in ((24, 200), (49, 422), (2.5, 422)):
        body = {"rows": [{**row, "horizon_hours": lead}], "issue_times": issued}
        response = trajectory_client.post("/predict", json=body)
        assert response.status_code == status, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "rows", 0, "horizon_hours"]
    ahead = trajectory_client.post(
        "/predict", json={"rows": [{**row, "horizon_hours": 24}], "issue_times": issued}
    ).json()["predictions"][0]
    assert pd.Timestamp(ahead["target_time"]) == pd.Timestamp("2024-03-02T00:00:00Z")
    single = dict.fromkeys(client.get("/model/info").json()["features"], 5.0)
    refused = client.post("/predict", json={"rows": [{**single, "horizon_hours": 12}]})
    assert refused.status_code == 422 and "+6 h only" in refused.text
    assert (
        client.post("/predict", json={"rows": [{**single, "horizon_hours": 6}]}).status_code == 200
    )


def _trajectory_metrics(client: TestClient) -> tuple[dict[tuple[int, str], float], float | None]:
    """``forecast_trajectory`` by (horizon_hours, bound), and the issue time, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[tuple[int, str], float] = {}
    issued = None
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "forecast_trajectory":
                key = (int(sample.labels["horizon_hours"]), sample.labels["bound"])
                assert key not in values, key
                values[key] = sample.value
            elif sample.name == "forecast_trajectory_issue_timestamp_seconds":
                issued = sample.value
    return values, issued


def _predictions_total(client: TestClient) -> float:
    line = next(
        line
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("predictions_total ")
    )
    return float(line.split()[1])


def test_metrics_publish_the_trajectory_of_the_stored_observations(
    trajectory_client: TestClient, tmp_path: Path
) -> None:
    """forecast_trajectory holds GET /forecast?hours=48's answer for every hour and bound;
    computing it answers no request: nothing is counted or logged."""
    assert _trajectory_metrics(trajectory_client) == ({}, None)  # nothing stored yet
    frame = _observations(200)
    _store(tmp_path, frame)
    values, issued = _trajectory_metrics(trajectory_client)
    assert _predictions_total(trajectory_client) == 0
    now = float(frame["temperature_2m"].iloc[-1])
    assert issued == frame["time"].iloc[-1].timestamp()
    assert set(values) == {(h, b) for h in range(1, 49) for b in ("lower", "prediction", "upper")}
    for h in range(1, 49):  # the persistence bundle: the temperature now, +-1.645 sqrt(h)
        assert values[h, "prediction"] == pytest.approx(now)
        assert values[h, "upper"] - values[h, "prediction"] == pytest.approx(1.645 * np.sqrt(h))
        assert values[h, "prediction"] - values[h, "lower"] == pytest.approx(1.645 * np.sqrt(h))
    first_target = frame["time"].iloc[-1] + pd.Timedelta(hours=1)
    feedback = trajectory_client.post(
        "/feedback",
        json={"observations": [{"time": first_target.isoformat(), "temperature_2m": 1.0}]},
    ).json()
    assert feedback["joined"] == 0  # the published +1 h forecast was not logged
    points = trajectory_client.get("/forecast", params={"hours": 48}).json()["trajectory"]
    assert _predictions_total(trajectory_client) == 49  # the request's own, not the scrapes'
    for point in points:
        h = point["horizon_hours"]
        assert [values[h, b] for b in ("lower", "prediction", "upper")] == [
            point["lower"],
            point["prediction"],
            point["upper"],
        ]

    newer = _observations(201)  # the pipeline stored one more hour: the trajectory follows
    newer.loc[200, "temperature_2m"] = now + 3.0
    _store(tmp_path, newer)
    values, issued = _trajectory_metrics(trajectory_client)
    assert issued == newer["time"].iloc[-1].timestamp()
    assert values[1, "prediction"] == values[48, "prediction"] == pytest.approx(now + 3.0)


def test_metrics_publish_a_single_horizon_model_at_its_horizon(
    client: TestClient, tmp_path: Path
) -> None:
    """A model without a trajectory publishes its own horizon: GET /forecast's answer."""
    _store(tmp_path, _observations(200))
    values, _ = _trajectory_metrics(client)
    body = client.get("/forecast").json()
    assert values == {
        (6, "lower"): body["lower"],
        (6, "prediction"): body["prediction"],
        (6, "upper"): body["upper"],
    }


def test_a_trajectory_that_fails_leaves_the_scrape_working(
    trajectory_client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model failing on the stored window drops the series; the other metrics still answer."""
    from rps.serving.service import PredictionService

    def broken(*_: object) -> None:
        raise RuntimeError("the model cannot predict")

    _store(tmp_path, _observations(200))
    monkeypatch.setattr(PredictionService, "_trajectory", staticmethod(broken))
    response = trajectory_client.get("/metrics")
    assert response.status_code == 200 and "model_info{" in response.text
    assert _trajectory_metrics(trajectory_client) == ({}, None)
    monkeypatch.undo()
    values, _ = _trajectory_metrics(trajectory_client)
    assert len(values) == 144
