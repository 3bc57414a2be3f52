"""Live accuracy over HTTP: logged predictions joined to realized values from POST /feedback."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.conftest_serving import (
    TRAIN_END,
    ServerHandle,
    feature_spec,
    observation_window,
    replay_observations,
    write_params,
)

pytestmark = pytest.mark.slow

LIVE_WINDOW = 5


def test_feedback_joins_logged_predictions_and_updates_live_errors(
    serving_factory: Callable[..., ServerHandle], serving_bundle: Path, tmp_path: Path
) -> None:
    """Forecasts from observation windows are logged once each; realized values posted later
    are joined by target time, and live RMSE/MAE cover the newest ``live_accuracy_window``."""
    params_file = write_params(tmp_path / "params.yaml", live_accuracy_window=LIVE_WINDOW)
    server = serving_factory(model_dir=serving_bundle, params_path=params_file)
    spec = feature_spec()
    frame = replay_observations(TRAIN_END, TRAIN_END + pd.Timedelta(days=12))
    frame = frame.set_index("time")
    client = server.client()

    predictions: dict[pd.Timestamp, float] = {}
    first_issue = frame.index[spec.window_hours + 10]
    for k in range(8):
        issue = first_issue + pd.Timedelta(hours=k)
        window = frame.loc[:issue].tail(spec.window_hours).reset_index()
        response = client.post("/predict", json={"observations": observation_window(window)})
        assert response.status_code == 200, response.text
        item = response.json()["predictions"][0]
        predictions[pd.Timestamp(item["target_time"])] = item["prediction"]
    # the same window again is the same forecast: logged once
    assert (
        client.post("/predict", json={"observations": observation_window(window)}).status_code
        == 200
    )

    before = server.metrics()
    assert before["live_samples"] == 0
    assert "live_rmse" not in before

    actuals = {t: float(frame.loc[t, spec.target]) for t in predictions}
    unmatched = max(predictions) + pd.Timedelta(days=30)
    payload = [{"time": t.isoformat(), spec.target: v} for t, v in actuals.items()]
    payload.append({"time": unmatched.isoformat(), spec.target: 1.0})
    response = client.post("/feedback", json={"observations": payload})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["received"] == 9
    assert body["joined"] == 8

    newest = sorted(predictions)[-LIVE_WINDOW:]
    errors = [predictions[t] - actuals[t] for t in newest]
    rmse = math.sqrt(sum(e * e for e in errors) / len(errors))
    mae = sum(abs(e) for e in errors) / len(errors)
    assert body["live_samples"] == LIVE_WINDOW
    assert body["live_rmse"] == pytest.approx(rmse, abs=1e-9)
    assert body["live_mae"] == pytest.approx(mae, abs=1e-9)

    after = server.metrics()
    assert after["live_samples"] == LIVE_WINDOW
    assert after["live_rmse"] == pytest.approx(rmse, abs=1e-9)
    assert after["live_mae"] == pytest.approx(mae, abs=1e-9)

    # a corrected realized value replaces the earlier one
    newest_time = newest[-1]
    corrected = actuals[newest_time] + 2.0
    client.post(
        "/feedback",
        json={"observations": [{"time": newest_time.isoformat(), spec.target: corrected}]},
    )
    errors[-1] = predictions[newest_time] - corrected
    rmse = math.sqrt(sum(e * e for e in errors) / len(errors))
    assert server.metrics()["live_rmse"] == pytest.approx(rmse, abs=1e-9)


def test_ingested_observations_are_joined_as_actuals(
    serving_factory: Callable[..., ServerHandle], serving_bundle: Path, tmp_path: Path
) -> None:
    """Without any /feedback, the truth that the pipeline stores later is joined at the next
    scrape, and live RMSE equals the errors against those stored values."""
    params_file = write_params(tmp_path / "params.yaml", live_accuracy_window=LIVE_WINDOW)
    server = serving_factory(model_dir=serving_bundle, params_path=params_file)
    spec = feature_spec()
    frame = replay_observations(TRAIN_END, TRAIN_END + pd.Timedelta(days=12)).set_index("time")
    client = server.client()
    predictions: dict[pd.Timestamp, float] = {}
    first_issue = frame.index[spec.window_hours + 10]
    for k in range(LIVE_WINDOW):
        issue = first_issue + pd.Timedelta(hours=k)
        window = frame.loc[:issue].tail(spec.window_hours).reset_index()
        response = client.post("/predict", json={"observations": observation_window(window)})
        assert response.status_code == 200, response.text
        item = response.json()["predictions"][0]
        predictions[pd.Timestamp(item["target_time"])] = item["prediction"]
    assert server.metrics()["live_samples"] == 0

    # the pipeline ingests the hours that include the target times
    processed = server.state_dir / "data" / "processed"
    processed.mkdir(parents=True, exist_ok=True)
    stored = frame.loc[: max(predictions)].reset_index()
    stored.to_parquet(processed / "observations.parquet", index=False)

    after = server.metrics()
    errors = [predictions[t] - float(frame.loc[t, spec.target]) for t in predictions]
    assert after["live_samples"] == LIVE_WINDOW
    assert after["live_rmse"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / len(errors)))
