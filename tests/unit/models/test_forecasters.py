"""One forecaster class per kind behind one protocol; a bundle loads and predicts leanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rps.models.bundle import ModelBundle, load_bundle
from rps.models.candidates import fit_candidate
from rps.models.forecasters import (
    CANDIDATES,
    FORECASTER_KINDS,
    Forecaster,
    ForecasterError,
    make_forecaster,
)
from rps.models.splits import prepare_data

#: what a server loading a bundle must not pull in (lean serving image)
HEAVY = ("pandas", "pyarrow", "sklearn", "mlflow", "optuna", "matplotlib")


@pytest.fixture(scope="module")
def train_xy(small_obs, spec, params):
    data = prepare_data(small_obs, spec, params.train)
    return data.x[data.train_pos], data.y[data.train_pos]


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_every_candidate_is_a_forecaster_of_its_registered_kind(name, train_xy, spec):
    """Each candidate fits to an object of the protocol whose kind maps back to its class."""
    x, y = train_xy
    forecaster, _ = fit_candidate(name, x, y, spec, {"n_estimators": 20}, seed=0)
    assert isinstance(forecaster, Forecaster)
    assert FORECASTER_KINDS[forecaster.kind] is CANDIDATES[name]
    importance = forecaster.importance()
    assert importance.shape == (len(spec.feature_names),)
    assert (importance >= 0).all() and importance.sum() > 0


def test_sample_weights_pull_the_ridge_fit_towards_the_weighted_rows(train_xy, spec):
    """Rows weighted up decide the fit: a shifted recent block moves the forecast toward it."""
    x, y = train_xy
    shifted = y.copy()
    shifted[-200:] += 5.0
    plain, _ = fit_candidate("ridge", x, shifted, spec, {"alpha": 1.0})
    weight = np.ones(len(y))
    weight[-200:] = 50.0
    weighted, _ = fit_candidate("ridge", x, shifted, spec, {"alpha": 1.0}, sample_weight=weight)
    recent = x[-200:]
    bias_plain = float(np.mean(shifted[-200:] - plain.predict(recent)))
    bias_weighted = float(np.mean(shifted[-200:] - weighted.predict(recent)))
    assert abs(bias_weighted) < abs(bias_plain) / 2


def _changed_regime(x: np.ndarray, y: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``rows`` labels follow a new rule: they lean on the first feature."""
    changed = y.copy()
    first = (x[:, 0] - x[:, 0].mean()) / x[:, 0].std()
    changed[-rows:] += 3.0 * first[-rows:]
    return changed, np.arange(len(y)) >= len(y) - rows


def test_a_regime_ridge_serves_the_new_regime_from_few_rows(train_xy, spec):
    """With the post-onset rows marked, the ridge learns their rule; weighting alone cannot."""
    x, y = train_xy
    changed, regime = _changed_regime(x, y, 120)
    fit_rows, fresh = slice(0, len(y) - 60), slice(len(y) - 60, None)
    weight = np.where(regime, (len(y) - 120) / 60, 1.0)[fit_rows]  # half the weight, as drift runs
    hyper = {"alpha": 1.0, "regime_alpha": 1.0}
    args = (x[fit_rows], changed[fit_rows], spec)
    weighted, _ = fit_candidate("ridge", *args, hyper, sample_weight=weight)
    per_regime, _ = fit_candidate(
        "ridge", *args, hyper, sample_weight=weight, regime=regime[fit_rows]
    )

    def rmse(model) -> float:
        return float(np.sqrt(np.mean((model.predict(x[fresh]) - changed[fresh]) ** 2)))

    assert rmse(per_regime) < 0.8 * rmse(weighted)


