"""The object store is the DVC remote: bucket creation and S3 errors against a real S3 API."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from rps.data.storage import StorageError, ensure_bucket
from rps.settings import Settings
from tests.integration.conftest import S3Endpoint


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(_env_file=None, project_root=tmp_path, **overrides)  # type: ignore[arg-type]


def test_creates_a_missing_bucket_once(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    settings = _settings(tmp_path, storage_backend="s3", **s3_endpoint.settings_kwargs())
    bucket = s3_endpoint.new_bucket()
    client = s3_endpoint.client()
    assert bucket not in [b["Name"] for b in client.list_buckets()["Buckets"]]

    ensure_bucket(settings, bucket)
    client.put_object(Bucket=bucket, Key="dvc/kept", Body=b"x")
    ensure_bucket(settings, bucket)  # existing: left as it is

    assert bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]
    assert client.get_object(Bucket=bucket, Key="dvc/kept")["Body"].read() == b"x"


def test_unreachable_endpoint_names_bucket_and_endpoint(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        storage_backend="s3",
        s3_endpoint_url="http://127.0.0.1:9",
        aws_access_key_id=SecretStr("k"),
        aws_secret_access_key=SecretStr("s"),
    )
    with pytest.raises(StorageError, match=r"'rps-data' at http://127\.0\.0\.1:9"):
        ensure_bucket(settings, "rps-data")


def test_pipeline_default_remote_is_the_bucket(tmp_path: Path) -> None:
    settings = _settings(tmp_path, storage_backend="s3", s3_bucket="team-data")
    assert settings.dvc_remote == "s3://team-data/dvc"
    assert _settings(tmp_path).dvc_remote == str(tmp_path / ".rps" / "dvc-remote")
