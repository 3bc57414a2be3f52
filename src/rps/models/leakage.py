"""The leakage check: offline features must equal the online path on truncated history."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rps.data.schema import TIME
from rps.features.build import (
    TARGET,
    TARGET_TIME,
    FeatureError,
    FeatureSpec,
    build_feature_row,
)
from rps.models.errors import LeakageError

LEAKAGE_SAMPLE_ROWS = 48


def check_no_leakage(
    features: pd.DataFrame,
    spec: FeatureSpec,
    observations: pd.DataFrame | None = None,
    *,
    n_samples: int = LEAKAGE_SAMPLE_ROWS,
    seed: int = 0,
) -> int:
    """Refuse features that could see past their issue time.

    Two checks: the columns must be exactly ``spec.feature_names`` (plus the label
    columns), and for a random sample of complete rows the offline row must equal the
    online row (:func:`build_feature_row`) computed from observations *truncated at the
    issue time*, and the label must be the target ``horizon`` hours later. Without
    ``observations`` the raw-variable columns of ``features`` stand in for them.

    Returns:
        The number of rows verified.

    Raises:
        LeakageError: naming the offending columns.
    """
    names = spec.feature_names
    allowed = {*names, TARGET, TARGET_TIME}
    extra = [str(c) for c in features.columns if c not in allowed]
    if extra:
        raise LeakageError(f"feature columns not in the feature spec (refused): {extra}")
    missing = [n for n in names if n not in features.columns]
    if missing:
        raise LeakageError(f"features lack spec columns {missing[:5]}")
    if observations is None:
        hourly = features[list(spec.variables)].copy()
    else:
        hourly = observations.set_index(TIME)[list(spec.variables)].astype(float)
    index = pd.DatetimeIndex(hourly.index)
    hourly.index = index.tz_localize("UTC") if index.tz is None else index
    hourly = hourly.dropna()
    complete = features.index[features[names].notna().all(axis=1).to_numpy()]
    if len(complete) == 0:
        raise LeakageError("no complete feature row to verify")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(complete), size=min(n_samples, len(complete)), replace=False)
    sample = sorted({*complete[picks], complete[-1]})
    need = spec.window_hours
    bad: set[str] = set()
    checked = 0
    for issue in sample:
        window = hourly.loc[:issue].tail(need)
        if len(window) < need or window.index[-1] != issue:
            continue
        try:
            online = build_feature_row(window.rename_axis(TIME).reset_index(), spec)
        except FeatureError:
            continue  # a gap in the window: the online path refuses it, nothing to compare
        offline = features.loc[issue, names].to_numpy(dtype=float)
        close = np.isclose(offline, online, rtol=1e-6, atol=1e-6, equal_nan=True)
        bad.update(n for n, ok in zip(names, close, strict=True) if not ok)
        if TARGET in features.columns:
            label_time = issue + pd.Timedelta(hours=spec.horizon_hours)
            label = float(features.loc[issue, TARGET])
            if label_time in hourly.index and not np.isnan(label):
                truth = float(hourly.loc[label_time, spec.target])
                if not np.isclose(label, truth, rtol=1e-9, atol=1e-9):
                    bad.add(TARGET)
            if TARGET_TIME in features.columns and features.at[issue, TARGET_TIME] != label_time:
                bad.add(TARGET_TIME)
        checked += 1
    if bad:
        raise LeakageError(
            "offline features differ from the online path on observations truncated at the "
            f"issue time (future information?): {sorted(bad)}"
        )
    if checked == 0:
        raise LeakageError("no sampled feature row had a gap-free window to verify")
    return checked
