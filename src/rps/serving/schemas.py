"""Request and response bodies of the prediction API (the OpenAPI schema is built from these).

Feature values and observations are strict finite numbers: strings, booleans, ``NaN`` and
infinities are rejected with a 422 that names the offending field, and so are checks that need
no model (exactly one input, ``issue_times`` as long as ``rows``, observation times on the hour
and consecutive). Limits that depend on the loaded model or on the settings (known feature
names, ``max_batch_rows``, the observation window length) are checked in
:mod:`rps.serving.inputs` and reported in the same 422 format.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A JSON number that is neither NaN nor infinite (integers are accepted)."""


MIN_YEAR, MAX_YEAR = 1900, 2200
HOUR_S = 3600
#: the longest lead time a request may name (the served model may allow fewer)
MAX_HORIZON_HOURS = 168


def _iso_text(value: object) -> object:
    if isinstance(value, str | datetime):
        return value
    raise ValueError("must be an ISO 8601 date-time string")


def _plausible(value: datetime) -> datetime:
    # far-away years would overflow when the horizon is added
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"year must be between {MIN_YEAR} and {MAX_YEAR}")
    return value


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_plausible)]
"""An ISO 8601 date-time string between 1900 and 2200 (no Unix timestamps: the schema says
string)."""


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Observation(BaseModel):
    """One hourly observation: ``time`` plus one finite number per variable (a window for
    ``POST /predict``; a realized value, at least the target, for ``POST /feedback``)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "time": "2024-05-01T12:00:00Z",
                    "temperature_2m": 21.5,
                    "relative_humidity_2m": 55.0,
                    "dew_point_2m": 12.1,
                    "surface_pressure": 1003.2,
                    "wind_speed_10m": 11.0,
                    "wind_direction_10m": 230.0,
                    "cloud_cover": 40.0,
                }
            ]
        },
    )

    time: IsoDatetime = Field(description="Start of the hour (UTC when no offset is given).")
    __pydantic_extra__: dict[str, FiniteFloat]

    @property
    def values(self) -> dict[str, float]:
        """The variables of this observation (everything but ``time``)."""
        return dict(self.__pydantic_extra__ or {})


class PredictRequest(BaseModel):
    """Either a batch of feature rows or a window of recent raw observations."""

    model_config = ConfigDict(extra="forbid")

    rows: list[dict[str, FiniteFloat]] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Feature rows, each mapping every feature name of the model (GET /model/info) to a "
            "number. At most `max_batch_rows` rows."
        ),
    )
    issue_times: list[IsoDatetime] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Optional issue time of each row (same length as `rows`); when given, the target "
            "time is known and the prediction is logged for live accuracy."
        ),
    )
    observations: list[Observation] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Consecutive hourly observations ending at the issue time, oldest first, holding "
            "every variable of the model's feature spec; the newest `window_hours` are used."
        ),
    )
    horizon_hours: int | None = Field(
        default=None,
        ge=1,
        le=MAX_HORIZON_HOURS,
        description=(
            "Lead time of the forecast from `observations`, 1 .. the model's "
            "`max_horizon_hours` (GET /model/info); default: the model's `horizon_hours`."
        ),
    )

    @field_validator("observations")
    @classmethod
    def _consecutive_hours(cls, value: list[Observation] | None) -> list[Observation] | None:
        if value is None:
            return value
        previous: int | None = None
        for i, obs in enumerate(value):
            moment = obs.time if obs.time.tzinfo else obs.time.replace(tzinfo=UTC)
            second = int(moment.timestamp())
            if second % HOUR_S:
                raise ValueError(f"observations[{i}].time must be on the hour")
            if previous is not None and second - previous != HOUR_S:
                problem = "a gap" if second > previous else "times not increasing"
                raise ValueError(
                    f"observations must be consecutive hours, oldest first ({problem} before "
                    f"observations[{i}].time {moment.isoformat()})"
                )
            previous = second
        return value

    @model_validator(mode="after")
    def _one_input(self) -> PredictRequest:
        if (self.rows is None) == (self.observations is None):
            raise ValueError("provide exactly one of 'rows' or 'observations'")
        if self.horizon_hours is not None and self.rows is not None:
            raise ValueError(
                "'horizon_hours' goes with 'observations'; feature rows carry their own lead "
                "time in their features"
            )
        if self.issue_times is not None:
            if self.rows is None:
                raise ValueError("'issue_times' goes with 'rows' only")
            if len(self.issue_times) != len(self.rows):
                raise ValueError(
                    f"issue_times has {len(self.issue_times)} items, rows has {len(self.rows)}"
                )
        return self


class Prediction(_Response):
    """The forecast for one row."""

    prediction: float = Field(description="Point forecast of the target variable.")
    lower: float = Field(description="Lower bound of the calibrated prediction interval.")
    upper: float = Field(description="Upper bound of the calibrated prediction interval.")
    ood_features: list[str] = Field(
        description="Features outside the training range [min, max] for this row."
    )
    issue_time: datetime | None = Field(default=None, description="Newest observation used.")
    target_time: datetime | None = Field(default=None, description="Time the forecast is for.")


class PredictResponse(_Response):
    """Forecasts in request order, with the model that made them."""

    model_name: str
    model_version: str
    target: str = Field(description="The forecast variable, e.g. temperature_2m.")
    horizon_hours: int
    interval_alpha: float | None = Field(description="Miscoverage of the interval (0.1: 90%).")
    predictions: list[Prediction]


class RegistryHealth(_Response):
    """The last check of the registry's champion alias (registry mode)."""

    reachable: bool = Field(description="The registry answered the last check.")
    champion_version: str | None = Field(description="The version the alias points to.")
    checked_at: datetime
    detail: str | None = Field(default=None, description="The last check's error, if any.")


