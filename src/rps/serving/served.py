"""A verified bundle ready to serve: its identity, the arrays the hot path needs, the smoke test.

A :class:`ServedModel` is never mutated; a swap replaces the whole object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from rps.features.spec import HORIZON
from rps.models.bundle import ModelBundle
from rps.params import DriftParams
from rps.serving.drift import DriftMonitor, ReferenceProfile, training_bounds
from rps.serving.model_store import ModelEntry, ModelLoadError
from rps.serving.schemas import ModelInfoResponse

SMOKE_ROWS = 32


@dataclass(frozen=True)
class Forecast:
    """Point forecasts, interval bounds and out-of-range flags of a batch of rows."""

    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    ood: np.ndarray  # (n, n_features) bool


@dataclass(frozen=True)
class ServedModel:
    """A verified bundle ready to serve (never mutated; a swap replaces the whole object)."""

    bundle: ModelBundle
    name: str
    version: str
    alias: str
    source: str
    path: Path
    loaded_at: datetime
    feature_index: Mapping[str, int]
    lower_bounds: np.ndarray
    upper_bounds: np.ndarray
    profile: ReferenceProfile

    @property
    def checksum(self) -> str:
        return self.bundle.checksum

    @property
    def feature_names(self) -> list[str]:
        return self.bundle.feature_names

    @property
    def horizon_hours(self) -> int:
        """The configured lead time (what is logged, monitored and forecast by default)."""
        return self.bundle.feature_spec.horizon_hours

    @property
    def max_horizon_hours(self) -> int:
        """The longest lead time served (``horizon_hours`` for a single-horizon model)."""
        return self.bundle.max_horizon_hours or self.horizon_hours

    @property
    def entry(self) -> ModelEntry:
        return ModelEntry(
            path=str(self.path),
            checksum=self.checksum,
            version=self.version,
            alias=self.alias,
            source=self.source,
        )

    def predict(self, rows: np.ndarray) -> Forecast:
        """Forecast a ``(n, n_features)`` array of rows in feature order."""
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite output is checked
            point, lower, upper = self.bundle.predict_with_interval(rows)
        ood = (rows < self.lower_bounds) | (rows > self.upper_bounds)
        return Forecast(point=point, lower=lower, upper=upper, ood=ood)

    def info(self) -> ModelInfoResponse:
        """What is served and where it came from (``GET /model/info``)."""
        lineage = self.bundle.lineage
        spec = self.bundle.feature_spec

        def text(key: str) -> str | None:
            value = lineage.get(key)
            return None if value is None else str(value)

        return ModelInfoResponse(
            name=self.name,
            version=self.version,
            alias=self.alias,
            kind=self.bundle.kind,
            run_id=text("run_id"),
            dataset_md5=text("dataset_md5"),
            code_sha=text("code_sha"),
            trained_at=text("trained_at"),
            metrics=self.bundle.metrics,
            features=self.feature_names,
            target=spec.target,
            horizon_hours=spec.horizon_hours,
            max_horizon_hours=self.bundle.max_horizon_hours,
            window_hours=spec.window_hours,
            interval=self.bundle.interval,
            horizon_interval=(
                None
                if self.bundle.horizon_interval is None
                else self.bundle.horizon_interval.to_dict()
            ),
            metrics_by_horizon=self.bundle.metrics_by_horizon,
            checksum=self.checksum,
            source=self.source,
            loaded_at=self.loaded_at,
            lineage=lineage,
        )

    def new_drift_monitor(self, params: DriftParams) -> DriftMonitor:
        """An empty drift window against this model's training reference."""
        return DriftMonitor(
            self.profile,
            n_features=len(self.feature_names),
            window_size=params.window_size,
            humidity_test=params.humidity_test(),
        )


def _version_of(bundle: ModelBundle, hint: str | None) -> str:
    if hint:
        return hint
    for key in ("model_version", "registry_version", "version"):
        value = bundle.lineage.get(key)
        if value not in (None, ""):
            return str(value)
    return bundle.checksum[:12]


def smoke_test(bundle: ModelBundle) -> None:
    """Predict the first reference rows and require finite output of the right shape.

    Raises:
        ModelLoadError: the prediction fails or is not finite.
    """
    n_features = len(bundle.feature_names)
    sample = bundle.reference_sample
    if sample is not None and sample.ndim == 2 and sample.shape[1] == n_features and len(sample):
        rows = np.asarray(sample[:SMOKE_ROWS], dtype=float)
    else:
        means = [bundle.reference_stats.get(name, {}).get("mean") for name in bundle.feature_names]
        if any(m is None for m in means):
            raise ModelLoadError(
                "bundle has neither a reference sample nor feature means", reason="smoke"
            )
        rows = np.asarray([means], dtype=float)
    try:
        point, lower, upper = bundle.predict_with_interval(rows)
    except Exception as exc:  # any failure of a foreign model refuses it
        raise ModelLoadError(
            f"smoke prediction failed: {type(exc).__name__}: {exc}", reason="smoke"
        ) from exc
    for label, output in (("prediction", point), ("lower", lower), ("upper", upper)):
        values = np.asarray(output)
        if values.shape != (len(rows),):
            raise ModelLoadError(
                f"smoke {label} has shape {values.shape}, not ({len(rows)},)", reason="smoke"
            )
        if not np.all(np.isfinite(values)):
            raise ModelLoadError(
                f"smoke {label} is not finite on the reference sample", reason="smoke"
            )


def build_served_model(
    bundle: ModelBundle,
    *,
    name: str,
    version: str | None,
    alias: str,
    source: str,
    path: Path,
) -> ServedModel:
    """Wrap a loaded bundle with what the hot path needs (after :func:`smoke_test`)."""
    lower, upper = training_bounds(bundle.feature_names, bundle.reference_stats)
    if bundle.max_horizon_hours is not None and HORIZON in bundle.feature_names:
        # trained at one horizon, serving every one: a lead time is never out of range
        at = bundle.feature_names.index(HORIZON)
        lower[at], upper[at] = 1.0, float(bundle.max_horizon_hours)
    return ServedModel(
        bundle=bundle,
        name=name,
        version=_version_of(bundle, version),
        alias=alias,
        source=source,
        path=path,
        loaded_at=datetime.now(UTC),
        feature_index={n: i for i, n in enumerate(bundle.feature_names)},
        lower_bounds=lower,
        upper_bounds=upper,
        profile=ReferenceProfile.build(
            bundle.feature_names, bundle.reference_stats, bundle.reference_sample
        ),
    )
