"""The serving image: the local Debian base, the build context, builds and container runs.

Where no registry is reachable (this project's machines), ``python:3.11-slim`` cannot be
pulled; :func:`ensure_local_base` builds ``localhost/bookworm-python:local`` from a
``debootstrap`` of Debian bookworm instead (cached as a tarball, so only the first build on a
machine pays the ~1-2 minutes). The Dockerfile works unchanged on either base.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rps.deploy import DeployError
from rps.deploy.engine import Engine, file_lock
from rps.deploy.fetch import bundle_version, make_readable

logger = logging.getLogger(__name__)

LOCAL_BASE_IMAGE = "localhost/bookworm-python:local"
DEFAULT_BASE_IMAGE = "python:3.11-slim"
BASE_CACHE_DIR = Path("/var/tmp/rps-bookworm")
BASE_TARBALL = "bookworm-python.tar"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "curl")
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock", "README.md")
CONTEXT_OPTIONAL = ("params.yaml",)
IMAGE_NAME = "rps-api"


@dataclass(frozen=True)
class BuiltImage:
    """An image built with a model baked in.

    Attributes:
        tags: Every tag given to it (the first is the primary).
        model_version: The version the server in it will report.
        model_digest: The baked bundle's digest.
        seconds: Build wall time.
    """

    tags: tuple[str, ...]
    model_version: str
    model_digest: str
    seconds: float

    @property
    def image(self) -> str:
        return self.tags[0]


def debootstrap_rootfs_tar(
    cache_dir: Path = BASE_CACHE_DIR, *, mirror: str = DEBIAN_MIRROR
) -> Path:
    """A tarball of a minimal Debian bookworm with python3 (debootstrap; cached).

    Raises:
        DeployError: debootstrap is missing or fails (it needs root and the Debian mirror).
    """
    tarball = cache_dir / BASE_TARBALL
    with file_lock(cache_dir / ".debootstrap.lock"):  # a concurrent run waits, then reuses it
        if tarball.exists() and tarball.stat().st_size > 0:
            return tarball
        if shutil.which("debootstrap") is None:
            raise DeployError("debootstrap is not installed (apt-get install debootstrap)")
        started = time.monotonic()
        rootfs = Path(tempfile.mkdtemp(dir=cache_dir, prefix="rootfs-"))
        try:
            _debootstrap(rootfs, mirror, tarball)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
    logger.info("bookworm rootfs cached in %s (%.0f s)", tarball, time.monotonic() - started)
    return tarball


def _debootstrap(rootfs: Path, mirror: str, tarball: Path) -> None:
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        "bookworm",
        str(rootfs),
        mirror,
    ]
    logger.info("debootstrap of bookworm into %s (about a minute)", rootfs)
    result = subprocess.run(argv, capture_output=True, check=False, timeout=1200)
    if result.returncode != 0:
        tail = result.stdout.decode(errors="replace")[-1500:]
        raise DeployError(f"debootstrap failed ({result.returncode}): {tail}")
    partial = tarball.with_name(f"{tarball.name}.{os.getpid()}.partial")
    tar = subprocess.run(
        ["tar", "-C", str(rootfs), "-cf", str(partial), "."], capture_output=True, check=False
    )
    if tar.returncode != 0:
        partial.unlink(missing_ok=True)
        raise DeployError(f"tar of the rootfs failed: {tar.stderr.decode(errors='replace')}")
    partial.replace(tarball)


def ensure_local_base(
    engine: Engine, *, ref: str = LOCAL_BASE_IMAGE, cache_dir: Path = BASE_CACHE_DIR
) -> str:
    """Make sure ``ref`` (the local Debian python base) is in the engine's store.

    Returns:
        ``ref``.

    Raises:
        DeployError: it cannot be built (see :func:`debootstrap_rootfs_tar`) or imported.
    """
    if engine.image_exists(ref):
        return ref
    tarball = debootstrap_rootfs_tar(cache_dir)
    with file_lock(cache_dir / ".import.lock"):
        if not engine.image_exists(ref):
            logger.info("importing %s as %s", tarball, ref)
            engine.run_cmd("import", str(tarball), ref, timeout=600)
    return ref


def stage_context(repo_root: Path, model_dir: Path, dest: Path) -> Path:
    """Assemble a minimal build context: the Dockerfile, lock, source, params and the model.

    The bundle is copied to ``dest/model`` with world-readable files, so the image's service
    user can read it whatever the permissions of the source folder.

    Raises:
        DeployError: a required file is missing or ``model_dir`` holds no bundle.
    """
    if not (model_dir / "bundle.json").exists():
        raise DeployError(f"{model_dir} holds no bundle (run `rps deploy fetch-model` first)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in CONTEXT_FILES:
        source = repo_root / name
        if not source.exists():
            raise DeployError(f"{source} is missing from the build context")
        shutil.copy2(source, dest / name)
    for name in CONTEXT_OPTIONAL:
        if (repo_root / name).exists():
            shutil.copy2(repo_root / name, dest / name)
    shutil.copytree(
        repo_root / "src",
        dest / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache"),
        dirs_exist_ok=True,
    )
    shutil.rmtree(dest / "model", ignore_errors=True)
    shutil.copytree(model_dir, dest / "model")
    make_readable(dest / "model")
    return dest


def build_image(
    engine: Engine,
    *,
    repo_root: Path,
    model_dir: Path,
    tags: Sequence[str],
    base_image: str | None = None,
    build_args: Mapping[str, str] | None = None,
    git_sha: str = "",
    timeout: float = 3600.0,
) -> BuiltImage:
    """Build the serving image with the bundle in ``model_dir`` baked in.

    Args:
        engine: The container engine.
        repo_root: The repository (Dockerfile, lock, ``src/``).
        model_dir: The bundle folder (e.g. from ``rps deploy fetch-model``).
        tags: Image tags (at least one).
        base_image: ``BASE_IMAGE`` (default: the Dockerfile's ``python:3.11-slim``); the local
            Debian base is built first when it is asked for and missing.
        build_args: Further ``--build-arg`` values.
        git_sha: Recorded as the image's revision label.
        timeout: Seconds before the build is abandoned.

    Raises:
        DeployError: the bundle does not verify, or the build fails.
    """
    if not tags:
        raise DeployError("at least one image tag is needed")
    version, digest = bundle_version(model_dir)
    args = {"MODEL_DIR": "model/", "MODEL_VERSION": version, "GIT_SHA": git_sha or "unknown"}
    if base_image:
        if base_image == LOCAL_BASE_IMAGE and engine.name == "podman":
            ensure_local_base(engine)
        args["BASE_IMAGE"] = base_image
    args.update(build_args or {})
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rps-build-context-") as tmp:
        context = stage_context(repo_root, model_dir, Path(tmp))
        argv = engine.build_command(context, tags, build_args=args)
        logger.info("building %s (model v%s)", ", ".join(tags), version)
        result = engine.execute(argv, timeout=timeout)
    seconds = time.monotonic() - started
    logger.debug("build output: %s", result.stdout.decode(errors="replace")[-2000:])
    return BuiltImage(tags=tuple(tags), model_version=version, model_digest=digest, seconds=seconds)


# running ------------------------------------------------------------------------------------
def uses_host_network(engine: Engine) -> bool:
    """Whether containers of this engine profile share the host's network."""
    args = engine.run_args
    return (
        any(
            a == "--network" and i + 1 < len(args) and args[i + 1] == "host"
            for i, a in enumerate(args)
        )
        or "--network=host" in args
    )


def run_container(
    engine: Engine,
    image: str,
    *,
    name: str,
    port: int = 8000,
    env: Mapping[str, str] | None = None,
    replace: bool = True,
) -> str:
    """Start the service container detached, answering on ``127.0.0.1:port``.

    With host networking the server binds ``127.0.0.1:port`` itself (``RPS_API_PORT`` keeps the
    health check on the same port); otherwise container port 8000 is published on loopback.

    Returns:
        The container id.

    Raises:
        DeployError: the engine refused to start it.
    """
    if replace:
        engine.run_cmd("rm", "-f", name, check=False)
    environment = dict(env or {})
    command: list[str] = []
    publish = None
    if uses_host_network(engine):
        environment["RPS_API_PORT"] = str(port)
        command = ["rps", "serve", "--host", "127.0.0.1", "--port", str(port)]
    else:
        publish = f"127.0.0.1:{port}:8000"
    argv = engine.run_container_command(
        image, name=name, env=environment, publish=publish, command=command
    )
    result = engine.execute(argv, timeout=300)
    container_id = result.stdout.decode().strip()
    logger.info("started %s from %s on port %d", name, image, port)
    return container_id


def container_logs(engine: Engine, name: str, *, tail: int = 200) -> str:
    """The container's last log lines (empty when it is gone)."""
    result = engine.run_cmd("logs", "--tail", str(tail), name, check=False, timeout=60)
    return (result.stdout + result.stderr).decode(errors="replace")


def stop_container(engine: Engine, name: str, *, timeout_s: int = 10) -> None:
    """Stop and remove the container (no error when it does not exist)."""
    engine.run_cmd("stop", "-t", str(timeout_s), name, check=False, timeout=timeout_s + 60)
    engine.run_cmd("rm", "-f", name, check=False, timeout=60)


def container_image(engine: Engine, name: str) -> str | None:
    """The image reference a container was started from (None when it does not exist)."""
    result = engine.run_cmd(
        "inspect",
        "--format",
        "{{.ImageName}}" if engine.name == "podman" else "{{.Config.Image}}",
        name,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        return None
    return result.stdout.decode().strip() or None
