"""The model bundle: a self-contained directory the trainer writes and the server loads.

Layout::

    bundle.json             kind, feature spec, interval, metrics, lineage; for a trajectory
                            model also horizon_interval and metrics_by_horizon
    model*.txt, params.json the predictor (LightGBM text model(s), and JSON parameters)
    reference_stats.json    per-feature training statistics for drift detection
    reference_sample.npy    a sample of training feature rows (KS tests)
    checksums.json          sha256 of every other file, verified on load

The predictor is a :class:`rps.models.forecasters.Forecaster`; ``bundle.json`` names its
kind and the forecaster class of that kind reads its own files. Loading and predicting need
NumPy only (plus LightGBM for a LightGBM bundle): no pandas, scikit-learn or MLflow, so a
lean server can import this module. The on-disk format is unchanged since format 1; a
trajectory bundle adds two optional keys to ``bundle.json`` (older bundles lack them and
forecast their one horizon with the constant ``interval``).

The same directory is logged to MLflow as the artifacts of a pyfunc model, so a bundle can be
fetched by alias from the registry or baked into an image, and is always loaded natively
(the LightGBM Booster, not a generic wrapper) for low latency.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rps.features.spec import FeatureSpec
from rps.files import file_digest, write_atomic
from rps.models.forecasters import (
    FORECASTER_KINDS,
    Forecaster,
    ForecasterError,
    load_forecaster,
    make_forecaster,
)
from rps.models.intervals import HorizonInterval

BUNDLE_FORMAT = 1
#: the bundle's metadata file; the folder holding it is the bundle
BUNDLE_FILE = "bundle.json"
MODEL_KINDS: tuple[str, ...] = tuple(FORECASTER_KINDS)
#: builds a forecaster from its kind and stored parameters (the name bundles were built with)
Predictor = make_forecaster

__all__ = [
    "BUNDLE_FILE",
    "BUNDLE_FORMAT",
    "MODEL_KINDS",
    "BundleError",
    "Forecaster",
    "ModelBundle",
    "Predictor",
    "bundle_digest",
    "find_bundle_dir",
    "load_bundle",
    "sha256_file",
]


class BundleError(RuntimeError):
    """A bundle is missing, incomplete, corrupted or of an unknown kind."""


def sha256_file(path: Path) -> str:
    """The sha256 of a bundle file (what ``checksums.json`` records)."""
    return file_digest(path, "sha256")


@dataclass
class ModelBundle:
    """A predictor with everything needed to serve and monitor it."""

    predictor: Forecaster
    feature_spec: FeatureSpec
    interval: dict[str, float]  # {"alpha": 0.1, "lower": q_lo, "upper": q_hi} residual offsets
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    reference_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference_sample: np.ndarray | None = None
    checksum: str = ""
    # a trajectory model: its conditional interval (every horizon) and holdout scores by horizon
    horizon_interval: HorizonInterval | None = None
    metrics_by_horizon: list[dict[str, float]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.predictor.kind

    @property
    def feature_names(self) -> list[str]:
        return self.predictor.feature_names

    @property
    def max_horizon_hours(self) -> int | None:
        """The longest horizon of a trajectory (None: ``feature_spec.horizon_hours`` only)."""
        return None if self.horizon_interval is None else self.horizon_interval.max_hours

    def predict_with_interval(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point forecasts and the calibrated interval bounds (rows of any served horizon)."""
        point = self.predictor.predict(rows)
        if self.horizon_interval is not None:
            lower, upper = self.horizon_interval.bounds(rows, point, self.feature_names)
            return point, lower, upper
        return point, point + self.interval["lower"], point + self.interval["upper"]

    def save(self, directory: Path) -> Path:
        """Write the bundle into ``directory`` (created; must not hold another bundle)."""
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / BUNDLE_FILE).exists():
            raise BundleError(f"{directory} already holds a bundle; refusing to overwrite")
        files = self.predictor.save(directory)
        _write_json(directory / "reference_stats.json", self.reference_stats)
        files.append("reference_stats.json")
        if self.reference_sample is not None:
            np.save(directory / "reference_sample.npy", self.reference_sample)
            files.append("reference_sample.npy")
        meta = {
            "format": BUNDLE_FORMAT,
            "kind": self.predictor.kind,
            "feature_spec": self.feature_spec.to_dict(),
            "feature_names": self.predictor.feature_names,
            "interval": self.interval,
            "metrics": self.metrics,
            "lineage": self.lineage,
        }
        if self.horizon_interval is not None:
            meta["horizon_interval"] = self.horizon_interval.to_dict()
            meta["metrics_by_horizon"] = self.metrics_by_horizon
        _write_json(directory / BUNDLE_FILE, meta)
        files.append(BUNDLE_FILE)
        checksums = {name: sha256_file(directory / name) for name in sorted(files)}
        _write_json(directory / "checksums.json", checksums)
        self.checksum = bundle_digest(checksums)
        return directory


