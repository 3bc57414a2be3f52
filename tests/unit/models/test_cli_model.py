"""The ``rps train`` / ``rps model`` commands are wired and import lightly."""

from __future__ import annotations

import subprocess
import sys

import typer
from typer.testing import CliRunner

from rps.cli import model as model_cli


def test_importing_the_cli_module_loads_no_heavy_library():
    code = (
        "import sys, rps.cli.model; "
        "heavy = [m for m in ('mlflow', 'lightgbm', 'optuna', 'sklearn', 'matplotlib') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_register_adds_train_and_the_model_group():
    app = typer.Typer()
    model_cli.register(app)
    runner = CliRunner()
    out = runner.invoke(app, ["--help"]).output
    assert "train" in out and "model" in out
    sub = runner.invoke(app, ["model", "--help"]).output
    for command in ("list", "promote", "rollback", "history", "compare", "info"):
        assert command in sub


def test_unreachable_tracking_server_fails_fast_with_a_named_error(settings, monkeypatch):
    monkeypatch.setenv("RPS_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port
    # configure_tracking only sets these when unset: keep them scoped to this test
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from rps.settings import get_settings

    get_settings.cache_clear()
    app = typer.Typer()
    model_cli.register(app)
    result = CliRunner().invoke(app, ["model", "info", "champion"])
    assert result.exit_code == 1
    assert "TrackingUnavailableError" in result.output
    assert "127.0.0.1:9" in result.output
    get_settings.cache_clear()
