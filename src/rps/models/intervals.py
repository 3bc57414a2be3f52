"""Conditional prediction intervals for every horizon: normalized split-conformal.

The interval of a forecast is ``point + q_lo[h] * s(row)`` .. ``point + q_hi[h] * s(row)``:

* ``s(row)`` is the expected size of the error, ``exp(design(row) @ coef)``: a linear model of
  ``log(|error| + 0.1)`` on the horizon, the hour of day of the target time and the recent
  day-to-day variability of the target, plus the 24 h pressure change and the dew point now
  (linear and squared: humid summer air masses change slowly) when the features hold them, so
  an interval is narrow for a calm humid night a few hours ahead and wide for a stormy winter
  afternoon two days ahead;
* ``q_lo[h]``, ``q_hi[h]`` are the split-conformal quantiles (each tail ``alpha / 2``) of the
  normalized errors ``error / s(row)`` at horizon ``h``.

Both are fitted on out-of-fold errors (forecasts of models that did not train on those rows,
:mod:`rps.models.horizons`), cross-fitted: the errors of each fold are normalized by the scale
model fitted on the other folds, so no error calibrates a scale it helped fit. The served
scale is the mean of the folds' coefficients. ``bench/bench_horizons.py`` measures the choice
of the scale's inputs (docs/BENCHMARKS.md, "Forecast trajectory").

NumPy only: the prediction service imports this module through the bundle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rps.features.spec import HORIZON, FeatureSpec

#: added to |error| before the log, so exact forecasts do not dominate the scale fit
ERROR_FLOOR = 0.1


class IntervalError(ValueError):
    """An interval cannot be calibrated (too few errors) or applied (unknown horizon)."""


#: the dew point feature of the scale (an interval stored without it does not read it)
DEW_POINT = "dew_point_2m"
BASE_TERMS, PRESSURE_TERMS, DEW_POINT_TERMS = 11, 2, 2


def scale_columns(spec: FeatureSpec) -> dict[str, str]:
    """The feature each scale input reads (pressure and dew point when the features hold them)."""
    out = {
        "horizon": HORIZON,
        "hour": "target_hour",
        "variability": spec.change_rms_name,
    }
    names = set(spec.feature_names)
    pressure, lagged = "surface_pressure", "surface_pressure_lag24"
    if {pressure, lagged} <= names:
        out["pressure"], out["pressure_lag24"] = pressure, lagged
    if DEW_POINT in names:
        out["dew_point"] = DEW_POINT
    return out


def scale_terms(columns: Mapping[str, str]) -> int:
    """The number of coefficients of the scale model that reads ``columns``."""
    return (
        BASE_TERMS
        + PRESSURE_TERMS * ("pressure" in columns)
        + DEW_POINT_TERMS * ("dew_point" in columns)
    )


def scale_design(
    rows: np.ndarray, feature_names: Sequence[str], columns: Mapping[str, str]
) -> np.ndarray:
    """The scale model's inputs for feature rows: ``(n, terms)``."""
    index = {name: i for i, name in enumerate(feature_names)}
    x = np.asarray(rows, dtype=float)
    horizon = x[:, index[columns["horizon"]]]
    log_h = np.log(horizon)
    angle = 2 * np.pi * x[:, index[columns["hour"]]] / 24
    variability = np.log(np.abs(x[:, index[columns["variability"]]]) + 0.5)
    terms = [
        np.ones(len(x)),
        log_h,
        horizon / 48,
        np.sin(angle),
        np.cos(angle),
        np.sin(2 * angle),
        np.cos(2 * angle),
        variability,
        log_h * variability,
        log_h * np.sin(angle),
        log_h * np.cos(angle),
    ]
    if "pressure" in columns:
        change = np.log1p(
            np.abs(x[:, index[columns["pressure"]]] - x[:, index[columns["pressure_lag24"]]])
        )
        terms += [change, log_h * change]
    if "dew_point" in columns:
        dew = x[:, index[columns["dew_point"]]] / 10
        terms += [dew, dew**2]
    return np.column_stack(terms)