def test_a_regime_ridge_needs_both_regimes_and_its_penalty(train_xy, spec):
    """Without ``regime_alpha``, or with every row in one regime, it is the ordinary ridge;
    a huge penalty on the difference leaves the shared coefficients."""
    x, y = train_xy
    changed, regime = _changed_regime(x, y, 120)
    plain, _ = fit_candidate("ridge", x, changed, spec, {"alpha": 1.0})
    for hyper, rows in (
        ({"alpha": 1.0}, regime),
        ({"alpha": 1.0, "regime_alpha": 30.0}, np.ones(len(y), dtype=bool)),
    ):
        same, _ = fit_candidate("ridge", x, changed, spec, hyper, regime=rows)
        np.testing.assert_allclose(same.predict(x), plain.predict(x))
    stiff, _ = fit_candidate(
        "ridge", x, changed, spec, {"alpha": 1.0, "regime_alpha": 1e12}, regime=regime
    )
    np.testing.assert_allclose(stiff.predict(x), plain.predict(x), atol=1e-4)


def test_an_unknown_kind_is_refused_by_name(spec):
    with pytest.raises(ForecasterError, match="unknown model kind 'quantum'"):
        make_forecaster("quantum", spec.feature_names, {})


def _lean_load(directory: Path, *, preload: str = "") -> dict[str, object]:
    """Load and predict in a fresh interpreter; ``heavy``: what it imported beyond ``preload``."""
    code = (
        "import json, sys\n"
        "import numpy as np\n"
        f"{preload}\n"
        "before = set(sys.modules)\n"
        "from rps.models.bundle import load_bundle\n"
        f"bundle = load_bundle({str(directory)!r})\n"
        "rows = bundle.reference_sample[:4]\n"
        "point, low, high = bundle.predict_with_interval(rows)\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules and m not in before]\n"
        "print(json.dumps({'heavy': heavy, 'point': point.tolist(), 'kind': bundle.kind}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("name", ["ridge", "persistence", "climatology"])
def test_loading_and_predicting_a_bundle_imports_no_heavy_library(name, train_xy, spec, tmp_path):
    """A fresh interpreter loads a trained bundle and predicts with NumPy only."""
    x, y = train_xy
    forecaster, _ = fit_candidate(name, x, y, spec, {"alpha": 1.0})
    ModelBundle(
        predictor=forecaster,
        feature_spec=spec,
        interval={"alpha": 0.1, "lower": -1.0, "upper": 1.0},
        reference_stats={},
        reference_sample=x[:8],
    ).save(tmp_path / "bundle")
    result = _lean_load(tmp_path / "bundle")
    assert result["heavy"] == []
    assert result["kind"] == forecaster.kind
    expected = load_bundle(tmp_path / "bundle").predictor.predict(x[:4])
    np.testing.assert_allclose(np.asarray(result["point"]), expected)


def test_a_trajectory_bundle_loads_and_predicts_every_horizon_without_heavy_libraries(
    small_obs, spec, params, tmp_path
):
    """The direct horizon models and their conditional interval need NumPy and LightGBM only
    (LightGBM itself imports pandas and scikit-learn when they are installed)."""
    from rps.models.horizons import fit_trajectory
    from rps.models.splits import prepare_data
    from rps.params import HorizonParams

    hp = HorizonParams(max_hours=8, group_starts=(1, 4), interval_folds=2)
    data = prepare_data(small_obs, spec, params.train, hp=hp)
    fitted = fit_trajectory(data.horizons, "lightgbm", {"n_estimators": 20}, alpha=0.1, seed=0)
    rows = data.horizons.holdout.x[:4]  # horizons 1..4 of one issue time
    ModelBundle(
        predictor=fitted.predictor,
        feature_spec=spec,
        interval={"alpha": 0.1, "lower": -1.0, "upper": 1.0},
        reference_stats={},
        reference_sample=rows,
        horizon_interval=fitted.interval,
    ).save(tmp_path / "bundle")
    result = _lean_load(tmp_path / "bundle", preload="import lightgbm")
    assert result["heavy"] == [] and result["kind"] == "lightgbm_horizons"
    np.testing.assert_allclose(np.asarray(result["point"]), fitted.predictor.predict(rows))
