"""Drift checks of a real server: quiet on clean replayed hours, above 1 when a sensor drifts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.integration.conftest_serving import (
    TRAIN_END,
    TRAIN_START,
    ServerHandle,
    feature_spec,
    replay_observations,
    write_params,
)

pytestmark = pytest.mark.slow


def _post_hourly(server: ServerHandle, matrix: np.ndarray, names: list[str]) -> None:
    """One row per request, in time order, as hourly forecasts arrive."""
    with server.client() as client:
        for row in matrix:
            response = client.post(
                "/predict", json={"rows": [dict(zip(names, map(float, row), strict=True))]}
            )
            assert response.status_code == 200, response.text


def _labelled(values: dict[str, float], metric: str, label: str) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        if key.startswith(metric + "{"):
            out[key.split(f'{label}="')[1].split('"')[0]] = value
    return out


def _rows(onset: pd.Timestamp, scenario: dict[str, object] | None) -> np.ndarray:
    """Hourly feature rows of the 24 h from ``onset`` (replayed weather, maybe drifted)."""
    from rps.data.sources.scenarios import apply_drift
    from rps.features.build import build_features
    from rps.params import DriftScenario

    spec = feature_spec()
    frame = replay_observations(onset - pd.Timedelta(days=9), onset + pd.Timedelta(hours=23))
    if scenario is not None:
        frame = apply_drift(frame, DriftScenario.model_validate({**scenario, "start": onset}))
    features = build_features(frame, spec, with_target=False)
    rows = features.loc[features.index >= onset, spec.feature_names]
    return rows.to_numpy(dtype=float)


def test_drift_checks_stay_quiet_on_clean_hours_and_cross_on_a_biased_sensor(
    serving_factory: Callable[..., ServerHandle], serving_bundle: Path, tmp_path: Path
) -> None:
    """A clean replayed day (inside the training season) keeps every check below 1 and the
    per-feature detail excludes calendar columns; the same day with the temperature sensor
    reading 4 degC high crosses the humidity consistency check within 6 hourly rows."""
    params_file = write_params(tmp_path / "params.yaml", window_size=24)
    server = serving_factory(model_dir=serving_bundle, params_path=params_file)
    names = feature_spec().feature_names
    day = TRAIN_START + (TRAIN_END - TRAIN_START) / 2

    _post_hourly(server, _rows(day, None), names)
    quiet = server.metrics()
    checks = _labelled(quiet, "drift_check_ratio", "check")
    assert set(checks) == {"seasonal_anomaly", "humidity_consistency"}, checks
    assert max(checks.values()) <= 1.0, checks
    features = _labelled(quiet, "feature_anomaly_ratio", "feature_name")
    assert "temperature_2m" in features
    assert not any(name.startswith("target_") for name in features)

    bias = {"kind": "bias", "variables": ["temperature_2m"], "magnitude": 4.0}
    _post_hourly(server, _rows(day + pd.Timedelta(days=2), bias)[:6], names)
    drifted = _labelled(server.metrics(), "drift_check_ratio", "check")
    assert drifted["humidity_consistency"] > 1.0, drifted
