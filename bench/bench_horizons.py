"""Benchmark the forecast trajectory (every hour 1..48) and its intervals on the replay year.

Data and splits are those of ``rps train`` on the default replay station (real Greensboro NC
weather, the year ending ``--end``): the holdout is the newest 20 % of issue times; training
rows end where the holdout starts. LightGBM hyperparameters are tuned once the way
``rps train`` tunes them (Optuna on the configured horizon's rows) and shared by every
strategy, so the strategies differ only in how they cover the horizons:

* **direct, per horizon group** (what ``rps train`` fits): one LightGBM per group of horizons
  (``horizons.group_starts``), each forecasting the change of the temperature from the issue
  time, on rows carrying their horizon as a feature; each training issue time gives one row
  per group (a horizon of the group drawn at random);
* **one model, horizon as a feature**: one LightGBM over the same stacked rows;
* **recursive**: the +1 h model applied 48 times, fed its own temperature forecasts, the other
  variables held at their last observed values;

beside persistence, seasonal naive (the same hour a day earlier) and MSTL (statsforecast, daily
season, AutoETS trend, fitted once on the training part and filtered forward to each issue
time; it re-decomposes the whole history at every call, so only every ``--mstl-every``-th
issue time is scored and the product is scored on the same subsample for the ratio).
"product" is what ``rps train`` serves: the direct models trained for the rounds their groups
reached out of fold, a baseline where one beat them out of fold, with their interval.

Intervals (90 %): the product's conditional interval (:mod:`rps.models.intervals`) against
today's constant split-conformal interval (one offset pair, calibrated on the configured
horizon's out-of-fold errors, added at every horizon), against a constant interval per
horizon (split-conformal offsets of each horizon's out-of-fold errors) and against the
conditional interval whose scale lacks the dew point terms. All are
calibrated on the same out-of-fold errors (``horizons.interval_folds`` blocked folds of the
training issue times). The interval as served is the conditional one rescaled per horizon
from its realised errors (:mod:`rps.models.interval_rescale`, ``horizons.rescale``): simulated
on the holdout in time order with the service's functions, each issue time's factors from the
forecasts realised by then (all 48 horizons of every earlier issue time, as the service logs
``GET /forecast`` trajectories), starting from factor 1. Then four more runs hold out each
quarter of the year in turn (trained on the other three, with a ``max_hours`` gap), to show
the interval's coverage per season.

Writes the section ``## Forecast trajectory`` of docs/BENCHMARKS.md (``--no-write``: print only).
Usage: ``.venv/bin/python bench/bench_horizons.py [--end 2025-12-31T23:00Z] [--mstl-every 6]``
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from benchmarks_doc import publish  # bench/ is on sys.path

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Forecast trajectory"
DEFAULT_END = "2025-12-31T23:00Z"
SHOWN = (1, 2, 3, 6, 12, 18, 24, 30, 36, 42, 48)
GOAL_MSTL_RATIO = 0.7
GOAL_COVERAGE, GOAL_QUARTER = (0.87, 0.93), (0.85, 0.95)
GOAL_SCORE_GAIN = 0.15
CALIBRATED = "conditional, as trained (the interval before 2026-12-03)"
SERVED = "conditional + rescale per horizon (product, as served)"
ONE_FACTOR = "conditional + one factor for every horizon, from the +{h} h errors"

log = logging.getLogger("bench_horizons")


@dataclass
class Timed:
    pred: np.ndarray
    wall_s: float
    cpu_s: float


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def load_year(end: pd.Timestamp, params: Any) -> pd.DataFrame:
    from rps.data.sources.replay import ReplaySource
    from rps.settings import Settings

    with tempfile.TemporaryDirectory(prefix="rps-bench-") as tmp:
        settings = Settings(
            state_dir=Path(tmp) / ".rps", project_root=REPO_ROOT, mlflow_tracking_uri=None
        )
        source = ReplaySource.from_settings(settings, params)
        return source.fetch(end - pd.Timedelta(days=365), end).frame


def per_horizon_rmse(rows: Any, pred: np.ndarray, max_hours: int) -> np.ndarray:
    out = np.full(max_hours, np.nan)
    for h in range(1, max_hours + 1):
        at = rows.horizons == h
        if at.any():
            out[h - 1] = float(np.sqrt(np.mean((rows.y[at] - pred[at]) ** 2)))
    return out


def recursive(hd: Any, model: Any, observations: pd.DataFrame) -> np.ndarray:
    """The +1 h model fed its own temperature forecasts (other variables held), per holdout row."""
    from rps.features.online import build_feature_row

    spec = hd.spec.at_horizon(1)
    values = observations[list(spec.variables)].to_numpy(dtype=float)
    times = pd.DatetimeIndex(observations["time"])
    position = {t: i for i, t in enumerate(times)}
    issues = hd.holdout.issue_times.unique()
    need = spec.window_hours
    target = spec.variables.index(spec.target)
    windows = np.stack([values[position[t] - need + 1 : position[t] + 1] for t in issues])
    out: dict[tuple[pd.Timestamp, int], float] = {}
    starts = [t.to_pydatetime() for t in issues]
    for step in range(1, hd.max_hours + 1):
        rows = np.stack(
            [
                build_feature_row(w, spec, issue_time=s + timedelta(hours=step - 1))
                for w, s in zip(windows, starts, strict=True)
            ]
        )
        pred = model.predict(rows)
        nxt = windows[:, -1:, :].copy()
        nxt[:, 0, target] = pred
        windows = np.concatenate([windows[:, 1:, :], nxt], axis=1)
        out.update({(t, step): p for t, p in zip(issues, pred, strict=True)})
    keys = zip(hd.holdout.issue_times, hd.holdout.horizons, strict=True)
    return np.array([out[(t, int(h))] for t, h in keys])


def mstl_forecasts(
    observations: pd.DataFrame,
    target: str,
    train_end: pd.Timestamp,
    issues: pd.DatetimeIndex,
    max_hours: int,
) -> dict[pd.Timestamp, np.ndarray]:
    from statsforecast.models import MSTL, AutoETS

    series = observations.set_index("time")[target]
    values = series.to_numpy(dtype=float)
    position = {t: i for i, t in enumerate(pd.DatetimeIndex(series.index))}
    model = MSTL(season_length=[24], trend_forecaster=AutoETS(model="ZZN"))
    fitted = model.fit(values[: position[train_end] + 1])
    return {
        t: np.asarray(fitted.forward(y=values[: position[t] + 1], h=max_hours)["mean"])
        for t in issues
    }


@dataclass
class IntervalSet:
    lower: np.ndarray
    upper: np.ndarray


def constant_intervals(
    oof: Any, rows: Any, pred: np.ndarray, alpha: float, horizon: int
) -> dict[str, IntervalSet]:
    """Today's constant interval and a constant interval per horizon, from the same errors."""
    from rps.models.evaluation import conformal_offsets

    errors = oof.rows.y - oof.pred
    today = conformal_offsets(errors[oof.rows.horizons == horizon], alpha)
    lower, upper = pred + today["lower"], pred + today["upper"]
    per_lo, per_hi = np.empty(len(pred)), np.empty(len(pred))
    for h in np.unique(rows.horizons):
        offsets = conformal_offsets(errors[oof.rows.horizons == h], alpha)
        at = rows.horizons == h
        per_lo[at], per_hi[at] = pred[at] + offsets["lower"], pred[at] + offsets["upper"]
    return {
        f"constant (today: the +{horizon} h offsets at every horizon)": IntervalSet(lower, upper),
        "constant per horizon": IntervalSet(per_lo, per_hi),
    }


