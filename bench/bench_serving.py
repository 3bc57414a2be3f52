"""Benchmark the prediction service against ``mlflow models serve`` of the same model.

What it measures (one run, written to ``bench/results/serving.json`` and printed as Markdown):

* in-process: one-row ``Booster.predict`` through the bundle, the service's whole feature-row
  path (dict -> array, predict, OOD flags, drift window, metrics), and the observations ->
  feature-row path (validation of 169 hourly observations + ``build_feature_row``);
* closed loop with ``wrk`` (POST /predict, one row, drift and metrics on): req/s, p50, p99 and
  the server's CPU time per request. Every server is started first and the closed loop runs in
  ``--rounds`` rounds, the servers taking turns, so that a change in what else runs on the
  (shared) cores hits all servers of a round alike; the ratio to the floor is reported over all
  rounds and per round;
* open loop at a fixed rate (default 500 req/s). wrk2 is not available and ``wrk -R`` is not
  supported, so a Python generator sends on a fixed schedule over 64 keep-alive connections
  (raw asyncio streams on uvloop: httpx's async client could not sustain 500 req/s on these two
  cores) and measures latency from each request's *scheduled* time, so a stalled server cannot
  hide its queueing: achieved rate, p50, p99, errors or timeouts (10 s);
* RSS of every server process after the load.

Servers: the floor (a bare FastAPI endpoint calling the same LightGBM Booster under the same
uvicorn: no validation beyond JSON, no metrics, no drift) twice, through the one-row C path that
``rps serve`` uses (:mod:`rps.models.single_row`; the floor the ratios are taken against) and
through ``Booster.predict``, ``rps serve`` with 1 and 2 workers
(metrics and drift on), and ``mlflow models serve --env-manager local`` of the same bundle logged
as a pyfunc model to a local MLflow store (SQLite + local artifacts). ``--serve-python`` runs the
floor and ``rps serve`` with another interpreter, e.g. a serving-only venv
(``UV_PROJECT_ENVIRONMENT=/tmp/serve-venv uv sync --no-dev --extra serve``, as the image), whose
size on disk is reported too.

Usage: ``.venv/bin/python bench/bench_serving.py [--duration 15] [--rate 500]
[--serve-python /tmp/serve-venv/bin/python]``. Run it on a quiet machine: wrk, the load
generator and the servers share the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.integration.conftest_serving import (  # noqa: E402 - after the path set-up
    TRAIN_END,
    build_bundle,
    feature_rows,
    feature_spec,
    free_port,
    observation_window,
    replay_observations,
)

logger = logging.getLogger("bench_serving")
VENV_BIN = Path(sys.executable).parent


# in-process ---------------------------------------------------------------------------------
def _time_per_call(func: Callable[[], object], *, min_seconds: float = 1.0) -> float:
    """Median seconds per call over batches lasting about ``min_seconds`` in total."""
    func()
    samples: list[float] = []
    deadline = time.perf_counter() + min_seconds
    while time.perf_counter() < deadline or len(samples) < 5:
        start = time.perf_counter()
        for _ in range(50):
            func()
        samples.append((time.perf_counter() - start) / 50)
    return statistics.median(samples)


def in_process(
    bundle_dir: Path, row: dict[str, float], window: list[dict[str, Any]]
) -> dict[str, float]:
    """Microseconds per call of the hot-path pieces, without HTTP."""
    from rps.features.build import build_feature_row
    from rps.models.bundle import load_bundle
    from rps.params import load_params
    from rps.serving.inputs import observations_to_row
    from rps.serving.schemas import Observation, PredictRequest
    from rps.serving.served import build_served_model
    from rps.serving.service import PredictionService
    from rps.settings import Settings

    bundle = load_bundle(bundle_dir)
    names = bundle.feature_names
    matrix = np.asarray([[row[n] for n in names]])
    model = build_served_model(
        bundle, name="bench", version="1", alias="champion", source="bench", path=bundle_dir
    )
    with tempfile.TemporaryDirectory() as state:
        settings = Settings(state_dir=Path(state), model_dir=bundle_dir)
        service = PredictionService(settings, load_params(REPO_ROOT / "params.yaml"))
        service.drift = model.new_drift_monitor(service.drift_params)
        observations = [Observation.model_validate(o) for o in window]
        spec = bundle.feature_spec
        values = np.asarray([[o[v] for v in spec.variables] for o in window])
        issue = pd.Timestamp(window[-1]["time"])
        body = {"rows": [row]}
        obs_body = {"observations": window}

        def rows_path() -> None:
            service.answer(model, PredictRequest.model_validate(body))

        def observations_path() -> None:
            service.answer(model, PredictRequest.model_validate(obs_body))

        result = {
            "booster_predict_1_row_us": _time_per_call(lambda: bundle.predictor.predict(matrix)),
            "bundle_predict_with_interval_us": _time_per_call(
                lambda: bundle.predict_with_interval(matrix)
            ),
            "service_rows_path_us": _time_per_call(rows_path),
            "build_feature_row_array_us": _time_per_call(
                lambda: build_feature_row(values, spec, issue_time=issue)
            ),
            "observations_to_row_us": _time_per_call(
                lambda: observations_to_row(model, observations, None)
            ),
            "service_observations_path_us": _time_per_call(observations_path),
        }
    return {k: v * 1e6 for k, v in result.items()}


# servers ------------------------------------------------------------------------------------
class Server:
    """A server subprocess (own process group, so all its workers stop together)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], url: str, log: Path):
        self.name = name
        self.url = url
        self.log = log
        with log.open("wb") as handle:
            self.process = subprocess.Popen(
                argv, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, path: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready:\n{self.log.read_text()[-3000:]}")

    def rss_mb(self) -> dict[str, float]:
        """RSS of the server's processes (the supervisor and each worker), in MB."""
        import psutil

        root = psutil.Process(self.process.pid)
        out: dict[str, float] = {}
        for proc in [root, *root.children(recursive=True)]:
            try:
                label = f"{proc.pid}:{' '.join(proc.cmdline()[:3])[-60:]}"
                out[label] = proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server's processes so far (workers included)."""
        import psutil

        root = psutil.Process(self.process.pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


#: the floor the goal compares with: the same Booster through the same one-row path as rps
FLOOR = "floor (bare FastAPI + Booster, one-row path)"

FLOOR_APP = """
import os

import lightgbm
import numpy as np
import orjson
from fastapi import FastAPI, Request, Response

booster = lightgbm.Booster(model_file=os.environ["FLOOR_MODEL_FILE"])
names = booster.feature_name()
if os.environ.get("FLOOR_ONE_ROW_PATH"):  # the one-row C path rps serves with
    from rps.models.single_row import BoosterPredictor

    forecast = BoosterPredictor(booster)
else:
    def forecast(matrix):
        return booster.predict(matrix, num_threads=1)
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> Response:
    rows = orjson.loads(await request.body())["rows"]
    matrix = np.asarray([[row[name] for name in names] for row in rows], dtype=float)
    point = forecast(matrix)
    return Response(orjson.dumps({"predictions": point.tolist()}), media_type="application/json")
"""


def start_floor(bundle_dir: Path, workdir: Path, python: Path, *, one_row_path: bool) -> Server:
    """The bare FastAPI endpoint around the bundle's Booster (one uvicorn worker), calling
    ``Booster.predict`` or the one-row C path of :mod:`rps.models.single_row`."""
    port = free_port()
    (workdir / "floor_app.py").write_text(FLOOR_APP)
    env = {**os.environ, "FLOOR_MODEL_FILE": str(bundle_dir / "model.txt")}
    if one_row_path:
        env["FLOOR_ONE_ROW_PATH"] = "1"
    argv = [str(python), "-m", "uvicorn", "floor_app:app", "--app-dir", str(workdir)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    argv += ["--log-level", "warning"]
    server = Server("floor", argv, env, f"http://127.0.0.1:{port}", workdir / "floor.log")
    server.wait_ready("/docs")
    return server


def venv_size_mb(python: Path) -> float:
    """Size on disk of the venv holding ``python`` (``<venv>/bin/python``)."""
    venv = python.parent.parent
    total = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 2**20


def request_inputs() -> tuple[dict[str, float], list[dict[str, Any]]]:
    """One feature row (a ``/predict`` body's row) and the observation window behind it,
    from ten replayed days after the bundle's training data."""
    from rps.features.build import build_features

    spec = feature_spec()
    frame = replay_observations(TRAIN_END, TRAIN_END + pd.Timedelta(days=10))
    features = build_features(frame, spec).dropna(subset=spec.feature_names)
    row = feature_rows(features.tail(1), spec.feature_names)[0]
    return row, observation_window(frame.tail(spec.window_hours))


def rps_state_dir(workdir: Path, workers: int, *, fast_predict: bool = True) -> Path:
    """The state folder (``RPS_STATE_DIR``) of the server :func:`start_rps` starts."""
    return workdir / f"state-{workers}-{int(fast_predict)}"


def start_rps(
    bundle_dir: Path,
    workdir: Path,
    workers: int,
    python: Path | None = None,
    *,
    fast_predict: bool = True,
) -> Server:
    """``rps serve`` of the bundle; ``fast_predict=False``: every request through the FastAPI
    route (``RPS_FAST_PREDICT=0``)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPS_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "RPS_STATE_DIR": str(rps_state_dir(workdir, workers, fast_predict=fast_predict)),
            "RPS_PARAMS_PATH": str(REPO_ROOT / "params.yaml"),
            "RPS_PROJECT_ROOT": str(REPO_ROOT),
            "RPS_FAST_PREDICT": "1" if fast_predict else "0",
        }
    )
    rps = (python.parent if python else VENV_BIN) / "rps"
    argv = [str(rps), "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers), "--model-dir", str(bundle_dir), "--log-level", "warning"]
    server = Server(
        f"rps serve --workers {workers}",
        argv,
        env,
        f"http://127.0.0.1:{port}",
        workdir / f"rps-{workers}.log",
    )
    server.wait_ready("/health")
    return server


def log_pyfunc(bundle_dir: Path, workdir: Path) -> Path:
    """Log the bundle as a pyfunc model to a local MLflow store; return the model's path."""
    import mlflow
    from mlflow.models import infer_signature

    from rps.models import pyfunc
    from rps.models.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = mlflow.create_experiment(
        "bench-serving", artifact_location=(workdir / "mlartifacts").as_uri()
    )
    example = pd.DataFrame(bundle.reference_sample[:2], columns=bundle.feature_names)
    output = pd.DataFrame({"prediction": [0.0, 0.0], "lower": [0.0, 0.0], "upper": [0.0, 0.0]})
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(pyfunc.__file__).with_name("pyfunc_entry.py")),
            artifacts={pyfunc.BUNDLE_ARTIFACT: str(bundle_dir)},
            signature=infer_signature(example, output),
            input_example=example,
        )
    local = Path(
        mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(workdir / "pyfunc"))
    )
    return local


