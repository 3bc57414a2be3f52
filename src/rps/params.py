"""``params.yaml`` validated into one pydantic model (data, features, training, drift)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from rps.models.interval_rescale import Rescale
    from rps.serving.accuracy import ErrorTest
    from rps.serving.seasonal import HumidityChangeTest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocationParams(_Strict):
    name: str
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    timezone: str = "UTC"


class DataParams(_Strict):
    target: str = "temperature_2m"
    variables: tuple[str, ...]
    history_days: int = Field(default=365, ge=2)
    past_days: int = Field(default=7, ge=1, le=92)

    @model_validator(mode="after")
    def _target_is_a_variable(self) -> DataParams:
        if self.target not in self.variables:
            raise ValueError(f"target {self.target!r} is not among data.variables")
        return self


class QualityParams(_Strict):
    max_null_fraction: float = Field(default=0.01, ge=0, le=1)
    min_rows: int = Field(default=168, ge=1)
    freshness_hours: float = Field(default=6, gt=0)
    ranges: dict[str, tuple[float, float]]

    @field_validator("ranges")
    @classmethod
    def _ordered(cls, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for column, (low, high) in ranges.items():
            if low > high:
                raise ValueError(f"quality.ranges.{column}: low {low} > high {high}")
        return ranges


class TransformParams(_Strict):
    max_interpolate_hours: int = Field(default=3, ge=0)
    outlier_zscore: float = Field(default=6.0, gt=0)


class FeatureParams(_Strict):
    horizon_hours: int = Field(default=6, ge=1, le=168)
    lags: tuple[int, ...] = (1, 3, 6, 12, 24)
    rolling_windows: tuple[int, ...] = (3, 6, 12, 24)
    lag_variables: tuple[str, ...] = ("temperature_2m",)
    pressure_tendency_hours: int = Field(default=3, ge=1)

    @field_validator("lags", "rolling_windows")
    @classmethod
    def _positive_sorted(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if not values or min(values) < 1:
            raise ValueError("lags and rolling windows must be positive and non-empty")
        return tuple(sorted(set(values)))


class PromotionParams(_Strict):
    significance: float = Field(default=0.05, gt=0, lt=1)
    non_inferiority_margin: float = Field(default=0.0, ge=0, lt=1)
    # drift-triggered runs (rps.models.adaptation): the gate judges the newest hours after the
    # onset only, and promotes only a significantly better challenger
    recent_window_hours: int = Field(default=168, ge=24)
    drift_requires_superiority: bool = True


class AdaptationParams(_Strict):
    """How a drift-triggered run trains with the recent regime in view."""

    recent_weight_share: float = Field(default=0.5, gt=0, lt=1)
    onset_lookback_hours: int = Field(default=504, ge=96)
    # after the gate's evidence is recorded, the chosen model is fitted again with the
    # post-onset holdout in its training rows (rps.models.adaptation.refit_with_holdout)
    refit_with_holdout: bool = True
    # the ridge's penalty, per post-onset row, on the new regime's difference from the shared
    # coefficients (rps.models.regime.regime_ridge); null: one set of coefficients for all rows
    regime_alpha: float | None = Field(default=30.0, gt=0)


class TrainParams(_Strict):
    holdout_fraction: float = Field(default=0.2, gt=0, lt=0.9)
    cv_folds: int = Field(default=3, ge=2)
    n_trials: int = Field(default=12, ge=1)
    seed: int = 42
    interval_alpha: float = Field(default=0.1, gt=0, lt=1)
    promotion: PromotionParams = PromotionParams()
    adaptation: AdaptationParams = AdaptationParams()
    search_space: dict[str, dict[str, tuple[float, float]]] = {}


class RescaleParams(_Strict):
    """The service's online rescale of the interval per horizon (rps.models.interval_rescale)."""

    enabled: bool = True
    window: int = Field(default=336, ge=1)  # newest joined forecasts per horizon
    min_samples: int = Field(default=168, ge=1)  # fewer: the calibrated interval (factor 1)
    min_factor: float = Field(default=0.5, gt=0, le=1)
    max_factor: float = Field(default=2.0, ge=1)

    @model_validator(mode="after")
    def _window(self) -> RescaleParams:
        if self.min_samples > self.window:
            raise ValueError("horizons.rescale.min_samples must not exceed its window")
        return self

    def rescale(self, alpha: float) -> Rescale:
        """The rescale of an interval of miscoverage ``alpha``."""
        from rps.models.interval_rescale import Rescale

        return Rescale(
            alpha=alpha,
            window=self.window,
            min_samples=self.min_samples,
            min_factor=self.min_factor,
            max_factor=self.max_factor,
        )


class HorizonParams(_Strict):
    """The forecast trajectory: every hour 1..``max_hours`` (rps.models.horizons)."""

    max_hours: int = Field(default=48, ge=1, le=168)
    # one direct LightGBM model per group of horizons, named by its first horizon
    group_starts: tuple[int, ...] = (1, 2, 3, 4, 7, 13, 25)
    # blocked CV folds over the training rows whose residuals calibrate the intervals
    interval_folds: int = Field(default=4, ge=2)
    rescale: RescaleParams = RescaleParams()

    @model_validator(mode="after")
    def _groups(self) -> HorizonParams:
        starts = self.group_starts
        if not starts or starts[0] != 1 or list(starts) != sorted(set(starts)):
            raise ValueError("horizons.group_starts must be increasing and start at 1")
        if starts[-1] > self.max_hours:
            raise ValueError("horizons.group_starts must lie within 1..horizons.max_hours")
        return self


