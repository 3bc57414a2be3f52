"""The demo's rule copies: shorter ``for`` durations, and texts that state them."""

from __future__ import annotations

from pathlib import Path

import yaml

from rps.monitoring.local_stack import write_rules

RULES_DIR = Path(__file__).resolve().parents[3] / "monitoring" / "prometheus" / "rules"


def _alerts(directory: Path) -> dict[str, dict]:
    rules = yaml.safe_load((directory / "alerts.yml").read_text(encoding="utf-8"))
    return {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}


def test_shortened_rules_state_the_duration_in_force(tmp_path: Path) -> None:
    """Every alert's ``for`` becomes 20s and no description still names the original one."""
    original = _alerts(RULES_DIR)
    write_rules(RULES_DIR, tmp_path, alert_for="20s", group_interval="1s")
    copied = _alerts(tmp_path)
    assert set(copied) == set(original)
    for name, rule in copied.items():
        assert rule["for"] == "20s", name
        assert rule["expr"] == original[name]["expr"]
        text = " ".join(rule["annotations"]["description"].split())
        assert "for 20s" in text, (name, text)
    drift = " ".join(copied["DataDriftDetected"]["annotations"]["description"].split())
    assert "for 5 minutes" not in drift
    # kept as long as it waits: hours of keeping would outlast an accelerated demo
    assert original["DataDriftDetected"]["keep_firing_for"] == "6h"
    assert copied["DataDriftDetected"]["keep_firing_for"] == "20s"


def test_rules_copied_unchanged_without_a_new_duration(tmp_path: Path) -> None:
    write_rules(RULES_DIR, tmp_path)
    assert _alerts(tmp_path) == _alerts(RULES_DIR)
