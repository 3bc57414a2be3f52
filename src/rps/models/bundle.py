"""The model bundle: a self-contained directory the trainer writes and the server loads.

Layout::

    bundle.json             kind, feature spec, interval, metrics, lineage
    model.txt | params.json the predictor (LightGBM text model, or JSON parameters)
    reference_stats.json    per-feature training statistics for drift detection
    reference_sample.npy    a sample of training feature rows (KS tests)
    checksums.json          sha256 of every other file, verified on load

The same directory is logged to MLflow as the artifacts of a pyfunc model, so a bundle can be
fetched by alias from the registry or baked into an image, and is always loaded natively
(the LightGBM Booster, not a generic wrapper) for low latency.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rps.features.build import FeatureSpec

BUNDLE_FORMAT = 1
ModelKind = Literal["persistence", "seasonal_naive", "climatology", "linear", "lightgbm"]
MODEL_KINDS: tuple[str, ...] = (
    "persistence",
    "seasonal_naive",
    "climatology",
    "linear",
    "lightgbm",
)


class BundleError(RuntimeError):
    """A bundle is missing, incomplete, corrupted or of an unknown kind."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Predictor:
    """Maps feature rows (columns in ``feature_names`` order) to point forecasts."""

    kind: str
    feature_names: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    booster: Any = None  # lightgbm.Booster for kind == "lightgbm"

    def __post_init__(self) -> None:
        index = {name: i for i, name in enumerate(self.feature_names)}
        target = self.params.get("target", "temperature_2m")
        self._target_col = index.get(target)
        if self.kind == "seasonal_naive":
            self._seasonal_col = index[str(self.params["seasonal_feature"])]
        if self.kind == "climatology":
            self._hour_col = index["target_hour"]
            self._by_hour = np.asarray(self.params["by_hour"], dtype=float)
        if self.kind == "linear":
            self._mean = np.asarray(self.params["mean"], dtype=float)
            self._scale = np.asarray(self.params["scale"], dtype=float)
            self._coef = np.asarray(self.params["coef"], dtype=float)
            self._intercept = float(self.params["intercept"])

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Point forecasts for a 2-D array of feature rows."""
        rows = np.asarray(rows, dtype=float)
        if rows.ndim != 2 or rows.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected rows of {len(self.feature_names)} features, got {rows.shape}"
            )
        if self.kind == "persistence":
            return rows[:, self._target_col].copy()
        if self.kind == "seasonal_naive":
            return rows[:, self._seasonal_col].copy()
        if self.kind == "climatology":
            by_hour: np.ndarray = self._by_hour[rows[:, self._hour_col].astype(int) % 24]
            return by_hour
        if self.kind == "linear":
            linear: np.ndarray = ((rows - self._mean) / self._scale) @ self._coef + self._intercept
            return linear
        if self.kind == "lightgbm":
            return np.asarray(self.booster.predict(rows, num_threads=1), dtype=float)
        raise BundleError(f"unknown model kind {self.kind!r}")


@dataclass
class ModelBundle:
    """A predictor with everything needed to serve and monitor it."""

    predictor: Predictor
    feature_spec: FeatureSpec
    interval: dict[str, float]  # {"alpha": 0.1, "lower": q_lo, "upper": q_hi} residual offsets
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    reference_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference_sample: np.ndarray | None = None
    checksum: str = ""

    @property
    def kind(self) -> str:
        return self.predictor.kind

    @property
    def feature_names(self) -> list[str]:
        return self.predictor.feature_names

    def predict_with_interval(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point forecasts and the calibrated interval bounds."""
        point = self.predictor.predict(rows)
        return point, point + self.interval["lower"], point + self.interval["upper"]

    def save(self, directory: Path) -> Path:
        """Write the bundle into ``directory`` (created; must not hold another bundle)."""
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / "bundle.json").exists():
            raise BundleError(f"{directory} already holds a bundle; refusing to overwrite")
        files: list[str] = []
        if self.predictor.kind == "lightgbm":
            self.predictor.booster.save_model(str(directory / "model.txt"))
            files.append("model.txt")
        else:
            _write_json(directory / "params.json", self.predictor.params)
            files.append("params.json")
        if self.predictor.kind == "lightgbm":
            _write_json(directory / "params.json", self.predictor.params)
            files.append("params.json")
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
        _write_json(directory / "bundle.json", meta)
        files.append("bundle.json")
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
    if (root / "bundle.json").exists():
        return root
    found = sorted(root.rglob("bundle.json"))
    if not found:
        raise BundleError(f"no bundle.json under {root}")
    return found[0].parent


def load_bundle(directory: Path, *, verify: bool = True) -> ModelBundle:
    """Load a bundle, verifying every file's checksum.

    Raises:
        BundleError: a file is missing, a checksum differs, or the format is unknown.
    """
    directory = find_bundle_dir(Path(directory))
    try:
        checksums: dict[str, str] = json.loads((directory / "checksums.json").read_text())
        meta = json.loads((directory / "bundle.json").read_text())
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
    kind = meta.get("kind")
    if kind not in MODEL_KINDS:
        raise BundleError(f"unknown model kind {kind!r}")
    params = json.loads((directory / "params.json").read_text())
    booster = None
    if kind == "lightgbm":
        import lightgbm

        booster = lightgbm.Booster(model_file=str(directory / "model.txt"))
    predictor = Predictor(
        kind=kind, feature_names=list(meta["feature_names"]), params=params, booster=booster
    )
    sample_path = directory / "reference_sample.npy"
    return ModelBundle(
        predictor=predictor,
        feature_spec=FeatureSpec.from_dict(meta["feature_spec"]),
        interval={k: float(v) for k, v in meta["interval"].items()},
        metrics={k: float(v) for k, v in meta.get("metrics", {}).items()},
        lineage=dict(meta.get("lineage", {})),
        reference_stats=json.loads((directory / "reference_stats.json").read_text()),
        reference_sample=np.load(sample_path) if sample_path.exists() else None,
        checksum=bundle_digest(checksums),
    )


def _write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
    Path(tmp).replace(path)