DriftKind = Literal["bias", "mean_shift", "variance", "daily_cycle", "stuck", "missing"]
_NEEDS_MAGNITUDE: frozenset[str] = frozenset({"bias", "mean_shift", "variance", "daily_cycle"})


class DriftScenario(_Strict):
    """A change injected into source data from ``start`` (to ``end``) on ``variables``.

    Kinds (applied by :func:`rps.data.sources.scenarios.apply_drift`):
    ``bias`` adds ``magnitude``; ``mean_shift`` adds ``magnitude`` reached linearly over
    ``ramp_hours``; ``variance`` scales deviations from the trailing 24 h mean by ``magnitude``;
    ``daily_cycle`` delays the series by ``magnitude`` hours (the daily cycle peaks later);
    ``stuck`` repeats the value at ``start``; ``missing`` blanks ``burst_hours`` of every
    ``every_hours``.
    """

    kind: DriftKind
    start: datetime
    variables: tuple[str, ...] = Field(min_length=1)
    magnitude: float | None = None
    end: datetime | None = None
    ramp_hours: int = Field(default=24, ge=1)
    burst_hours: int = Field(default=6, ge=1)
    every_hours: int = Field(default=24, ge=1)

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _consistent(self) -> DriftScenario:
        if self.kind in _NEEDS_MAGNITUDE and self.magnitude is None:
            raise ValueError(f"drift scenario {self.kind!r} needs a magnitude")
        if self.kind == "variance" and self.magnitude is not None and self.magnitude < 0:
            raise ValueError("drift scenario 'variance' needs a magnitude >= 0 (a scale factor)")
        hours = self.magnitude
        if (
            self.kind == "daily_cycle"
            and hours is not None
            and not (hours == int(hours) and 1 <= hours <= 23)
        ):
            raise ValueError("drift scenario 'daily_cycle' needs a magnitude of 1..23 whole hours")
        if self.kind == "missing" and self.burst_hours > self.every_hours:
            raise ValueError("drift scenario 'missing': burst_hours exceeds every_hours")
        if self.end is not None and self.end <= self.start:
            raise ValueError("drift scenario: end must be after start")
        return self


class DriftParams(_Strict):
    scenario: DriftScenario | None = None  # injected into the replay/synthetic sources
    demo_scenario: DriftScenario | None = None  # what demos and bench_drift inject by default
    window_size: int = Field(default=500, ge=10)
    live_accuracy_window: int = Field(default=168, ge=1)
    error_allowance: float = Field(default=1.0, ge=0)
    error_cap: float = Field(default=16.0, gt=1)
    error_threshold: float = Field(default=40.0, gt=0)
    humidity_baseline_hours: int = Field(default=24, ge=1)
    humidity_span_hours: int = Field(default=168, ge=1)
    humidity_allowance: float = Field(default=0.5, ge=0)
    humidity_cap: float = Field(default=3.0, gt=0)
    humidity_threshold: float = Field(default=5.0, gt=0)

    def error_test(self) -> ErrorTest:
        """The forecast-error CUSUM's parameters."""
        from rps.serving.accuracy import ErrorTest

        return ErrorTest(
            allowance=self.error_allowance, cap=self.error_cap, threshold=self.error_threshold
        )

    def humidity_test(self) -> HumidityChangeTest:
        """The humidity-change CUSUM's parameters."""
        from rps.serving.seasonal import HumidityChangeTest

        return HumidityChangeTest(
            baseline_hours=self.humidity_baseline_hours,
            span_hours=self.humidity_span_hours,
            allowance=self.humidity_allowance,
            cap=self.humidity_cap,
            threshold=self.humidity_threshold,
        )


class Params(_Strict):
    location: LocationParams
    data: DataParams
    quality: QualityParams
    transform: TransformParams = TransformParams()
    features: FeatureParams = FeatureParams()
    train: TrainParams = TrainParams()
    horizons: HorizonParams = HorizonParams()
    drift: DriftParams = DriftParams()

    @model_validator(mode="after")
    def _columns_known(self) -> Params:
        unknown = set(self.features.lag_variables) - set(self.data.variables)
        if unknown:
            raise ValueError(f"features.lag_variables not in data.variables: {sorted(unknown)}")
        if self.features.horizon_hours > self.horizons.max_hours:
            raise ValueError("features.horizon_hours must lie within 1..horizons.max_hours")
        return self


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or invalid."""


def load_params(path: Path | str) -> Params:
    """Read and validate ``params.yaml``.

    Raises:
        ParamsError: naming the file and the invalid field.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ParamsError(f"params file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"params file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"params file {path} must hold a mapping")
    try:
        return Params.model_validate(raw)
    except ValueError as exc:
        raise ParamsError(f"params file {path} is invalid: {exc}") from exc
