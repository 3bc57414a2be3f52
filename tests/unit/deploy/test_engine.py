"""Container engine command lines and the image helpers, against a recording fake podman."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from rps.deploy import DeployError
from rps.deploy.engine import Engine, make_engine, sandbox_storage_driver
from rps.deploy.image import (
    LOCAL_BASE_IMAGE,
    build_image,
    container_image,
    container_logs,
    debootstrap_rootfs_tar,
    ensure_local_base,
    run_container,
    stage_context,
    stop_container,
    uses_host_network,
)
from tests.deploy_support import linear_bundle

REPO_ROOT = Path(__file__).resolve().parents[3]

FAKE = """#!/usr/bin/env bash
# a stand-in container engine: logs its argv (one JSON list per line) and answers a few queries
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$FAKE_LOG"
args=" $* "
case "$args" in
  *" image exists "*) grep -qxF "${@: -1}" "$FAKE_IMAGES" 2>/dev/null; exit $? ;;
  *" image inspect "*) grep -qxF "${@: -1}" "$FAKE_IMAGES" 2>/dev/null; exit $? ;;
  *" run -d "*) echo 0123456789abcdef ;;
  *" logs "*) echo "server log line" ;;
  *" inspect "*) echo "localhost/rps-api:v1" ;;
  *" build "*) [ -n "$FAKE_BUILD_FAILS" ] && { echo "build broke" >&2; exit 1; }; echo built ;;
esac
exit 0
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``podman`` and ``docker`` first on PATH; returns the argv log file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("podman", "docker"):
        script = bin_dir / name
        script.write_text(FAKE, encoding="utf-8")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "engine.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_IMAGES", str(tmp_path / "images"))
    return log


def calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def test_sandbox_profile(tmp_path: Path) -> None:
    engine = make_engine("podman", sandbox=True, store=tmp_path / "store", storage_driver="vfs")
    args = engine.global_args
    assert args[args.index("--root") + 1] == str(tmp_path / "store" / "vfs")
    assert args[args.index("--storage-driver") + 1] == "vfs"
    assert args[args.index("--runtime") + 1] == "runc"
    assert {"--isolation", "chroot", "--network", "host", "--format", "docker"} <= set(
        engine.build_args
    )
    conf = Path(engine.env["CONTAINERS_CONF"])
    assert "default_ulimits = []" in conf.read_text(encoding="utf-8")
    assert uses_host_network(engine)


def test_engine_choice_errors(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="unknown container engine"):
        make_engine("rkt")
    with pytest.raises(DeployError, match="sandbox profile is for podman"):
        make_engine("docker", sandbox=True)
    with pytest.raises(DeployError, match="unknown storage driver"):
        make_engine("podman", sandbox=True, store=tmp_path, storage_driver="zfs")
    plain = make_engine("docker", extra_global_args=["--host", "unix:///x.sock"])
    assert plain.argv("ps") == ["docker", "--host", "unix:///x.sock", "ps"]
    assert not uses_host_network(plain)


def test_storage_driver_choice_is_remembered(tmp_path: Path) -> None:
    (tmp_path / "driver").write_text("vfs\n", encoding="utf-8")
    assert sandbox_storage_driver(tmp_path) == "vfs"


def test_build_command_lines(tmp_path: Path) -> None:
    podman = Engine("podman", global_args=("--root", "/r"), build_args=("--format", "docker"))
    argv = podman.build_command(tmp_path, ["a:1", "a:latest"], build_args={"X": "y"})
    assert argv == [
        "podman", "--root", "/r", "build", "--format", "docker", "-t", "a:1", "-t", "a:latest",
        "--build-arg", "X=y", "--pull=missing", str(tmp_path),
    ]  # fmt: skip
    docker = Engine("docker").build_command(tmp_path, ["a:1"], pull=True, dockerfile=Path("D"))
    assert docker == ["docker", "build", "-t", "a:1", "-f", "D", "--pull", str(tmp_path)]


def test_missing_engine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(DeployError, match="podman is not installed"):
        Engine("podman").run_cmd("ps")


