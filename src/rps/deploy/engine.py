"""Container engines (podman or docker): command lines for builds, runs and image housekeeping.

Two profiles:

* plain: the engine as installed (a CI runner's docker, a workstation's podman).
* sandbox (podman only): what a container-in-a-sandbox machine without a Docker daemon needs,
  as verified on the project's machines: ``--isolation chroot`` and host networking for
  builds (with the host's CA bundle mounted, since outbound TLS may be re-signed), ``runc``
  and no default ulimits for runs, and a dedicated image store under ``/var/tmp/rps-containers``
  so it never mixes storage drivers with the system store. The store uses native overlay when
  the kernel allows it (a build is minutes faster and gigabytes smaller than with ``vfs``),
  else ``vfs``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, Unpack

from rps.deploy import DeployError, run_bounded

logger = logging.getLogger(__name__)

DEFAULT_STORE = Path("/var/tmp/rps-containers")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STORAGE_DRIVERS = ("overlay", "vfs")


class RunOptions(TypedDict, total=False):
    """The keyword options of :meth:`Engine.execute`, passed on by :meth:`Engine.run_cmd`."""

    check: bool
    capture: bool
    timeout: float | None
    stdin: bytes | None


@dataclass(frozen=True)
class Engine:
    """A container engine and the flags this machine needs.

    Attributes:
        name: ``podman`` or ``docker`` (the executable, looked up on PATH).
        global_args: Flags before the subcommand (podman's ``--root``, ``--storage-driver``...).
        build_args: Extra ``build`` flags (isolation, network, mounts, format).
        run_args: Extra ``run`` flags.
        env: Extra environment for every call (e.g. ``CONTAINERS_CONF``).
    """

    name: str
    global_args: tuple[str, ...] = ()
    build_args: tuple[str, ...] = ()
    run_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def argv(self, *args: str) -> list[str]:
        """The full command line for ``<engine> <global flags> args...``."""
        return [self.name, *self.global_args, *args]

    def run_cmd(
        self, *args: str, **options: Unpack[RunOptions]
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``<engine> <global flags> args...``, with the options of :meth:`execute`.

        Raises:
            DeployError: the engine is missing, or the command failed and ``check`` is set.
        """
        return self.execute(self.argv(*args), **options)

    def execute(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        capture: bool = True,
        timeout: float | None = None,
        stdin: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a full engine command line (from :meth:`argv` or a ``*_command`` method).

        Raises:
            DeployError: the engine is missing, or the command failed and ``check`` is set.
        """
        if shutil.which(argv[0]) is None:
            raise DeployError(f"{argv[0]} is not installed (the container engine is needed here)")
        logger.debug("running %s", " ".join(argv))
        env = {**os.environ, **self.env}
        result = run_bounded(
            argv, what=" ".join(argv[:4]), timeout=timeout, env=env, capture=capture, stdin=stdin
        )
        if check and result.returncode != 0:
            stderr = (result.stderr or b"").decode(errors="replace").strip()[-2000:]
            raise DeployError(f"{' '.join(argv)} exited {result.returncode}: {stderr}")
        return result

    def image_exists(self, ref: str) -> bool:
        """Whether the local store holds the image ``ref``."""
        if self.name == "podman":
            return self.run_cmd("image", "exists", ref, check=False).returncode == 0
        return self.run_cmd("image", "inspect", ref, check=False).returncode == 0

    def build_command(
        self,
        context: Path,
        tags: Sequence[str],
        *,
        dockerfile: Path | None = None,
        build_args: Mapping[str, str] | None = None,
        pull: bool = False,
    ) -> list[str]:
        """The ``build`` command line for ``context`` (not run)."""
        args = ["build", *self.build_args]
        for tag in tags:
            args += ["-t", tag]
        for key, value in (build_args or {}).items():
            args += ["--build-arg", f"{key}={value}"]
        if dockerfile is not None:
            args += ["-f", str(dockerfile)]
        if self.name == "podman":
            args.append("--pull=always" if pull else "--pull=missing")
        elif pull:
            args.append("--pull")
        args.append(str(context))
        return self.argv(*args)

    def run_container_command(
        self,
        image: str,
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        publish: str | None = None,
        command: Sequence[str] | None = None,
    ) -> list[str]:
        """The detached ``run`` command line (not run)."""
        args = ["run", "-d", "--name", name, *self.run_args]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        if publish:
            args += ["-p", publish]
        args.append(image)
        args += list(command or ())
        return self.argv(*args)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created), for steps two test runs may race on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _store_args(store: Path, driver: str) -> tuple[str, ...]:
    """podman's flags for the ``driver`` half of the sandbox store (one runroot per root)."""
    run_root = Path("/run/rps-containers") if os.access("/run", os.W_OK) else store / "run"
    return (
        "--root",
        str(store / driver),
        "--runroot",
        str(run_root / driver),
        "--storage-driver",
        driver,
    )


def _probe_overlay(store: Path) -> bool:
    """Whether podman can use native overlay in ``store`` (import and mount a tiny image)."""
    probe = Engine("podman", global_args=_store_args(store, "overlay"))
    with tempfile.TemporaryDirectory(prefix="rps-probe-") as tmp:
        tar_path = Path(tmp) / "probe.tar"
        marker = Path(tmp) / "probe"
        marker.write_text("rps overlay probe\n", encoding="utf-8")
        with tarfile.open(tar_path, "w") as tar:
            tar.add(marker, arcname="probe")
        try:
            probe.run_cmd("import", str(tar_path), "localhost/rps-overlay-probe:1", timeout=60)
            mounted = probe.run_cmd("image", "mount", "localhost/rps-overlay-probe:1", timeout=60)
            path = Path(mounted.stdout.decode().strip())
            ok = (path / "probe").exists()
            probe.run_cmd("image", "unmount", "localhost/rps-overlay-probe:1", check=False)
            probe.run_cmd("rmi", "-f", "localhost/rps-overlay-probe:1", check=False)
        except DeployError as exc:
            logger.info("native overlay unavailable here (%s); using vfs", exc)
            return False
    return ok


def sandbox_storage_driver(store: Path = DEFAULT_STORE) -> str:
    """The driver the sandbox store uses (decided once per store, remembered in ``driver``)."""
    choice_file = store / "driver"
    with file_lock(store / ".driver.lock"):
        if choice_file.exists():
            chosen = choice_file.read_text(encoding="utf-8").strip()
            if chosen in STORAGE_DRIVERS:
                return chosen
        chosen = "overlay" if _probe_overlay(store) else "vfs"
        choice_file.write_text(chosen + "\n", encoding="utf-8")
    logger.info("sandbox image store %s uses %s", store, chosen)
    return chosen


def sandbox_podman(
    store: Path = DEFAULT_STORE, *, storage_driver: str | None = None, ca_bundle: Path | None = None
) -> Engine:
    """podman configured for a sandboxed machine without a Docker daemon (see module doc).

    Args:
        store: The dedicated image store (one sub-folder per storage driver).
        storage_driver: ``overlay`` or ``vfs`` (default: overlay when the kernel allows it).
        ca_bundle: The CA bundle to mount into builds (default: the host's, when present).
    """
    driver = storage_driver or sandbox_storage_driver(store)
    if driver not in STORAGE_DRIVERS:
        raise DeployError(f"unknown storage driver {driver!r} (one of {STORAGE_DRIVERS})")
    conf = store / "containers.conf"
    store.mkdir(parents=True, exist_ok=True)
    if not conf.exists():
        conf.write_text("[containers]\ndefault_ulimits = []\n", encoding="utf-8")
    build_args: list[str] = ["--isolation", "chroot", "--network", "host", "--format", "docker"]
    bundle = ca_bundle if ca_bundle is not None else HOST_CA_BUNDLE
    if bundle.exists():
        build_args += ["-v", f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"]
    return Engine(
        "podman",
        global_args=(*_store_args(store, driver), "--runtime", "runc"),
        build_args=tuple(build_args),
        run_args=("--network", "host"),
        env={"CONTAINERS_CONF": str(conf)},
    )


def make_engine(
    name: str | None = None,
    *,
    sandbox: bool = False,
    store: Path | None = None,
    storage_driver: str | None = None,
    extra_global_args: Sequence[str] = (),
) -> Engine:
    """The engine to use: ``name`` (default: podman if installed, else docker).

    Args:
        name: ``podman`` or ``docker``.
        sandbox: Apply the sandbox profile (podman only; see :func:`sandbox_podman`).
        store: The sandbox image store (default ``/var/tmp/rps-containers``).
        storage_driver: Force ``overlay`` or ``vfs`` for the sandbox store.
        extra_global_args: Further flags before every subcommand.

    Raises:
        DeployError: an unknown engine, or the sandbox profile asked of docker.
    """
    chosen = name or ("podman" if shutil.which("podman") else "docker")
    if chosen not in ("podman", "docker"):
        raise DeployError(f"unknown container engine {chosen!r} (podman or docker)")
    if sandbox:
        if chosen != "podman":
            raise DeployError("the sandbox profile is for podman")
        engine = sandbox_podman(store or DEFAULT_STORE, storage_driver=storage_driver)
    else:
        engine = Engine(chosen)
    if extra_global_args:
        engine = Engine(
            engine.name,
            global_args=(*engine.global_args, *extra_global_args),
            build_args=engine.build_args,
            run_args=engine.run_args,
            env=engine.env,
        )
    return engine
