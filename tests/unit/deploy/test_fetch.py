"""Installing a fetched bundle: verify, stamp the registry version, re-seal, record."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from rps.deploy import DeployError
from rps.deploy.fetch import (
    DEPLOY_FILE,
    bundle_version,
    install_bundle,
    read_deploy_file,
    stamp_version,
)
from rps.models.bundle import load_bundle
from tests.deploy_support import linear_bundle


def test_install_stamps_the_registry_version(tmp_path: Path) -> None:
    source = linear_bundle(tmp_path / "download" / "artifacts" / "bundle", version=None)
    original = load_bundle(source).checksum
    fetched = install_bundle(tmp_path / "download", tmp_path / "model", name="m", version="12")
    bundle = load_bundle(tmp_path / "model")  # verifies the re-sealed checksums
    assert bundle.lineage["model_version"] == "12"
    assert fetched.version == "12" and fetched.registry_digest == original
    assert fetched.digest == bundle.checksum != original
    assert bundle_version(tmp_path / "model") == ("12", bundle.checksum)
    record = read_deploy_file(tmp_path / "model")
    assert record is not None and record.version == "12" and record.ref == "champion"
    assert json.loads((tmp_path / "model" / DEPLOY_FILE).read_text())["name"] == "m"
    for path in (tmp_path / "model").iterdir():
        assert path.stat().st_mode & stat.S_IROTH, f"{path.name} must be world-readable"


def test_install_replaces_an_older_bundle(tmp_path: Path) -> None:
    install_bundle(
        linear_bundle(tmp_path / "a", version="1"), tmp_path / "model", name="m", version="1"
    )
    install_bundle(
        linear_bundle(tmp_path / "b", version="2", intercept=3.0),
        tmp_path / "model",
        name="m",
        version="2",
    )
    assert bundle_version(tmp_path / "model")[0] == "2"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_stamp_keeps_a_bundle_with_the_same_version(tmp_path: Path) -> None:
    bundle = linear_bundle(tmp_path / "b", version="4")
    before = (bundle / "checksums.json").read_text()
    assert stamp_version(bundle, "4") == load_bundle(bundle).checksum
    assert (bundle / "checksums.json").read_text() == before


def test_a_tampered_download_is_refused(tmp_path: Path) -> None:
    bundle = linear_bundle(tmp_path / "b", version=None)
    with (bundle / "params.json").open("a", encoding="utf-8") as handle:
        handle.write(" ")
    with pytest.raises(DeployError, match=r"does not verify: checksum mismatch for params\.json"):
        install_bundle(bundle, tmp_path / "model", name="m", version="1")
    assert not (tmp_path / "model").exists()
    with pytest.raises(DeployError, match="does not verify"):
        stamp_version(bundle, "1")


def test_bundle_version_falls_back_to_the_digest(tmp_path: Path) -> None:
    bundle = linear_bundle(tmp_path / "b", version=None)
    version, digest = bundle_version(bundle)
    assert version == digest[:12]
    assert read_deploy_file(bundle) is None
    (bundle / DEPLOY_FILE).write_text("[]")
    with pytest.raises(DeployError, match="not a deploy record"):
        read_deploy_file(bundle)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeployError):
        bundle_version(tmp_path / "empty")
