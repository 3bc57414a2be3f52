"""A ridge for a new regime: a drift run's few days of it, a year of the old one.

Recency weighting gives the rows after a drift onset a share of the weight, but a linear
model fitted to both regimes still has one set of coefficients to serve two: a temperature
sensor whose clock runs late left a ridge weighted toward the new rows at 2.3 degC over the
next 48 h where the old level was 1.6 (docs/BENCHMARKS.md, *Adaptation after drift*).
:func:`regime_ridge` learns the new regime's own coefficients, and
:class:`rps.models.forecasters.RidgeForecaster` serves them when a drift run passes the
post-onset rows (``regime``) and ``train.adaptation.regime_alpha``.
"""

from __future__ import annotations

import math

import numpy as np


def regime_ridge(
    z: np.ndarray,
    y: np.ndarray,
    *,
    weight: np.ndarray | None,
    regime: np.ndarray,
    alpha: float,
    regime_alpha: float,
) -> tuple[np.ndarray, float]:
    """Coefficients of the new regime, learned as the shared ones plus a shrunk difference.

    Feature augmentation (Daume III, "Frustratingly easy domain adaptation", 2007): every
    row has the standardised features ``z``; the rows of the new regime have them a second
    time, with an indicator. One ridge learns shared coefficients (penalty ``alpha``) and
    the new regime's difference, so a few days of the new regime move the coefficients where
    the data there insists and leave the rest to the long history. The difference's penalty
    is ``regime_alpha`` times the mean weight of a new-regime row: it shrinks as a ridge with
    penalty ``regime_alpha`` on those rows, unweighted, would, however few they are and
    whatever share of the weight they carry (with a drift run's recency weights, 20 rows
    would otherwise each weigh hundreds of old rows and the difference would chase them).
    The returned coefficients are for the new regime: shared plus difference.
    """
    from sklearn.linear_model import Ridge

    if alpha <= 0:
        raise ValueError(f"a regime ridge needs a positive alpha, got {alpha}")
    row_weight = 1.0 if weight is None else float(np.mean(weight[regime]))
    # the difference columns are scaled so that one ridge penalty gives them their own
    scale = math.sqrt(alpha / (regime_alpha * row_weight))
    indicator = regime.astype(float)
    design = np.column_stack([z, scale * z * indicator[:, None], scale * indicator])
    model = Ridge(alpha=alpha).fit(design, y, sample_weight=weight)
    p = z.shape[1]
    coef = model.coef_[:p] + scale * model.coef_[p : 2 * p]
    return np.asarray(coef, dtype=float), float(model.intercept_ + scale * model.coef_[-1])
