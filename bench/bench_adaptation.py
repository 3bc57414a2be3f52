"""How well a drift-triggered retraining serves the new regime: live RMSE before, during, after.

For each onset, on the replayed recording (Greensboro, 2025) with the demo's drift scenario
(``drift.demo_scenario`` in params.yaml, its start replaced by the onset):

* the champion is trained on the clean year that ends 54 h before the onset (as the first
  champion of ``rps demo-loop``, with the run's split, tuning and trajectory);
* the challenger is trained as a drift-triggered run (``onset`` given, so the placement of
  the onset is not measured here: ``bench/bench_drift.py`` does) on the drifted year that
  ends ``--post-hours`` after the onset;
* the +6 h forecasts of the next 48 h are scored, as the live RMSE of ``rps demo-loop``:
  ``before`` = the champion on the clean 48 h before the onset, ``during`` = the champion on
  the drifted 48 h after the challenger's data ends, ``after`` = the challenger there, as
  registered (``train.adaptation.refit_with_holdout``: refit with its post-onset holdout) and
  as the gate judged it (before the refit).

The goal (issue #10): live RMSE after the swap within 20 % of the pre-drift level. Here the
windows are as short as the demo's, so the level of one onset is noisy; the table gives every
onset and the median ratio.

Run: ``uv run python bench/bench_adaptation.py [--onsets ISO,...] [--post-hours 96]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from benchmarks_doc import publish  # bench/ is on sys.path

from rps.data.schema import TIME
from rps.data.sources.replay import ReplaySource, default_recording, read_tmy3
from rps.data.sources.scenarios import apply_drift
from rps.features.build import TARGET, build_features
from rps.features.spec import FeatureSpec
from rps.models import evaluation as ev
from rps.models.adaptation import refit_with_holdout
from rps.models.selection import CandidateResult, add_trajectory, choose_candidate, fit_candidates
from rps.models.splits import PreparedData, prepare_data
from rps.params import Params, load_params

REPO_ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Adaptation after drift"
DEFAULT_ONSETS = "2025-03-15,2025-06-01,2025-09-10,2025-11-20"
WINDOW = pd.Timedelta(hours=48)
CHAMPION_GAP = pd.Timedelta(hours=54)  # the clean 48 h before the onset lie after its data


@dataclass
class Outcome:
    onset: str
    before: float
    during: float
    after: float
    after_gate: float
    chosen: str
    seconds: float


def fit(
    observations: pd.DataFrame, spec: FeatureSpec, params: Params, onset: pd.Timestamp | None
) -> tuple[CandidateResult, PreparedData]:
    """The chosen candidate of a training run (with its trajectory), as ``train`` fits it."""
    data = prepare_data(observations, spec, params.train, onset=onset, hp=params.horizons)
    chosen = choose_candidate(fit_candidates(data, params.train), adapting=onset is not None)
    add_trajectory(chosen, data, params.train)
    return chosen, data


def score(model: CandidateResult, features: pd.DataFrame, start: pd.Timestamp) -> float:
    """RMSE of the model's forecasts issued in ``[start, start + 48 h)``."""
    names = model.predictor.feature_names
    window = features.loc[start : start + WINDOW - pd.Timedelta(hours=1)]
    window = window.dropna(subset=[*names, TARGET])
    pred = model.predictor.predict(window[names].to_numpy(dtype=float))
    return float(ev.rmse(window[TARGET].to_numpy(dtype=float), pred))


def run_onset(source: ReplaySource, params: Params, onset: pd.Timestamp, post: int) -> Outcome:
    started = time.perf_counter()
    spec = FeatureSpec.from_params(params.data.variables, params.data.target, params.features)
    end = onset + pd.Timedelta(hours=post)
    first = end - pd.Timedelta(days=365)
    clean = source.fetch(first, end + WINDOW + pd.Timedelta(hours=12)).frame
    scenario = params.drift.demo_scenario
    assert scenario is not None
    drifted = apply_drift(clean, scenario.model_copy(update={"start": onset.to_pydatetime()}))
    champion, _ = fit(clean[clean[TIME] < onset - CHAMPION_GAP], spec, params, None)
    challenger, data = fit(drifted[drifted[TIME] <= end], spec, params, onset)
    drifted_features = build_features(drifted, spec)
    gate_view = score(challenger, drifted_features, end + pd.Timedelta(hours=1))
    refit_with_holdout(challenger, data, params.train)
    return Outcome(
        onset=f"{onset:%Y-%m-%d}",
        before=score(champion, build_features(clean, spec), onset - WINDOW),
        during=score(champion, drifted_features, end + pd.Timedelta(hours=1)),
        after=score(challenger, drifted_features, end + pd.Timedelta(hours=1)),
        after_gate=gate_view,
        chosen=challenger.name,
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onsets", default=DEFAULT_ONSETS)
    parser.add_argument("--post-hours", type=int, default=96)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    params = load_params(REPO_ROOT / "params.yaml")
    source = ReplaySource(read_tmy3(default_recording()), variables=params.data.variables)
    load = os.getloadavg()[0]
    outcomes = []
    for text in args.onsets.split(","):
        outcome = run_onset(source, params, pd.Timestamp(text, tz="UTC"), args.post_hours)
        print(outcome, flush=True)
        outcomes.append(outcome)
    scenario = params.drift.demo_scenario
    assert scenario is not None
    ratios = [o.after / o.before for o in outcomes]
    within = sum(r <= 1.2 for r in ratios)
    lines = [
        HEADING,
        "",
        f"`bench/bench_adaptation.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC (2 cores, 1-min "
        f"load average {load:.1f} at the start): the demo scenario ({scenario.kind} "
        f"{scenario.magnitude:g} on {', '.join(scenario.variables)}) from each onset; the "
        f"challenger is a drift-triggered run on the year ending {args.post_hours} h after "
        "the onset (onset given); +6 h RMSE (degC) over 48 h: before = the champion on the "
        "clean 48 h before the onset, during / after = champion / challenger on the 48 h after "
        "the challenger's data ends; after (gate's model) = the challenger before its refit "
        "with the post-onset holdout.",
        "",
        "| Onset | Chosen | Before | During | After (gate's model) | After (served, refit) "
        "| After / before |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for o, ratio in zip(outcomes, ratios, strict=True):
        lines.append(
            f"| {o.onset} | {o.chosen} | {o.before:.2f} | {o.during:.2f} | {o.after_gate:.2f} "
            f"| {o.after:.2f} | {ratio:.2f} |"
        )
    lines += [
        "",
        f"Within 20 % of the pre-drift level: {within} of {len(outcomes)} onsets; median "
        f"after / before {statistics.median(ratios):.2f}; the refit changed the served "
        f"model's RMSE by a median of "
        f"{statistics.median([o.after / o.after_gate - 1 for o in outcomes]):+.0%}. "
        f"Wall time {sum(o.seconds for o in outcomes):.0f} s.",
    ]
    lines += [
        "",
        "Chosen: the candidate with the lowest RMSE on the run's post-onset holdout "
        "(`choose_candidate(adapting=True)`: a drift run does not fall back to persistence "
        "when nothing learned beats it significantly on those 48-odd hours; the gate's test "
        "against the champion is the significance it needs).",
    ]
    publish(HEADING, lines, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
