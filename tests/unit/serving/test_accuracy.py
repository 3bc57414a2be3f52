"""The SQLite prediction log behind live accuracy."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rps.serving.accuracy import LoggedPrediction, PredictionLog

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