@dataclass(frozen=True)
class HorizonInterval:
    """The calibrated interval model of every horizon 1..``max_hours`` (JSON-ready)."""

    alpha: float
    columns: dict[str, str]
    coef: list[float]
    lower: list[float]  # q_lo per horizon (index h - 1), in units of the scale
    upper: list[float]

    @property
    def max_hours(self) -> int:
        return len(self.lower)

    def scale(self, rows: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
        """The expected error size of each row.

        Raises:
            IntervalError: the coefficients do not match the scale's inputs (``columns``).
        """
        if len(self.coef) != scale_terms(self.columns):
            raise IntervalError(
                f"{len(self.coef)} scale coefficients for {scale_terms(self.columns)} terms "
                f"of {sorted(self.columns)}"
            )
        design = scale_design(rows, feature_names, self.columns)
        out: np.ndarray = np.exp(design @ np.asarray(self.coef))
        return out

    def bounds(
        self, rows: np.ndarray, point: np.ndarray, feature_names: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds around ``point`` for feature rows (of any horizon).

        Raises:
            IntervalError: a row's horizon is outside 1..``max_hours``.
        """
        x = np.asarray(rows, dtype=float)
        horizons = x[:, list(feature_names).index(self.columns["horizon"])].astype(int)
        if horizons.size and (horizons.min() < 1 or horizons.max() > self.max_hours):
            raise IntervalError(f"the interval is calibrated for horizons 1..{self.max_hours} h")
        size = self.scale(x, feature_names)
        lower = point + np.asarray(self.lower)[horizons - 1] * size
        upper = point + np.asarray(self.upper)[horizons - 1] * size
        return lower, upper

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "columns": dict(self.columns),
            "coef": list(self.coef),
            "lower": list(self.lower),
            "upper": list(self.upper),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HorizonInterval:
        return cls(
            alpha=float(data["alpha"]),
            columns={str(k): str(v) for k, v in dict(data["columns"]).items()},
            coef=[float(v) for v in data["coef"]],
            lower=[float(v) for v in data["lower"]],
            upper=[float(v) for v in data["upper"]],
        )


def conformal_quantiles(scores: np.ndarray, alpha: float) -> tuple[float, float]:
    """The split-conformal lower and upper quantiles (each tail ``alpha / 2``) of ``scores``.

    Raises:
        IntervalError: fewer scores than ``alpha`` needs.
    """
    r = np.sort(np.asarray(scores, dtype=float))
    r = r[np.isfinite(r)]
    n = r.size
    k_lo = math.floor((n + 1) * alpha / 2)
    k_hi = math.ceil((n + 1) * (1 - alpha / 2))
    if k_lo < 1 or k_hi > n:
        need = math.ceil(2 / alpha) - 1
        raise IntervalError(f"{n} errors are too few for alpha={alpha}; need {need}")
    return float(r[k_lo - 1]), float(r[k_hi - 1])


def fit_horizon_interval(
    rows: np.ndarray,
    errors: np.ndarray,
    folds: np.ndarray,
    spec: FeatureSpec,
    *,
    alpha: float,
    max_hours: int,
    columns: Mapping[str, str] | None = None,
) -> HorizonInterval:
    """Calibrate :class:`HorizonInterval` on out-of-fold errors (see the module docstring).

    Args:
        rows: feature rows (``spec.feature_names``) of the out-of-fold forecasts.
        errors: ``actual - forecast`` of each row.
        folds: the fold of each row (each fold is normalized by the scale fitted on the others).
        spec: the feature spec (a spec with ``horizon_features``).
        alpha: the miscoverage (0.1: a 90 % interval).
        max_hours: calibrate horizons 1..``max_hours``.
        columns: the scale's inputs (default :func:`scale_columns` of ``spec``; the benchmark
            compares subsets).

    Raises:
        IntervalError: a horizon has too few errors, or only one fold holds errors.
    """
    columns = dict(scale_columns(spec) if columns is None else columns)
    names = spec.feature_names
    design = scale_design(rows, names, columns)
    target = np.log(np.abs(errors) + ERROR_FLOOR)
    folds = np.asarray(folds)
    if len(np.unique(folds)) < 2:
        raise IntervalError("the interval needs errors from at least two folds")
    size = np.empty(len(errors))
    coefs = []
    # least squares through each fold's normal equations (a few terms, ~10^5 rows): the
    # same coefficients as an SVD of the other folds' rows (lstsq), in one pass over them
    ids = np.unique(folds)
    grams = [design[folds == f].T @ design[folds == f] for f in ids]
    moments = [design[folds == f].T @ target[folds == f] for f in ids]
    for i, fold in enumerate(ids):
        others = [j for j in range(len(ids)) if j != i]
        coef, *_ = np.linalg.lstsq(
            sum(grams[j] for j in others), sum(moments[j] for j in others), rcond=None
        )
        held = folds == fold
        size[held] = np.exp(design[held] @ coef)
        coefs.append(coef)
    scores = errors / size
    horizons = rows[:, names.index(HORIZON)].astype(int)
    lower, upper = [], []
    for h in range(1, max_hours + 1):
        picked = scores[horizons == h]
        try:
            q_lo, q_hi = conformal_quantiles(picked, alpha)
        except IntervalError as exc:
            raise IntervalError(f"horizon {h} h: {exc}") from exc
        lower.append(q_lo)
        upper.append(q_hi)
    return HorizonInterval(
        alpha=float(alpha),
        columns=columns,
        coef=np.mean(coefs, axis=0).tolist(),
        lower=lower,
        upper=upper,
    )
