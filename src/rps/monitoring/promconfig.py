"""Loopback Prometheus and Alertmanager: rendered configurations and managed subprocesses.

The production configuration (``monitoring/prometheus/prometheus.yml`` and
``monitoring/alertmanager/alertmanager.yml``) addresses the compose services by name
(``api:8000``, ``alertmanager:9093``, ``rps-alert-receiver:9095``). Tests and a laptop without
compose need the same jobs, rules and routing on ``127.0.0.1`` with their own ports and short
intervals; the ``render_*`` functions here build those variants, keeping the job names, the
grouping and the inhibition rules of production so that the alert rules apply unchanged.

:func:`start_prometheus` and :func:`start_alertmanager` run the Debian binaries (packages
``prometheus`` and ``prometheus-alertmanager``) as subprocesses bound to a loopback port and wait
until their ``/-/ready`` endpoint answers.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from rps.settings import Settings

logger = logging.getLogger(__name__)

PREDICTOR_JOB = "rps-predictor"
"""Scrape job of the prediction API; the alert rules select ``up{job="rps-predictor"}``."""
PROMETHEUS_JOB = "prometheus"
ALERTMANAGER_JOB = "alertmanager"
RECEIVER_NAME = "rps-alert-receiver"
"""Alertmanager receiver that posts every alert to the RPS webhook receiver."""

INHIBIT_RULES: list[dict[str, Any]] = [
    {
        # a service that is down cannot be slow or erroring: page once, for the outage
        "source_matchers": ['alertname="ServiceUnhealthy"'],
        "target_matchers": ['alertname=~"InferenceLatencyHigh|PredictionErrorsHigh"'],
        "equal": ["job"],
    },
    {
        # a stuck sensor is fixed at the sensor: no retraining on the drift it causes
        "source_matchers": ['alertname="SensorStuck"'],
        "target_matchers": ['alertname=~"DataDriftDetected|LiveAccuracyDegraded"'],
        "equal": ["job"],
    },
]
"""Inhibition rules shared by the production and the loopback Alertmanager configuration."""

PROMETHEUS_BINARIES = ("prometheus",)
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")


class BinaryNotFoundError(FileNotFoundError):
    """A Prometheus or Alertmanager executable is not on ``PATH``."""


class ProcessStartError(RuntimeError):
    """A managed server exited or did not become ready in time."""


def find_binary(*names: str, package: str) -> str:
    """The absolute path of the first of ``names`` found on ``PATH``.

    Args:
        *names: Executable names to try, in order.
        package: The Debian package that provides them (named in the error message).

    Returns:
        The absolute path of the executable.

    Raises:
        BinaryNotFoundError: None of the names is on ``PATH``.
    """
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise BinaryNotFoundError(
        f"none of {', '.join(names)} is on PATH; install the Debian package "
        f"'{package}' (apt-get install -y {package})"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it).

    Args:
        host: The address to bind to.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def default_rules_dir(settings: Settings | None = None) -> Path:
    """The repository's Prometheus rule folder, ``monitoring/prometheus/rules``.

    Args:
        settings: Settings whose ``project_root`` holds the repository; default: the cwd.

    Returns:
        The folder (it exists only in a checkout of the repository, not in an installed wheel).
    """
    root = settings.project_root if settings is not None else Path.cwd()
    return root / "monitoring" / "prometheus" / "rules"


def _dump(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)


def render_prometheus_config(
    *,
    api_targets: Sequence[str],
    alertmanager_targets: Sequence[str] = (),
    self_target: str | None = None,
    rule_files: Sequence[Path | str] = (),
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
    scrape_timeout: str | None = None,
    external_labels: Mapping[str, str] | None = None,
    extra_scrape_configs: Sequence[Mapping[str, Any]] = (),
) -> str:
    """A Prometheus configuration with the production job names on the given targets.

    Args:
        api_targets: ``host:port`` of the prediction API (job ``rps-predictor``, ``/metrics``).
        alertmanager_targets: ``host:port`` of Alertmanagers to send alerts to and to scrape.
        self_target: ``host:port`` of this Prometheus, scraped as job ``prometheus``.
        rule_files: Rule files or globs; relative ones are resolved against the config file's
            folder by Prometheus, so pass absolute paths when the config is written elsewhere.
        scrape_interval: Global scrape interval (Prometheus duration, e.g. ``"1s"``).
        evaluation_interval: Rule evaluation interval.
        scrape_timeout: Scrape timeout; default: Prometheus' (10 s, capped at the interval).
        external_labels: Labels added to every alert and remote-written series.
        extra_scrape_configs: Further ``scrape_configs`` entries, appended unchanged.

    Returns:
        The configuration as YAML text.
    """
    global_config: dict[str, Any] = {
        "scrape_interval": scrape_interval,
        "evaluation_interval": evaluation_interval,
    }
    if scrape_timeout is not None:
        global_config["scrape_timeout"] = scrape_timeout
    if external_labels:
        global_config["external_labels"] = dict(external_labels)

    scrape_configs: list[dict[str, Any]] = [
        {
            "job_name": PREDICTOR_JOB,
            "metrics_path": "/metrics",
            "static_configs": [{"targets": list(api_targets)}],
        }
    ]
    if self_target:
        scrape_configs.append(
            {"job_name": PROMETHEUS_JOB, "static_configs": [{"targets": [self_target]}]}
        )
    if alertmanager_targets:
        scrape_configs.append(
            {
                "job_name": ALERTMANAGER_JOB,
                "static_configs": [{"targets": list(alertmanager_targets)}],
            }
        )
    scrape_configs.extend(dict(extra) for extra in extra_scrape_configs)

    config: dict[str, Any] = {"global": global_config}
    if rule_files:
        config["rule_files"] = [str(path) for path in rule_files]
    if alertmanager_targets:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": list(alertmanager_targets)}]}]
        }
    config["scrape_configs"] = scrape_configs
    return _dump(config)


def render_alertmanager_config(
    *,
    receiver_url: str,
    group_wait: str = "1s",
    group_interval: str = "1s",
    repeat_interval: str = "1m",
    resolve_timeout: str = "5m",
    send_resolved: bool = True,
) -> str:
    """An Alertmanager configuration that sends every alert to one webhook.

    Production routes by severity to Slack and e-mail as well; this variant keeps only the RPS
    receiver (no traffic leaves the machine) and production's grouping and inhibition rules.

    Args:
        receiver_url: The webhook URL, e.g. ``http://127.0.0.1:9095/alerts``.
        group_wait: Wait before the first notification of a new group.
        group_interval: Wait before notifying about changes in a group.
        repeat_interval: Wait before re-sending a notification that did not change.
        resolve_timeout: Age after which an alert without ``endsAt`` counts as resolved.
        send_resolved: Whether resolved alerts are posted too.

    Returns:
        The configuration as YAML text.
    """
    config: dict[str, Any] = {
        "global": {"resolve_timeout": resolve_timeout},
        "route": {
            "receiver": RECEIVER_NAME,
            "group_by": ["alertname"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "inhibit_rules": [dict(rule) for rule in INHIBIT_RULES],
        "receivers": [
            {
                "name": RECEIVER_NAME,
                "webhook_configs": [
                    {"url": receiver_url, "send_resolved": send_resolved, "max_alerts": 0}
                ],
            }
        ],
    }
    return _dump(config)


@dataclass
class ManagedProcess:
    """A server subprocess started by this module; stop it with :meth:`stop` or ``with``.

    Attributes:
        name: What runs (``prometheus`` or ``alertmanager``).
        url: Base URL, e.g. ``http://127.0.0.1:9090``.
        process: The subprocess.
        data_dir: Its data folder (config, storage and log).
        log_path: Where its stdout and stderr go.
    """

    name: str
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def running(self) -> bool:
        """Whether the subprocess has not exited yet."""
        return self.process.poll() is None

    def log_tail(self, max_chars: int = 4000) -> str:
        """The last ``max_chars`` characters of the server's log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return text[-max_chars:]

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout`` seconds); idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
                self.process.kill()
                self.process.wait(timeout=timeout)
        logger.info("%s at %s stopped", self.name, self.url)

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError as exc:
        raise ValueError(f"host must be a loopback address, got {host!r}") from exc
    if not loopback:
        raise ValueError(f"host must be a loopback address, got {host!r}")


