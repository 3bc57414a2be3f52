"""The one-sided CUSUM recursion shared by the sequential drift checks.

``g_t = max(0, g_{t-1} + x_t)``, ``g_0 = 0`` (Page's test: each check turns its evidence into
increments ``x_t`` that are negative while nothing changed and positive once it did). The
recursion is the cumulative sum less its running minimum (floored at 0), so it is computed
without a Python loop: the drift monitor recomputes it over its whole ring at most once a
second, never per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CusumTest:
    """A one-sided CUSUM's parameters (each check's evidence in its own unit).

    Attributes:
        allowance: Evidence tolerated per row before the sum grows.
        cap: Each row's evidence counts at most this much (one outlier cannot fire the test
            alone).
        threshold: The sum that means drift (the check's ratio 1).
    """

    allowance: float
    cap: float
    threshold: float


def cusum_path(increments: np.ndarray) -> np.ndarray:
    """``g`` after each increment (see the module docstring); an empty input gives an empty path.

    Where the sum returns to 0 the result is exactly 0.0 (the running minimum itself), so a
    caller can find the hour the statistic last stood at 0 by equality.

    Args:
        increments: ``(n,)`` the increments ``x_t`` in time order (finite).
    """
    steps = np.asarray(increments, dtype=float)
    if not steps.size:
        return np.zeros(0)
    total = np.cumsum(steps)
    floor = np.minimum.accumulate(np.minimum(total, 0.0))
    path: np.ndarray = total - floor
    return path