def without_dew_point(
    oof: Any, rows: Any, pred: np.ndarray, spec: Any, alpha: float
) -> IntervalSet:
    """The conditional interval of the same errors with a scale that lacks the dew point terms:
    what the dew point adds."""
    from rps.models.intervals import fit_horizon_interval, scale_columns

    columns = {k: v for k, v in scale_columns(spec).items() if k != "dew_point"}
    interval = fit_horizon_interval(
        oof.rows.x,
        oof.rows.y - oof.pred,
        oof.fold,
        spec,
        alpha=alpha,
        max_hours=int(oof.rows.horizons.max()),
        columns=columns,
    )
    lower, upper = interval.bounds(rows.x, pred, spec.feature_names)
    return IntervalSet(lower, upper)


def rescaled(
    rows: Any,
    pred: np.ndarray,
    interval: IntervalSet,
    rescale: Any,
    from_horizon: int | None = None,
) -> IntervalSet:
    """The interval as served: each issue time's interval rescaled per horizon by the factors
    of the forecasts realised by then (target time <= issue time), in time order.
    ``from_horizon``: one factor for every horizon, from that horizon's forecasts only (what a
    service that logs only its own horizon could learn)."""
    from rps.models.interval_rescale import needed_factor, rolling_factor

    lo_off, hi_off = interval.lower - pred, interval.upper - pred
    needed = needed_factor(rows.y - pred, lo_off, hi_off)
    hours = rows.issue_times.asi8 // 3_600_000_000_000
    target = hours + rows.horizons
    factor = np.ones(len(pred))
    for h in np.unique(rows.horizons):
        at = np.flatnonzero(rows.horizons == h)
        source = at if from_horizon is None else np.flatnonzero(rows.horizons == from_horizon)
        order = source[np.argsort(target[source], kind="stable")]
        realised_at, values = target[order], needed[order]
        issues, inverse = np.unique(hours[at], return_inverse=True)
        ends = np.searchsorted(realised_at, issues, side="right")
        per_issue = np.array([rolling_factor(values[:k], rescale)[0] for k in ends])
        factor[at] = per_issue[inverse]
    return IntervalSet(pred + factor * lo_off, pred + factor * hi_off)


