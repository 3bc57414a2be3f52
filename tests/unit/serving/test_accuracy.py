"""The SQLite prediction log behind live accuracy."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from rps.models.interval_rescale import Rescale
from rps.serving.accuracy import (
    ErrorTest,
    IntervalFactorCache,
    LoggedPrediction,
    PredictionLog,
    error_cusum,
    error_cusum_path,
)

HOUR = 3600


def _prediction(issue: int, value: float, version: str = "1") -> LoggedPrediction:
    return LoggedPrediction(
        issue_time=issue * HOUR,
        target_time=(issue + 6) * HOUR,
        model_version=version,
        prediction=value,
        lower=value - 1,
        upper=value + 1,
    )


def test_live_accuracy_is_empty_before_feedback(tmp_path: Path) -> None:
    """Without realized values there is no RMSE (not a misleading 0)."""
    log = PredictionLog(tmp_path / "p.db", window=3)
    log.log([_prediction(0, 10.0)])
    live = log.live_accuracy()
    assert (live.rmse, live.mae, live.samples) == (None, None, 0)


def test_feedback_joins_by_target_time_over_the_newest_window(tmp_path: Path) -> None:
    """Errors cover the newest ``window`` joined predictions; repeats are logged once."""
    log = PredictionLog(tmp_path / "p.db", window=3)
    log.log([_prediction(k, 10.0 + k) for k in range(5)])
    log.log([_prediction(4, 14.0)])  # the same forecast again
    joined = log.record_actuals([((k + 6) * HOUR, 10.0) for k in range(5)] + [(999 * HOUR, 1.0)])
    assert joined == 5
    live = log.live_accuracy()
    errors = [2.0, 3.0, 4.0]  # issues 2, 3, 4 are the newest three target times
    assert live.samples == 3
    assert live.rmse == pytest.approx(math.sqrt(sum(e * e for e in errors) / 3))
    assert live.mae == pytest.approx(3.0)


def test_a_later_realized_value_replaces_the_earlier_one(tmp_path: Path) -> None:
    """Corrected observations overwrite the stored value for their time."""
    log = PredictionLog(tmp_path / "p.db", window=10)
    log.log([_prediction(0, 10.0)])
    log.record_actuals([(6 * HOUR, 12.0)])
    log.record_actuals([(6 * HOUR, 11.0)])
    assert log.live_accuracy().mae == pytest.approx(1.0)


def test_two_connections_share_the_log(tmp_path: Path) -> None:
    """Workers with their own connections see each other's predictions and feedback."""
    first = PredictionLog(tmp_path / "p.db", window=10)
    second = PredictionLog(tmp_path / "p.db", window=10)
    first.log([_prediction(0, 10.0)])
    assert second.record_actuals([(6 * HOUR, 13.0)]) == 1
    assert first.live_accuracy().rmse == pytest.approx(3.0)


def test_the_log_is_bounded(tmp_path: Path) -> None:
    """Beyond max_rows the oldest predictions are pruned."""
    log = PredictionLog(tmp_path / "p.db", window=10, max_rows=100)
    for batch in range(12):
        log.log([_prediction(batch * 100 + k, 1.0) for k in range(100)])
    (count,) = log._conn.execute("SELECT COUNT(*) FROM predictions").fetchone()
    assert count < 1200  # pruned
    assert count <= 100 + 1000  # at most max_rows plus one pruning interval


def test_error_cusum_stays_at_zero_at_training_accuracy_and_grows_with_larger_errors() -> None:
    """Errors the size of the holdout RMSE add nothing; twice as large add 4 - 1 - 1 = 2 each;
    a single huge miss counts at most ``cap``; a recovery drains the sum."""
    rng = np.random.default_rng(1)
    at_training = rng.choice([-1.0, 1.0], 500) * 1.3  # |e| = scale exactly
    assert error_cusum(at_training, scale=1.3, allowance=1.0, cap=16.0) == 0.0
    doubled = np.full(10, 2.6)
    assert error_cusum(doubled, scale=1.3, allowance=1.0, cap=16.0) == pytest.approx(20.0)
    storm = np.array([100.0])
    assert error_cusum(storm, scale=1.0, allowance=1.0, cap=16.0) == pytest.approx(14.0)
    recovered = np.concatenate([doubled, np.zeros(25)])
    assert error_cusum(recovered, scale=1.3, allowance=1.0, cap=16.0) == 0.0
    with pytest.raises(ValueError, match="positive scale"):
        error_cusum(doubled, scale=0.0, allowance=1.0, cap=16.0)


def test_live_accuracy_reports_the_error_drift_ratio_in_target_time_order(tmp_path: Path) -> None:
    """With the model's holdout RMSE as scale, the CUSUM runs over the joined errors oldest
    first: errors that grew at the end give a ratio above 1; the same errors early do not."""
    test = ErrorTest(allowance=1.0, cap=16.0, threshold=10.0)
    log = PredictionLog(tmp_path / "p.db", window=50, error_test=test)
    errors = [1.0] * 20 + [3.0] * 5  # the last 5 errors are 3x the scale: 5 * (9 - 2) = 35
    log.log([_prediction(k, 10.0 + e) for k, e in enumerate(errors)])
    log.record_actuals([((k + 6) * HOUR, 10.0) for k in range(len(errors))])
    assert log.live_accuracy().error_drift is None  # no scale, no test
    assert log.live_accuracy(error_scale=1.0).error_drift == pytest.approx(3.5)

    early = PredictionLog(tmp_path / "q.db", window=50, error_test=test)
    early.log([_prediction(k, 10.0 + e) for k, e in enumerate(reversed(errors))])
    early.record_actuals([((k + 6) * HOUR, 10.0) for k in range(len(errors))])
    assert early.live_accuracy(error_scale=1.0).error_drift == pytest.approx(1.5)


