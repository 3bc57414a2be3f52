"""The online rescale of the trajectory's interval from its own realised errors, per horizon.

The conditional interval (:mod:`rps.models.intervals`) is calibrated once, on out-of-fold
errors of every season. A season whose errors are smaller than its inputs predict (a calm
summer when the model has seen none: ``bench/bench_horizons.py`` holds out each quarter, and
with Jul-Sep held out the interval covered 95-99.9 %) keeps too wide an interval until the
next training run. The service therefore rescales the interval of horizon ``h`` by a factor
``f[h]`` learned from the forecasts of that horizon whose realised values it has joined:

* each joined forecast gives the factor it would have needed to be just covered,
  :func:`needed_factor` (``error / upper offset`` above the forecast, ``error / lower offset``
  below it, offsets of the interval before any rescale): 1 when the realised value lies on a
  bound, below 1 inside, above 1 outside;
* ``f[h]`` is the split-conformal ``1 - alpha`` quantile of the newest ``window`` needed
  factors of horizon ``h`` (:func:`rolling_factor`), kept within ``min_factor ..
  max_factor``; with fewer than ``min_samples`` of them it is 1 (the calibrated interval).

Why online, not more scale inputs: inputs that carry the season (day length, the 24 h
temperature range, cloud cover and wind speed, the dew-point depression, ``|T - T_lag24|``)
were measured first on the same quarterly folds (2026-12-03) and left Jul-Sep at 97.9-98.3 %
mean coverage: fitted on the other three seasons they do not say how much calmer a summer is.
Per horizon, because the miscalibration of a season grows with the lead time (Jul-Sep held
out: a factor of about 0.78 was needed at +1..6 h, 0.57 at +24..48 h); a rolling quantile
rather than a running update (ACI), because it is a function of the log alone: a restarted
worker, a re-posted actual or another worker computes the same factor. The factors are
recomputed when realised values are joined (:class:`rps.serving.accuracy.PredictionLog`), not
per request; ``bench/bench_horizons.py`` simulates the same functions on each held-out
period in time order, with only the errors realised before each issue time.

NumPy only: the prediction service imports this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rescale:
    """The rescale's parameters (``horizons.rescale`` in params.yaml).

    Attributes:
        alpha: The interval's miscoverage (0.1: the factor is the 90 % quantile).
        window: Newest joined forecasts per horizon the factor is computed from.
        min_samples: Below this many joined forecasts of a horizon its factor is 1.
        min_factor: Smallest factor (a run of exact forecasts cannot collapse the interval).
        max_factor: Largest factor.
    """

    alpha: float = 0.1
    window: int = 336
    min_samples: int = 168
    min_factor: float = 0.5
    max_factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"rescale alpha must be in (0, 1), got {self.alpha}")
        if self.min_samples < 1 or self.window < self.min_samples:
            raise ValueError("rescale needs 1 <= min_samples <= window")
        if not 0 < self.min_factor <= 1 <= self.max_factor:
            raise ValueError("rescale needs 0 < min_factor <= 1 <= max_factor")


def needed_factor(
    errors: np.ndarray, lower_offsets: np.ndarray, upper_offsets: np.ndarray
) -> np.ndarray:
    """The factor each forecast's interval needed to cover its realised value (just).

    Args:
        errors: ``actual - forecast``.
        lower_offsets: ``lower - forecast`` of the interval before any rescale (negative).
        upper_offsets: ``upper - forecast`` of the interval before any rescale (positive).

    Returns:
        ``errors / upper_offsets`` for errors above the forecast, ``errors / lower_offsets``
        below it (0 for an exact forecast); ``inf`` where the needed side's offset is not of
        its sign (no factor covers such an error).
    """
    e = np.asarray(errors, dtype=float)
    lo = np.asarray(lower_offsets, dtype=float)
    hi = np.asarray(upper_offsets, dtype=float)
    offset = np.where(e >= 0, hi, lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(e == 0, 0.0, e / offset)
    out = np.where((e != 0) & ~(out > 0), np.inf, out)  # wrong-signed or zero offset
    return np.asarray(out, dtype=float)


def rolling_factor(needed: np.ndarray, rescale: Rescale) -> tuple[float, int]:
    """The factor of one horizon from its newest needed factors (oldest first).

    Returns:
        The factor and the number of needed factors it was computed from (at most
        ``rescale.window``; 1.0 below ``rescale.min_samples``).
    """
    recent = np.asarray(needed, dtype=float)[-rescale.window :]
    recent = recent[~np.isnan(recent)]
    n = int(recent.size)
    if n < rescale.min_samples:
        return 1.0, n
    rank = min(n, math.ceil((n + 1) * (1 - rescale.alpha)))
    factor = float(np.partition(recent, rank - 1)[rank - 1])
    return float(np.clip(factor, rescale.min_factor, rescale.max_factor)), n


def apply_factors(
    point: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    horizons: np.ndarray,
    factors: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rescale the interval of each forecast by the factor of its horizon.

    A horizon beyond ``factors`` keeps its interval (factor 1).

    Returns:
        ``(lower, upper, factor of each row)``.
    """
    h = np.asarray(horizons, dtype=int)
    f = np.ones(h.shape)
    known = (h >= 1) & (h <= len(factors))
    f[known] = np.asarray(factors)[h[known] - 1]
    return point + f * (lower - point), point + f * (upper - point), f