def start_mlflow(model_path: Path, workdir: Path) -> Server:
    port = free_port()
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    argv = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", str(model_path)]
    argv += ["--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"]
    server = Server(
        "mlflow models serve", argv, env, f"http://127.0.0.1:{port}", workdir / "mlflow.log"
    )
    server.wait_ready("/ping")
    return server


# load ---------------------------------------------------------------------------------------
def run_wrk(
    url: str, body: dict[str, Any], workdir: Path, *, duration: int, connections: int
) -> dict[str, float]:
    """Closed-loop load with wrk: req/s and latency percentiles (ms)."""
    body_file = workdir / "wrk-body.json"
    body_file.write_text(json.dumps(body))
    script = workdir / "wrk-post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "r")\n'
        'wrk.body = f:read("*a")\n'
        "f:close()\n"
    )
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout

    def latency_ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "req_per_s": float(rps.group(1)) if rps else float("nan"),
        "requests": float(total.group(1)) if total else float("nan"),
        "p50_ms": latency_ms("50"),
        "p90_ms": latency_ms("90"),
        "p99_ms": latency_ms("99"),
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": errors.group(0) if errors else "",  # type: ignore[dict-item]
    }


class _Connections:
    """Keep-alive HTTP/1.1 connections to one server, opened on demand up to ``limit``."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.freed = asyncio.Condition()

    async def acquire(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self.freed:
            while not self.idle and self.opened >= self.limit:
                await self.freed.wait()
            if self.idle:
                return self.idle.pop()
            self.opened += 1
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError:
            await self.discard(None)
            raise

    async def acquire_new(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self.freed:
            while self.opened >= self.limit:
                await self.freed.wait()
            self.opened += 1
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError:
            await self.discard(None)
            raise

    async def release(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        async with self.freed:
            self.idle.append(conn)
            self.freed.notify()

    async def discard(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        if conn is not None:
            conn[1].close()
        async with self.freed:
            self.opened -= 1
            self.freed.notify()


async def _exchange(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes) -> int:
    reader, writer = conn
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _open_loop(
    url: str,
    body: dict[str, Any] | None,
    *,
    rate: float,
    duration: float,
    connections: int,
    timeout: float,
) -> dict[str, float]:
    parsed = httpx.URL(url)
    head = f"HTTP/1.1\r\nHost: {parsed.host}:{parsed.port}\r\n"
    if body is None:  # GET
        request = f"GET {parsed.raw_path.decode()} {head}\r\n".encode()
    else:
        payload = json.dumps(body).encode()
        request = (
            f"POST {parsed.raw_path.decode()} {head}"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
    pool = _Connections(parsed.host, int(parsed.port or 80), connections)
    clock = time.perf_counter  # uvloop's loop.time() has millisecond resolution
    latencies: list[float] = []
    errors = 0
    n = int(rate * duration)
    start = clock() + 0.2

    async def one(scheduled: float) -> None:
        nonlocal errors
        conn = None
        try:
            async with asyncio.timeout(timeout):
                conn = await pool.acquire()
                try:
                    status = await _exchange(conn, request)
                except (ConnectionError, asyncio.IncompleteReadError):
                    # the server closed an idle keep-alive connection: retry once on a new one
                    await pool.discard(conn)
                    conn = None
                    conn = await pool.acquire_new()
                    status = await _exchange(conn, request)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            if conn is not None:
                await pool.discard(conn)
            return
        await pool.release(conn)
        if status == 200:
            latencies.append(clock() - scheduled)
        else:
            errors += 1

    tasks = []
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    send_lag = clock() - (start + (n - 1) / rate)
    await asyncio.gather(*tasks)
    elapsed = clock() - start
    for reader_writer in pool.idle:
        reader_writer[1].close()
    values = np.asarray(latencies) * 1000
    return {
        "target_req_per_s": rate,
        "achieved_req_per_s": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": float(np.percentile(values, 50)) if values.size else float("nan"),
        "p99_ms": float(np.percentile(values, 99)) if values.size else float("nan"),
        "max_ms": float(values.max()) if values.size else float("nan"),
        "errors_or_timeouts": float(errors),
        "generator_lag_ms": max(0.0, send_lag * 1000),
    }


def open_loop(
    url: str, body: dict[str, Any] | None, *, rate: float, duration: float, connections: int = 64
) -> dict[str, float]:
    """Open-loop load at a fixed rate over keep-alive connections (asyncio streams, uvloop).

    ``body`` None sends GET requests (``url`` with its query), else POSTs the body as JSON.

    Each request is due at ``start + i / rate`` whether or not earlier ones finished; its latency
    counts from that due time, so time spent waiting for a free connection (the server's
    backlog) is included. Requests not answered within 10 s count as errors.
    """
    coro = _open_loop(
        url, body, rate=rate, duration=duration, connections=connections, timeout=10.0
    )
    # this process holds the bundle, pandas frames and MLflow: a collection of those during the
    # run would stall the generator and show up as server latency
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    except ImportError:
        return asyncio.run(coro)
    finally:
        gc.enable()
        gc.unfreeze()


def _combined(rounds: list[dict[str, float]], seconds: int) -> dict[str, float]:
    """One server's closed-loop rounds as one figure: req/s and CPU per request over all of
    them, latency percentiles as the median of the rounds'."""
    requests = sum(r["requests"] for r in rounds)
    return {
        "req_per_s": requests / (seconds * len(rounds)),
        "requests": requests,
        "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
        "p90_ms": statistics.median(r["p90_ms"] for r in rounds),
        "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
        "non_2xx": sum(r["non_2xx"] for r in rounds),
        # CPU per request: unlike req/s, hardly moved by what else runs on the machine
        "server_cpu_us_per_req": sum(r["cpu_s"] for r in rounds) / requests * 1e6,
    }