def test_error_cusum_path_rises_with_the_excess_and_resets_at_zero() -> None:
    errors = np.array([1.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    path = error_cusum_path(errors, scale=1.0, allowance=1.0, cap=16.0)
    # steps: -1, +7, +7, then -2 each: 0, 7, 14, 12, 10, 8, 6, 4
    assert path.tolist() == [0.0, 7.0, 14.0, 12.0, 10.0, 8.0, 6.0, 4.0]
    assert error_cusum(errors, scale=1.0, allowance=1.0, cap=16.0) == path[-1]
    assert error_cusum(np.array([]), scale=1.0, allowance=1.0, cap=16.0) == 0.0


def _trajectory(
    issue: int, value: float, hours: int, factor: float = 1.0, drop: float = 0.0
) -> list[LoggedPrediction]:
    """Forecasts of every hour 1..hours (``value - drop * h``), their calibrated interval
    -2 .. +4 around it, served rescaled by ``factor``."""
    return [
        LoggedPrediction(
            issue_time=issue * HOUR,
            target_time=(issue + h) * HOUR,
            model_version="1",
            prediction=value - drop * h,
            lower=value - drop * h - 2 * factor,
            upper=value - drop * h + 4 * factor,
            factor=factor,
        )
        for h in range(1, hours + 1)
    ]


def test_joined_forecasts_set_the_interval_factor_of_each_horizon(tmp_path: Path) -> None:
    """Each horizon's factor comes from its own joined errors, measured against the interval
    before the rescale it was served with; a horizon with too few errors keeps factor 1."""
    rescale = Rescale(window=10, min_samples=5)
    log = PredictionLog(tmp_path / "p.db", window=10, rescale=rescale)
    assert log.interval_factors() == {}
    for issue in range(8):  # served with a factor 0.5: the interval before it is -2 .. +4
        log.log(_trajectory(issue, 10.0, 3, factor=0.5, drop=0.5))
    log.log(_trajectory(100, 10.0, 3, drop=0.5))  # issue 100: one more forecast per horizon
    # realized 12.5 at every hour: +2.5 + 0.5 h over the forecast of horizon h, of the +4 offset
    joined = log.record_actuals([(t * HOUR, 12.5) for t in range(1, 104)])
    assert joined == 27
    factors = log.interval_factors()
    assert factors == {1: pytest.approx(0.75), 2: pytest.approx(0.875), 3: pytest.approx(1.0)}
    # the live metrics keep to the model's own horizon
    assert log.live_accuracy(horizon_hours=2).samples == 9
    assert log.live_accuracy().samples == 10


def test_too_few_joined_forecasts_leave_the_factor_at_one(tmp_path: Path) -> None:
    """Negative case: two large errors do not widen the interval (min_samples)."""
    log = PredictionLog(tmp_path / "p.db", window=10, rescale=Rescale(window=10, min_samples=5))
    log.log(_trajectory(0, 10.0, 1) + _trajectory(1, 10.0, 1))
    log.record_actuals([(1 * HOUR, 30.0), (2 * HOUR, 30.0)])
    assert log.interval_factors() == {1: 1.0}


def test_a_log_without_a_rescale_stores_no_factors(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.db", window=10)
    log.log(_trajectory(0, 10.0, 2))
    log.record_actuals([(1 * HOUR, 30.0), (2 * HOUR, 30.0)])
    assert log.interval_factors() == {}


def test_a_log_written_before_the_rescale_gains_the_factor_column(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE predictions (id INTEGER PRIMARY KEY AUTOINCREMENT, logged_at REAL "
            "NOT NULL, issue_time INTEGER NOT NULL, target_time INTEGER NOT NULL, "
            "model_version TEXT NOT NULL, prediction REAL NOT NULL, lower REAL NOT NULL, "
            "upper REAL NOT NULL, UNIQUE (issue_time, target_time, model_version))"
        )
        conn.execute("INSERT INTO predictions VALUES (1, 0, 0, 21600, '1', 10, 8, 14)")
    log = PredictionLog(path, window=10, rescale=Rescale(window=1, min_samples=1))
    log.record_actuals([(6 * HOUR, 12.0)])
    assert log.interval_factors() == {6: pytest.approx(0.5)}


def test_the_factor_cache_reads_the_log_again_only_after_its_ttl(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.db", window=10, rescale=Rescale(window=1, min_samples=1))
    cache = IntervalFactorCache(log, ttl_s=3600)
    assert cache.factors().tolist() == []
    log.log(_trajectory(0, 10.0, 2))
    log.record_actuals([(2 * HOUR, 13.0)])
    assert cache.factors().tolist() == []  # read before the join, within the ttl
    cache.ttl_s = 0
    assert cache.factors().tolist() == pytest.approx([1.0, 0.75])
