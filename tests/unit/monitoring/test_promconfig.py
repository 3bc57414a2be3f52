"""Rendering of the loopback configurations and the process helpers' argument checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rps.monitoring import promconfig
from rps.settings import Settings


def test_prometheus_config_has_the_production_jobs_on_loopback() -> None:
    config = yaml.safe_load(
        promconfig.render_prometheus_config(
            api_targets=["127.0.0.1:18000"],
            alertmanager_targets=["127.0.0.1:19093"],
            self_target="127.0.0.1:19090",
            rule_files=[Path("/abs/rules/alerts.yml")],
            scrape_interval="1s",
            evaluation_interval="2s",
            scrape_timeout="500ms",
            external_labels={"system": "rps-test"},
            extra_scrape_configs=[{"job_name": "extra", "static_configs": [{"targets": ["x"]}]}],
        )
    )
    assert config["global"] == {
        "scrape_interval": "1s",
        "evaluation_interval": "2s",
        "scrape_timeout": "500ms",
        "external_labels": {"system": "rps-test"},
    }
    assert config["rule_files"] == ["/abs/rules/alerts.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "127.0.0.1:19093"
    ]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert list(jobs) == ["rps-predictor", "prometheus", "alertmanager", "extra"]
    assert jobs["rps-predictor"]["static_configs"][0]["targets"] == ["127.0.0.1:18000"]
    assert jobs["rps-predictor"]["metrics_path"] == "/metrics"


def test_prometheus_config_minimal() -> None:
    config = yaml.safe_load(promconfig.render_prometheus_config(api_targets=["127.0.0.1:1"]))
    assert "alerting" not in config
    assert "rule_files" not in config
    assert [job["job_name"] for job in config["scrape_configs"]] == ["rps-predictor"]


def test_alertmanager_config_posts_everything_to_the_receiver() -> None:
    config = yaml.safe_load(
        promconfig.render_alertmanager_config(
            receiver_url="http://127.0.0.1:19095/alerts",
            group_wait="2s",
            repeat_interval="5s",
        )
    )
    route = config["route"]
    assert route["receiver"] == promconfig.RECEIVER_NAME
    assert route["group_wait"] == "2s"
    assert route["repeat_interval"] == "5s"
    assert "routes" not in route
    (receiver,) = config["receivers"]
    (webhook,) = receiver["webhook_configs"]
    assert webhook == {
        "url": "http://127.0.0.1:19095/alerts",
        "send_resolved": True,
        "max_alerts": 0,
    }
    assert config["inhibit_rules"] == promconfig.INHIBIT_RULES


def test_default_rules_dir(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, project_root=tmp_path)  # type: ignore[call-arg]
    assert promconfig.default_rules_dir(settings) == tmp_path / "monitoring/prometheus/rules"


def test_free_port_is_bindable() -> None:
    port = promconfig.free_port()
    assert 1024 < port < 65536


def test_find_binary_names_the_debian_package() -> None:
    with pytest.raises(promconfig.BinaryNotFoundError, match="apt-get install -y some-package"):
        promconfig.find_binary("surely-not-a-binary-rps", package="some-package")
    assert promconfig.find_binary("surely-not-a-binary-rps", "sh", package="x").endswith("/sh")


@pytest.mark.parametrize("start", [promconfig.start_prometheus, promconfig.start_alertmanager])
def test_start_refuses_non_loopback_hosts(start: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        start(port=1, data_dir=tmp_path, config_text="", host="0.0.0.0", binary="x")  # type: ignore[operator]
    with pytest.raises(ValueError, match="loopback"):
        start(port=1, data_dir=tmp_path, config_text="", host="example.org", binary="x")  # type: ignore[operator]


@pytest.mark.parametrize("start", [promconfig.start_prometheus, promconfig.start_alertmanager])
def test_start_needs_exactly_one_config(start: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        start(port=1, data_dir=tmp_path, binary="x")  # type: ignore[operator]
    with pytest.raises(ValueError, match="exactly one"):
        start(  # type: ignore[operator]
            port=1, data_dir=tmp_path, binary="x", config_text="a", config_file=tmp_path / "c"
        )


def test_start_reports_a_server_that_exits(tmp_path: Path) -> None:
    with pytest.raises(promconfig.ProcessStartError, match="exited with code 1"):
        promconfig.start_prometheus(
            port=promconfig.free_port(),
            data_dir=tmp_path,
            config_text="global: {}\n",
            binary="/bin/false",
            ready_timeout=10,
        )


@pytest.mark.parametrize(
    ("start", "name", "own_flags"),
    [
        (
            promconfig.start_prometheus,
            "prometheus",
            ["--storage.tsdb.path={data_dir}/tsdb", "--web.enable-lifecycle"],
        ),
        (
            promconfig.start_alertmanager,
            "alertmanager",
            ["--storage.path={data_dir}/data", "--cluster.listen-address="],
        ),
    ],
)
def test_start_passes_each_server_its_own_flags(
    start: object, name: str, own_flags: list[str], tmp_path: Path
) -> None:
    """It runs the binary with the config file, the address, the server's own flags and extras."""
    fake = tmp_path / "fake-server"
    fake.write_text('#!/bin/sh\nfor arg in "$@"; do echo "ARG $arg"; done\nexit 1\n')
    fake.chmod(0o755)
    data_dir = (tmp_path / "data").resolve()
    with pytest.raises(promconfig.ProcessStartError, match="exited with code 1") as raised:
        start(  # type: ignore[operator]
            port=19999,
            data_dir=data_dir,
            config_text="x: 1\n",
            binary=str(fake),
            extra_args=["--extra"],
            ready_timeout=10,
        )
    args = [line[4:] for line in str(raised.value).splitlines() if line.startswith("ARG ")]
    assert args == [
        f"--config.file={data_dir / (name + '.yml')}",
        "--web.listen-address=127.0.0.1:19999",
        *(flag.format(data_dir=data_dir) for flag in own_flags),
        "--extra",
    ]
    assert (data_dir / f"{name}.yml").read_text() == "x: 1\n"