class HealthResponse(_Response):
    """Liveness and readiness: 200 with a model loaded, 503 without.

    ``degraded``: a model is served but the registry did not answer the last check.
    """

    status: Literal["ok", "degraded", "unavailable"]
    model_loaded: bool
    model_name: str | None = None
    model_version: str | None = None
    model_source: Literal["registry", "model_dir"]
    registry: RegistryHealth | None = Field(
        default=None, description="Registry mode only; null before the first check."
    )
    uptime_seconds: float
    worker_pid: int = Field(description="The answering worker process (one API, several workers).")
    detail: str | None = None


class LiveResponse(_Response):
    """The process is up and answers HTTP."""

    status: Literal["alive"]
    uptime_seconds: float


class ReadyResponse(_Response):
    """Whether this replica can predict: 200 with a model loaded, 503 without."""

    status: Literal["ready", "not_ready"]
    model_version: str | None = None
    detail: str | None = None


class ModelInfoResponse(_Response):
    """What is being served and where it came from."""

    name: str
    version: str
    alias: str
    kind: str
    run_id: str | None
    dataset_md5: str | None
    code_sha: str | None
    trained_at: str | None
    metrics: dict[str, float]
    features: list[str]
    target: str
    horizon_hours: int
    max_horizon_hours: int | None = Field(
        default=None,
        description="Longest lead time of GET /forecast?hours=N and POST /predict "
        "`horizon_hours` (null: the model forecasts `horizon_hours` only).",
    )
    window_hours: int = Field(description="Observations a POST /predict window needs.")
    interval: dict[str, float] = Field(
        description="The constant split-conformal offsets (used without `horizon_interval`)."
    )
    horizon_interval: dict[str, Any] | None = Field(
        default=None, description="The conditional interval of every horizon (trajectory models)."
    )
    metrics_by_horizon: list[dict[str, float]] = Field(
        default_factory=list, description="Holdout scores per horizon (trajectory models)."
    )
    checksum: str
    source: str
    loaded_at: datetime
    lineage: dict[str, Any]


class FeedbackRequest(BaseModel):
    """Realized observations to join with logged predictions."""

    model_config = ConfigDict(extra="forbid")

    observations: list[Observation] = Field(
        min_length=1, description="Each with `time` and at least the target variable."
    )


class FeedbackResponse(_Response):
    """How many predictions the feedback resolved, and the live accuracy after it."""

    received: int
    joined: int = Field(description="Logged predictions whose target time got a realized value.")
    live_rmse: float | None
    live_mae: float | None
    live_samples: int


class ModelSwapResponse(_Response):
    """Outcome of a reload or rollback."""

    action: Literal["reload", "rollback"]
    changed: bool
    previous_version: str | None
    model_version: str
    checksum: str
    detail: str


class TrajectoryPoint(_Response):
    """The forecast for one hour of a trajectory."""

    horizon_hours: int = Field(description="Lead time from the issue time.")
    target_time: datetime
    prediction: float
    lower: float = Field(description="Lower bound of the calibrated interval at this hour.")
    upper: float = Field(description="Upper bound of the calibrated interval at this hour.")


class ForecastResponse(_Response):
    """The forecast for the configured place from the newest stored observations.

    The top-level forecast is for the model's ``horizon_hours``; with ``?hours=N`` the
    ``trajectory`` holds every hour 1..N.
    """

    location: str | None
    latitude: float | None
    longitude: float | None
    model_name: str
    model_version: str
    target: str
    issue_time: datetime
    target_time: datetime
    prediction: float
    lower: float
    upper: float
    ood_features: list[str]
    observations_file: str
    horizon_hours: int | None = Field(default=None, description="Lead time of the forecast.")
    interval_alpha: float | None = Field(
        default=None, description="Miscoverage of the intervals (0.1: 90%)."
    )
    trajectory: list[TrajectoryPoint] | None = Field(
        default=None, description="Every hour 1..N (only with ?hours=N)."
    )


class ErrorResponse(_Response):
    """An error with a human-readable message."""

    detail: str