def _write_config(data_dir: Path, filename: str, text: str | None, file: Path | None) -> Path:
    if (text is None) == (file is None):
        raise ValueError("pass exactly one of config_text and config_file")
    if file is not None:
        return file.resolve()
    path = data_dir / filename
    path.write_text(text or "", encoding="utf-8")
    return path


def _wait_ready(handle: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not handle.running:
                raise ProcessStartError(
                    f"{handle.name} exited with code {handle.process.returncode} before it was "
                    f"ready; log:\n{handle.log_tail()}"
                )
            try:
                response = client.get(f"{handle.url}/-/ready")
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return
                last_error = f"HTTP {response.status_code}"
            time.sleep(0.2)
    handle.stop()
    raise ProcessStartError(
        f"{handle.name} at {handle.url} not ready after {timeout:.0f} s ({last_error}); "
        f"log:\n{handle.log_tail()}"
    )


def _launch(
    name: str, argv: list[str], url: str, data_dir: Path, ready_timeout: float
) -> ManagedProcess:
    log_path = data_dir / f"{name}.log"
    logger.info("starting %s at %s: %s", name, url, " ".join(argv))
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=data_dir
        )
    handle = ManagedProcess(
        name=name, url=url, process=process, data_dir=data_dir, log_path=log_path
    )
    try:
        _wait_ready(handle, ready_timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            handle.stop()
        raise
    logger.info("%s ready at %s", name, url)
    return handle


@dataclass(frozen=True)
class MonitoringServer:
    """How to run one of the two monitoring servers; they differ only in these values.

    Attributes:
        name: What runs; also names its config file (``<name>.yml``) and log.
        binaries: Executable names tried on ``PATH``, in order.
        package: The Debian package that provides them (named when none is found).
        own_flags: The flags only this server gets (its storage folder among them);
            ``{data_dir}`` in them stands for the data folder.
    """

    name: str
    binaries: tuple[str, ...]
    package: str
    own_flags: tuple[str, ...]

    def start(
        self,
        *,
        port: int,
        data_dir: Path,
        config_text: str | None = None,
        config_file: Path | None = None,
        host: str = "127.0.0.1",
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 30.0,
    ) -> ManagedProcess:
        """Run the server on a loopback port and wait until its ``/-/ready`` answers.

        Args:
            port: TCP port for the web UI and API.
            data_dir: Folder for the config (when ``config_text`` is given), storage and log.
            config_text: Configuration YAML, written to ``data_dir/<name>.yml``.
            config_file: An existing configuration file (instead of ``config_text``).
            host: Loopback address to listen on.
            binary: Executable; default: the first of :attr:`binaries` on ``PATH``.
            extra_args: Further command-line flags.
            ready_timeout: Seconds to wait for ``/-/ready``.

        Returns:
            The running server; call ``.stop()`` (or use it as a context manager).

        Raises:
            BinaryNotFoundError: The server is not installed.
            ProcessStartError: It exited or did not become ready.
            ValueError: ``host`` is not a loopback address, or not exactly one config was given.
        """
        _check_loopback(host)
        executable = binary or find_binary(*self.binaries, package=self.package)
        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        config_path = _write_config(data_dir, f"{self.name}.yml", config_text, config_file)
        argv = [
            executable,
            f"--config.file={config_path}",
            f"--web.listen-address={host}:{port}",
            *(flag.format(data_dir=data_dir) for flag in self.own_flags),
            *extra_args,
        ]
        return _launch(self.name, argv, f"http://{host}:{port}", data_dir, ready_timeout)


PROMETHEUS = MonitoringServer(
    name="prometheus",
    binaries=PROMETHEUS_BINARIES,
    package="prometheus",
    own_flags=("--storage.tsdb.path={data_dir}/tsdb", "--web.enable-lifecycle"),
)
ALERTMANAGER = MonitoringServer(
    name="alertmanager",
    binaries=ALERTMANAGER_BINARIES,
    package="prometheus-alertmanager",
    # an empty cluster address: no gossip port, a single local instance
    own_flags=("--storage.path={data_dir}/data", "--cluster.listen-address="),
)
start_prometheus = PROMETHEUS.start
"""Run Prometheus (lifecycle API on, TSDB in ``data_dir/tsdb``): :meth:`MonitoringServer.start`."""
start_alertmanager = ALERTMANAGER.start
"""Run Alertmanager (clustering off, state in ``data_dir/data``): :meth:`MonitoringServer.start`."""
