"""Benchmark ``GET /forecast?hours=48``: the whole trajectory from the stored observations.

The bundle is the trajectory bundle of the serving tests (the direct horizon-group LightGBM
models and their conditional interval, every hour 1..48, trained on 120 days of replayed
Greensboro weather: ``tests/integration/conftest_serving.build_trajectory_bundle``); the stored
observations are the 9 replay days after its training period. ``rps serve`` (one worker,
drift monitoring and metrics on) answers; the open-loop generator of ``bench_serving.py``
sends GET requests at a fixed rate and counts each latency from its scheduled send time.

Also timed in-process (median of 50-call batches): the trajectory's feature rows
(``build_horizon_rows``, 49 horizons from one window), the bundle's forecast with intervals of
those rows, and the service's whole ``forecast(model, 48)`` on the cached stored window (with
its prediction log and interval rescale, as ``rps serve`` runs it).

Writes ``## Serving the trajectory`` in docs/BENCHMARKS.md (``--no-write``: print only).
Usage: ``.venv/bin/python bench/bench_forecast.py [--rate 100] [--duration 30]``
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path

import httpx
import pandas as pd
from bench_serving import (  # bench/ is on sys.path
    _time_per_call,
    open_loop,
    rps_state_dir,
    start_rps,
)
from benchmarks_doc import publish

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.integration.conftest_serving import (  # noqa: E402 - after the path set-up
    TRAIN_END,
    build_trajectory_bundle,
    replay_observations,
)

from rps.data.pipeline import LATEST_OBSERVATIONS  # noqa: E402

SECTION = "## Serving the trajectory"
GOAL_P99_MS = 20.0
log = logging.getLogger("bench_forecast")


def in_process(bundle_dir: Path, state: Path) -> dict[str, float]:
    """Microseconds per call of the trajectory's steps."""
    from rps.features.online import build_horizon_rows
    from rps.models.bundle import load_bundle
    from rps.params import load_params
    from rps.serving.accuracy import IntervalFactorCache, PredictionLog
    from rps.serving.served import build_served_model
    from rps.serving.service import PredictionService
    from rps.settings import Settings

    bundle = load_bundle(bundle_dir)
    served = build_served_model(
        bundle, name="bench", version="1", alias="champion", source="bench", path=bundle_dir
    )
    settings = Settings(state_dir=state, params_path=REPO_ROOT / "params.yaml")
    params = load_params(REPO_ROOT / "params.yaml")
    service = PredictionService(settings, params)
    # the prediction log and interval factors the started service has (as `rps serve`)
    service.prediction_log = PredictionLog(
        state / "serving" / "in-process.db",
        window=params.drift.live_accuracy_window,
        rescale=params.horizons.rescale.rescale(params.train.interval_alpha),
    )
    service.interval_factors = IntervalFactorCache(service.prediction_log)
    window = service.stored_window(served)
    spec = bundle.feature_spec
    horizons = [spec.horizon_hours, *range(1, 49)]
    rows = build_horizon_rows(window.values, spec, horizons, issue_time=window.issue_time)
    return {
        "build_horizon_rows (49 horizons)": _time_per_call(
            lambda: build_horizon_rows(window.values, spec, horizons, issue_time=window.issue_time)
        )
        * 1e6,
        "predict_with_interval (49 rows)": _time_per_call(
            lambda: bundle.predict_with_interval(rows)
        )
        * 1e6,
        "service.forecast(model, 48), cached window, logged, interval rescaled": _time_per_call(
            lambda: service.forecast(served, 48)
        )
        * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rps-bench-forecast-") as tmp:
        workdir = Path(tmp)
        bundle_dir = build_trajectory_bundle(workdir / "bundle")
        state = rps_state_dir(workdir, workers=1)
        processed = state / "data" / "processed"
        processed.mkdir(parents=True)
        stored = replay_observations(TRAIN_END, TRAIN_END + pd.Timedelta(days=9))
        stored.to_parquet(processed / LATEST_OBSERVATIONS, index=False)
        steps = in_process(bundle_dir, state)
        server = start_rps(bundle_dir, workdir, workers=1)
        try:
            url = f"{server.url}/forecast?hours=48"
            body = httpx.get(url, timeout=30).json()
            assert len(body["trajectory"]) == 48, body
            open_loop(url, None, rate=args.rate, duration=3.0)  # warm-up
            result = open_loop(url, None, rate=args.rate, duration=args.duration)
            rss = sum(server.rss_mb().values())
        finally:
            server.stop()
    lines = [
        SECTION,
        "",
        f"`bench/bench_forecast.py`, run {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC on "
        f"{os.cpu_count()} cores ({platform.machine()}, Python {platform.python_version()}; "
        f"1-min load average {load_before:.1f} at start: the machine is shared). "
        "`GET /forecast?hours=48` against `rps serve` (1 worker, drift and metrics on) with the "
        "trajectory bundle of the serving tests (7 horizon-group LightGBM models, conditional "
        "interval) and 9 stored days of replayed observations; open-loop generator of "
        "`bench_serving.py` on the same cores, each latency from its scheduled send time, "
        f"{args.duration:.0f} s after a 3 s warm-up.",
        "",
        "| rate | achieved | p50 | p99 | max | errors or timeouts | server RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {result['target_req_per_s']:.0f} req/s | {result['achieved_req_per_s']:.1f} req/s | "
        f"{result['p50_ms']:.1f} ms | {result['p99_ms']:.1f} ms | {result['max_ms']:.1f} ms | "
        f"{result['errors_or_timeouts']:.0f} | {rss:.0f} MB |",
        "",
        "| goal | result | status |",
        "|---|---|---|",
        f"| p99 of a 48 h `/forecast` <= {GOAL_P99_MS:.0f} ms at {args.rate:.0f} req/s | "
        f"{result['p99_ms']:.1f} ms | {'met' if result['p99_ms'] <= GOAL_P99_MS else 'NOT met'} |",
        "",
        "In-process costs per call:",
        "",
        "| step | time |",
        "|---|---:|",
        *[f"| {name} | {us:.0f} us |" for name, us in steps.items()],
    ]
    publish(SECTION, lines, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
