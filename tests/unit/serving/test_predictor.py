"""Model verification helpers: the bundle cache, the shared model stack, the smoke test."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from rps.models.bundle import load_bundle
from rps.serving.model_store import (
    BundleCache,
    ModelEntry,
    ModelLoadError,
    SharedModelState,
    SharedStack,
)
from rps.serving.served import smoke_test


def test_cache_stores_a_verified_copy_once(bundle_dir: Path, tmp_path: Path) -> None:
    """The copy lives under the bundle digest; storing it again reuses it."""
    cache = BundleCache(tmp_path / "cache")
    checksum = load_bundle(bundle_dir).checksum
    first = cache.store(bundle_dir, checksum)
    assert first == tmp_path / "cache" / checksum
    assert load_bundle(first).checksum == checksum
    assert cache.store(bundle_dir, checksum) == first
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [checksum]


def test_cache_refuses_a_source_that_changed(bundle_dir: Path, tmp_path: Path) -> None:
    """A file changed after verification makes the copy fail; nothing is left behind."""
    source = tmp_path / "source"
    shutil.copytree(bundle_dir, source)
    checksum = load_bundle(source).checksum
    (source / "params.json").write_text("{}")
    cache = BundleCache(tmp_path / "cache")
    with pytest.raises(ModelLoadError, match=r"checksum mismatch for params\.json") as refused:
        cache.store(source, checksum)
    assert refused.value.reason == "checksum"
    assert list((tmp_path / "cache").iterdir()) == []


def test_prune_keeps_referenced_and_recent_copies(tmp_path: Path) -> None:
    """Old unreferenced copies beyond ``keep`` are deleted; referenced ones stay."""
    cache = BundleCache(tmp_path, keep=1)
    old = time.time() - 3600
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (old, old))
    (tmp_path / "d").mkdir()  # newest
    cache.prune({"b"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "d"]


def test_shared_state_round_trips_and_ignores_other_instances(tmp_path: Path) -> None:
    """A stack written by one instance is read by it, and invisible to another instance."""
    entry = ModelEntry(path="/x", checksum="c1", version="1", alias="champion", source="s")
    mine = SharedModelState(tmp_path / "model_state.json", "instance-a")
    with mine.locked():
        mine.write(SharedStack(generation=3, entries=(entry,)))
    assert mine.read() == SharedStack(generation=3, entries=(entry,))
    assert SharedModelState(tmp_path / "model_state.json", "instance-b").read() is None
    (tmp_path / "model_state.json").write_text("not json")
    assert mine.read() is None


def test_smoke_test_refuses_non_finite_predictions(bundle_dir: Path) -> None:
    """A bundle whose model yields NaN on its reference sample is refused."""
    bundle = load_bundle(bundle_dir)
    smoke_test(bundle)
    bundle.predictor._coef[:] = float("nan")
    with pytest.raises(ModelLoadError, match="not finite"):
        smoke_test(bundle)
