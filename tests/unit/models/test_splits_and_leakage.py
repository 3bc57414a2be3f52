"""Time splits keep a horizon-wide gap; the leakage check refuses future information."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rps.features.build import TARGET, build_features
from rps.models.errors import InsufficientDataError, LeakageError
from rps.models.leakage import check_no_leakage
from rps.models.splits import holdout_split, prepare_data, required_rows, rolling_origin_folds


@pytest.fixture(scope="module")
def features(small_obs, spec) -> pd.DataFrame:
    return build_features(small_obs, spec)


def hours(delta: pd.Timedelta) -> float:
    return delta / pd.Timedelta(hours=1)


def test_holdout_is_the_newest_fraction_after_a_gap():
    index = pd.date_range("2024-01-01", periods=1000, freq="h", tz="UTC")
    train, hold = holdout_split(index, 0.2, gap_hours=6)
    assert len(hold) == 200
    assert hold[-1] == 999 and hold[0] == 800
    assert hours(index[hold[0]] - index[train[-1]]) >= 6
    assert len(train) == 795  # rows 795..799 lie inside the gap: dropped
    assert train[0] == 0 and np.all(np.diff(train) == 1)


def test_holdout_gap_holds_with_missing_rows():
    index = pd.date_range("2024-01-01", periods=1000, freq="h", tz="UTC").delete(range(790, 797))
    train, hold = holdout_split(index, 0.2, gap_hours=6)
    assert hours(index[hold[0]] - index[train[-1]]) >= 6


def test_rolling_origin_folds_expand_and_keep_the_gap():
    index = pd.date_range("2024-01-01", periods=800, freq="h", tz="UTC")
    folds = rolling_origin_folds(index, 3, gap_hours=6)
    assert len(folds) == 3
    previous_train = 0
    covered = []
    for train, valid in folds:
        assert hours(index[valid[0]] - index[train[-1]]) >= 6
        assert train.max() < valid.min()
        assert len(train) > previous_train
        previous_train = len(train)
        covered.extend(valid)
    assert covered == list(range(200, 800))  # validation blocks tile the rest, in order


def test_prepared_splits_have_no_label_inside_the_holdout(small_obs, spec, params):
    data = prepare_data(small_obs, spec, params.train)
    index = data.index
    first_holdout = index[data.holdout_pos[0]]
    last_train_label = data.features["target_time"].iloc[data.train_pos[-1]]
    assert last_train_label <= first_holdout
    assert hours(first_holdout - index[data.train_pos[-1]]) >= spec.horizon_hours
    for train, valid in data.folds:
        train_index = index[data.train_pos]
        assert hours(train_index[valid[0]] - train_index[train[-1]]) >= spec.horizon_hours
    assert not np.isnan(data.x).any() and not np.isnan(data.y).any()


def test_too_short_dataset_names_the_rows_needed(small_obs, spec, params):
    rows, hours_needed = required_rows(spec, params.train)
    with pytest.raises(InsufficientDataError, match=f"at least {hours_needed}"):
        prepare_data(small_obs.iloc[: hours_needed - 1], spec, params.train)
    assert hours_needed > spec.window_hours + spec.horizon_hours + rows - 2


def test_clean_features_pass(features, spec, small_obs):
    assert check_no_leakage(features, spec, small_obs) > 10
    assert check_no_leakage(features, spec) > 10  # raw columns stand in for observations


def test_an_extra_future_column_is_refused(features, spec):
    leaky = features.copy()
    leaky["temperature_next_6h"] = leaky[spec.target].shift(-spec.horizon_hours)
    with pytest.raises(LeakageError, match="temperature_next_6h"):
        check_no_leakage(leaky, spec)


def test_a_spec_column_built_from_the_future_is_caught(features, spec, small_obs):
    leaky = features.copy()
    name = f"{spec.target}_roll6_mean"
    # a centred window peeks 3 hours ahead: plausible-looking, and leaky
    series = small_obs.set_index("time")[spec.target]
    leaky[name] = series.rolling(6, center=True, min_periods=6).mean().to_numpy()
    with pytest.raises(LeakageError, match=name):
        check_no_leakage(leaky, spec, small_obs)


def test_a_shifted_label_is_caught(features, spec, small_obs):
    leaky = features.copy()
    leaky[TARGET] = leaky[TARGET].shift(-1)
    with pytest.raises(LeakageError, match="target"):
        check_no_leakage(leaky, spec, small_obs)


def test_a_missing_spec_column_is_refused(features, spec):
    with pytest.raises(LeakageError, match="lack spec columns"):
        check_no_leakage(features.drop(columns=[spec.feature_names[3]]), spec)
