"""``rps dag run`` through the CLI: what it says when the run cannot start."""

from __future__ import annotations

from typer.testing import CliRunner

from rps.cli import app
from rps.settings import Settings


def test_dag_run_with_an_unreadable_end_exits_1_naming_it(settings: Settings) -> None:
    """A bad --end is a one-line error and exit 1, before any Airflow work (no traceback)."""
    result = CliRunner().invoke(app, ["dag", "run", "--end", "not-a-time"])
    assert result.exit_code == 1, result.output
    assert "error: DateParseError" in result.output and "not-a-time" in result.output
    assert "Traceback" not in result.output
    assert (settings.state_path / "logs" / "dag-runs.log").is_file()
    assert not settings.airflow_home_path.exists()