# main ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s")
    parser.add_argument("--open-seconds", type=float, default=15.0, help="open-loop duration")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="closed-loop rounds: each server's --duration is split into this many wrk runs, "
        "the servers taking turns",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "bench" / "results" / "serving.json"
    )
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument(
        "--serve-python",
        type=Path,
        default=None,
        help="interpreter of a serving-only venv for the floor and rps serve",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    workdir = Path(tempfile.mkdtemp(prefix="rps-bench-serving-"))
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()}}
    try:
        logger.info("building the bundle in %s", workdir)
        bundle_dir = build_bundle(workdir / "bundle", version="1")
        row, window = request_inputs()
        results["in_process_us"] = in_process(bundle_dir, row, window)
        logger.info("in-process: %s", results["in_process_us"])

        rps_body = {"rows": [row]}
        mlflow_body = {
            "dataframe_split": {
                "columns": list(row),  # the feature order
                "data": [list(row.values())],
            }
        }
        serve_python = args.serve_python
        python = Path(serve_python or sys.executable)
        results["serve_python"] = str(serve_python or sys.executable)
        results["serve_venv_mb"] = venv_size_mb(Path(serve_python or sys.executable))
        targets: list[tuple[str, Callable[[], Server], str, dict[str, Any]]] = [
            (
                FLOOR,
                lambda: start_floor(bundle_dir, workdir, python, one_row_path=True),
                "/predict",
                rps_body,
            ),
            (
                "floor, Booster.predict",
                lambda: start_floor(bundle_dir, workdir, python, one_row_path=False),
                "/predict",
                rps_body,
            ),
            (
                "rps serve, 1 worker",
                lambda: start_rps(bundle_dir, workdir, 1, serve_python),
                "/predict",
                rps_body,
            ),
            (
                "rps serve, 1 worker, FastAPI route only (RPS_FAST_PREDICT=0)",
                lambda: start_rps(bundle_dir, workdir, 1, serve_python, fast_predict=False),
                "/predict",
                rps_body,
            ),
            (
                "rps serve, 2 workers",
                lambda: start_rps(bundle_dir, workdir, 2, serve_python),
                "/predict",
                rps_body,
            ),
        ]
        if not args.skip_mlflow:
            model_path = log_pyfunc(bundle_dir, workdir)
            targets.append(
                (
                    "mlflow models serve",
                    lambda: start_mlflow(model_path, workdir),
                    "/invocations",
                    mlflow_body,
                )
            )
        results["servers"] = {}
        running: dict[str, tuple[Server, str, dict[str, Any]]] = {}
        try:
            for label, start, path, body in targets:
                logger.info("starting %s", label)
                server = start()
                running[label] = (server, path, body)
                check = httpx.post(server.url + path, json=body, timeout=30)
                check.raise_for_status()
                logger.info("%s answers %s", label, check.text[:200])
                run_wrk(
                    server.url + path, body, workdir, duration=3, connections=args.connections
                )  # warm-up
            # the closed loop in rounds, the servers taking turns (all of them stay up, idle
            # while another is loaded): a change in what else runs on the shared cores hits
            # every server of a round alike, and the ratios are taken within each round
            rounds: dict[str, list[dict[str, float]]] = {label: [] for label in running}
            seconds = max(1, round(args.duration / args.rounds))
            for number in range(args.rounds):
                for label, (server, path, body) in running.items():
                    cpu_before = server.cpu_seconds()
                    closed = run_wrk(
                        server.url + path,
                        body,
                        workdir,
                        duration=seconds,
                        connections=args.connections,
                    )
                    closed["cpu_s"] = server.cpu_seconds() - cpu_before
                    closed["load"] = os.getloadavg()[0]
                    rounds[label].append(closed)
                    logger.info("round %d, %s wrk: %s", number + 1, label, closed)
            for label, (server, path, body) in running.items():
                opened = open_loop(
                    server.url + path, body, rate=args.rate, duration=args.open_seconds
                )
                logger.info("%s open loop: %s", label, opened)
                results["servers"][label] = {
                    "wrk": _combined(rounds[label], seconds),
                    "rounds": rounds[label],
                    "open_loop": opened,
                    "rss_mb": server.rss_mb(),
                }
        finally:
            for server, _path, _body in running.values():
                server.stop()
        if not args.skip_mlflow:
            results["mlflow_venv_mb"] = venv_size_mb(Path(sys.executable))
        floor = results["servers"].get(FLOOR)
        if floor:
            for data in results["servers"].values():
                data["vs_floor"] = data["wrk"]["req_per_s"] / floor["wrk"]["req_per_s"]
                # the ratio within each round (the same machine state), and their median
                data["vs_floor_rounds"] = [
                    mine["req_per_s"] / theirs["req_per_s"]
                    for mine, theirs in zip(data["rounds"], floor["rounds"], strict=True)
                ]
                data["vs_floor_median"] = statistics.median(data["vs_floor_rounds"])
                # the same ratio from CPU per request (floor's CPU / this server's CPU)
                data["vs_floor_cpu"] = (
                    floor["wrk"]["server_cpu_us_per_req"] / data["wrk"]["server_cpu_us_per_req"]
                )
        results["machine"]["load_after"] = os.getloadavg()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    sys.stdout.write(markdown(results, args) + "\n")


def markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"wrk -t2 -c{args.connections} -d{args.duration}s, POST one row; open loop "
        f"{args.rate:.0f} req/s for {args.open_seconds:.0f} s (asyncio streams + uvloop).",
        "",
        f"Serving interpreter: {results.get('serve_python')} (venv "
        f"{results.get('serve_venv_mb', float('nan')):.0f} MB on disk"
        + (
            f"; mlflow's: {results['mlflow_venv_mb']:.0f} MB)."
            if "mlflow_venv_mb" in results
            else ")."
        ),
        "",
        "| server | wrk req/s | x floor | x floor, per round | server CPU us/req "
        "| x floor (CPU) | wrk p50 ms | wrk p99 ms | at-rate req/s | at-rate p50 ms "
        "| at-rate p99 ms | RSS MB per process |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    nan = float("nan")
    for label, data in results.get("servers", {}).items():
        w, o = data["wrk"], data["open_loop"]
        rss = ", ".join(f"{v:.0f}" for v in data["rss_mb"].values())
        lines.append(
            f"| {label} | {w['req_per_s']:.0f} | {data.get('vs_floor', nan):.2f} | "
            + " / ".join(f"{r:.2f}" for r in data.get("vs_floor_rounds", []))
            + " | "
            f"{w.get('server_cpu_us_per_req', nan):.0f} | {data.get('vs_floor_cpu', nan):.2f} | "
            f"{w['p50_ms']:.2f} | {w['p99_ms']:.2f} | {o['achieved_req_per_s']:.0f} | "
            f"{o['p50_ms']:.2f} | {o['p99_ms']:.2f} | {rss} |"
        )
    lines += ["", "| in-process step | us |", "|---|---:|"]
    for key, value in results.get("in_process_us", {}).items():
        lines.append(f"| {key} | {value:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
