"""The prediction service behind the routers: inputs to feature rows, forecasts, monitoring.

One :class:`PredictionService` per app (per worker process). Its request methods run on the event
loop without awaiting, so a request uses one model object from start to end and the drift
window is updated by one request at a time.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from rps.data.schema import TIME
from rps.features.build import FeatureError, build_feature_row
from rps.params import DriftParams, LocationParams, Params, ParamsError, load_params
from rps.serving.accuracy import LiveAccuracy, LoggedPrediction, PredictionLog
from rps.serving.drift import DriftMonitor
from rps.serving.launcher import INSTANCE_ENV, STARTED_AT_ENV
from rps.serving.metrics import PIPELINE_STATUS_FILE, RuntimeCollector, ServingMetrics
from rps.serving.predictor import (
    BundleCache,
    Forecast,
    ModelManager,
    ServedModel,
    SharedModelState,
    resolve_source,
)
from rps.serving.schemas import FeedbackObservation, Observation
from rps.settings import Settings

logger = logging.getLogger(__name__)

_HOUR_S = 3600
_MAX_ERRORS = 20


class InputError(ValueError):
    """A request that is valid JSON of the right shape but unusable; becomes a 422.

    Attributes:
        errors: FastAPI-style ``{"loc", "msg", "type"}`` items naming the offending fields.
    """

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(str(e["msg"]) for e in errors))
        self.errors = errors

    @classmethod
    def at(cls, loc: Sequence[str | int], msg: str, kind: str = "value_error") -> InputError:
        return cls([{"loc": ["body", *loc], "msg": msg, "type": kind}])


class UnavailableError(RuntimeError):
    """The service cannot answer now (no model, no stored observations); becomes a 503."""


@dataclass(frozen=True)
class StoredWindow:
    """The newest stored observations (cached by file modification time and size)."""

    path: Path
    stamp: tuple[int, int]
    values: np.ndarray
    times: np.ndarray  # int64 Unix seconds
    issue_time: datetime


def _epoch(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


class PredictionService:
    """Everything one worker needs to answer requests."""

    def __init__(self, settings: Settings, params: Params | None) -> None:
        """Wire the service (no IO: :meth:`start` loads the model and opens the log).

        Args:
            settings: Runtime settings.
            params: Validated ``params.yaml``; None uses the default drift parameters.
        """
        self.settings = settings
        self.params = params
        self.drift_params: DriftParams = params.drift if params is not None else DriftParams()
        self.location: LocationParams | None = params.location if params is not None else None
        self.default_target = params.data.target if params is not None else "temperature_2m"
        serving_dir = settings.state_path / "serving"
        instance = os.environ.get(INSTANCE_ENV)
        self.manager = ModelManager(
            name=settings.registered_model_name,
            resolver=lambda: resolve_source(settings),
            cache=BundleCache(serving_dir / "bundles"),
            shared=SharedModelState(serving_dir / "model_state.json", instance)
            if instance
            else None,
        )
        self.started_at = float(os.environ.get(STARTED_AT_ENV) or time.time())
        self.metrics = ServingMetrics(
            RuntimeCollector(
                started_at=self.started_at,
                status_file=settings.state_path / PIPELINE_STATUS_FILE,
                model_name=settings.registered_model_name,
                current_model=lambda: self.manager.current,
                live_accuracy=self._live_accuracy,
            )
        )
        self.prediction_log: PredictionLog | None = None
        self.drift: DriftMonitor | None = None
        self._observations: StoredWindow | None = None
        self._joined_stamp: tuple[Path, int, int] | None = None
        self.manager.on_swap.append(self._on_swap)

    @classmethod
    def from_settings(cls, settings: Settings, params: Params | None = None) -> PredictionService:
        """Build the service, reading ``params.yaml`` when ``params`` is not given."""
        if params is None:
            try:
                params = load_params(settings.params_file)
            except ParamsError as exc:
                logger.warning("%s; using default drift parameters", exc)
        return cls(settings, params)

    # lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the prediction log and load the model."""
        try:
            self.prediction_log = PredictionLog(
                self.settings.state_path / "serving" / "predictions.db",
                window=self.drift_params.live_accuracy_window,
                error_test=self.drift_params.error_test(),
            )
        except (OSError, sqlite3.Error) as exc:  # a read-only state folder: serve without it
            logger.error("prediction log unavailable, live accuracy is off: %s", exc)
            self.prediction_log = None
        await self.manager.start()

    async def stop(self) -> None:
        """Stop background work and close the log."""
        await self.manager.stop()
        if self.prediction_log is not None:
            self.prediction_log.close()
        self.metrics.worker_exit()

    def _live_accuracy(self) -> LiveAccuracy | None:
        if self.prediction_log is None:
            return None
        model = self.manager.current
        scale = model.bundle.metrics.get("holdout_rmse") if model is not None else None
        return self.prediction_log.live_accuracy(error_scale=scale)

    def _on_swap(self, previous: ServedModel | None, current: ServedModel) -> None:
        if previous is not None and self.drift is not None and previous.profile is current.profile:
            return
        monitor = current.new_drift_monitor(self.drift_params)
        if self.drift is not None:
            monitor.seed_from(self.drift)
        self.drift = monitor

    def current_model(self) -> ServedModel:
        """The model to use for this request.

        Raises:
            UnavailableError: no model is loaded.
        """
        model = self.manager.current
        if model is None:
            reason = self.manager.last_error or "still loading"
            raise UnavailableError(f"no model loaded: {reason}")
        return model

    # inputs -----------------------------------------------------------------------------------
    def rows_to_matrix(self, model: ServedModel, rows: list[dict[str, float]]) -> np.ndarray:
        """Feature rows as a ``(n, n_features)`` array in the model's order.

        Raises:
            InputError: a row lacks a feature or has an unknown one, or the batch is too big.
        """
        if len(rows) > self.settings.max_batch_rows:
            raise InputError.at(
                ["rows"],
                f"batch has {len(rows)} rows, at most max_batch_rows="
                f"{self.settings.max_batch_rows} are accepted",
                "too_long",
            )
        names = model.feature_names
        index = model.feature_index
        matrix = np.empty((len(rows), len(names)))
        errors: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            if row.keys() == index.keys():
                matrix[i] = [row[name] for name in names]
                continue
            for key in row:
                if key not in index:
                    errors.append(
                        {
                            "loc": ["body", "rows", i, key],
                            "msg": f"unknown feature {key!r} (GET /model/info lists the features)",
                            "type": "unknown_feature",
                        }
                    )
            for name in names:
                if name not in row:
                    errors.append(
                        {
                            "loc": ["body", "rows", i, name],
                            "msg": f"feature {name!r} is missing",
                            "type": "missing",
                        }
                    )
            if len(errors) >= _MAX_ERRORS:
                break
        if errors:
            raise InputError(errors[:_MAX_ERRORS])
        return matrix

    def observations_to_row(
        self, model: ServedModel, observations: Sequence[Observation]
    ) -> tuple[np.ndarray, datetime]:
        """The feature row for the newest hour of an observation window, and its issue time.

        Only the newest ``window_hours`` observations are used; all must be consecutive hours
        (the request body limit bounds how many can be sent).

        Raises:
            InputError: the window is too short, not consecutive hours, or lacks variables.
        """
        spec = model.bundle.feature_spec
        need = spec.window_hours
        if len(observations) < need:
            raise InputError.at(
                ["observations"],
                f"observation window has {len(observations)} hours, the features need {need} "
                "consecutive hours",
                "too_short",
            )
        seconds = [_epoch(o.time) for o in observations]
        for i, second in enumerate(seconds):
            if second % _HOUR_S:
                raise InputError.at(
                    ["observations", i, "time"], "observation times must be on the hour"
                )
            if i and second - seconds[i - 1] != _HOUR_S:
                problem = "a gap" if second > seconds[i - 1] else "times not increasing"
                raise InputError.at(
                    ["observations", i, "time"],
                    f"observations must be consecutive hours, oldest first ({problem} before "
                    f"{_utc(second).isoformat()})",
                )
        variables = spec.variables
        known = set(variables)
        tail = observations[-need:]
        offset = len(observations) - need
        values = np.empty((need, len(variables)))
        for j, obs in enumerate(tail):
            present = obs.values
            unknown = sorted(set(present) - known)
            if unknown:
                raise InputError.at(
                    ["observations", offset + j, unknown[0]],
                    f"unknown variable {unknown[0]!r}; expected {list(variables)}",
                    "unknown_variable",
                )
            for k, name in enumerate(variables):
                if name not in present:
                    raise InputError.at(
                        ["observations", offset + j, name],
                        f"variable {name!r} is missing",
                        "missing",
                    )
                values[j, k] = present[name]
        issue = _utc(seconds[-1])
        try:
            import pandas as pd

            row = build_feature_row(values, spec, issue_time=pd.Timestamp(issue))
        except FeatureError as exc:
            raise InputError.at(["observations"], str(exc)) from exc
        return row, issue

    # predictions ------------------------------------------------------------------------------
    def predict(
        self,
        model: ServedModel,
        matrix: np.ndarray,
        *,
        issue_times: Sequence[datetime] | None,
        loc: str,
    ) -> list[dict[str, Any]]:
        """Forecast rows, monitor them and log those with a known target time.

        Args:
            model: The model read once for this request.
            matrix: ``(n, n_features)`` rows.
            issue_times: Issue time of each row, or None.
            loc: Body field the rows came from (named in errors).

        Returns:
            One response item per row.

        Raises:
            InputError: a forecast is not finite (extreme inputs to a linear model).
        """
        forecast: Forecast = model.predict(matrix)
        finite = np.isfinite(forecast.point) & np.isfinite(forecast.lower)
        finite &= np.isfinite(forecast.upper)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise InputError.at(
                [loc, bad] if loc == "rows" else [loc],
                "the model's forecast for this row is not finite; check the feature values",
                "non_finite_prediction",
            )
        n = matrix.shape[0]
        point = forecast.point.tolist()
        lower = forecast.lower.tolist()
        upper = forecast.upper.tolist()
        ood_rows: np.ndarray = np.asarray(forecast.ood.any(axis=1))
        names = model.feature_names
        horizon = timedelta(hours=model.bundle.feature_spec.horizon_hours)
        items: list[dict[str, Any]] = []
        logged: list[LoggedPrediction] = []
        for i in range(n):
            ood = [names[j] for j in np.flatnonzero(forecast.ood[i])] if ood_rows[i] else []
            issue = issue_times[i] if issue_times is not None else None
            if issue is not None and issue.tzinfo is None:
                issue = issue.replace(tzinfo=UTC)
            target_time = issue + horizon if issue is not None else None
            items.append(
                {
                    "prediction": point[i],
                    "lower": lower[i],
                    "upper": upper[i],
                    "ood_features": ood,
                    "issue_time": issue,
                    "target_time": target_time,
                }
            )
            if issue is not None and target_time is not None:
                logged.append(
                    LoggedPrediction(
                        issue_time=_epoch(issue),
                        target_time=_epoch(target_time),
                        model_version=model.version,
                        prediction=point[i],
                        lower=lower[i],
                        upper=upper[i],
                    )
                )
        self._monitor(model, matrix, forecast, ood_rows)
        if logged:
            self._log(logged)
        return items

    def _monitor(
        self, model: ServedModel, matrix: np.ndarray, forecast: Forecast, ood_rows: np.ndarray
    ) -> None:
        metrics = self.metrics
        metrics.predictions.inc(matrix.shape[0])
        widths = forecast.upper - forecast.lower
        if widths.size and np.all(widths == widths[0]):
            width = float(widths[0])
            for _ in range(widths.size):
                metrics.prediction_confidence.observe(width)
        else:
            for width in widths.tolist():
                metrics.prediction_confidence.observe(width)
        monitor = self.drift
        if monitor is not None and monitor.profile is model.profile:
            snapshot = monitor.observe(matrix, ood_rows, forecast.point)
            if snapshot is not None:
                metrics.set_drift(snapshot)

    def refresh_drift(self) -> None:
        """Publish the drift statistics of rows that arrived since the last recomputation."""
        monitor = self.drift
        if monitor is None:
            return
        snapshot = monitor.refresh()
        if snapshot is not None:
            self.metrics.set_drift(snapshot)

    def _log(self, logged: list[LoggedPrediction]) -> None:
        if self.prediction_log is None:
            return
        try:
            self.prediction_log.log(logged)
        except Exception as exc:  # logging must never fail a prediction
            logger.warning("could not log %d predictions: %s", len(logged), exc)

    def response(self, model: ServedModel, items: list[dict[str, Any]]) -> dict[str, Any]:
        """The ``PredictResponse`` body."""
        return {
            "model_name": model.name,
            "model_version": model.version,
            "target": model.bundle.feature_spec.target,
            "horizon_hours": model.bundle.feature_spec.horizon_hours,
            "interval_alpha": model.bundle.interval.get("alpha"),
            "predictions": items,
        }

    # forecast from stored observations --------------------------------------------------------
    def latest_observations_file(self) -> Path | None:
        """The newest ``observations*.parquet`` under ``processed_dir`` (None if absent)."""
        root = self.settings.processed_dir
        if not root.exists():
            return None
        files = [p for p in root.rglob("observations*.parquet") if p.is_file()]
        if not files:
            return None
        return max(files, key=lambda p: p.stat().st_mtime_ns)

    def stored_window(self, model: ServedModel) -> StoredWindow:
        """The newest ``window_hours`` stored observations, read again only when the file changes.

        Raises:
            UnavailableError: no file, or it cannot be read or lacks columns.
        """
        path = self.latest_observations_file()
        if path is None:
            raise UnavailableError(
                f"no stored observations: {self.settings.processed_dir}/observations.parquet "
                "is written by the pipeline (rps pipeline run)"
            )
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._observations
        if cached is not None and cached.path == path and cached.stamp == stamp:
            return cached
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several kinds for damaged files
            raise UnavailableError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
        if TIME not in frame.columns and frame.index.name == TIME:
            frame = frame.reset_index()
        spec = model.bundle.feature_spec
        missing = sorted({TIME, *spec.variables} - set(frame.columns))
        if missing or frame.empty:
            raise UnavailableError(f"{path} lacks columns {missing} or rows")
        times = pd.DatetimeIndex(pd.to_datetime(frame[TIME], utc=True))
        order = np.argsort(times.asi8, kind="stable")
        frame = frame.iloc[order].tail(spec.window_hours)
        times = pd.DatetimeIndex(pd.to_datetime(frame[TIME], utc=True))
        cached = StoredWindow(
            path=path,
            stamp=stamp,
            values=frame[list(spec.variables)].to_numpy(dtype=float),
            times=times.asi8 // 1_000_000_000,
            issue_time=times[-1].to_pydatetime(),
        )
        self._observations = cached
        return cached

    def forecast(self, model: ServedModel) -> dict[str, Any]:
        """The ``ForecastResponse`` body for the newest stored observations.

        Raises:
            UnavailableError: nothing stored, or the stored window cannot make a feature row.
        """
        window = self.stored_window(model)
        spec = model.bundle.feature_spec
        if window.values.shape[0] < spec.window_hours or np.any(np.diff(window.times) != _HOUR_S):
            raise UnavailableError(
                f"the newest {spec.window_hours} stored hours in {window.path} are incomplete "
                f"or have gaps; the forecast needs {spec.window_hours} consecutive hours"
            )
        import pandas as pd

        try:
            row = build_feature_row(window.values, spec, issue_time=pd.Timestamp(window.issue_time))
        except FeatureError as exc:
            raise UnavailableError(f"stored observations cannot make a feature row: {exc}") from exc
        matrix = row.reshape(1, -1)
        try:
            items = self.predict(model, matrix, issue_times=[window.issue_time], loc="observations")
            item = items[0]
        except InputError as exc:
            raise UnavailableError(str(exc)) from exc
        location = self.location
        return {
            "location": location.name if location else None,
            "latitude": location.latitude if location else None,
            "longitude": location.longitude if location else None,
            "model_name": model.name,
            "model_version": model.version,
            "target": spec.target,
            "issue_time": item["issue_time"],
            "target_time": item["target_time"],
            "prediction": item["prediction"],
            "lower": item["lower"],
            "upper": item["upper"],
            "ood_features": item["ood_features"],
            "observations_file": str(window.path),
        }

    # feedback ---------------------------------------------------------------------------------
    def feedback(self, observations: Sequence[FeedbackObservation]) -> dict[str, Any]:
        """Join realized values to logged predictions and refresh the live accuracy.

        Raises:
            InputError: an observation lacks the target variable.
            UnavailableError: the prediction log is not available.
        """
        model = self.manager.current
        target = model.bundle.feature_spec.target if model is not None else self.default_target
        values: list[tuple[int, float]] = []
        for i, obs in enumerate(observations):
            present = obs.values
            if target not in present:
                raise InputError.at(
                    ["observations", i, target], f"the target {target!r} is required", "missing"
                )
            values.append((_epoch(obs.time), present[target]))
        log = self.prediction_log
        if log is None:
            raise UnavailableError("the prediction log is not available (see the server log)")
        joined = log.record_actuals(values)
        live = log.live_accuracy()
        return {
            "received": len(values),
            "joined": joined,
            "live_rmse": live.rmse,
            "live_mae": live.mae,
            "live_samples": live.samples,
        }

    def join_stored_actuals(self, *, days: int = 30) -> int:
        """Join realized values from newly ingested observations to logged predictions.

        The pipeline stores the newest cleaned observations; each time that file changes, its
        target values of the last ``days`` days are recorded as actuals (the same path as
        ``POST /feedback``). Called before each scrape; a no-op while the file is unchanged.

        Returns:
            The number of logged predictions the new values resolve.
        """
        log = self.prediction_log
        path = self.latest_observations_file()
        if log is None or path is None:
            return 0
        stat = path.stat()
        stamp = (path, stat.st_mtime_ns, stat.st_size)
        if stamp == self._joined_stamp:
            return 0
        import pandas as pd

        model = self.manager.current
        target = model.bundle.feature_spec.target if model is not None else self.default_target
        try:
            frame = pd.read_parquet(path, columns=["time", target]).dropna()
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("cannot join actuals from %s: %s", path, exc)
            return 0
        times = pd.to_datetime(frame["time"], utc=True)
        recent = times >= times.max() - pd.Timedelta(days=days)
        seconds = (times[recent].astype("int64") // 1_000_000_000).tolist()
        joined = log.record_actuals(
            zip(seconds, frame.loc[recent, target].astype(float).tolist(), strict=True)
        )
        self._joined_stamp = stamp
        if joined:
            logger.info("joined %d logged predictions with ingested observations", joined)
        return joined

    # model info -------------------------------------------------------------------------------
    @staticmethod
    def model_info(model: ServedModel) -> dict[str, Any]:
        """The ``ModelInfoResponse`` body."""
        lineage = model.bundle.lineage
        spec = model.bundle.feature_spec

        def text(key: str) -> str | None:
            value = lineage.get(key)
            return None if value is None else str(value)

        return {
            "name": model.name,
            "version": model.version,
            "alias": model.alias,
            "kind": model.bundle.kind,
            "run_id": text("run_id"),
            "dataset_md5": text("dataset_md5"),
            "code_sha": text("code_sha"),
            "trained_at": text("trained_at"),
            "metrics": model.bundle.metrics,
            "features": model.feature_names,
            "target": spec.target,
            "horizon_hours": spec.horizon_hours,
            "window_hours": spec.window_hours,
            "interval": model.bundle.interval,
            "checksum": model.checksum,
            "source": model.source,
            "loaded_at": model.loaded_at,
            "lineage": lineage,
        }
