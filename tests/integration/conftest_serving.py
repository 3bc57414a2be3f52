"""Serving fixtures: real model bundles (no MLflow) and real uvicorn servers on loopback.

* :func:`build_bundle` trains a small LightGBM (50 rounds) on ``build_features`` of 120 days of
  replayed Greensboro weather, with reference statistics and a reference sample, and saves it
  as a :class:`~rps.models.bundle.ModelBundle`.
* :func:`start_server` runs ``uvicorn --factory rps.serving.app:create_app`` (or ``rps serve``
  for several workers) as a subprocess with its own state folder, on a free loopback port, and
  waits until ``/health`` answers 200.

Fixtures: ``serving_bundle``/``serving_bundle_v2`` (session), ``serving_server`` (a one-worker
server shared by the session; tests that depend on exact counts use deltas) and
``serving_factory`` (starts further servers, stopped after the test).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = REPO_ROOT / "params.yaml"
ADMIN_TOKEN = "serving-test-admin-token"
TRAIN_START = pd.Timestamp("2023-01-01", tz="UTC")
TRAIN_DAYS = 120
TRAIN_END = TRAIN_START + pd.Timedelta(days=TRAIN_DAYS)
QUANTILE_LEVELS = (0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95, 0.99)


# data and bundles ---------------------------------------------------------------------------
def serving_params() -> Any:
    """The repository's ``params.yaml``, validated."""
    from rps.params import load_params

    return load_params(PARAMS_FILE)


def feature_spec() -> Any:
    """The feature spec the test bundles use (from ``params.yaml``)."""
    from rps.features.build import FeatureSpec

    params = serving_params()
    return FeatureSpec.from_params(params.data.variables, params.data.target, params.features)


