"""Real servers of the production topology, each in its own process on loopback.

Every server runs in its own session (process group) with its output in a log file, and
:meth:`Server.stop` ends the whole group: SIGTERM, then SIGKILL. Readiness is polled with
tenacity. PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user of the
Debian package (CI runs as root).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import httpx
from botocore.exceptions import BotoCoreError, ClientError
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

POSTGRES_ROOT = Path("/usr/lib/postgresql")


class ServerError(RuntimeError):
    """A server exited or did not become ready; the message carries its log's tail."""


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Server:
    """A running server process (its own process group) and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    _stopped: bool = field(default=False, repr=False)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace_s: float = 15.0) -> None:
        """End the process group: SIGTERM, then SIGKILL after ``grace_s``; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)  # the server and the children it started
            except ProcessLookupError:  # not a group leader (started by another helper)
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue


def wait_until(
    check: Callable[[], bool], *, what: str, timeout_s: float, server: Server | None = None
) -> None:
    """Poll ``check`` every half second until it is true; fail naming ``what`` (and the log)."""

    def attempt() -> bool:
        if server is not None and not server.running:
            raise ServerError(
                f"{server.name} exited with {server.process.returncode}:\n{tail(server.log_path)}"
            )
        try:
            return check()
        except (httpx.HTTPError, OSError, ValueError, BotoCoreError, ClientError):
            return False  # not up yet

    poll = retry(
        retry=retry_if_result(lambda ok: not ok),
        wait=wait_fixed(0.5),
        stop=stop_after_delay(timeout_s),
        retry_error_callback=lambda state: False,
    )(attempt)
    if not poll():
        log = f"\n{tail(server.log_path)}" if server is not None else ""
        raise ServerError(f"{what} not ready after {timeout_s:.0f} s{log}")


def http_ok(url: str, expect: int = 200) -> Callable[[], bool]:
    return lambda: httpx.get(url, timeout=3.0).status_code == expect


