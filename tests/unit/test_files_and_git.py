"""The shared file habits (atomic write, lock, digest) and the git helper."""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from pathlib import Path

import pytest

from rps.files import file_digest, file_lock, write_atomic
from rps.git import GitError, run_git


def test_write_atomic_replaces_whole_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "out.json"
    write_atomic(target, "first")
    write_atomic(target, b"second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_write_atomic_keeps_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_atomic(target, "kept")
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_file_digest_matches_hashlib(tmp_path: Path) -> None:
    target = tmp_path / "blob"
    target.write_bytes(b"x" * 200_000)
    assert file_digest(target) == hashlib.sha256(b"x" * 200_000).hexdigest()
    assert file_digest(target, "md5") == hashlib.md5(b"x" * 200_000).hexdigest()


def _append_under_lock(lock: Path, log: Path, tag: str) -> None:
    with file_lock(lock):
        with log.open("a") as handle:
            handle.write(f"{tag}-start\n")
        time.sleep(0.2)
        with log.open("a") as handle:
            handle.write(f"{tag}-end\n")


def test_file_lock_serialises_processes(tmp_path: Path) -> None:
    lock, log = tmp_path / "locks" / "x.lock", tmp_path / "log"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_under_lock, args=(lock, log, tag)) for tag in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    lines = log.read_text().split()
    assert len(lines) == 4
    # each start is immediately followed by its own end: no interleaving
    assert lines[0].split("-")[0] == lines[1].split("-")[0]
    assert lines[2].split("-")[0] == lines[3].split("-")[0]


def test_run_git_returns_output_and_names_failures(tmp_path: Path) -> None:
    run_git(tmp_path, "init", "-q")
    assert run_git(tmp_path, "rev-parse", "--is-inside-work-tree").stdout.strip() == "true"
    with pytest.raises(GitError, match=r"git rev-parse --verify HEAD failed in .*"):
        run_git(tmp_path, "rev-parse", "--verify", "HEAD")
    assert run_git(tmp_path, "rev-parse", "--verify", "HEAD", check=False).returncode != 0