def bundle_digest(checksums: dict[str, str]) -> str:
    """One digest for a whole bundle (what the server and CD compare)."""
    joined = "\n".join(f"{name}:{digest}" for name, digest in sorted(checksums.items()))
    return hashlib.sha256(joined.encode()).hexdigest()


def find_bundle_dir(root: Path) -> Path:
    """The directory under ``root`` that holds ``bundle.json`` (MLflow nests artifacts)."""
    if (root / BUNDLE_FILE).exists():
        return root
    found = sorted(root.rglob(BUNDLE_FILE))
    if not found:
        raise BundleError(f"no {BUNDLE_FILE} under {root}")
    return found[0].parent


def load_bundle(directory: Path, *, verify: bool = True) -> ModelBundle:
    """Load a bundle, verifying every file's checksum.

    Raises:
        BundleError: a file is missing, a checksum differs, or the format is unknown.
    """
    directory = find_bundle_dir(Path(directory))
    try:
        checksums: dict[str, str] = json.loads((directory / "checksums.json").read_text())
        meta = json.loads((directory / BUNDLE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"bundle at {directory} is unreadable: {exc}") from exc
    if verify:
        for name, expected in checksums.items():
            path = directory / name
            if not path.exists():
                raise BundleError(f"bundle file {name} is missing from {directory}")
            actual = sha256_file(path)
            if actual != expected:
                raise BundleError(
                    f"checksum mismatch for {name} in {directory}: {actual[:12]} != {expected[:12]}"
                )
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"bundle format {meta.get('format')!r} is not {BUNDLE_FORMAT}")
    kind = str(meta.get("kind"))
    if kind not in FORECASTER_KINDS:
        raise BundleError(f"unknown model kind {kind!r}")
    try:
        params = json.loads((directory / "params.json").read_text())
        predictor = load_forecaster(directory, kind, list(meta["feature_names"]), params)
    except (OSError, ValueError, KeyError, ForecasterError) as exc:
        raise BundleError(f"the {kind} model in {directory} cannot be loaded: {exc}") from exc
    sample_path = directory / "reference_sample.npy"
    stored_interval = meta.get("horizon_interval")
    horizon_interval = (
        None if stored_interval is None else HorizonInterval.from_dict(stored_interval)
    )
    return ModelBundle(
        predictor=predictor,
        feature_spec=FeatureSpec.from_dict(meta["feature_spec"]),
        interval={k: float(v) for k, v in meta["interval"].items()},
        metrics={k: float(v) for k, v in meta.get("metrics", {}).items()},
        lineage=dict(meta.get("lineage", {})),
        reference_stats=json.loads((directory / "reference_stats.json").read_text()),
        reference_sample=np.load(sample_path) if sample_path.exists() else None,
        checksum=bundle_digest(checksums),
        horizon_interval=horizon_interval,
        metrics_by_horizon=list(meta.get("metrics_by_horizon", [])),
    )


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str))
