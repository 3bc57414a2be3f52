"""The hub's settings: one repository URL, a user and a token derive every URI."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from rps.settings import Settings


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("RPS_"):
            monkeypatch.delenv(key)


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, project_root=tmp_path, **values)  # type: ignore[arg-type]


def test_dagshub_repository_derives_mlflow_dvc_and_git(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        hub_repo_url="https://dagshub.com/team/rps/",
        hub_user="ana",
        hub_token=SecretStr("t0k/en"),
    )
    assert settings.tracking_uri == "https://dagshub.com/team/rps.mlflow"
    assert settings.mlflow_tracking_username == "ana"
    assert settings.mlflow_tracking_password is not None
    assert settings.mlflow_tracking_password.get_secret_value() == "t0k/en"
    assert settings.storage_backend == "s3"
    assert settings.dvc_remote == "s3://dvc"
    assert settings.s3_endpoint_url == "https://dagshub.com/team/rps.s3"
    assert settings.aws_access_key_id is not None and settings.aws_secret_access_key is not None
    assert settings.aws_access_key_id.get_secret_value() == "t0k/en"
    assert settings.aws_secret_access_key.get_secret_value() == "t0k/en"
    assert settings.data_git_remote_url == "https://dagshub.com/team/rps.git"
    # the token goes into the git URL (escaped), never into what is shown
    assert settings.data_git_remote == "https://ana:t0k%2Fen@dagshub.com/team/rps.git"
    assert settings.data_git_remote_display == "https://dagshub.com/team/rps.git"
    assert settings.hub_name == "https://dagshub.com/team/rps/"


def test_explicit_settings_win_over_derived_ones(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        hub_repo_url="https://dagshub.com/team/rps.git",
        hub_token=SecretStr("t"),
        hub_tracking_uri="http://127.0.0.1:5000",
        hub_s3_endpoint_url="http://127.0.0.1:8333",
        hub_git_url="/srv/git/rps.git",
        mlflow_tracking_username="someone-else",
        dvc_remote_url="s3://other/prefix",
    )
    assert settings.tracking_uri == "http://127.0.0.1:5000"
    assert settings.mlflow_tracking_username == "someone-else"
    assert settings.s3_endpoint_url == "http://127.0.0.1:8333"
    assert settings.dvc_remote == "s3://other/prefix"
    assert settings.data_git_remote == "/srv/git/rps.git"  # a path carries no credentials


def test_without_a_hub_nothing_changes(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.tracking_uri.startswith("sqlite:///")
    assert settings.storage_backend == "local" and settings.data_git_remote is None
    assert settings.hub_name is None


def test_a_url_with_credentials_is_never_displayed_with_them(tmp_path: Path) -> None:
    settings = _settings(tmp_path, data_git_remote_url="https://u:secret@example.org/r.git")
    assert settings.data_git_remote_display == "https://example.org/r.git"
    assert settings.data_git_remote == "https://u:secret@example.org/r.git"
