"""The one-row LightGBM path gives Booster.predict's numbers, and refuses what it cannot run."""

from __future__ import annotations

import threading

import lightgbm
import numpy as np
import pytest

from rps.models.single_row import (
    BoosterPredictor,
    SingleRowError,
    SingleRowPredictor,
    _library,
)


@pytest.fixture(scope="module")
def booster() -> lightgbm.Booster:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 7))
    y = 2 * x[:, 0] - x[:, 3] ** 2 + rng.normal(scale=0.1, size=400)
    params = {"objective": "regression", "num_leaves": 15, "verbosity": -1, "seed": 0}
    return lightgbm.train(params, lightgbm.Dataset(x, y), num_boost_round=30)


def test_one_row_forecasts_equal_booster_predict_bit_for_bit(booster: lightgbm.Booster) -> None:
    rows = np.random.default_rng(1).normal(size=(200, 7)) * 3  # beyond the training range too
    predictor = BoosterPredictor(booster)
    one_by_one = np.concatenate([predictor(rows[i : i + 1]) for i in range(len(rows))])
    np.testing.assert_array_equal(one_by_one, booster.predict(rows, num_threads=1))
    # a batch goes through Booster.predict unchanged
    np.testing.assert_array_equal(predictor(rows), booster.predict(rows, num_threads=1))


def test_one_row_path_follows_the_best_iteration_of_a_fresh_booster() -> None:
    """A booster kept in training after early stopping holds more trees than its best iteration
    and predicts with the best; so does the one-row path (its model text holds that one)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 4))
    y = x[:, 0] + rng.normal(scale=2.0, size=300)  # weak signal: stops after a few rounds
    train, valid = lightgbm.Dataset(x[:200], y[:200]), lightgbm.Dataset(x[200:], y[200:])
    booster = lightgbm.train(
        {"objective": "regression", "verbosity": -1, "seed": 0},
        train,
        num_boost_round=200,
        valid_sets=[valid],
        callbacks=[lightgbm.early_stopping(5, verbose=False)],
        keep_training_booster=True,
    )
    assert 0 < booster.best_iteration < booster.current_iteration()
    predictor = BoosterPredictor(booster)
    row = x[:1]
    assert predictor(row)[0] == booster.predict(row, num_threads=1)[0]


def test_a_row_of_the_wrong_width_is_refused(booster: lightgbm.Booster) -> None:
    library = _library()
    assert library is not None  # the wheel ships its shared library
    single = SingleRowPredictor(library, booster.model_to_string(), booster.num_feature())
    with pytest.raises(ValueError, match="one row of 7 values"):
        single.predict(np.zeros(6))


def test_a_model_lightgbm_cannot_read_is_refused_with_its_message() -> None:
    library = _library()
    assert library is not None
    with pytest.raises(SingleRowError, match=r"[Mm]odel"):
        SingleRowPredictor(library, "not a model", 3)


def test_concurrent_one_row_calls_each_get_their_own_forecast(booster: lightgbm.Booster) -> None:
    """The prepared predictor has one output buffer: calls from threads must not mix."""
    rows = np.random.default_rng(3).normal(size=(64, 7))
    expected = booster.predict(rows, num_threads=1)
    predictor = BoosterPredictor(booster)
    predictor(rows[:1])  # prepared before the threads start
    mismatches: list[int] = []

    def work(offset: int) -> None:
        for _ in range(50):
            for i in range(offset, len(rows), 4):
                if predictor(rows[i : i + 1])[0] != expected[i]:
                    mismatches.append(i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mismatches == []
