"""The promotion rule: beat persistence, then beat or match the champion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rps.models.gate import apply_horizon_gate, check_horizons, decide_promotion, too_early

RULE = {"horizon": 6, "significance": 0.05, "margin": 0.02}


@pytest.fixture(scope="module")
def holdout():
    rng = np.random.default_rng(0)
    n = 600
    y = 15 + 5 * np.sin(np.arange(n) * 2 * np.pi / 24) + rng.normal(0, 1, n)
    persistence = np.roll(y, 6) + rng.normal(0, 2, n)
    return y, persistence, rng


def test_first_candidate_that_beats_persistence_becomes_champion(holdout):
    y, persistence, rng = holdout
    good = y + rng.normal(0, 1.0, y.size)
    decision = decide_promotion(y, good, persistence, None, **RULE)
    assert decision.promote and decision.rule == "first_champion"
    assert decision.dm_vs_persistence is not None
    assert decision.dm_vs_persistence.p_value_better < 0.05


def test_a_candidate_that_does_not_beat_persistence_is_refused(holdout):
    y, persistence, _ = holdout
    decision = decide_promotion(y, persistence + 0.01, persistence, None, **RULE)
    assert not decision.promote and decision.rule == "refused_persistence"
    assert "persistence" in decision.reason


def test_persistence_itself_is_exempt_from_beating_persistence(holdout):
    y, persistence, _ = holdout
    decision = decide_promotion(
        y, persistence, persistence, None, candidate_is_persistence=True, **RULE
    )
    assert decision.promote and decision.rule == "first_champion"


def test_significantly_better_is_promoted_and_worse_refused(holdout):
    y, persistence, rng = holdout
    champion = y + rng.normal(0, 1.5, y.size)
    better = y + rng.normal(0, 0.8, y.size)
    worse = y + rng.normal(0, 2.5, y.size)
    up = decide_promotion(y, better, persistence, champion, champion_version="3", **RULE)
    assert up.promote and up.rule == "superior"
    assert up.champion_version == "3" and "v3" in up.reason
    down = decide_promotion(y, worse, persistence, champion, champion_version="3", **RULE)
    assert not down.promote and down.rule == "refused_champion"
    assert down.dm_vs_champion is not None and down.dm_vs_champion.p_value_worse < 0.05


def test_non_inferior_within_the_margin_is_promoted(holdout):
    y, persistence, rng = holdout
    champion = y + rng.normal(0, 1.0, y.size)
    same = champion.copy()
    decision = decide_promotion(y, same, persistence, champion, **RULE)
    assert decision.promote and decision.rule == "non_inferior"


def test_worse_beyond_the_margin_is_refused_even_if_not_significant(holdout):
    y, persistence, rng = holdout
    champion = y + rng.normal(0, 1.0, y.size)
    slightly_worse = y + (champion - y) * 1.05  # 5 % larger errors, same pattern
    decision = decide_promotion(
        y, slightly_worse, persistence, champion, **{**RULE, "significance": 1e-12}
    )
    assert decision.candidate_rmse > decision.champion_rmse * 1.02
    assert not decision.promote and decision.rule == "refused_champion"


def _by_horizon(rmse: list[float], persistence: list[float]) -> list[dict[str, float]]:
    return [
        {"horizon_hours": h, "rmse": r, "persistence_rmse": p}
        for h, (r, p) in enumerate(zip(rmse, persistence, strict=True), start=1)
    ]


def test_a_trajectory_worse_than_persistence_at_one_horizon_is_refused(holdout):
    y, persistence, rng = holdout
    promoted = decide_promotion(y, y + rng.normal(0, 1.0, y.size), persistence, None, **RULE)
    scores = _by_horizon([0.9, 1.6, 2.0], [1.2, 1.5, 3.0])  # loses at +2 h only
    assert check_horizons(scores) is not None and "+2 h" in str(check_horizons(scores))
    refused = apply_horizon_gate(promoted, scores)
    assert not refused.promote and refused.rule == "refused_horizon"
    assert "+2 h (1.600 vs 1.500)" in refused.reason
    assert refused.candidate_rmse == promoted.candidate_rmse  # the evidence is kept


def test_the_horizon_rule_passes_ties_and_leaves_refusals_alone(holdout):
    y, persistence, _ = holdout
    tied = _by_horizon([1.2, 1.5], [1.2, 1.5])  # persistence served as the fallback
    assert check_horizons(tied) is None and check_horizons([]) is None
    refused = decide_promotion(y, persistence + 0.01, persistence, None, **RULE)
    worse = _by_horizon([5.0], [1.0])
    assert apply_horizon_gate(refused, worse) is refused


def test_a_drift_holdout_that_starts_before_the_onset_is_too_early_to_judge():
    times = pd.date_range("2025-06-01", periods=48, freq="h", tz="UTC")
    reason = too_early(times, times[13])
    assert reason is not None and "35 of its 48 hours after it" in reason
    assert too_early(times, times[0]) is None  # the whole holdout is the new regime
    assert too_early(times, None) is None  # not a drift run
