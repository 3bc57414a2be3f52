"""The embedded default's monitoring: Prometheus, Alertmanager and the alert receiver on loopback.

Started by ``rps run`` beside the API when the Debian binaries are installed. The production
rule files are used as they are, or, for the drift demo, with short ``for`` durations so a
person sees DataDriftDetected fire within a minute instead of ten.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from rps.monitoring.promconfig import (
    BinaryNotFoundError,
    ManagedProcess,
    default_rules_dir,
    free_port,
    render_alertmanager_config,
    render_prometheus_config,
    start_alertmanager,
    start_prometheus,
)
from rps.settings import Settings

logger = logging.getLogger(__name__)


def write_rules(
    source_dir: Path,
    target_dir: Path,
    *,
    alert_for: str | None = None,
    group_interval: str | None = None,
) -> list[Path]:
    """Copy the rule files, optionally shortening every ``for`` (and ``keep_firing_for``)
    and group interval.

    Expressions and labels stay unchanged, so what runs is what production runs; an alert
    whose ``for`` is shortened gets the new duration in its description (the texts state the
    rule in force: "for 5 minutes" becomes "for 20s"). ``keep_firing_for`` becomes
    ``alert_for`` too: on an accelerated clock, hours of keeping would outlast the demo.

    Returns:
        The written files (absolute paths), recording rules first.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in ("recording.yml", "alerts.yml"):
        rules = yaml.safe_load((source_dir / name).read_text(encoding="utf-8"))
        for group in rules["groups"]:
            if group_interval and "interval" in group:
                group["interval"] = group_interval
            for rule in group["rules"]:
                if alert_for and "keep_firing_for" in rule:
                    rule["keep_firing_for"] = alert_for
                if alert_for and "for" in rule:
                    spoken = _spoken_duration(str(rule["for"]))
                    rule["for"] = alert_for
                    annotations = rule.get("annotations", {})
                    for key, text in annotations.items():
                        annotations[key] = re.sub(
                            rf"for\s+(?:more\s+than\s+)?{spoken}", f"for {alert_for}", str(text)
                        )
        path = (target_dir / name).resolve()
        path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
        written.append(path)
    return written


def _spoken_duration(duration: str) -> str:
    """A regex for how the rule texts say a ``for`` duration: ``5m`` -> ``5\\s+minutes?``."""
    units = {"s": "seconds?", "m": "minutes?", "h": "hours?"}
    match = re.fullmatch(r"(\d+)([smh])", duration)
    if match is None:
        return re.escape(duration)
    return rf"{match.group(1)}\s+{units[match.group(2)]}"


@dataclass
class LocalMonitoring:
    """The running monitoring processes and where to reach them."""

    prometheus: ManagedProcess
    alertmanager: ManagedProcess
    receiver: subprocess.Popen[bytes]
    receiver_url: str

    def stop(self) -> None:
        self.prometheus.stop()
        self.alertmanager.stop()
        self.receiver.terminate()
        try:
            self.receiver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.receiver.kill()


def start_local_monitoring(
    settings: Settings,
    *,
    api_port: int,
    demo: bool = False,
    prometheus_port: int = 9090,
    alertmanager_port: int = 9093,
    receiver_port: int = 9095,
) -> LocalMonitoring:
    """Start the alert receiver, Alertmanager and Prometheus scraping the API on loopback.

    Raises:
        BinaryNotFoundError: ``prometheus`` or ``prometheus-alertmanager`` is not installed.
    """
    base = settings.state_path / "monitoring"
    prometheus_port = _port_or_free(prometheus_port)
    alertmanager_port = _port_or_free(alertmanager_port)
    receiver_port = _port_or_free(receiver_port)
    base.mkdir(parents=True, exist_ok=True)
    with (base / "receiver.log").open("ab") as log:
        receiver = subprocess.Popen(
            [sys.executable, "-m", "rps", "alerts", "serve", "--port", str(receiver_port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    receiver_url = f"http://127.0.0.1:{receiver_port}/alerts"
    try:
        alertmanager = start_alertmanager(
            port=alertmanager_port,
            data_dir=base / "alertmanager",
            config_text=render_alertmanager_config(
                receiver_url=receiver_url, repeat_interval="2m" if demo else "1h"
            ),
        )
        rules = write_rules(
            default_rules_dir(settings),
            base / "rules",
            alert_for="20s" if demo else None,
            group_interval="5s" if demo else None,
        )
        prometheus = start_prometheus(
            port=prometheus_port,
            data_dir=base / "prometheus",
            config_text=render_prometheus_config(
                api_targets=[f"127.0.0.1:{api_port}"],
                alertmanager_targets=[f"127.0.0.1:{alertmanager_port}"],
                self_target=f"127.0.0.1:{prometheus_port}",
                rule_files=rules,
                scrape_interval="5s" if demo else "15s",
                evaluation_interval="5s" if demo else "15s",
            ),
        )
    except BaseException:
        receiver.terminate()
        raise
    return LocalMonitoring(prometheus, alertmanager, receiver, receiver_url)


def _port_or_free(port: int) -> int:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


__all__ = ["BinaryNotFoundError", "LocalMonitoring", "start_local_monitoring", "write_rules"]
