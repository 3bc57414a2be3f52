"""The shared CUSUM recursion and the humidity-change path built on it."""

from __future__ import annotations

import numpy as np
import pytest

from rps.serving.cusum import cusum_path
from rps.serving.seasonal import humidity_change_path


def _recursion(increments: np.ndarray) -> list[float]:
    value, path = 0.0, []
    for x in increments.tolist():
        value = max(0.0, value + x)
        path.append(value)
    return path


def test_the_vectorised_path_is_the_recursion() -> None:
    """Cumulative sum less its running minimum is Page's recursion, zeros exactly at 0."""
    rng = np.random.default_rng(3)
    for drift in (-0.5, 0.0, 0.3):
        increments = rng.normal(drift, 1.0, 400)
        path = cusum_path(increments)
        assert path == pytest.approx(_recursion(increments), abs=1e-9)
        assert np.all(path >= 0.0)
        expected_zero = np.asarray(_recursion(increments)) == 0.0
        assert np.array_equal(path == 0.0, expected_zero)
    assert cusum_path(np.zeros(0)).size == 0


def test_the_humidity_change_path_adds_moves_beyond_the_allowance() -> None:
    """A steady residual adds nothing; a lasting 2 degC step adds (2 - allowance) an hour until
    the baseline median follows it; a glitch counts at most ``cap``."""
    steady = np.full(30, -1.3)  # a lasting offset (a frost point read as dew point) cancels
    assert humidity_change_path(steady, baseline_hours=24, allowance=0.5, cap=3.0) == (
        pytest.approx(np.zeros(6))
    )
    step = np.concatenate([np.zeros(24), np.full(6, 2.0)])
    path = humidity_change_path(step, baseline_hours=24, allowance=0.5, cap=3.0)
    assert path == pytest.approx([1.5, 3.0, 4.5, 6.0, 7.5, 9.0])
    glitch = np.concatenate([np.zeros(24), [9.0], np.zeros(5)])
    path = humidity_change_path(glitch, baseline_hours=24, allowance=0.5, cap=3.0)
    assert path.max() == pytest.approx(2.5)  # one wild hour stays under a threshold of 5
    assert path[-1] == 0.0
    assert humidity_change_path(np.zeros(24), baseline_hours=24, allowance=0.5, cap=3.0).size == 0
