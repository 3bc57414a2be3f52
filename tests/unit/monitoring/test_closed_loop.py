"""The closed-loop demo's bookkeeping: drift signals from /metrics, live RMSE by phase."""

from __future__ import annotations

import math

import pandas as pd

from rps.monitoring.closed_loop import _Forecast, live_rmse, parse_signals

ONSET = pd.Timestamp("2026-06-01T12:00:00Z")


def _at(hours: int) -> pd.Timestamp:
    return ONSET + pd.Timedelta(hours=hours)


def test_parse_signals_takes_the_worst_value_of_each_drift_signal() -> None:
    exposition = "\n".join(
        [
            "# HELP drift_check_ratio A drift check's value over its limit",
            'drift_check_ratio{check="seasonal_anomaly",pid="1"} 0.4',
            'drift_check_ratio{check="humidity_consistency",pid="2"} 1.7',
            "forecast_error_drift_ratio 0.2",
            "forecast_error_drift_ratio_extra 9.0",  # another metric: ignored
            'drift_check_ratio{check="seasonal_anomaly",pid="3"} NaN',
        ]
    )
    assert parse_signals(exposition) == {
        "drift_check_ratio": 1.7,
        "forecast_error_drift_ratio": 0.2,
    }


def test_live_rmse_splits_before_during_and_after_by_target_time_and_version() -> None:
    truth = pd.Series([10.0, 10.0, 10.0, 10.0], index=[_at(-2), _at(-1), _at(1), _at(2)])
    forecasts = [
        _Forecast(_at(-8), _at(-2), 11.0, "1"),  # before: error 1
        _Forecast(_at(-7), _at(-1), 9.0, "1"),  # before: error -1
        _Forecast(_at(-5), _at(1), 14.0, "1"),  # during (old champion, drifted target): 4
        _Forecast(_at(-4), _at(2), 10.5, "2"),  # after (new champion): 0.5
        _Forecast(_at(-3), _at(3), 50.0, "2"),  # target not realised yet: ignored
        _Forecast(_at(-6), _at(1), 99.0, "9"),  # another version: ignored
    ]
    before, during, after = live_rmse(
        forecasts, truth, onset=ONSET, first_version="1", new_version="2"
    )
    assert before == 1.0
    assert during == 4.0
    assert after == 0.5


def test_live_rmse_is_none_for_a_phase_without_realised_forecasts() -> None:
    truth = pd.Series([10.0], index=[_at(-1)])
    before, during, after = live_rmse(
        [_Forecast(_at(-7), _at(-1), 12.0, "1")],
        truth,
        onset=ONSET,
        first_version="1",
        new_version=None,
    )
    assert before is not None and math.isclose(before, 2.0)
    assert during is None and after is None


def test_demo_loop_names_the_debian_packages_when_prometheus_is_missing(
    tmp_path, monkeypatch
) -> None:
    """Without Prometheus and Alertmanager on PATH it exits 1 before training anything."""
    from typer.testing import CliRunner

    from rps.cli import app

    monkeypatch.setenv("PATH", str(tmp_path))  # neither binary is found
    monkeypatch.setenv("RPS_STATE_DIR", str(tmp_path / "state"))
    result = CliRunner().invoke(app, ["demo-loop"])
    assert result.exit_code == 1
    assert "apt-get install prometheus prometheus-alertmanager" in result.output
    assert not (tmp_path / "state" / "demo-loop" / "mlflow.db").exists()
