"""The embedded Airflow home: environment, no local settings, migrate-once marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rps.orchestration import airflow_home
from rps.settings import Settings


@pytest.fixture
def home(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record migrations instead of running them; keep os.environ clean."""
    for key in [k for k in os.environ if k.startswith("AIRFLOW")]:
        monkeypatch.delenv(key)
    for key in airflow_home.airflow_env(settings):
        monkeypatch.setenv(key, os.environ.get(key, ""))  # restored after the test
    migrated: list[Path] = []

    def fake_migrate(path: Path, env: dict[str, str]) -> None:
        migrated.append(path)
        (path / "airflow.db").write_bytes(b"")

    monkeypatch.setattr(airflow_home, "_migrate", fake_migrate)
    monkeypatch.setattr(airflow_home, "_check_not_configured_elsewhere", lambda url: None)
    return migrated


def test_environment(settings: Settings) -> None:
    env = airflow_home.airflow_env(settings)
    assert env["AIRFLOW_HOME"] == str(settings.state_path / "airflow")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        f"sqlite:///{settings.state_path / 'airflow' / 'airflow.db'}"
    )
    dags = Path(env["AIRFLOW__CORE__DAGS_FOLDER"])
    assert (dags / airflow_home.DAG_FILE).is_file()


def test_migrates_on_first_use_only(settings: Settings, home: list[Path]) -> None:
    path = airflow_home.ensure_airflow_home(settings)
    assert home == [path] and os.environ["AIRFLOW_HOME"] == str(path)
    airflow_home.ensure_airflow_home(settings)
    assert len(home) == 1  # the marker says done
    (path / "airflow.db").unlink()
    airflow_home.ensure_airflow_home(settings)
    assert len(home) == 2  # the database went missing: migrate again


def test_no_local_settings_and_stale_patch_loader_removed(
    settings: Settings, home: list[Path]
) -> None:
    """Airflow runs unpatched: the loader older versions wrote goes, a user's own file stays."""
    config = settings.airflow_home_path.absolute() / "config"
    config.mkdir(parents=True)
    local = config / "airflow_local_settings.py"
    local.write_text(airflow_home.STALE_LOCAL_SETTINGS_HEADER + " (delete this line)\nimport x\n")
    path = airflow_home.ensure_airflow_home(settings)
    assert not (path / "config" / "airflow_local_settings.py").exists()
    local.write_text("# mine\n")
    airflow_home.ensure_airflow_home(settings)
    assert local.read_text() == "# mine\n"


def test_missing_dags_folder(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(airflow_home, "_source_checkout_dags", lambda: Path("/nonexistent"))
    with pytest.raises(airflow_home.AirflowHomeError, match="no DAGs folder"):
        airflow_home.dags_folder(settings)
