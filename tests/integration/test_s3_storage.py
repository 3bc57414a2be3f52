"""S3ObjectStore against a real S3 API (moto's server): same contract as the local store."""

from __future__ import annotations

from pathlib import Path

import pytest

from rps.data.storage import (
    ObjectNotFoundError,
    S3ObjectStore,
    StorageError,
    dataset_key,
    file_md5,
    make_store,
)
from rps.settings import Settings
from tests.integration.conftest import S3Endpoint


def _store(s3: S3Endpoint, bucket: str) -> S3ObjectStore:
    return S3ObjectStore(
        bucket,
        endpoint_url=s3.url,
        region=s3.region,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
    )


def _file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_creates_bucket_and_roundtrips(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    bucket = s3_endpoint.new_bucket()
    store = _store(s3_endpoint, bucket)
    source = _file(tmp_path / "obs.parquet", b"parquet bytes" * 1000)
    key = dataset_key(file_md5(source))

    assert store.list() == []  # creates the missing bucket
    uri = store.put_file(source, key)

    assert uri == f"s3://{bucket}/{key}" == store.uri(key)
    assert store.exists(key)
    assert not store.exists("datasets/none/observations.parquet")
    head = s3_endpoint.client().head_object(Bucket=bucket, Key=key)
    assert head["Metadata"]["md5"] == file_md5(source)
    out = store.get_file(key, tmp_path / "dl" / "copy.parquet")
    assert out.read_bytes() == source.read_bytes()
    assert list((tmp_path / "dl").iterdir()) == [out]


def test_write_once_semantics(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    store = _store(s3_endpoint, s3_endpoint.new_bucket())
    store.put_file(_file(tmp_path / "a", b"first"), "k/v.bin")

    assert store.put_file(_file(tmp_path / "b", b"first"), "k/v.bin") == store.uri("k/v.bin")
    with pytest.raises(StorageError, match=r"k/v\.bin.*different content"):
        store.put_file(_file(tmp_path / "c", b"other"), "k/v.bin")
    store.get_file("k/v.bin", tmp_path / "check")
    assert (tmp_path / "check").read_bytes() == b"first"


def test_identical_object_written_by_another_tool(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    """An object without our md5 metadata is compared by its (single-part) ETag."""
    bucket = s3_endpoint.new_bucket()
    client = s3_endpoint.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="ext/data.bin", Body=b"external")
    store = _store(s3_endpoint, bucket)

    assert store.put_file(_file(tmp_path / "same", b"external"), "ext/data.bin")
    with pytest.raises(StorageError, match="different content"):
        store.put_file(_file(tmp_path / "diff", b"changed!"), "ext/data.bin")


def test_list_and_missing_key(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    store = _store(s3_endpoint, s3_endpoint.new_bucket())
    source = _file(tmp_path / "x", b"x")
    for key in ("datasets/a/o.parquet", "datasets/b/o.parquet", "reports/r.json"):
        store.put_file(source, key)

    assert store.list("datasets/") == ["datasets/a/o.parquet", "datasets/b/o.parquet"]
    assert len(store.list()) == 3
    with pytest.raises(ObjectNotFoundError, match="datasets/zzz"):
        store.get_file("datasets/zzz/o.parquet", tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no temporary download left


def test_make_store_selects_s3_by_settings(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    bucket = s3_endpoint.new_bucket()
    settings = Settings(
        _env_file=None,
        project_root=tmp_path,
        storage_backend="s3",
        s3_bucket=bucket,
        **s3_endpoint.settings_kwargs(),
    )
    store = make_store(settings)
    uri = store.put_file(_file(tmp_path / "f", b"data"), "k/f.bin")

    assert uri == f"s3://{bucket}/k/f.bin"
    assert store.exists("k/f.bin")


def test_unreachable_endpoint_is_a_storage_error(tmp_path: Path) -> None:
    store = S3ObjectStore(
        "rps-nowhere",
        endpoint_url="http://127.0.0.1:9",
        access_key="a",
        secret_key="b",
        max_attempts=1,
    )
    with pytest.raises(StorageError, match="rps-nowhere"):
        store.exists("k")
