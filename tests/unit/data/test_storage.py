"""The local object store: write-once keys, atomic writes, listing, URIs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from rps.data.storage import (
    LocalObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    S3ObjectStore,
    StorageError,
    dataset_key,
    file_md5,
    make_store,
)
from rps.settings import Settings


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


def _file(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if "tmp" in p.name]


def test_put_get_roundtrip(store: LocalObjectStore, tmp_path: Path) -> None:
    source = _file(tmp_path / "in.bin", b"observations" * 100)
    uri = store.put_file(source, "datasets/abc/observations.parquet")

    assert uri == (store.root / "datasets/abc/observations.parquet").as_uri()
    assert uri.startswith("file://")
    assert store.uri("datasets/abc/observations.parquet") == uri
    assert store.exists("datasets/abc/observations.parquet")
    assert not store.exists("datasets/abc/other.parquet")

    out = store.get_file("datasets/abc/observations.parquet", tmp_path / "out" / "copy.bin")
    assert out == tmp_path / "out" / "copy.bin"
    assert out.read_bytes() == source.read_bytes()


def test_list_by_prefix(store: LocalObjectStore, tmp_path: Path) -> None:
    source = _file(tmp_path / "in.bin", b"x")
    for key in ("datasets/a/obs.parquet", "datasets/b/obs.parquet", "reports/r.json"):
        store.put_file(source, key)

    assert store.list() == ["datasets/a/obs.parquet", "datasets/b/obs.parquet", "reports/r.json"]
    assert store.list("datasets/") == ["datasets/a/obs.parquet", "datasets/b/obs.parquet"]
    assert store.list("datasets/b") == ["datasets/b/obs.parquet"]
    assert store.list("nothing/") == []
    assert LocalObjectStore(tmp_path / "absent").list() == []


def test_refuses_to_overwrite_with_different_content(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    store.put_file(_file(tmp_path / "a.bin", b"first"), "k/v.bin")

    with pytest.raises(StorageError, match=r"k/v\.bin"):
        store.put_file(_file(tmp_path / "b.bin", b"second"), "k/v.bin")
    with pytest.raises(StorageError, match="different content"):
        store.put_file(_file(tmp_path / "c.bin", b"firsT"), "k/v.bin")  # same size
    assert (store.root / "k" / "v.bin").read_bytes() == b"first"


def test_same_content_is_a_noop(store: LocalObjectStore, tmp_path: Path) -> None:
    first = store.put_file(_file(tmp_path / "a.bin", b"same"), "k/v.bin")
    target = store.root / "k" / "v.bin"
    mtime = target.stat().st_mtime_ns

    again = store.put_file(_file(tmp_path / "b.bin", b"same"), "k/v.bin")

    assert again == first
    assert target.stat().st_mtime_ns == mtime
    assert store.list() == ["k/v.bin"]


def test_no_temporary_files_left(store: LocalObjectStore, tmp_path: Path) -> None:
    source = _file(tmp_path / "a.bin", b"a" * 3_000_000)
    store.put_file(source, "big/a.bin")
    store.put_file(source, "big/a.bin")
    with pytest.raises(StorageError):
        store.put_file(_file(tmp_path / "b.bin", b"b"), "big/a.bin")
    store.get_file("big/a.bin", tmp_path / "dl" / "a.bin")

    assert _leftovers(store.root) == []
    assert _leftovers(tmp_path / "dl") == []
    assert store.list() == ["big/a.bin"]


def test_concurrent_writers_of_different_content_one_wins(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    sources = [_file(tmp_path / f"{i}.bin", bytes([i]) * 200_000) for i in range(6)]
    outcomes: list[str] = []

    def put(source: Path) -> None:
        try:
            store.put_file(source, "race/key.bin")
            outcomes.append("stored")
        except StorageError:
            outcomes.append("refused")

    threads = [threading.Thread(target=put, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes.count("stored") == 1
    stored = file_md5(store.root / "race" / "key.bin")
    assert stored in {file_md5(s) for s in sources}
    assert _leftovers(store.root) == []


def test_missing_key_and_missing_source(store: LocalObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError, match=r"nope/x\.bin"):
        store.get_file("nope/x.bin", tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()
    with pytest.raises(StorageError, match="does not exist"):
        store.put_file(tmp_path / "absent.bin", "k/absent.bin")


@pytest.mark.parametrize("key", ["", "/abs/key", "a/../b", "a//b", "./a", "a\\b", "a/"])
def test_invalid_keys_are_refused(store: LocalObjectStore, tmp_path: Path, key: str) -> None:
    source = _file(tmp_path / "a.bin", b"a")
    with pytest.raises(StorageError, match="invalid object key"):
        store.put_file(source, key)


def test_dataset_key() -> None:
    md5 = "0123456789abcdef0123456789abcdef"
    assert dataset_key(md5) == f"datasets/{md5}/observations.parquet"
    with pytest.raises(ValueError, match="md5"):
        dataset_key("not-a-hash")


def test_make_store_follows_settings(tmp_path: Path) -> None:
    local = make_store(
        Settings(
            _env_file=None, project_root=tmp_path, state_dir=tmp_path / "s", storage_backend="local"
        )
    )
    assert isinstance(local, LocalObjectStore)
    assert isinstance(local, ObjectStore)
    assert local.root == tmp_path / "s" / "object-store"

    remote = make_store(
        Settings(
            _env_file=None,
            project_root=tmp_path,
            storage_backend="s3",
            s3_bucket="rps-unit",
            s3_endpoint_url="http://127.0.0.1:9",
        )
    )
    assert isinstance(remote, S3ObjectStore)
    assert remote.uri("datasets/x/obs.parquet") == "s3://rps-unit/datasets/x/obs.parquet"
