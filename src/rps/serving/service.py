"""The prediction service behind the routers: forecasts, monitoring, feedback.

One :class:`PredictionService` per app (per worker process). Its request methods run on the event
loop without awaiting, so a request uses one model object from start to end and the drift
window is updated by one request at a time. Request inputs become feature rows in
:mod:`rps.serving.inputs`; the observations the pipeline stored are read by
:mod:`rps.serving.stored`.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np

from rps.models.interval_rescale import Rescale, apply_factors
from rps.params import DriftParams, LocationParams, Params, ParamsError, load_params
from rps.serving.accuracy import (
    IntervalFactorCache,
    LiveAccuracy,
    LoggedPrediction,
    PredictionLog,
)
from rps.serving.drift import DriftMonitor
from rps.serving.errors import InputError, UnavailableError
from rps.serving.inputs import (
    check_horizon,
    epoch,
    observations_to_row,
    row_leads,
    row_matrix,
    rows_to_matrix,
    stored_rows,
)
from rps.serving.launcher import INSTANCE_ENV, STARTED_AT_ENV
from rps.serving.metrics import (
    PIPELINE_STATUS_FILE,
    RuntimeCollector,
    ServingMetrics,
    data_clock_now,
)
from rps.serving.model_store import BundleCache, SharedModelState
from rps.serving.predictor import Forecast, ModelManager, ServedModel
from rps.serving.responses import (
    ForecastBody,
    PredictBody,
    PredictionItem,
    TrajectoryItem,
    trajectory_points,
)
from rps.serving.schemas import FeedbackResponse, Observation, PredictRequest
from rps.serving.sources import model_source
from rps.serving.stored import StoredObservations, StoredWindow
from rps.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["InputError", "PredictionService", "UnavailableError"]


@dataclass(frozen=True)
class PublishedTrajectory:
    """The trajectory ``/metrics`` publishes: the served model's forecast for every hour it
    forecasts (a model without a trajectory: its own horizon), from the newest stored window."""

    model: ServedModel
    window: StoredWindow
    points: list[TrajectoryItem]


#: how many logged (issue time, target time, version) keys a worker remembers
LOGGED_KEYS = 1024


def _log_key(prediction: LoggedPrediction) -> tuple[int, int, str]:
    return (prediction.issue_time, prediction.target_time, prediction.model_version)


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
            source=model_source(settings),
            cache=BundleCache(serving_dir / "bundles"),
            shared=SharedModelState(serving_dir / "model_state.json", instance)
            if instance
            else None,
            check_seconds=settings.model_check_seconds,
            backoff_max_seconds=settings.model_check_backoff_max_s,
        )
        self.started_at = float(os.environ.get(STARTED_AT_ENV) or time.time())
        self.metrics = ServingMetrics(
            RuntimeCollector(
                started_at=self.started_at,
                status_file=settings.state_path / PIPELINE_STATUS_FILE,
                model_name=settings.registered_model_name,
                current_model=lambda: self.manager.current,
                live_accuracy=self._live_accuracy,
                trajectory=lambda: self.published,
                interval_factors=self._interval_factors,
                data_now=lambda: data_clock_now(settings, default_anchor=self.started_at),
            )
        )
        self.published: PublishedTrajectory | None = None
        self._unpublished_reason: str | None = None
        self.prediction_log: PredictionLog | None = None
        self.interval_factors: IntervalFactorCache | None = None
        self._logged_keys: dict[tuple[int, int, str], None] = {}  # insertion-ordered set
        self.drift: DriftMonitor | None = None
        self.stored = StoredObservations(settings.processed_dir)
        self.manager.on_swap.append(self._on_swap)
        self.manager.on_refused.append(self._on_refused)

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
                rescale=self._rescale(),
            )
            if self.prediction_log.rescale is not None:
                self.interval_factors = IntervalFactorCache(self.prediction_log)
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

    def _rescale(self) -> Rescale | None:
        params = self.params
        if params is None or not params.horizons.rescale.enabled:
            return None
        return params.horizons.rescale.rescale(params.train.interval_alpha)

    def _rescaled(self, forecast: Forecast, leads: Sequence[int]) -> tuple[Forecast, np.ndarray]:
        """The forecast with each lead time's interval rescaled, and the factor of each row."""
        cache = self.interval_factors
        factors = cache.factors() if cache is not None else None
        if factors is None or not factors.size:  # nothing learned yet: the interval as trained
            return forecast, np.ones(len(leads))
        lower, upper, factor = apply_factors(
            forecast.point, forecast.lower, forecast.upper, np.asarray(leads), factors
        )
        return replace(forecast, lower=lower, upper=upper), factor

    def _interval_factors(self) -> dict[int, float]:
        """The factor applied to each lead time the served model forecasts (1: as trained,
        until enough realized values are joined); empty with the rescale off or no model."""
        log, model = self.prediction_log, self.manager.current
        if log is None or log.rescale is None or model is None:
            return {}
        learned = log.interval_factors()
        single = model.bundle.max_horizon_hours is None
        hours = [model.horizon_hours] if single else range(1, model.max_horizon_hours + 1)
        return {h: learned.get(h, 1.0) for h in hours}

    def _live_accuracy(self) -> LiveAccuracy | None:
        if self.prediction_log is None:
            return None
        model = self.manager.current
        scale = model.bundle.metrics.get("holdout_rmse") if model is not None else None
        horizon = model.horizon_hours if model is not None else None
        return self.prediction_log.live_accuracy(error_scale=scale, horizon_hours=horizon)

    def _on_swap(self, previous: ServedModel | None, current: ServedModel) -> None:
        if previous is not None and self.drift is not None and previous.profile is current.profile:
            return
        monitor = current.new_drift_monitor(self.drift_params)
        if self.drift is not None:
            monitor.seed_from(self.drift)
        self.drift = monitor

    def _on_refused(self, reason: str, _detail: str) -> None:
        self.metrics.model_reload_failures.labels(reason=reason).inc()

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

    # predictions ------------------------------------------------------------------------------
    def answer(self, model: ServedModel, request: PredictRequest) -> PredictBody:
        """The ``POST /predict`` answer to a validated body, forecast with ``model``.

        Shared by the route and by :mod:`rps.serving.fast_predict`, which relies on this: every
        error is raised before anything is counted, monitored or logged (a failed request leaves
        no trace but its error count, which the error handlers add).

        Raises:
            InputError: the rows or observations do not fit the model, or a forecast is not
                finite.
        """
        horizon = request.horizon_hours  # None with rows: their features hold their lead time
        if request.rows is not None:
            matrix = rows_to_matrix(model, request.rows, max_rows=self.settings.max_batch_rows)
            items = self.predict(model, matrix, issue_times=request.issue_times, loc="rows")
        else:
            assert request.observations is not None  # the request model guarantees one input
            row, issue_time = observations_to_row(model, request.observations, horizon)
            items = self.predict(
                model,
                row.reshape(1, -1),
                issue_times=[issue_time],
                loc="observations",
                horizon_hours=horizon,
            )
        return self.response(model, items, horizon)

    def answer_row(self, model: ServedModel, row: dict[str, float]) -> PredictBody | None:
        """The ``POST /predict`` answer to a body of one feature row of numbers (checked by the
        caller, :func:`rps.serving.fast_predict.one_plain_row`), without building the request
        model: the same answer as :meth:`answer`. None when the row does not hold exactly the
        model's features (:meth:`answer` reports what is wrong).

        Raises:
            InputError: as :meth:`answer`, before anything is counted, monitored or logged.
        """
        if self.settings.max_batch_rows < 1:  # the route refuses any batch: let it say so
            return None
        matrix = row_matrix(model, row)
        if matrix is None:
            return None
        items = self.predict(model, matrix, issue_times=None, loc="rows")
        return self.response(model, items)

    def predict(
        self,
        model: ServedModel,
        matrix: np.ndarray,
        *,
        issue_times: Sequence[datetime] | None,
        loc: str,
        horizon_hours: int | None = None,
    ) -> list[PredictionItem]:
        """Forecast rows, monitor them and log those with a known target time.

        Only forecasts at the model's ``horizon_hours`` feed the drift window and the
        prediction log (live accuracy is judged against the holdout at that horizon); a
        feature row's lead time is its ``horizon_hours`` feature (trajectory models).

        Args:
            model: The model read once for this request.
            matrix: ``(n, n_features)`` rows.
            issue_times: Issue time of each row, or None.
            loc: Body field the rows came from (named in errors).
            horizon_hours: The rows' lead time (None: the model's ``horizon_hours``).

        Returns:
            One response item per row.

        Raises:
            InputError: a forecast is not finite (extreme inputs to a linear model).
        """
        leads = row_leads(model, matrix, horizon_hours).tolist()
        forecast, factor = self._rescaled(model.predict(matrix), leads)
        # Python floats from here on: a request holds one row, where numpy's per-call overhead
        # is most of the cost (docs/BENCHMARKS.md, Serving)
        point = forecast.point.tolist()
        lower = forecast.lower.tolist()
        upper = forecast.upper.tolist()
        for i, bounds in enumerate(zip(point, lower, upper, strict=True)):
            if not all(map(math.isfinite, bounds)):
                raise InputError.at(
                    [loc, i] if loc == "rows" else [loc],
                    "the model's forecast for this row is not finite; check the feature values",
                    "non_finite_prediction",
                )
        ood_rows = np.asarray(forecast.ood.any(axis=1))
        names = model.feature_names
        own_horizon = model.horizon_hours
        items: list[PredictionItem] = []
        logged: list[LoggedPrediction] = []
        for i, is_ood in enumerate(ood_rows.tolist()):
            ood = [names[j] for j in np.flatnonzero(forecast.ood[i]).tolist()] if is_ood else []
            issue = issue_times[i] if issue_times is not None else None
            if issue is not None and issue.tzinfo is None:
                issue = issue.replace(tzinfo=UTC)
            target_time = issue + timedelta(hours=leads[i]) if issue is not None else None
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
            if leads[i] == own_horizon and issue is not None and target_time is not None:
                logged.append(
                    LoggedPrediction(
                        issue_time=epoch(issue),
                        target_time=epoch(target_time),
                        model_version=model.version,
                        prediction=point[i],
                        lower=lower[i],
                        upper=upper[i],
                        factor=float(factor[i]),
                    )
                )
        own = [lead == own_horizon for lead in leads]
        widths = [high - low for low, high in zip(lower, upper, strict=True)]
        self._monitor(model, matrix, forecast.point, ood_rows, widths=widths, own=own)
        if logged:
            self._log(logged)
        return items

    def _monitor(
        self,
        model: ServedModel,
        matrix: np.ndarray,
        point: np.ndarray,
        ood_rows: np.ndarray,
        *,
        widths: list[float],
        own: list[bool],
    ) -> None:
        metrics = self.metrics
        metrics.predictions.inc(len(widths))
        for width in widths:
            metrics.prediction_confidence.observe(width)
        monitor = self.drift
        if monitor is None or monitor.profile is not model.profile or not any(own):
            return
        if not all(own):  # the drift window holds rows of the model's own horizon only
            keep = np.asarray(own)
            matrix, ood_rows, point = matrix[keep], ood_rows[keep], point[keep]
        snapshot = monitor.observe(matrix, ood_rows, point)
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
        # the log ignores repeats anyway: skip the write (a transaction) for forecasts this
        # worker logged already, e.g. GET /forecast while no newer observations are stored
        fresh = [p for p in logged if _log_key(p) not in self._logged_keys]
        if not fresh:
            return
        try:
            self.prediction_log.log(fresh)
            for p in fresh:
                self._logged_keys[_log_key(p)] = None
            while len(self._logged_keys) > LOGGED_KEYS:
                del self._logged_keys[next(iter(self._logged_keys))]
        except Exception as exc:  # logging must never fail a prediction
            logger.warning("could not log %d predictions: %s", len(logged), exc)

    def response(
        self, model: ServedModel, items: list[PredictionItem], horizon_hours: int | None = None
    ) -> PredictBody:
        """The ``PredictResponse`` body."""
        return {
            "model_name": model.name,
            "model_version": model.version,
            "target": model.bundle.feature_spec.target,
            "horizon_hours": model.horizon_hours if horizon_hours is None else horizon_hours,
            "interval_alpha": model.bundle.interval.get("alpha"),
            "predictions": items,
        }

    # forecast from stored observations --------------------------------------------------------
    def stored_window(self, model: ServedModel) -> StoredWindow:
        """The newest stored observations for the model's spec (read again when the file changes).

        Raises:
            UnavailableError: no file, or it cannot be read or lacks columns.
        """
        return self.stored.window(model.bundle.feature_spec)

    def forecast(self, model: ServedModel, hours: int | None = None) -> ForecastBody:
        """The forecast for the newest stored observations (``hours``: and every hour 1..N).

        The forecast at the model's ``horizon_hours`` is logged and monitored as always; the
        trajectory's hours are computed from the same window (one feature pass) and returned.

        Raises:
            InputError: ``hours`` is more than the model forecasts, or it has no trajectory.
            UnavailableError: nothing stored, or the stored window cannot make a feature row.
        """
        spec = model.bundle.feature_spec
        if hours is not None:
            check_horizon(model, hours, ["query", "hours"], trajectory=True)
        window = self.stored_window(model)
        horizons = [spec.horizon_hours, *range(1, (hours or 0) + 1)]
        issue = window.issue_time
        rows = stored_rows(model, window, horizons)
        try:
            item = self.predict(model, rows[:1], issue_times=[issue], loc="observations")[0]
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
            "horizon_hours": spec.horizon_hours,
            "interval_alpha": model.bundle.interval.get("alpha"),
            "trajectory": None if hours is None else self._answered(model, rows, horizons, issue),
        }

    def _answered(
        self, model: ServedModel, rows: np.ndarray, horizons: list[int], issue: datetime
    ) -> list[TrajectoryItem]:
        """The trajectory of a ``/forecast`` answer (after its first row, the model's own
        horizon): counted in the prediction metrics and logged (their realized errors rescale
        each horizon's interval)."""
        hours = horizons[1:]
        forecast, factor = self._trajectory(model, rows[1:], hours)
        self.metrics.predictions.inc(len(hours))
        issued = epoch(issue)
        # a worker builds the log rows of an issue time once (repeats are skipped anyway)
        if hours and (issued, issued + 3600 * hours[-1], model.version) not in self._logged_keys:
            rows_out = zip(
                hours,
                forecast.point.tolist(),
                forecast.lower.tolist(),
                forecast.upper.tolist(),
                factor.tolist(),
                strict=True,
            )
            self._log(
                [
                    LoggedPrediction(issued, issued + 3600 * h, model.version, p, lo, hi, f)
                    for h, p, lo, hi, f in rows_out
                ]
            )
        return trajectory_points(hours, forecast, issue)

    def _trajectory(
        self, model: ServedModel, rows: np.ndarray, hours: list[int]
    ) -> tuple[Forecast, np.ndarray]:
        """The rescaled forecasts of feature rows of lead times ``hours``, and their factors.

        Raises:
            UnavailableError: a forecast is not finite.
        """
        forecast, factor = self._rescaled(model.predict(rows), hours)
        if not (np.isfinite(forecast.point).all() and np.isfinite(forecast.lower).all()):
            raise UnavailableError("the model's trajectory is not finite for the stored hours")
        return forecast, factor

    def refresh_trajectory(self) -> None:
        """Recompute the published trajectory if the model or the stored window changed.

        Called before each scrape (off the event loop: a changed file is read). The window
        object is the stored-file cache's, so an unchanged file and model cost a ``stat``. The
        forecasts are neither logged nor monitored nor counted: they answer no request. While
        there is no model or no usable window nothing is published (the series are absent).
        """
        model = self.manager.current
        try:
            if model is None:
                raise UnavailableError("no model loaded")
            window = self.stored_window(model)
            published = self.published
            if published is not None and published.model is model and published.window is window:
                return
            spec = model.bundle.feature_spec
            single = model.bundle.max_horizon_hours is None
            hours = [spec.horizon_hours] if single else list(range(1, model.max_horizon_hours + 1))
            rows = stored_rows(model, window, hours)
            forecast, _factor = self._trajectory(model, rows, hours)
            points = trajectory_points(hours, forecast, window.issue_time)
        except Exception as exc:  # UnavailableError, or a model failing: never break the scrape
            self.published = None
            reason = str(exc) if isinstance(exc, UnavailableError) else repr(exc)
            if reason != self._unpublished_reason:  # once per reason, not every scrape
                logger.info("no forecast trajectory to publish: %s", reason)
                self._unpublished_reason = reason
            return
        self.published = PublishedTrajectory(model=model, window=window, points=points)
        self._unpublished_reason = None

    # feedback ---------------------------------------------------------------------------------
    def _target(self) -> str:
        model = self.manager.current
        return model.bundle.feature_spec.target if model is not None else self.default_target

    def feedback(self, observations: Sequence[Observation]) -> FeedbackResponse:
        """Join realized values to logged predictions and refresh the live accuracy.

        Raises:
            InputError: an observation lacks the target variable.
            UnavailableError: the prediction log is not available.
        """
        target = self._target()
        values: list[tuple[int, float]] = []
        for i, obs in enumerate(observations):
            present = obs.values
            if target not in present:
                raise InputError.at(
                    ["observations", i, target], f"the target {target!r} is required", "missing"
                )
            values.append((epoch(obs.time), present[target]))
        log = self.prediction_log
        if log is None:
            raise UnavailableError("the prediction log is not available (see the server log)")
        joined = log.record_actuals(values)
        model = self.manager.current
        live = log.live_accuracy(horizon_hours=model.horizon_hours if model else None)
        return FeedbackResponse(
            received=len(values),
            joined=joined,
            live_rmse=live.rmse,
            live_mae=live.mae,
            live_samples=live.samples,
        )

    def join_stored_actuals(self, *, days: int = 30) -> int:
        """Join realized values from newly ingested observations to logged predictions.

        The pipeline stores the newest cleaned observations; each time that file changes, its
        target values of the last ``days`` days are recorded as actuals (the same path as
        ``POST /feedback``). Called before each scrape; a no-op while the file is unchanged.

        Returns:
            The number of logged predictions the new values resolve.
        """
        log = self.prediction_log
        if log is None:
            return 0
        actuals = self.stored.new_actuals(self._target(), days=days)
        if not actuals:
            return 0
        joined = log.record_actuals(actuals)
        if joined:
            logger.info("joined %d logged predictions with ingested observations", joined)
        return joined
