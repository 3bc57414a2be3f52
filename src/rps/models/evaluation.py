"""Forecast evaluation: error metrics, the Diebold-Mariano test, split-conformal intervals.

Everything here is pure NumPy/SciPy on arrays of the same length, so the trainer, the
promotion gate and ``rps model compare`` compute identical numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

#: MAPE ignores targets closer to zero than this (degrees C around 0 make percentages explode).
MAPE_MIN_ABS_TARGET = 1.0
#: The quantiles stored per feature in the reference statistics (deciles are the PSI bins).
REFERENCE_QUANTILES: tuple[float, ...] = (
    0.01,
    0.05,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    0.95,
    0.99,
)
DECILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values, y_pred {p.size}")
    if y.size == 0:
        raise ValueError("cannot evaluate zero forecasts")
    return y, p


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    y, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((y - p) ** 2)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error."""
    y, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(y - p)))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination (1 - SSE/SST; NaN when the target is constant)."""
    y, p = _pair(y_true, y_pred)
    sst = float(np.sum((y - y.mean()) ** 2))
    if sst == 0.0:
        return float("nan")
    return 1.0 - float(np.sum((y - p) ** 2)) / sst


def mape(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute percentage error in %, over targets with ``|y| >= 1`` (NaN if none)."""
    y, p = _pair(y_true, y_pred)
    keep = np.abs(y) >= MAPE_MIN_ABS_TARGET
    if not keep.any():
        return float("nan")
    return float(np.mean(np.abs((y[keep] - p[keep]) / y[keep])) * 100.0)


