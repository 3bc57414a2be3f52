"""Dataset versioning with real git + DVC: a local-folder remote and an S3 (moto) remote."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from rps.data.versioning import (
    CATALOG_NAME,
    DatasetNotFoundError,
    DatasetVersion,
    VersioningError,
    ensure_dvc_repo,
    list_datasets,
    load_dataset,
    push_dataset,
    version_dataset,
)
from rps.files import file_digest
from rps.settings import Settings
from tests.integration.conftest import S3Endpoint

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_rps_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("RPS_"):
            monkeypatch.delenv(key)


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        _env_file=None, project_root=tmp_path, state_dir=tmp_path / "state", **overrides
    )


def _parquet(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def _md5(path: Path) -> str:
    return file_digest(path, "md5")


def _commits(repo: Path) -> list[str]:
    return _git(repo, "log", "--format=%H %s").splitlines()


def _catalog_lines(settings: Settings) -> list[dict[str, Any]]:
    path = settings.state_path / CATALOG_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _drop_cache(settings: Settings) -> None:
    shutil.rmtree(settings.dvc_repo_path / ".dvc" / "cache")


@pytest.fixture(scope="module")
def frames(observations: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    first = observations.iloc[:500].reset_index(drop=True)
    second = observations.iloc[500:1200].reset_index(drop=True)
    return first, second


def test_version_and_load_with_a_local_remote(
    tmp_path: Path, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    settings = _settings(tmp_path)
    first, second = frames
    path_a = _parquet(first, tmp_path / "in" / "a.parquet")

    v1 = version_dataset(settings, path_a, message="first dataset")

    repo = settings.dvc_repo_path
    assert v1.md5 == _md5(path_a)
    assert (v1.rows, v1.size) == (500, path_a.stat().st_size)
    assert v1.path_in_repo == "data/observations.parquet"
    assert v1.remote == settings.dvc_remote
    remote_object = Path(settings.dvc_remote) / "files" / "md5" / v1.md5[:2] / v1.md5[2:]
    assert remote_object.is_file()
    assert v1.storage_uri == remote_object.as_uri()
    assert _md5(remote_object) == v1.md5
    commits = _commits(repo)
    assert commits[0] == f"{v1.git_rev} first dataset [dataset {v1.md5}]"
    assert _git(repo, "status", "--porcelain") == ""
    assert f"md5: {v1.md5}" in _git(repo, "show", "HEAD:data/observations.parquet.dvc")
    assert _git(repo, "config", "user.email").strip() == "rps@localhost"

    # identical content again: same version, no commit, no catalog line
    again = version_dataset(
        settings, _parquet(first, tmp_path / "in" / "copy.parquet"), message="x"
    )
    assert again == v1
    assert _commits(repo) == commits
    assert len(_catalog_lines(settings)) == 1

    v2 = version_dataset(settings, _parquet(second, tmp_path / "in" / "b.parquet"), message="two")
    assert v2.md5 != v1.md5 and v2.rows == 700
    assert v2.git_rev != v1.git_rev and len(_commits(repo)) == len(commits) + 1
    assert [v.md5 for v in list_datasets(settings)] == [v1.md5, v2.md5]
    assert all(isinstance(v, DatasetVersion) for v in list_datasets(settings))

    latest_frame, latest = load_dataset(settings)
    assert latest == v2
    pd.testing.assert_frame_equal(latest_frame, second)
    by_prefix, found = load_dataset(settings, v1.md5[:7].upper())
    assert found == v1
    pd.testing.assert_frame_equal(by_prefix, first)
    assert str(by_prefix["time"].dt.tz) == "UTC"

    # an empty cache is refilled from the remote
    _drop_cache(settings)
    refetched, _ = load_dataset(settings, v1.md5)
    pd.testing.assert_frame_equal(refetched, first)

    # re-versioning an older content makes it the latest again (new commit, one entry)
    v1_again = version_dataset(settings, path_a, message="back to the first")
    assert v1_again.md5 == v1.md5 and v1_again.git_rev != v1.git_rev
    assert [v.md5 for v in list_datasets(settings)] == [v2.md5, v1.md5]
    assert load_dataset(settings)[1].md5 == v1.md5


def test_unknown_versions_are_reported(
    tmp_path: Path, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    settings = _settings(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="no dataset versions"):
        load_dataset(settings)
    version = version_dataset(settings, _parquet(frames[0], tmp_path / "a.parquet"), message="one")

    with pytest.raises(DatasetNotFoundError, match=f"unknown dataset version.*{version.md5}"):
        load_dataset(settings, "0" * 32 if not version.md5.startswith("0") else "f" * 32)
    with pytest.raises(DatasetNotFoundError, match="too short"):
        load_dataset(settings, version.md5[:6])

    # gone from cache and remote: a clear error, not a crash
    _drop_cache(settings)
    shutil.rmtree(settings.dvc_remote)
    with pytest.raises(DatasetNotFoundError, match="neither in the DVC cache"):
        load_dataset(settings, version.md5)


def test_failed_push_registers_nothing(
    tmp_path: Path, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    settings = _settings(tmp_path)
    v1 = version_dataset(settings, _parquet(frames[0], tmp_path / "a.parquet"), message="ok")
    repo = settings.dvc_repo_path
    commits = _commits(repo)
    pointer = (repo / "data" / "observations.parquet.dvc").read_text()

    # a remote that cannot be written: its path is a regular file
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    broken = _settings(tmp_path, dvc_remote_url=str(blocker))
    with pytest.raises(VersioningError, match="push"):
        version_dataset(broken, _parquet(frames[1], tmp_path / "b.parquet"), message="bad")

    # the remote change itself is a committed setup change; no dataset commit, no catalog line
    assert all("[dataset" not in line for line in _commits(repo)[: -len(commits)])
    assert [v.md5 for v in list_datasets(settings)] == [v1.md5]
    assert (repo / "data" / "observations.parquet.dvc").read_text() == pointer
    assert _md5(repo / "data" / "observations.parquet") == v1.md5
    assert _git(repo, "status", "--porcelain") == ""

    # the original remote works again
    ensure_dvc_repo(settings)
    v2 = version_dataset(settings, tmp_path / "b.parquet", message="ok again")
    assert [v.md5 for v in list_datasets(settings)] == [v1.md5, v2.md5]


def test_without_git_commits(tmp_path: Path, frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    settings = _settings(tmp_path, dvc_git_commit=False)
    version = version_dataset(settings, _parquet(frames[0], tmp_path / "a.parquet"), message="m")

    assert version.git_rev is None
    assert len(_commits(settings.dvc_repo_path)) == 1  # only the repository setup
    _drop_cache(settings)
    frame, _ = load_dataset(settings)
    pd.testing.assert_frame_equal(frame, frames[0])


def test_remote_follows_settings(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    repo = ensure_dvc_repo(settings)
    assert ensure_dvc_repo(settings) == repo
    assert len(_commits(repo)) == 1

    moved = _settings(tmp_path, dvc_remote_url=str(tmp_path / "elsewhere"))
    ensure_dvc_repo(moved)

    config = (repo / ".dvc" / "config").read_text()
    assert str(tmp_path / "elsewhere") in config
    assert len(_commits(repo)) == 2
    assert _git(repo, "status", "--porcelain") == ""


def test_s3_remote(
    tmp_path: Path, s3_endpoint: S3Endpoint, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    bucket = s3_endpoint.new_bucket("dvc")
    settings = _settings(
        tmp_path, storage_backend="s3", s3_bucket=bucket, **s3_endpoint.settings_kwargs()
    )
    first, second = frames

    v1 = version_dataset(settings, _parquet(first, tmp_path / "a.parquet"), message="s3 one")
    v2 = version_dataset(settings, _parquet(second, tmp_path / "b.parquet"), message="s3 two")

    key = f"dvc/files/md5/{v1.md5[:2]}/{v1.md5[2:]}"
    assert v1.remote == f"s3://{bucket}/dvc"
    assert v1.storage_uri == f"s3://{bucket}/{key}"
    client = s3_endpoint.client()
    assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] == v1.size
    repo = settings.dvc_repo_path
    # credentials live in the untracked config.local only
    assert s3_endpoint.secret_key in (repo / ".dvc" / "config.local").read_text()
    assert s3_endpoint.secret_key not in (repo / ".dvc" / "config").read_text()
    assert ".dvc/config.local" not in _git(repo, "ls-files")
    assert s3_endpoint.url in (repo / ".dvc" / "config").read_text()

    _drop_cache(settings)
    frame, version = load_dataset(settings, v1.md5)
    assert version == v1
    pd.testing.assert_frame_equal(frame, first)
    frame, version = load_dataset(settings)
    assert version == v2
    pd.testing.assert_frame_equal(frame, second)


def test_registry_commits_are_pushed_to_its_git_remote(
    tmp_path: Path, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    hub_git = tmp_path / "hub.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(hub_git)], check=True)
    settings = _settings(tmp_path, data_git_remote_url=str(hub_git))

    stored = push_dataset(settings, _parquet(frames[0], tmp_path / "a.parquet"))
    # load alone stores the content but neither commits nor registers it
    assert stored.startswith("file://") and list_datasets(settings) == []
    version = version_dataset(settings, tmp_path / "a.parquet", message="to the hub")

    assert stored == version.storage_uri
    assert _git(hub_git, "rev-parse", "main").strip() == version.git_rev
    pointer = _git(hub_git, "show", "main:data/observations.parquet.dvc")
    assert f"md5: {version.md5}" in pointer
    assert "[dataset" in _git(hub_git, "log", "-1", "--format=%s", "main")

    # a clone of the hub's git plus the DVC remote is enough to get the data back
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(hub_git), str(clone)], check=True)
    import dvc.api

    with dvc.api.open(
        "data/observations.parquet", repo=str(clone), mode="rb", remote="storage"
    ) as handle:
        assert hashlib.md5(handle.read(), usedforsecurity=False).hexdigest() == version.md5


def test_unreachable_git_remote_registers_nothing(
    tmp_path: Path, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    settings = _settings(tmp_path, data_git_remote_url=str(tmp_path / "no-such-hub.git"))
    with pytest.raises(VersioningError, match=r"git push of the data registry to .*no-such-hub"):
        version_dataset(settings, _parquet(frames[0], tmp_path / "a.parquet"), message="m")
    assert list_datasets(settings) == []
    assert all("[dataset" not in line for line in _commits(settings.dvc_repo_path))


def test_corrupt_content_is_refused(
    tmp_path: Path, frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    settings = _settings(tmp_path)
    version = version_dataset(settings, _parquet(frames[0], tmp_path / "a.parquet"), message="m")
    _drop_cache(settings)
    remote_object = Path(settings.dvc_remote) / "files" / "md5" / version.md5[:2] / version.md5[2:]
    remote_object.chmod(0o644)
    remote_object.write_bytes(b"not the dataset")
    with pytest.raises(VersioningError, match="corrupt"):
        load_dataset(settings, version.md5)


def test_only_public_dvc_apis_are_used() -> None:
    import rps.data.versioning as module

    source = Path(module.__file__).read_text(encoding="utf-8")
    for internal in ("repo.cloud", "cache.local", "oid_to_path", "dvc_data", "fcntl"):
        assert internal not in source, internal
