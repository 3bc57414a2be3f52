"""Drift demo traffic: feature rows from the synthetic source with a mean shift, sent to /predict.

``rps run --demo-drift`` runs this beside the API so a person can watch the drift checks climb,
DataDriftDetected fire in Prometheus, the alert reach the receiver and a retraining run start.
"""

from __future__ import annotations

import logging
import threading

import httpx
import numpy as np
import pandas as pd

from rps.data.sources.synthetic import SyntheticSource
from rps.features import FeatureSpec, build_features
from rps.params import DriftScenario, Params

logger = logging.getLogger(__name__)


def drifted_rows(
    params: Params, *, hours: int = 24 * 30, magnitude: float = 25.0
) -> list[dict[str, float]]:
    """Feature rows from synthetic weather whose temperature jumps by ``magnitude`` degC."""
    now = pd.Timestamp.now(tz="UTC").floor("h")
    spec = FeatureSpec.from_params(params.data.variables, params.data.target, params.features)
    start = now - pd.Timedelta(hours=hours + spec.window_hours)
    source = SyntheticSource(
        variables=params.data.variables,
        drifts=[
            DriftScenario(
                kind="bias",
                start=start,
                magnitude=magnitude,
                variables=("temperature_2m", "dew_point_2m"),
            )
        ],
    )
    features = build_features(source.fetch(start, now).frame, spec, with_target=False).dropna()
    return [
        dict(zip(spec.feature_names, map(float, row), strict=True))
        for row in features[spec.feature_names].to_numpy(dtype=np.float64)
    ]


def send_drifted_traffic(
    api_url: str, params: Params, stop: threading.Event, *, batch: int = 50, pause_s: float = 1.0
) -> int:
    """Post drifted batches to ``/predict`` until ``stop`` is set; returns rows sent."""
    rows = drifted_rows(params)
    sent = 0
    with httpx.Client(base_url=api_url, timeout=10.0) as client:
        while not stop.is_set():
            chunk = [rows[(sent + i) % len(rows)] for i in range(batch)]
            try:
                client.post("/predict", json={"rows": chunk}).raise_for_status()
                sent += batch
            except httpx.HTTPError as exc:
                logger.warning("drift demo request failed: %s", exc)
            stop.wait(pause_s)
    return sent