def port_open(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True

    return check


def start(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_dir: Path,
    cwd: Path,
    url: str = "",
) -> Server:
    """Start ``argv`` in its own session with stdout and stderr in ``<log_dir>/<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    return Server(name=name, process=process, log_path=log_path, url=url)


# ------------------------------------------------------------------------------- PostgreSQL
def postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` (Debian package ``postgresql``)."""
    found = sorted(POSTGRES_ROOT.glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise ServerError("PostgreSQL is not installed (apt-get install postgresql)")
    return found[-1].parent


def _as_postgres_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@dataclass
class Postgres:
    """A PostgreSQL cluster in a temporary folder, superuser ``postgres`` (socket: trust)."""

    port: int
    data_dir: Path
    socket_dir: Path
    bin_dir: Path

    def psql_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PGHOST": str(self.socket_dir),
            "PGPORT": str(self.port),
            "POSTGRES_USER": "postgres",
            "POSTGRES_DB": "postgres",
        }

    def stop(self) -> None:
        subprocess.run(
            _as_postgres_user(
                [str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast"]
            ),
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def start_postgres(log_dir: Path) -> Postgres:
    """initdb (password auth over TCP, trust on the socket), then ``pg_ctl start -w``."""
    bin_dir = postgres_bin()
    # pytest's temporary folders are private to root: the postgres user needs its own
    root = Path(tempfile.mkdtemp(prefix="rps-pg-"))
    data_dir, socket_dir = root / "data", root / "run"
    socket_dir.mkdir()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "postgres.log"
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in (root, socket_dir):
            os.chown(path, user.pw_uid, user.pw_gid)
        root.chmod(0o755)
    port = free_port()
    initdb = [
        str(bin_dir / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        "postgres",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
    ]
    result = subprocess.run(
        _as_postgres_user(initdb), capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise ServerError(f"initdb failed: {result.stderr[-2000:]}")
    options = f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_log = root / "server.log"
    start_cmd = [
        str(bin_dir / "pg_ctl"),
        "start",
        "-w",
        "-t",
        "60",
        "-D",
        str(data_dir),
        "-l",
        str(pg_log),
        "-o",
        options,
    ]
    result = subprocess.run(
        _as_postgres_user(start_cmd), capture_output=True, text=True, check=False, timeout=90
    )
    if result.returncode != 0:
        raise ServerError(f"pg_ctl start failed: {result.stderr[-2000:]}\n{tail(pg_log)}")
    log_path.write_text(f"PostgreSQL on 127.0.0.1:{port}, data {data_dir}, log {pg_log}\n")
    return Postgres(port=port, data_dir=data_dir, socket_dir=socket_dir, bin_dir=bin_dir)


def init_databases(pg: Postgres, script: Path, passwords: Mapping[str, str]) -> None:
    """Run the compose stack's init script (roles and databases airflow and mlflow)."""
    env = {**pg.psql_env(), **passwords, "PATH": f"{pg.bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise ServerError(f"{script.name} failed: {result.stderr[-2000:]}")


# ------------------------------------------------------------------------------- SeaweedFS
@dataclass
class SeaweedFS:
    server: Server
    endpoint: str
    access_key: str
    secret_key: str
    master: str  # ``host:port.grpcPort``, the address ``weed shell -master`` takes

    def client(self) -> object:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )


def s3_identities(access_key: str, secret_key: str) -> str:
    """SeaweedFS's ``-s3.config``: one identity allowed everything (as compose renders it)."""
    identity = {
        "name": "rps",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    return json.dumps({"identities": [identity]}, indent=2)


def start_seaweedfs(
    weed: Path,
    root: Path,
    log_dir: Path,
    *,
    access_key: str,
    secret_key: str,
    buckets: Sequence[str] = (),
    config: Path | None = None,
    signing_key: str | None = None,
) -> SeaweedFS:
    """``weed server -s3`` on loopback with explicit ports and credentials.

    Every gRPC port is explicit too: SeaweedFS defaults each to its HTTP port + 10000, which is
    not a port at all for a free port above 55535.

    ``config`` is an ``-s3.config`` file to use as it is; by default one is written with the
    single identity ``access_key``/``secret_key``. ``buckets`` are created once S3 answers.
    ``signing_key`` (``WEED_JWT_FILER_SIGNING_KEY``, default: a random one) is also the key of
    the S3 gateway's STS service: without one, SeaweedFS 4.48 falls back to the SSE-S3 master key
    and, when that is not initialised yet, exits ("no signing key found for STS service").
    """
    root.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = root / "s3.json"
        config.write_text(s3_identities(access_key, secret_key))
    ports = {
        key: free_port()
        for key in (
            "s3",
            "s3.grpc",
            "master",
            "master.grpc",
            "volume",
            "volume.grpc",
            "filer",
            "filer.grpc",
        )
    }
    argv = [
        str(weed),
        "server",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=100",  # each bucket grows its own volumes: the default 8 run out
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master.grpc']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume.grpc']}",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer.grpc']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3.grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
    ]
    (root / "data").mkdir(exist_ok=True)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    env = {**os.environ, "WEED_JWT_FILER_SIGNING_KEY": signing_key or secrets.token_hex(32)}
    server = start("seaweedfs", argv, env=env, log_dir=log_dir, cwd=root, url=endpoint)
    master = f"127.0.0.1:{ports['master']}.{ports['master.grpc']}"
    store = SeaweedFS(server, endpoint, access_key, secret_key, master)

    def buckets_created() -> bool:
        client = store.client()
        existing = {b["Name"] for b in client.list_buckets()["Buckets"]}  # type: ignore[attr-defined]
        for bucket in buckets:
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        return True

    try:
        wait_until(buckets_created, what="SeaweedFS S3", timeout_s=120, server=server)
    except BaseException:
        server.stop(grace_s=5)
        raise
    return store


# ------------------------------------------------------------------------------- Redis
def start_redis(log_dir: Path, root: Path) -> Server:
    """Debian's ``redis-server`` on a loopback port, no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(root),
    ]
    server = start(
        "redis", argv, env=os.environ, log_dir=log_dir, cwd=root, url=f"redis://127.0.0.1:{port}/0"
    )
    wait_until(port_open(port), what="redis", timeout_s=30, server=server)
    return server
