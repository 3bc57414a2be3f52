"""Each candidate's predictions, its export into the bundle, and the bundle round trip."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from rps.features.build import TARGET, build_features
from rps.models import evaluation as ev
from rps.models.bundle import ModelBundle, load_bundle
from rps.models.candidates import (
    BASELINES,
    KIND_OF,
    LEARNED,
    feature_importance,
    fit_candidate,
    seasonal_feature,
)
from rps.models.selection import CandidateResult, choose_candidate
from rps.models.splits import prepare_data
from rps.models.tuning import CVOutcome, cross_validate, tune


@pytest.fixture(scope="module")
def data(small_obs, spec, params):
    return prepare_data(small_obs, spec, params.train)


@pytest.fixture(scope="module")
def train_xy(data):
    return data.x[data.train_pos], data.y[data.train_pos]


def test_persistence_forecasts_the_value_at_issue_time(data, spec, small_obs):
    predictor, _ = fit_candidate("persistence", *_xy(data), spec)
    pred = predictor.predict(data.x[:5])
    observed = small_obs.set_index("time").loc[data.index[:5], spec.target].to_numpy()
    np.testing.assert_array_equal(pred, observed)


def test_seasonal_naive_forecasts_the_value_a_day_before_the_target(data, spec, small_obs):
    assert seasonal_feature(spec) == "target_same_hour_d1"  # right at every horizon
    old = replace(spec, horizon_features=False)  # a spec stored before trajectories
    assert seasonal_feature(old) == f"{spec.target}_lag{24 - spec.horizon_hours}"
    predictor, _ = fit_candidate("seasonal_naive", *_xy(data), spec)
    pred = predictor.predict(data.x[:5])
    day_before_target = data.index[:5] + pd.Timedelta(hours=spec.horizon_hours - 24)
    observed = small_obs.set_index("time").loc[day_before_target, spec.target].to_numpy()
    np.testing.assert_array_equal(pred, observed)


def test_climatology_is_the_training_mean_by_target_hour(train_xy, spec):
    x, y = train_xy
    predictor, _ = fit_candidate("climatology", x, y, spec)
    hours = x[:, spec.feature_names.index("target_hour")].astype(int)
    for hour in (0, 7, 15):
        assert predictor.params["by_hour"][hour] == pytest.approx(y[hours == hour].mean())
    row = x[hours == 7][:1]
    assert predictor.predict(row)[0] == pytest.approx(y[hours == 7].mean())


def test_ridge_export_matches_sklearn(train_xy, spec):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = train_xy
    predictor, _ = fit_candidate("ridge", x, y, spec, {"alpha": 3.0})
    reference = make_pipeline(StandardScaler(), Ridge(alpha=3.0)).fit(x, y)
    np.testing.assert_allclose(predictor.predict(x[:50]), reference.predict(x[:50]), rtol=1e-9)
    assert predictor.kind == "linear"
    assert len(predictor.params["coef"]) == len(spec.feature_names)


def test_lightgbm_stops_early_on_validation_rows(train_xy, spec):
    x, y = train_xy
    hyper = {"num_leaves": 15, "learning_rate": 0.2, "n_estimators": 400}
    predictor, info = fit_candidate(
        "lightgbm", x[:600], y[:600], spec, hyper, valid=(x[600:], y[600:])
    )
    assert 1 <= info["best_iteration"] < 400
    assert predictor.kind == "lightgbm_horizons"
    assert ev.rmse(y[600:], predictor.predict(x[600:])) < np.std(y[600:])


def test_cross_validation_collects_out_of_fold_residuals(data, train_xy, spec):
    x, y = train_xy
    cv = cross_validate("persistence", x, y, data.folds, spec=spec)
    assert len(cv.fold_rmse) == len(data.folds)
    assert cv.residuals.size == sum(len(v) for _, v in data.folds)
    assert cv.rmse == pytest.approx(np.mean(cv.fold_rmse))


def test_tune_logs_every_trial_and_returns_the_best(data, train_xy, spec):
    x, y = train_xy
    seen = []
    space = {"alpha": (0.01, 100.0)}
    outcome = tune(
        "ridge",
        x,
        y,
        data.folds,
        spec=spec,
        space=space,
        n_trials=4,
        seed=0,
        on_trial=lambda *args: seen.append(args),
    )
    assert outcome.n_trials == 4
    assert len(seen) == 4
    assert seen[0][2] == {"alpha": 1.0}  # the default configuration goes first
    completed = [s[3] for s in seen if s[4] == "COMPLETE"]
    assert outcome.cv.rmse == pytest.approx(min(completed))
    assert 0.01 <= outcome.hyper["alpha"] <= 100.0


@pytest.mark.parametrize("name", [*BASELINES, *LEARNED])
def test_bundle_round_trip_of_each_kind(name, data, train_xy, spec, tmp_path):
    x, y = train_xy
    hyper = {"n_estimators": 30} if name == "lightgbm" else {}
    predictor, _ = fit_candidate(name, x, y, spec, hyper)
    assert predictor.kind == KIND_OF[name]
    frame = pd.DataFrame(x, columns=spec.feature_names)
    bundle = ModelBundle(
        predictor=predictor,
        feature_spec=spec,
        interval={"alpha": 0.1, "lower": -2.0, "upper": 2.5},
        metrics={"holdout_rmse": 1.0, "holdout_mae": 0.8, "interval_coverage": 0.9},
        lineage={"run_id": "r", "dataset_md5": "m", "params": {"a": 1}},
        reference_stats=ev.reference_stats(frame),
        reference_sample=x[:100],
    )
    bundle.save(tmp_path / name)
    loaded = load_bundle(tmp_path / name)
    rows = data.x[data.holdout_pos]
    np.testing.assert_allclose(loaded.predictor.predict(rows), predictor.predict(rows))
    point, _lower, upper = loaded.predict_with_interval(rows[:3])
    np.testing.assert_allclose(upper - point, 2.5)
    assert loaded.kind == KIND_OF[name]
    assert loaded.feature_spec == spec
    assert loaded.checksum == bundle.checksum
    assert loaded.reference_stats[spec.target]["quantiles"]["0.5"] == pytest.approx(
        float(np.median(frame[spec.target]))
    )
    importance = feature_importance(loaded.predictor)
    assert importance.shape == (len(spec.feature_names),) and importance.max() > 0


def _xy(data):
    return data.x[data.train_pos], data.y[data.train_pos]


def _result(name: str, holdout_rmse: float, beats: bool, cv_rmse: float = 1.0) -> CandidateResult:
    metrics = {"holdout_rmse": holdout_rmse, "beats_persistence": float(beats)}
    cv = CVOutcome(cv_rmse, [cv_rmse], np.zeros(3))
    return CandidateResult(name, KIND_OF[name], {}, None, cv, np.zeros(3), {}, metrics)  # type: ignore[arg-type]


def test_choose_takes_the_best_holdout_candidate_that_beats_persistence():
    results = {
        "persistence": _result("persistence", 5.0, False),
        "seasonal_naive": _result("seasonal_naive", 4.0, True),
        "ridge": _result("ridge", 2.0, False),  # best RMSE, but not significantly better
        "lightgbm": _result("lightgbm", 2.5, True, cv_rmse=9.0),  # CV does not decide
    }
    assert choose_candidate(results).name == "lightgbm"


def test_choose_falls_back_to_persistence():
    results = {
        "persistence": _result("persistence", 5.0, False),
        "ridge": _result("ridge", 2.0, False),
        "lightgbm": _result("lightgbm", 2.5, False),
    }
    assert choose_candidate(results).name == "persistence"


def test_a_drift_run_chooses_the_best_holdout_rmse_without_the_persistence_fallback():
    results = {
        "persistence": _result("persistence", 5.0, False),
        "ridge": _result("ridge", 2.0, False),  # not significant on a short post-onset holdout
        "lightgbm": _result("lightgbm", 2.5, False),
    }
    assert choose_candidate(results, adapting=True).name == "ridge"
    results["persistence"] = _result("persistence", 1.5, False)
    assert choose_candidate(results, adapting=True).name == "persistence"


def test_features_target_column_is_the_label(small_obs, spec):
    features = build_features(small_obs, spec)
    assert TARGET in features.columns
