"""Drift metrics of a real server: quiet on undrifted replay data, past every threshold when the
synthetic source injects a drift."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.integration.conftest_serving import (
    TRAIN_START,
    ServerHandle,
    feature_spec,
    serving_params,
    training_features,
    write_params,
)

pytestmark = pytest.mark.slow

WINDOW = 200


def _post_rows(server: ServerHandle, matrix: np.ndarray, names: list[str]) -> None:
    with server.client() as client:
        for start in range(0, len(matrix), 50):
            rows = [
                dict(zip(names, map(float, r), strict=True)) for r in matrix[start : start + 50]
            ]
            response = client.post("/predict", json={"rows": rows})
            assert response.status_code == 200, response.text


def _drift_metrics(server: ServerHandle) -> dict[str, dict[str, float]]:
    values = server.metrics()
    out: dict[str, dict[str, float]] = {"feature_mean_shift": {}, "feature_ks_statistic": {}}
    out["feature_psi"] = {}
    for key, value in values.items():
        name = key.split("{")[0]
        if name in out:
            feature = key.split('feature_name="')[1].split('"')[0]
            out[name][feature] = value
    out["scalars"] = {
        "out_of_distribution_ratio": values["out_of_distribution_ratio"],
        "prediction_variance": values["prediction_variance"],
    }
    return out


def _synthetic_drifted_rows(names: list[str], n: int) -> np.ndarray:
    """Feature rows of the synthetic source with +10 degC injected into the temperature."""
    from rps.data.sources.synthetic import SyntheticSource
    from rps.features.build import build_features
    from rps.params import DriftScenario

    params = serving_params()
    drift_start = TRAIN_START + pd.Timedelta(days=60)
    source = SyntheticSource(
        variables=params.data.variables,
        drifts=[
            DriftScenario(
                kind="bias", start=drift_start, variables=("temperature_2m",), magnitude=10.0
            )
        ],
    )
    times = pd.date_range(
        drift_start - pd.Timedelta(days=8), drift_start + pd.Timedelta(days=20), freq="h"
    )
    features = build_features(source.generate(times), feature_spec())
    # rows whose whole history window lies after the drift start
    drifted = features.loc[features.index >= drift_start + pd.Timedelta(hours=168)]
    return drifted.dropna(subset=names)[names].to_numpy()[-n:]


def test_drift_metrics_stay_quiet_on_replay_data_and_fire_on_injected_drift(
    serving_factory: Callable[..., ServerHandle], serving_bundle: Path, tmp_path: Path
) -> None:
    """Undrifted replay rows keep every statistic below its threshold; the synthetic source's
    mean-shift injection pushes mean shift, KS, PSI and the OOD ratio past theirs."""
    params_file = write_params(tmp_path / "params.yaml", window_size=WINDOW)
    server = serving_factory(model_dir=serving_bundle, params_path=params_file)
    thresholds = serving_params().drift
    names = feature_spec().feature_names

    features = training_features()
    train = features.iloc[: int(len(features) * 0.8)][names].to_numpy()
    rng = np.random.default_rng(123)
    _post_rows(server, train[rng.choice(len(train), WINDOW, replace=False)], names)
    quiet = _drift_metrics(server)
    assert quiet["feature_mean_shift"], "no drift statistics published"
    assert max(quiet["feature_mean_shift"].values()) < thresholds.mean_shift_threshold
    assert max(quiet["feature_ks_statistic"].values()) < thresholds.ks_threshold
    assert max(quiet["feature_psi"].values()) < thresholds.psi_threshold
    assert quiet["scalars"]["out_of_distribution_ratio"] < thresholds.ood_ratio_threshold
    assert not any(name.startswith("target_") for name in quiet["feature_ks_statistic"])

    _post_rows(server, _synthetic_drifted_rows(names, WINDOW), names)
    drifted = _drift_metrics(server)
    assert drifted["feature_mean_shift"]["temperature_2m"] > thresholds.mean_shift_threshold
    assert drifted["feature_ks_statistic"]["temperature_2m"] > thresholds.ks_threshold
    assert drifted["feature_psi"]["temperature_2m"] > thresholds.psi_threshold
    assert drifted["scalars"]["out_of_distribution_ratio"] > thresholds.ood_ratio_threshold
    assert drifted["scalars"]["prediction_variance"] > 0
