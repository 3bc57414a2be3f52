"""The task bodies' run context: conf validation and the interval from the Airflow context."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from rps.orchestration import dag_schedule, steps
from rps.orchestration.steps import RunConfError, parse_conf, run_info


def test_conf_defaults_and_values() -> None:
    assert parse_conf(None) == steps.RunConf(reason="manual", source=None)
    assert parse_conf({"reason": " drift ", "source": "replay"}) == steps.RunConf("drift", "replay")


def test_conf_stops_before_promote_and_marks_drift_runs() -> None:
    """promote=false is kept; a drift alert's name, adapt or an onset make the run adapt."""
    conf = parse_conf({"reason": "ci", "promote": False})
    assert conf.promote is False and not conf.adapts
    assert parse_conf({"reason": "DataDriftDetected: inputs moved"}).adapts
    assert parse_conf({"reason": "manual", "adapt": True}).adapts
    onset = parse_conf({"drift_onset": "2026-11-20T05:30:00Z"})
    assert onset.adapts and onset.drift_onset == pd.Timestamp("2026-11-20T05:00:00Z")
    assert parse_conf(None).promote is True


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"reason": "drift", "full_refresh": True}, "'full_refresh'"),
        ({"reasons": "drift"}, "'reasons'"),
        ({"reason": ""}, "non-empty"),
        ({"source": "ftp"}, "source"),
        ({"promote": "no"}, "'promote' must be true or false"),
        ({"adapt": 1}, "'adapt' must be true or false"),
        ({"drift_onset": "last tuesday"}, "'drift_onset' must be an ISO 8601 time"),
    ],
)
def test_invalid_conf_names_the_key(conf: dict[str, object], message: str) -> None:
    with pytest.raises(RunConfError, match=message):
        parse_conf(conf)


def test_interval_end_comes_from_the_context_never_the_clock() -> None:
    dag_run = SimpleNamespace(
        dag_id="rps_pipeline",
        run_id="scheduled__2026-11-20T00:00:00+00:00",
        run_type="scheduled",
        conf={},
        run_after=pd.Timestamp("2026-11-26 09:00", tz="UTC"),
    )
    info = run_info(
        {"dag_run": dag_run, "data_interval_end": pd.Timestamp("2026-11-20 00:30", tz="UTC")}
    )
    assert info.interval_end == pd.Timestamp("2026-11-20 00:00", tz="UTC")
    assert info.conf.reason == "schedule" and info.run_id == dag_run.run_id
    # a manual run without a logical date: its run_after
    manual = SimpleNamespace(**{**vars(dag_run), "run_type": "manual", "conf": {"reason": "x"}})
    assert run_info({"dag_run": manual}).interval_end == pd.Timestamp("2026-11-26 09:00", tz="UTC")


def test_schedule_setting() -> None:
    assert dag_schedule("@daily") == "@daily"
    assert dag_schedule(" 0 3 * * * ") == "0 3 * * *"
    assert dag_schedule("none") is None and dag_schedule("") is None
