"""Fixtures for the model tests: the feature spec and small slices of real weather."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rps.features.build import FeatureSpec
from rps.params import Params


@pytest.fixture(scope="session")
def spec(params: Params) -> FeatureSpec:
    return FeatureSpec.from_params(params.data.variables, params.data.target, params.features)


@pytest.fixture(scope="session")
def small_obs(observations: pd.DataFrame) -> pd.DataFrame:
    """60 days of real hourly observations."""
    return observations.iloc[-60 * 24 :].reset_index(drop=True)


def random_walk_obs(variables: tuple[str, ...], *, days: int = 60, seed: int = 0) -> pd.DataFrame:
    """Unpredictable weather: a random-walk target and independent noise elsewhere."""
    rng = np.random.default_rng(seed)
    n = days * 24
    times = pd.date_range("2024-03-01", periods=n, freq="h", tz="UTC")
    frame = pd.DataFrame({"time": times})
    for name in variables:
        frame[name] = rng.normal(50.0, 5.0, n)
    frame["temperature_2m"] = 10.0 + np.cumsum(rng.normal(0.0, 1.0, n))
    frame["wind_direction_10m"] = rng.uniform(0, 360, n)
    return frame