def interval_scores(rows: Any, interval: IntervalSet, alpha: float) -> pd.DataFrame:
    from rps.models import evaluation as ev

    out = []
    for h in np.unique(rows.horizons):
        at = rows.horizons == h
        y, lo, hi = rows.y[at], interval.lower[at], interval.upper[at]
        out.append(
            {
                "h": int(h),
                "coverage": ev.interval_coverage(y, lo, hi),
                "width": float(np.mean(hi - lo)),
                "score": ev.interval_score(y, lo, hi, alpha),
                "pinball": (
                    ev.pinball_loss(y, lo, alpha / 2) + ev.pinball_loss(y, hi, 1 - alpha / 2)
                )
                / 2,
            }
        )
    return pd.DataFrame(out).set_index("h")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--end", default=DEFAULT_END)
    parser.add_argument("--mstl-every", type=int, default=6)
    parser.add_argument("--no-quarters", action="store_true", help="skip the quarterly folds")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("rps").setLevel(logging.WARNING)

    from rps.features.build import FeatureSpec
    from rps.models import horizons as hz
    from rps.models.candidates import fit_candidate
    from rps.models.forecasters import GROUP_STARTS, MAX_HORIZON
    from rps.models.splits import prepare_data
    from rps.models.tuning import tune
    from rps.params import load_params

    params = load_params(REPO_ROOT / "params.yaml")
    tp, hp = params.train, params.horizons
    alpha, seed, horizon = tp.interval_alpha, tp.seed, params.features.horizon_hours
    load_before = os.getloadavg()[0]
    end = pd.Timestamp(args.end).tz_convert("UTC").floor("h")
    observations = load_year(end, params)
    spec = FeatureSpec.from_params(params.data.variables, params.data.target, params.features)
    data = prepare_data(observations, spec, tp)
    index = data.index
    train_times, hold_times = index[data.train_pos], index[data.holdout_pos]
    hd, prep_s, _ = timed(
        lambda: hz.prepare_horizons(
            observations, spec, hp, train_times=train_times, holdout_times=hold_times, seed=seed
        )
    )
    log.info("rows: %d training, %d holdout (%.1f s)", len(hd.train.y), len(hd.holdout.y), prep_s)
    space = {k: (float(v[0]), float(v[1])) for k, v in tp.search_space.get("lightgbm", {}).items()}
    tuned, tune_s, tune_cpu = timed(
        lambda: tune(
            "lightgbm",
            data.x[data.train_pos],
            data.y[data.train_pos],
            data.folds,
            spec=spec,
            space=space,
            n_trials=tp.n_trials,
            seed=seed,
        )
    )
    hyper = dict(tuned.hyper)
    log.info("tuned in %.1f s: %s", tune_s, hyper)
    h_max, rows = hp.max_hours, hd.holdout

    def fit(starts: list[int], fit_rows: Any) -> Any:
        model, _ = fit_candidate(
            "lightgbm",
            fit_rows.x,
            fit_rows.y,
            spec,
            {**hyper, GROUP_STARTS: starts, MAX_HORIZON: h_max},
            seed=seed,
        )
        return model

    results: dict[str, Timed] = {}
    direct, wall, cpu = timed(lambda: fit(list(hp.group_starts), hd.train))
    results["direct, per horizon group"] = Timed(direct.predict(rows.x), wall, cpu)
    one, wall, cpu = timed(lambda: fit([1], hd.train))
    results["one model, horizon as a feature"] = Timed(one.predict(rows.x), wall, cpu)
    step1, wall, cpu = timed(
        lambda: fit([1], hd.train.take(np.flatnonzero(hd.train.horizons == 1)))
    )
    pred, rec_s, _ = timed(lambda: recursive(hd, step1, observations))
    results["recursive (+1 h model, 48 steps)"] = Timed(pred, wall, cpu)
    log.info("recursive forecasts in %.1f s", rec_s)
    product, prod_s, prod_cpu = timed(
        lambda: hz.fit_trajectory(hd, "lightgbm", hyper, alpha=alpha, seed=seed)
    )
    product_pred = product.predictor.predict(rows.x)
    results["product (direct + fallbacks, as served)"] = Timed(product_pred, prod_s, prod_cpu)
    lower, upper = product.interval.bounds(rows.x, product_pred, spec.feature_names)
    rescale = hp.rescale.rescale(alpha)

    rmse = {name: per_horizon_rmse(rows, r.pred, h_max) for name, r in results.items()}
    baselines = {
        "persistence": per_horizon_rmse(rows, rows.baseline("persistence", spec), h_max),
        "seasonal naive": per_horizon_rmse(rows, rows.baseline("seasonal_naive", spec), h_max),
    }
    issues = rows.issue_times.unique()[:: args.mstl_every]
    mstl, mstl_s, _ = timed(
        lambda: mstl_forecasts(observations, spec.target, train_times[-1], issues, h_max)
    )
    log.info("MSTL: %d issue times in %.1f s", len(issues), mstl_s)
    sub = np.isin(rows.issue_times, issues)
    mstl_pred = np.array(
        [mstl[t][h - 1] for t, h in zip(rows.issue_times[sub], rows.horizons[sub], strict=True)]
    )
    sub_rows = rows.take(np.flatnonzero(sub))
    mstl_rmse = per_horizon_rmse(sub_rows, mstl_pred, h_max)
    product_sub = per_horizon_rmse(sub_rows, product_pred[sub], h_max)
    prod = rmse["product (direct + fallbacks, as served)"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    # intervals
    sets = constant_intervals(product.oof, rows, product_pred, alpha, horizon)
    sets["conditional, scale without the dew point"] = without_dew_point(
        product.oof, rows, product_pred, spec, alpha
    )
    sets[CALIBRATED] = IntervalSet(lower, upper)
    sets[ONE_FACTOR.format(h=horizon)] = rescaled(
        rows, product_pred, sets[CALIBRATED], rescale, from_horizon=horizon
    )
    sets[SERVED] = rescaled(rows, product_pred, sets[CALIBRATED], rescale)
    scored = {name: interval_scores(rows, s, alpha) for name, s in sets.items()}

    quarter_lines: list[str] = []
    quarter_goal: list[str] = []
    if not args.no_quarters:
        quarter_lines, quarter_cov, quarter_old = quarters(observations, spec, params, data, hyper)
        inside = {q: c.between(*GOAL_QUARTER).all() for q, c in quarter_cov.items()}
        quarter_goal = [
            f"| 90 % coverage within {GOAL_QUARTER[0]:.0%}-{GOAL_QUARTER[1]:.0%} at every "
            "horizon in each quarter held out | "
            + "; ".join(f"{q}: {c.min():.1%}..{c.max():.1%}" for q, c in quarter_cov.items())
            + " (as trained, without the rescale: "
            + "; ".join(f"{q}: {c.min():.1%}..{c.max():.1%}" for q, c in quarter_old.items())
            + f") | {verdict(all(inside.values()))}"
            + (
                ""
                if all(inside.values())
                else " (" + ", ".join(q for q, ok in inside.items() if not ok) + ")"
            )
            + " |"
        ]

    first, last = observations["time"].iloc[0], observations["time"].iloc[-1]

    names = [*baselines, *rmse]
    table = [
        "| horizon (h) | " + " | ".join(names) + " | MSTL (subsample) | product (same subsample) |",
        "|---:|" + "---:|" * (len(names) + 2),
    ]
    allr = {**baselines, **rmse}
    for h in SHOWN:
        cells = [f"{allr[n][h - 1]:.2f}" for n in names]
        table.append(
            f"| {h} | "
            + " | ".join(cells)
            + f" | {mstl_rmse[h - 1]:.2f} | {product_sub[h - 1]:.2f} |"
        )
    table.append(
        "| mean 1..48 | "
        + " | ".join(f"{np.nanmean(allr[n]):.2f}" for n in names)
        + f" | {np.nanmean(mstl_rmse):.2f} | {np.nanmean(product_sub):.2f} |"
    )
    timing = [
        "| strategy | fit wall | fit CPU |",
        "|---|---:|---:|",
        *[f"| {n} | {r.wall_s:.1f} s | {r.cpu_s:.1f} s |" for n, r in results.items()],
        f"| tuning (shared, {tp.n_trials} Optuna trials at +{horizon} h) | {tune_s:.1f} s | "
        f"{tune_cpu:.1f} s |",
    ]
    short, long_ = slice(0, 6), slice(6, h_max)
    spans = {n: (np.nanmean(r[short]), np.nanmean(r[long_])) for n, r in rmse.items()}
    strategies = [n for n in rmse if not n.startswith("product")]
    choice = [
        "| strategy | mean RMSE +1..6 h | mean RMSE +7..48 h | fit CPU |",
        "|---|---:|---:|---:|",
        *[
            f"| {n} | {spans[n][0]:.2f} | {spans[n][1]:.2f} | {results[n].cpu_s:.1f} s |"
            for n in strategies
        ],
    ]
    best_short = min(strategies, key=lambda n: spans[n][0])
    best_long = min(strategies, key=lambda n: spans[n][1])
    direct_name, one_name = strategies[0], strategies[1]
    gap_short = spans[one_name][0] - spans[direct_name][0]
    gap_long = spans[direct_name][1] - spans[one_name][1]
    beats_p = int(np.sum(prod < baselines["persistence"]))
    beats_s = int(np.sum(prod < baselines["seasonal naive"]))
    ratio = product_sub[horizon - 1] / mstl_rmse[horizon - 1]
    base_name = next(iter(sets))
    ivl = [
        "| interval | mean coverage | min..max coverage over horizons | mean width (degC) | "
        "interval score | pinball | score vs today |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, frame in scored.items():
        gain = 1 - frame["score"].mean() / scored[base_name]["score"].mean()
        ivl.append(
            f"| {name} | {frame['coverage'].mean():.1%} | {frame['coverage'].min():.1%}.."
            f"{frame['coverage'].max():.1%} | {frame['width'].mean():.2f} | "
            f"{frame['score'].mean():.2f} | {frame['pinball'].mean():.3f} | {gain:+.0%} |"
        )
    cond, per_h, today, trained = (
        scored[SERVED],
        scored["constant per horizon"],
        scored[base_name],
        scored[CALIBRATED],
    )
    ivl_h = [
        "| horizon (h) | coverage: today / per horizon / as trained / as served | width | "
        "interval score |",
        "|---:|---|---|---|",
        *[
            f"| {h} | "
            + " / ".join(f"{f.loc[h, 'coverage']:.1%}" for f in (today, per_h, trained, cond))
            + " | "
            + " / ".join(f"{f.loc[h, 'width']:.1f}" for f in (today, per_h, trained, cond))
            + " | "
            + " / ".join(f"{f.loc[h, 'score']:.1f}" for f in (today, per_h, trained, cond))
            + " |"
            for h in SHOWN
        ],
    ]
    gain_today = 1 - cond["score"].mean() / today["score"].mean()
    gain_per_h = 1 - cond["score"].mean() / per_h["score"].mean()
    covered = cond["coverage"].between(*GOAL_COVERAGE)
    gain_trained = 1 - trained["score"].mean() / today["score"].mean()
    lines = [
        SECTION,
        "",
        f"`bench/bench_horizons.py`, run {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC on "
        f"{os.cpu_count()} cores ({platform.machine()}, Python {platform.python_version()}; "
        f"1-min load average {load_before:.1f} at start: the machine is shared).",
        f"Data: the replay year ({len(observations)} hourly observations, {first:%Y-%m-%d} .. "
        f"{last:%Y-%m-%d}); holdout = the newest {tp.holdout_fraction:.0%} of issue times "
        f"({len(hold_times)}, {hold_times[0]:%Y-%m-%d} .. {hold_times[-1]:%Y-%m-%d}) at every "
        f"horizon 1..{h_max} ({len(rows.y)} forecasts); {len(hd.train.y)} stacked training rows "
        f"({len(train_times)} issue times x {len(hp.group_starts)} groups); groups start at "
        f"{list(hp.group_starts)} h. Tuned LightGBM: "
        + ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in hyper.items()
        )
        + ".",
        "",
        "Holdout RMSE (degC) by horizon:",
        "",
        *table,
        "",
        *timing,
        "",
        "Choice of strategy (`rps train` fits the first):",
        "",
        *choice,
        "",
        f"Best at +1..6 h: {best_short}; best at +7..48 h: {best_long}. Against the one "
        f"stacked model, the direct models per horizon group are {gap_short:+.2f} degC better "
        f"at +1..6 h and {gap_long:+.2f} degC worse at +7..48 h (means of the per-horizon "
        "RMSE); the recursive model drifts beyond a few hours (its other variables are frozen "
        "and its own errors feed back) and needs 48 model calls in sequence per forecast.",
        "",
        f"The product's trajectory fit (4 out-of-fold fits per group for the fallbacks, rounds and "
        f"interval, then the final fit) took {prod_s:.1f} s wall, {prod_cpu:.1f} s CPU; baselines "
        f"serve horizons {product.fallback or 'none'}. The recursive forecasts themselves took "
        f"{rec_s:.1f} s ({len(rows.issue_times.unique())} issue times x {h_max} steps).",
        "",
        "| goal | result | status |",
        "|---|---|---|",
        f"| RMSE at +{horizon} h <= {GOAL_MSTL_RATIO} x MSTL's | {product_sub[horizon - 1]:.2f} / "
        f"{mstl_rmse[horizon - 1]:.2f} = {ratio:.2f} (every {args.mstl_every}th issue time) | "
        f"{verdict(ratio <= GOAL_MSTL_RATIO)} |",
        f"| beats persistence at every horizon 1..{h_max} | {beats_p}/{h_max} | "
        f"{verdict(beats_p == h_max)} |",
        f"| beats seasonal naive at every horizon 1..{h_max} | {beats_s}/{h_max} | "
        f"{verdict(beats_s == h_max)} |",
        f"| 90 % coverage within {GOAL_COVERAGE[0]:.0%}-{GOAL_COVERAGE[1]:.0%} at every horizon | "
        f"{int(covered.sum())}/{len(cond)} horizons ({cond['coverage'].min():.1%}.."
        f"{cond['coverage'].max():.1%}; as trained {trained['coverage'].min():.1%}.."
        f"{trained['coverage'].max():.1%}) | {verdict(bool(covered.all()))} |",
        f"| interval score >= {GOAL_SCORE_GAIN:.0%} better than the constant interval | "
        f"{gain_today:+.0%} vs today's (as trained: {gain_trained:+.0%}); {gain_per_h:+.0%} vs "
        "a constant per horizon | "
        f"{verdict(gain_today >= GOAL_SCORE_GAIN)} (today's); "
        f"{verdict(gain_per_h >= GOAL_SCORE_GAIN)} (per horizon) |",
        *quarter_goal,
        "",
        "Intervals on the holdout (90 %, all calibrated on the same out-of-fold errors; the "
        f"rescale: window {rescale.window}, min_samples {rescale.min_samples}, factor "
        f"{rescale.min_factor}..{rescale.max_factor}):",
        "",
        *ivl,
        "",
        *ivl_h,
        "",
        *quarter_lines,
    ]
    publish(SECTION, lines, write=not args.no_write)
    return 0


def quarters(
    observations: pd.DataFrame, spec: Any, params: Any, data: Any, hyper: dict[str, Any]
) -> tuple[list[str], dict[str, pd.Series], dict[str, pd.Series]]:
    """Hold out each quarter in turn; the interval's coverage and score there (its table and
    the coverage per horizon of each quarter of the interval as served and as trained)."""
    from rps.models import horizons as hz

    hp, alpha, seed = params.horizons, params.train.interval_alpha, params.train.seed
    index = data.index
    gap = pd.Timedelta(hours=hp.max_hours)
    lines = [
        "Each quarter held out in turn (trained on the rest of the year, a "
        f"{hp.max_hours} h gap on each side; issue times by quarter of the target year):",
        "",
        "| quarter held out | forecasts | as served (rescaled): coverage mean (min..max over "
        "horizons) | as trained: coverage | one factor from the +"
        f"{params.features.horizon_hours} h errors: coverage | constant per horizon: coverage | "
        "without the dew point: coverage | interval score: as served / as trained / one factor "
        "/ per-horizon constant / today |",
        "|---|---:|---|---|---|---|---|---|",
    ]
    coverage: dict[str, pd.Series] = {}
    coverage_old: dict[str, pd.Series] = {}
    rescale = hp.rescale.rescale(alpha)
    for q in range(1, 5):
        inside = index.quarter == q
        hold = index[inside]
        first, last = hold[0], hold[-1]
        train = index[~inside & ((index < first - gap) | (index > last + gap))]
        started = time.perf_counter()
        hd = hz.prepare_horizons(
            observations, spec, hp, train_times=train, holdout_times=hold, seed=seed
        )
        fitted = hz.fit_trajectory(hd, "lightgbm", hyper, alpha=alpha, seed=seed)
        rows = hd.holdout
        pred = fitted.predictor.predict(rows.x)
        lower, upper = fitted.interval.bounds(rows.x, pred, spec.feature_names)
        trained = interval_scores(rows, IntervalSet(lower, upper), alpha)
        cond = interval_scores(
            rows, rescaled(rows, pred, IntervalSet(lower, upper), rescale), alpha
        )
        one = interval_scores(
            rows,
            rescaled(
                rows,
                pred,
                IntervalSet(lower, upper),
                rescale,
                from_horizon=params.features.horizon_hours,
            ),
            alpha,
        )
        consts = constant_intervals(fitted.oof, rows, pred, alpha, params.features.horizon_hours)
        today, per_h = (interval_scores(rows, s, alpha) for s in consts.values())
        no_dew = interval_scores(
            rows, without_dew_point(fitted.oof, rows, pred, spec, alpha), alpha
        )
        coverage[f"Q{q}"] = cond["coverage"]
        coverage_old[f"Q{q}"] = trained["coverage"]
        ok = cond["coverage"].between(*GOAL_QUARTER).all()
        lines.append(
            f"| Q{q} ({first:%b %d} .. {last:%b %d}) | {len(rows.y)} | "
            f"{cond['coverage'].mean():.1%} ({cond['coverage'].min():.1%}.."
            f"{cond['coverage'].max():.1%}){'' if ok else ' (outside 85-95 %)'} | "
            f"{trained['coverage'].mean():.1%} ({trained['coverage'].min():.1%}.."
            f"{trained['coverage'].max():.1%}) | {one['coverage'].mean():.1%} "
            f"({one['coverage'].min():.1%}..{one['coverage'].max():.1%}) | "
            f"{per_h['coverage'].mean():.1%} ({per_h['coverage'].min():.1%}.."
            f"{per_h['coverage'].max():.1%}) | {no_dew['coverage'].mean():.1%} "
            f"({no_dew['coverage'].min():.1%}..{no_dew['coverage'].max():.1%}) | "
            f"{cond['score'].mean():.2f} / {trained['score'].mean():.2f} / "
            f"{one['score'].mean():.2f} / {per_h['score'].mean():.2f} / "
            f"{today['score'].mean():.2f} |"
        )
        log.info("quarter %d in %.1f s", q, time.perf_counter() - started)
    lines += [
        "",
        "As served = the interval as trained, rescaled per horizon by the service "
        "(`rps.models.interval_rescale`, `horizons.rescale`), simulated here in time order from "
        "factor 1 at the start of the held-out period with the service's functions, each issue "
        "time's factors from the forecasts of that horizon realised by then. The one-factor "
        "column is the same rescale learned from the model's own horizon only (all that a "
        "service logging only that horizon would join): the miscalibration of a season "
        "depends on the horizon, so it over-narrows some horizons and under-narrows others; "
        "the service therefore logs every hour of a `/forecast` trajectory.",
    ]
    return lines, coverage, coverage_old


if __name__ == "__main__":
    sys.exit(main())