def test_stage_context_copies_the_inputs(tmp_path: Path) -> None:
    bundle = linear_bundle(tmp_path / "bundle")
    (bundle / "bundle.json").chmod(0o600)
    context = stage_context(REPO_ROOT, bundle, tmp_path / "ctx")
    for name in ("Dockerfile", ".dockerignore", "uv.lock", "pyproject.toml", "params.yaml"):
        assert (context / name).is_file()
    assert (context / "src" / "rps" / "deploy" / "image.py").is_file()
    assert not list(context.rglob("__pycache__"))
    assert (context / "model" / "bundle.json").stat().st_mode & stat.S_IROTH
    with pytest.raises(DeployError, match="holds no bundle"):
        stage_context(REPO_ROOT, tmp_path, tmp_path / "ctx2")


def test_build_image_with_the_local_base(fake: Path, tmp_path: Path) -> None:
    bundle = linear_bundle(tmp_path / "bundle", version="9")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "bookworm-python.tar").write_bytes(b"not really a tarball")
    engine = Engine("podman", global_args=("--root", str(tmp_path / "store")))
    assert ensure_local_base(engine, cache_dir=cache) == LOCAL_BASE_IMAGE
    (tmp_path / "images").write_text(LOCAL_BASE_IMAGE + "\n", encoding="utf-8")  # now imported
    built = build_image(
        engine,
        repo_root=REPO_ROOT,
        model_dir=bundle,
        tags=["rps-api:v9", "rps-api:latest"],
        base_image=LOCAL_BASE_IMAGE,
        git_sha="abc",
    )
    assert built.image == "rps-api:v9" and built.model_version == "9"
    log = calls(fake)
    (imported,) = [c for c in log if "import" in c]
    assert imported[-2:] == [str(cache / "bookworm-python.tar"), LOCAL_BASE_IMAGE]
    (build,) = [c for c in log if "build" in c]
    assert build[:2] == ["--root", str(tmp_path / "store")]
    for arg in (
        "MODEL_DIR=model/",
        "MODEL_VERSION=9",
        "GIT_SHA=abc",
        f"BASE_IMAGE={LOCAL_BASE_IMAGE}",
    ):
        assert arg in build
    assert not Path(build[-1]).exists(), "the staged context is removed after the build"


def test_build_failure_and_missing_tags(
    fake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = linear_bundle(tmp_path / "bundle")
    engine = Engine("podman")
    with pytest.raises(DeployError, match="at least one image tag"):
        build_image(engine, repo_root=REPO_ROOT, model_dir=bundle, tags=[])
    monkeypatch.setenv("FAKE_BUILD_FAILS", "1")
    with pytest.raises(DeployError, match="build broke"):
        build_image(engine, repo_root=REPO_ROOT, model_dir=bundle, tags=["x:1"])


def test_existing_base_is_not_rebuilt(fake: Path, tmp_path: Path) -> None:
    (tmp_path / "images").write_text(LOCAL_BASE_IMAGE + "\n", encoding="utf-8")
    engine = Engine("podman")
    assert ensure_local_base(engine, cache_dir=tmp_path / "nothing") == LOCAL_BASE_IMAGE
    assert [c for c in calls(fake) if "import" in c] == []
    assert engine.image_exists(LOCAL_BASE_IMAGE)
    assert Engine("docker").image_exists(LOCAL_BASE_IMAGE)


def test_debootstrap_needs_the_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(DeployError, match="debootstrap is not installed"):
        debootstrap_rootfs_tar(tmp_path)


def test_run_and_stop_with_host_network(fake: Path) -> None:
    engine = Engine("podman", run_args=("--network", "host"))
    container_id = run_container(engine, "rps-api:v1", name="api", port=18000)
    assert container_id == "0123456789abcdef"
    log = calls(fake)
    assert log[0] == ["rm", "-f", "api"]
    run = log[1]
    assert run[:4] == ["run", "-d", "--name", "api"]
    assert "RPS_API_PORT=18000" in run
    assert run[-6:] == ["rps", "serve", "--host", "127.0.0.1", "--port", "18000"]
    assert "server log line" in container_logs(engine, "api")
    assert container_image(engine, "api") == "localhost/rps-api:v1"
    stop_container(engine, "api")
    assert calls(fake)[-2][:1] == ["stop"] and calls(fake)[-1] == ["rm", "-f", "api"]


def test_run_publishes_the_port_without_host_network(fake: Path) -> None:
    run_container(Engine("docker"), "rps-api:v1", name="api", port=18001, replace=False)
    (run,) = calls(fake)
    assert run[run.index("-p") : run.index("-p") + 2] == ["-p", "127.0.0.1:18001:8000"]
    assert run[-1] == "rps-api:v1"
