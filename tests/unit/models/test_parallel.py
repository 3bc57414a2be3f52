"""Fits side by side: the same models and answers in the same order, in less wall time."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from rps.models import tuning
from rps.models.candidates import fit_candidate
from rps.models.horizons import fit_trajectory
from rps.models.parallel import fit_workers, in_order
from rps.models.splits import prepare_data
from rps.models.tuning import cross_validate
from rps.params import HorizonParams
from rps.settings import get_settings


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Set ``RPS_FIT_WORKERS`` for one test."""

    def use(n: int) -> None:
        monkeypatch.setenv("RPS_FIT_WORKERS", str(n))
        get_settings.cache_clear()

    yield use
    get_settings.cache_clear()


def test_two_fits_run_at_once_and_their_results_come_back_in_order(workers):
    workers(2)
    both_running = threading.Barrier(2, timeout=10)  # broken if the fits run one by one

    def fit(item: tuple[int, float]) -> int:
        number, _ = item
        if number < 2:
            both_running.wait()
        return number * 10

    assert list(in_order(fit, [(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0)])) == [0, 10, 20, 30]


def test_one_worker_fits_in_the_callers_thread(workers):
    workers(1)
    assert fit_workers() == 1
    threads = list(in_order(lambda _: threading.current_thread(), range(3)))
    assert threads == [threading.current_thread()] * 3


def test_without_a_setting_every_usable_cpu_fits(workers, monkeypatch):
    monkeypatch.delenv("RPS_FIT_WORKERS", raising=False)
    get_settings.cache_clear()

    assert fit_workers() == len(os.sched_getaffinity(0))


def test_a_fit_inside_a_fit_runs_its_parts_in_its_own_thread(workers):
    workers(2)

    def outer(_: int) -> list[threading.Thread]:
        return list(in_order(lambda _: threading.current_thread(), range(3)))

    for inner_threads in in_order(outer, range(2)):
        assert len(set(inner_threads)) == 1
        assert inner_threads[0] is not threading.main_thread()


def test_closing_early_leaves_the_fits_not_started_unfitted(workers):
    workers(2)
    fitted: list[int] = []
    first_done = threading.Event()

    def fit(n: int) -> int:
        if n > 0:
            first_done.wait(timeout=10)
        fitted.append(n)
        return n

    fits = in_order(fit, range(10))
    assert next(fits) == 0
    first_done.set()
    fits.close()
    assert len(fitted) < 10
    assert fitted[0] == 0


def test_a_pruned_configuration_fits_only_its_first_fold(
    workers, small_obs, spec, params, monkeypatch
):
    workers(2)
    data = prepare_data(small_obs, spec, params.train)
    x, y = data.x[data.train_pos], data.y[data.train_pos]
    reported: list[int] = []
    fitted_rows: list[int] = []

    def counted_fit(name, x_fit, *args, **kwargs):  # type: ignore[no-untyped-def]
        fitted_rows.append(len(x_fit))
        return fit_candidate(name, x_fit, *args, **kwargs)

    monkeypatch.setattr(tuning, "fit_candidate", counted_fit)

    def prune(step: int, _value: float) -> None:
        reported.append(step)
        raise RuntimeError("pruned")

    with pytest.raises(RuntimeError, match="pruned"):
        cross_validate(
            "lightgbm", x, y, data.folds, spec=spec, hyper={"n_estimators": 20}, report=prune
        )
    assert reported == [0]
    assert fitted_rows == [len(data.folds[0][0])]


@pytest.mark.parametrize("name", ["lightgbm", "ridge"])
def test_side_by_side_cross_validation_equals_one_fold_after_another(
    workers, name, small_obs, spec, params
):
    data = prepare_data(small_obs, spec, params.train)
    x, y = data.x[data.train_pos], data.y[data.train_pos]
    outcomes = []
    for n in (1, 2):
        workers(n)
        seen: list[tuple[int, float]] = []
        cv = cross_validate(
            name,
            x,
            y,
            data.folds,
            spec=spec,
            hyper={"n_estimators": 40},
            report=lambda k, v: seen.append((k, v)),  # noqa: B023 - consumed in the loop
        )
        outcomes.append((cv, seen))
    (one, seen_one), (two, seen_two) = outcomes
    assert seen_one == seen_two  # the same running means, reported fold by fold
    assert one.fold_rmse == two.fold_rmse
    assert one.best_iterations == two.best_iterations
    np.testing.assert_array_equal(one.residuals, two.residuals)


def test_side_by_side_trajectory_equals_one_fit_after_another(workers, small_obs, spec, params):
    hp = HorizonParams(max_hours=12, group_starts=(1, 4, 7), interval_folds=3)
    data = prepare_data(small_obs, spec, params.train, hp=hp).horizons
    hyper = {"num_leaves": 15, "learning_rate": 0.1, "n_estimators": 30}
    fits = []
    for n in (1, 2):
        workers(n)
        fits.append(fit_trajectory(data, "lightgbm", hyper, alpha=0.1, seed=0))
    one, two = fits
    assert one.oof.group_rounds == two.oof.group_rounds
    np.testing.assert_array_equal(one.oof.pred, two.oof.pred)
    rows = data.holdout.x
    np.testing.assert_array_equal(one.predictor.predict(rows), two.predictor.predict(rows))
    assert one.fallback == two.fallback