def smape(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Symmetric MAPE in % (``2|e| / (|y| + |p|)``; a 0/0 term counts as 0)."""
    y, p = _pair(y_true, y_pred)
    denom = np.abs(y) + np.abs(p)
    terms = np.divide(2.0 * np.abs(y - p), denom, out=np.zeros_like(y), where=denom > 0)
    return float(np.mean(terms) * 100.0)


def skill_score(model_rmse: float, reference_rmse: float) -> float:
    """``1 - RMSE / RMSE_reference`` (positive: better than the reference)."""
    if reference_rmse <= 0:
        return float("nan")
    return 1.0 - model_rmse / reference_rmse


def directional_accuracy(y_true: np.ndarray, y_pred: np.ndarray, y_now: np.ndarray) -> float:
    """Share of forecasts that get the sign of the change from the issue time right.

    Rows where the target does not change are left out (NaN if every row is such).
    """
    y, p = _pair(y_true, y_pred)
    now = np.asarray(y_now, dtype=float).ravel()
    actual = np.sign(y - now)
    moved = actual != 0
    if not moved.any():
        return float("nan")
    return float(np.mean(np.sign(p[moved] - now[moved]) == actual[moved]))


def error_by_hour(y_true: np.ndarray, y_pred: np.ndarray, hours: np.ndarray) -> dict[int, float]:
    """RMSE per hour of day (of the target time), for the hours present."""
    y, p = _pair(y_true, y_pred)
    h = np.asarray(hours).astype(int).ravel() % 24
    out: dict[int, float] = {}
    for hour in range(24):
        mask = h == hour
        if mask.any():
            out[hour] = float(np.sqrt(np.mean((y[mask] - p[mask]) ** 2)))
    return out


def point_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, y_now: np.ndarray, persistence_rmse: float | None = None
) -> dict[str, float]:
    """The standard set: rmse, mae, r2, mape, smape, directional_accuracy, skill."""
    value = rmse(y_true, y_pred)
    reference = rmse(y_true, y_now) if persistence_rmse is None else persistence_rmse
    return {
        "rmse": value,
        "mae": mae(y_true, y_pred),
        "r2": r2(y_true, y_pred),
        "mape": mape(y_true, y_pred),
        "smape": smape(y_true, y_pred),
        "directional_accuracy": directional_accuracy(y_true, y_pred, y_now),
        "skill_vs_persistence": skill_score(value, reference),
    }


# Diebold-Mariano ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DMResult:
    """A Diebold-Mariano comparison of forecast A against forecast B on squared error.

    ``p_value_better`` is the one-sided p-value of "A is more accurate than B" (small: A
    better); ``p_value_worse`` is that of "A is less accurate than B".
    """

    statistic: float
    p_value_better: float
    p_value_worse: float
    mean_loss_diff: float  # mean of e_A^2 - e_B^2 (negative: A better)
    n: int
    lag: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (nested dataclasses become dicts)."""
        return asdict(self)


def default_dm_lag(n: int, horizon: int) -> int:
    """Newey-West bandwidth: ``max(h - 1, 24)`` capped at ``n // 4``.

    The textbook choice ``h - 1`` assumes optimal ``h``-step forecasts (MA(h-1) errors);
    forecasts issued every hour for a weather variable have errors correlated over a
    day or more, so the bandwidth covers at least 24 lags to avoid overconfident tests.
    """
    return max(0, min(max(horizon - 1, 24), n // 4))


def diebold_mariano(
    errors_a: np.ndarray, errors_b: np.ndarray, *, horizon: int = 1, lag: int | None = None
) -> DMResult:
    """Diebold-Mariano test on per-sample squared errors (A versus B).

    The loss differential ``d_t = e_A,t^2 - e_B,t^2`` has its long-run variance estimated
    with a Bartlett (Newey-West) kernel; the statistic ``mean(d) / sqrt(lrv / n)`` is
    compared with Student's t with ``n - 1`` degrees of freedom.

    Args:
        errors_a: forecast errors of A (``y - pred``).
        errors_b: forecast errors of B, same samples.
        horizon: the forecast horizon in steps (for the default bandwidth).
        lag: the kernel bandwidth; default :func:`default_dm_lag`.

    Returns:
        The statistic and both one-sided p-values. Identical losses give statistic 0 and
        p-values 0.5; a constant non-zero differential gives p-values 0 and 1.
    """
    a = np.asarray(errors_a, dtype=float).ravel()
    b = np.asarray(errors_b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"error series differ in length: {a.size} != {b.size}")
    n = a.size
    if n < 2:
        raise ValueError("the Diebold-Mariano test needs at least 2 paired errors")
    d = a**2 - b**2
    mean = float(d.mean())
    k = default_dm_lag(n, horizon) if lag is None else max(0, min(int(lag), n - 1))
    centered = d - mean
    lrv = float(centered @ centered) / n
    for j in range(1, k + 1):
        weight = 1.0 - j / (k + 1)
        lrv += 2.0 * weight * float(centered[j:] @ centered[:-j]) / n
    scale = math.sqrt(max(lrv, 0.0) / n)
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if scale <= tol:
        if abs(mean) <= tol:
            return DMResult(0.0, 0.5, 0.5, mean, n, k)
        better = mean < 0
        stat = -math.inf if better else math.inf
        return DMResult(stat, 0.0 if better else 1.0, 1.0 if better else 0.0, mean, n, k)
    stat = mean / scale
    p_better = float(stats.t.cdf(stat, df=n - 1))
    p_worse = float(stats.t.sf(stat, df=n - 1))
    return DMResult(float(stat), p_better, p_worse, mean, n, k)


# split-conformal intervals -----------------------------------------------------------------


def conformal_offsets(residuals: np.ndarray, alpha: float) -> dict[str, float]:
    """Split-conformal interval offsets from calibration residuals ``y - pred``.

    Each tail gets ``alpha / 2``: the lower offset is the ``floor((n + 1) * alpha / 2)``-th
    smallest residual and the upper one the ``ceil((n + 1) * (1 - alpha / 2))``-th, the
    finite-sample quantiles that guarantee coverage ``>= 1 - alpha`` for exchangeable data.

    Returns:
        ``{"alpha": alpha, "lower": q_lo, "upper": q_hi}`` (add to the point forecast).

    Raises:
        ValueError: too few residuals for the requested alpha.
    """
    r = np.sort(np.asarray(residuals, dtype=float).ravel())
    r = r[np.isfinite(r)]
    n = r.size
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    k_hi = math.ceil((n + 1) * (1 - alpha / 2))
    k_lo = math.floor((n + 1) * alpha / 2)
    if n == 0 or k_hi > n or k_lo < 1:
        need = math.ceil(2 / alpha) - 1
        raise ValueError(f"{n} calibration residuals are too few for alpha={alpha}; need {need}")
    return {"alpha": float(alpha), "lower": float(r[k_lo - 1]), "upper": float(r[k_hi - 1])}


def interval_coverage(y_true: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of targets inside ``[lower, upper]``."""
    y = np.asarray(y_true, dtype=float)
    return float(np.mean((y >= np.asarray(lower)) & (y <= np.asarray(upper))))


def interval_score(y_true: np.ndarray, lower: np.ndarray, upper: np.ndarray, alpha: float) -> float:
    """Mean interval (Winkler) score of central ``1 - alpha`` intervals (lower is better).

    Width plus ``2 / alpha`` times the distance by which the target falls outside: a proper
    scoring rule that rewards narrow intervals only when they still cover.
    """
    y = np.asarray(y_true, dtype=float)
    lo, hi = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    below = np.maximum(lo - y, 0.0)
    above = np.maximum(y - hi, 0.0)
    return float(np.mean(hi - lo + 2.0 / alpha * (below + above)))


def pinball_loss(y_true: np.ndarray, quantile: np.ndarray, level: float) -> float:
    """Mean pinball (quantile) loss of forecasts of the ``level`` quantile."""
    diff = np.asarray(y_true, dtype=float) - np.asarray(quantile, dtype=float)
    return float(np.mean(np.maximum(level * diff, (level - 1.0) * diff)))


# reference statistics ----------------------------------------------------------------------


def reference_stats(features: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per-feature training statistics for drift detection.

    Each feature maps to ``count``, ``mean``, ``std``, ``min``, ``max``, ``quantiles``
    (``{"0.01": v, ..., "0.99": v}``), ``bin_edges`` (the 9 inner deciles, PSI bins) and
    ``bin_fractions`` (the training share in each of the 10 bins ``(-inf, e1], ...,
    (e9, inf)``; not exactly 0.1 when values tie, e.g. cloud cover at 100 %).
    """
    out: dict[str, dict[str, Any]] = {}
    for name in features.columns:
        values = features[name].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            out[str(name)] = {"count": 0}
            continue
        qs = np.quantile(values, REFERENCE_QUANTILES)
        edges = np.quantile(values, DECILES)
        bins = np.searchsorted(edges, values, side="left")
        counts = np.bincount(bins, minlength=len(edges) + 1)
        out[str(name)] = {
            "count": int(values.size),
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
            "quantiles": {f"{q:g}": float(v) for q, v in zip(REFERENCE_QUANTILES, qs, strict=True)},
            "bin_edges": [float(e) for e in edges],
            "bin_fractions": [float(c) / values.size for c in counts],
        }
    return out