def replay_observations(start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Replayed hourly observations for ``[start, end]`` (pvlib's Greensboro TMY3 file)."""
    from rps.data.sources.replay import ReplayClock, ReplaySource, default_recording

    params = serving_params()
    clock = ReplayClock(speed=1.0, wall_now=lambda: end, anchor=end)
    source = ReplaySource(
        _recording(str(default_recording())), clock=clock, variables=params.data.variables
    )
    return source.fetch(start, end).frame


_RECORDINGS: dict[str, pd.DataFrame] = {}


def _recording(path: str) -> pd.DataFrame:
    from rps.data.sources.replay import read_tmy3

    if path not in _RECORDINGS:
        _RECORDINGS[path] = read_tmy3(Path(path))
    return _RECORDINGS[path]


def training_features() -> pd.DataFrame:
    """Feature rows (with ``target``) of the 120 training days, rows lacking history dropped."""
    from rps.features.build import TARGET, build_features

    spec = feature_spec()
    frame = replay_observations(TRAIN_START, TRAIN_END)
    features = build_features(frame, spec)
    return features.dropna(subset=[*spec.feature_names, TARGET])


def reference_stats(matrix: np.ndarray, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per-feature mean/std/min/max/quantiles, in the trainer's contract."""
    stats: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        column = matrix[:, j]
        stats[name] = {
            "mean": float(column.mean()),
            "std": float(column.std(ddof=1)),
            "min": float(column.min()),
            "max": float(column.max()),
            "quantiles": {str(q): float(np.quantile(column, q)) for q in QUANTILE_LEVELS},
        }
    return stats


def build_bundle(
    directory: Path,
    *,
    version: str = "1",
    seed: int = 0,
    num_rounds: int = 50,
    sample_rows: int = 1000,
) -> Path:
    """Train and save a real LightGBM bundle (no MLflow) into ``directory``.

    Args:
        directory: Where the bundle goes (must not hold one).
        version: Written to the lineage as ``model_version`` (the served version label).
        seed: LightGBM and sampling seed (different seeds give different checksums).
        num_rounds: Boosting rounds.
        sample_rows: Rows of the reference sample.

    Returns:
        ``directory``.
    """
    import lightgbm

    from rps.features.build import TARGET
    from rps.models.bundle import ModelBundle, Predictor
    from rps.serving.seasonal import SEASONAL_KEY, build_reference

    spec = feature_spec()
    names = spec.feature_names
    features = training_features()
    matrix = features[names].to_numpy(dtype=float)
    target = features[TARGET].to_numpy(dtype=float)
    split = int(len(matrix) * 0.8)
    train_x, train_y = matrix[:split], target[:split]
    hold_x, hold_y = matrix[split:], target[split:]
    booster = lightgbm.train(
        {
            "objective": "regression",
            "learning_rate": 0.1,
            "num_leaves": 31,
            "min_data_in_leaf": 20,
            "feature_fraction": 0.9,
            "seed": seed,
            "num_threads": 1,
            "verbosity": -1,
        },
        lightgbm.Dataset(train_x, train_y, feature_name=names),
        num_boost_round=num_rounds,
    )
    residuals = hold_y - booster.predict(hold_x, num_threads=1)
    alpha = 0.1
    rng = np.random.default_rng(seed)
    sample = train_x[rng.choice(len(train_x), size=min(sample_rows, len(train_x)), replace=False)]
    frame_md5 = hashlib.md5(features.to_numpy().tobytes()).hexdigest()
    bundle = ModelBundle(
        predictor=Predictor(
            kind="lightgbm",
            feature_names=names,
            params={"target": spec.target, "num_rounds": num_rounds},
            booster=booster,
        ),
        feature_spec=spec,
        interval={
            "alpha": alpha,
            "lower": float(np.quantile(residuals, alpha / 2)),
            "upper": float(np.quantile(residuals, 1 - alpha / 2)),
        },
        metrics={
            "holdout_rmse": float(np.sqrt(np.mean(residuals**2))),
            "holdout_mae": float(np.mean(np.abs(residuals))),
        },
        lineage={
            "run_id": f"test-run-{version}-{seed}",
            "dataset_md5": frame_md5,
            "code_sha": "0" * 40,
            "trained_at": datetime.now(UTC).isoformat(),
            "model_version": version,
        },
        reference_stats={
            **reference_stats(train_x, names),
            SEASONAL_KEY: build_reference(pd.DataFrame(train_x, columns=names)),
        },
        reference_sample=sample,
    )
    bundle.save(directory)
    return directory


def build_trajectory_bundle(directory: Path, *, version: str = "traj") -> Path:
    """A real trajectory bundle (no MLflow): the direct horizon-group LightGBM models and their
    conditional interval of every hour 1..48, fitted by :mod:`rps.models.horizons` on the 120
    training days (40 boosting rounds, so it trains in seconds)."""
    from rps.models import evaluation as ev
    from rps.models.bundle import ModelBundle
    from rps.models.horizons import fit_trajectory, trajectory_metrics
    from rps.models.splits import prepare_data
    from rps.serving.seasonal import SEASONAL_KEY, build_reference

    params = serving_params()
    spec = feature_spec()
    frame = replay_observations(TRAIN_START, TRAIN_END)
    data = prepare_data(frame, spec, params.train, hp=params.horizons)
    hyper = {"num_leaves": 15, "learning_rate": 0.1, "n_estimators": 40}
    fitted = fit_trajectory(data.horizons, "lightgbm", hyper, alpha=0.1, seed=0)
    train_x = data.x[data.train_pos]
    holdout = data.horizons.holdout
    six = holdout.horizons == spec.horizon_hours
    residuals = holdout.y[six] - fitted.predictor.predict(holdout.x[six])
    ModelBundle(
        predictor=fitted.predictor,
        feature_spec=spec,
        interval=ev.conformal_offsets(residuals, 0.1),
        metrics={"holdout_rmse": float(np.sqrt(np.mean(residuals**2)))},
        lineage={"run_id": f"test-run-{version}", "model_version": version},
        reference_stats={
            **ev.reference_stats(pd.DataFrame(train_x, columns=spec.feature_names)),
            SEASONAL_KEY: build_reference(pd.DataFrame(train_x, columns=spec.feature_names)),
        },
        reference_sample=train_x[:500],
        horizon_interval=fitted.interval,
        metrics_by_horizon=trajectory_metrics(data.horizons, fitted, 0.1),
    ).save(directory)
    return directory


def corrupt_copy(source: Path, target: Path) -> Path:
    """A copy of a bundle whose model file no longer matches its checksum."""
    shutil.copytree(source, target)
    with (target / "model.txt").open("a", encoding="utf-8") as handle:
        handle.write("\n# tampered\n")
    return target


def non_finite_bundle(source: Path, target: Path) -> Path:
    """A bundle with valid checksums whose model predicts NaN (the smoke test must refuse it)."""
    from rps.models.bundle import ModelBundle, Predictor, load_bundle

    good = load_bundle(source)
    n = len(good.feature_names)
    bundle = ModelBundle(
        predictor=Predictor(
            kind="linear",
            feature_names=good.feature_names,
            params={
                "target": good.feature_spec.target,
                "mean": [0.0] * n,
                "scale": [1.0] * n,
                "coef": [float("nan")] * n,
                "intercept": 0.0,
            },
        ),
        feature_spec=good.feature_spec,
        interval=good.interval,
        metrics={"holdout_rmse": 1.0},
        lineage={"model_version": "nan-model"},
        reference_stats=good.reference_stats,
        reference_sample=good.reference_sample,
    )
    bundle.save(target)
    return target


def feature_rows(features: pd.DataFrame, names: list[str]) -> list[dict[str, float]]:
    """Feature rows as the JSON objects ``POST /predict`` takes."""
    return [dict(zip(names, map(float, row), strict=True)) for row in features[names].to_numpy()]


def observation_window(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Observations as the JSON objects ``POST /predict`` takes."""
    records = []
    for row in frame.itertuples(index=False):
        data = row._asdict()
        moment = pd.Timestamp(data.pop("time"))
        records.append({"time": moment.isoformat(), **{k: float(v) for k, v in data.items()}})
    return records


# servers ------------------------------------------------------------------------------------
def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_params(path: Path, **drift: Any) -> Path:
    """A copy of ``params.yaml`` with ``drift`` entries overridden."""
    data = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    data["drift"] = {**data.get("drift", {}), **drift}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class ServerHandle:
    """A prediction server subprocess on loopback."""

    url: str
    process: subprocess.Popen[bytes]
    state_dir: Path
    log_path: Path
    env: dict[str, str] = field(repr=False)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client for this server."""
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30.0), **kwargs)

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def metrics(self) -> dict[str, float]:
        """``/metrics`` parsed into ``{"name{labels}": value}`` (labels as exposed)."""
        text = httpx.get(f"{self.url}/metrics", timeout=30.0).text
        return parse_metrics(text)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition as ``{"name{labels}": value}``."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            key = f"{sample.name}{{{labels}}}" if labels else sample.name
            values[key] = float(sample.value)
    return values


def start_server(
    *,
    state_dir: Path,
    model_dir: Path | None,
    workers: int = 1,
    token: str | None = ADMIN_TOKEN,
    params_path: Path = PARAMS_FILE,
    extra_env: dict[str, str] | None = None,
    use_cli: bool | None = None,
    wait_for_model: bool = True,
    ready_timeout: float = 240.0,
) -> ServerHandle:
    """Start a prediction server subprocess and wait until it answers.

    Args:
        state_dir: Its state folder (prediction log, bundle cache, metric files).
        model_dir: The bundle to serve (``RPS_MODEL_DIR``), or None.
        workers: Worker processes; more than one starts ``rps serve`` (the launcher).
        token: ``RPS_API_TOKEN`` (None: model management disabled).
        params_path: ``RPS_PARAMS_PATH``.
        extra_env: Further environment variables.
        use_cli: Start through ``rps serve`` (default: when ``workers > 1``).
        wait_for_model: Wait for ``/health`` 200 (else for any answer).
        ready_timeout: Seconds to wait.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPS_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "RPS_ENV": "test",
            "RPS_PROJECT_ROOT": str(REPO_ROOT),
            "RPS_STATE_DIR": str(state_dir),
            "RPS_PARAMS_PATH": str(params_path),
            "RPS_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if model_dir is not None:
        env["RPS_MODEL_DIR"] = str(model_dir)
    if token is not None:
        env["RPS_API_TOKEN"] = token
    env.update(extra_env or {})
    if use_cli is None:
        use_cli = workers > 1
    if use_cli:
        rps = Path(sys.executable).with_name("rps")
        argv = [str(rps), "serve", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--workers", str(workers), "--log-level", "info"]
    else:
        argv = [sys.executable, "-m", "uvicorn", "--factory", "rps.serving.app:create_app"]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    log_path = state_dir / f"server-{port}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    handle = ServerHandle(
        url=f"http://127.0.0.1:{port}",
        process=process,
        state_dir=state_dir,
        log_path=log_path,
        env=env,
    )
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{handle.log_tail()}")
        try:
            response = httpx.get(f"{handle.url}/health", timeout=2.0)
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        if response.status_code == 200 or not wait_for_model:
            return handle
        time.sleep(0.2)
    handle.stop()
    raise RuntimeError(f"server not ready after {ready_timeout} s:\n{handle.log_tail()}")


# fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def serving_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real LightGBM bundle (version "1") trained on 120 days of replay data."""
    return build_bundle(tmp_path_factory.mktemp("bundles") / "v1", version="1", seed=0)


@pytest.fixture(scope="session")
def serving_bundle_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second bundle (version "2": other seed and rounds, so another checksum)."""
    return build_bundle(
        tmp_path_factory.mktemp("bundles") / "v2", version="2", seed=1, num_rounds=60
    )


@pytest.fixture(scope="session")
def trajectory_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real trajectory bundle (every hour 1..48) trained on 120 days of replay data."""
    return build_trajectory_bundle(tmp_path_factory.mktemp("bundles") / "trajectory")


@pytest.fixture(scope="session")
def serving_server(
    serving_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerHandle]:
    """One uvicorn worker serving ``serving_bundle`` (small limits for the bad-input tests)."""
    handle = start_server(
        state_dir=tmp_path_factory.mktemp("serving-state"),
        model_dir=serving_bundle,
        extra_env={"RPS_MAX_BATCH_ROWS": "64", "RPS_MAX_BODY_BYTES": "300000"},
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def serving_factory(tmp_path: Path) -> Iterator[Callable[..., ServerHandle]]:
    """Start servers for one test (``serving_factory(model_dir=..., **start_server kwargs)``)."""
    started: list[ServerHandle] = []
    counter = iter(range(1000))

    def start(**kwargs: Any) -> ServerHandle:
        kwargs.setdefault("state_dir", tmp_path / f"state-{next(counter)}")
        handle = start_server(**kwargs)
        started.append(handle)
        return handle

    try:
        yield start
    finally:
        for handle in started:
            handle.stop()


# an MLflow server that proxies its artifacts ------------------------------------------------
@dataclass
class ProxiedMlflow:
    """``mlflow server --serve-artifacts``: artifacts under ``root/artifacts``, served over HTTP
    as ``mlflow-artifacts:/`` (the production layout, where the API cannot see the store)."""

    url: str
    root: Path
    process: subprocess.Popen[bytes]

    def settings(self, state_dir: Path, name: str) -> Any:
        from rps.settings import Settings

        return Settings(
            mlflow_tracking_uri=self.url,
            registered_model_name=name,
            mlflow_experiment=f"{name}-experiment",
            state_dir=state_dir / ".rps",
            project_root=REPO_ROOT,
            params_path=PARAMS_FILE,
        )

    def env(self, name: str, **extra: str) -> dict[str, str]:
        """The API's environment for registry mode against this server."""
        return {
            "RPS_MLFLOW_TRACKING_URI": self.url,
            "RPS_REGISTERED_MODEL_NAME": name,
            **extra,
        }

    def stop(self) -> None:
        import signal

        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def start_proxied_mlflow(root: Path, timeout: float = 180.0) -> ProxiedMlflow:
    """Start ``mlflow server`` (SQLite, proxied artifacts) on a free port and wait for /health."""
    from tests.integration.conftest_mlflow import wait_until_healthy

    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--default-artifact-root",
        "mlflow-artifacts:/",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with (root / "server.log").open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = ProxiedMlflow(url=f"http://127.0.0.1:{port}", root=root, process=process)

    try:
        wait_until_healthy(
            f"{server.url}/health",
            process,
            root / "server.log",
            what="mlflow server",
            timeout=timeout,
        )
    except BaseException:
        server.stop()
        raise
    return server
