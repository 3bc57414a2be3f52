"""One class per model kind behind one :class:`Forecaster` protocol.

Each forecaster fits on feature rows (columns in ``feature_names`` order), predicts, reports
a per-feature importance, and saves itself into / loads itself from a bundle directory. The
kind string is written to ``bundle.json`` and decides the class on load
(:data:`FORECASTER_KINDS`); the candidate names training uses map to classes through
:data:`CANDIDATES` (the ridge candidate is stored as kind ``linear``, as bundles always were).

Importing this module needs NumPy only, and so does predicting with every kind but
LightGBM: scikit-learn and LightGBM are imported inside ``fit`` (and LightGBM inside
``load``), so a server loading a ridge or baseline bundle never imports them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from rps.files import write_atomic

if TYPE_CHECKING:
    from rps.features.spec import FeatureSpec

PARAMS_FILE = "params.json"
MODEL_FILE = "model.txt"
EARLY_STOPPING_ROUNDS = 30
#: LightGBM parameters sampled as integers
INT_PARAMS = frozenset(
    {"num_leaves", "n_estimators", "min_child_samples", "min_data_in_leaf", "max_depth", "max_bin"}
)
LIGHTGBM_FIXED: dict[str, Any] = {
    "objective": "regression",
    "verbosity": -1,
    "num_threads": 1,  # 2 threads on 2 shared cores is slower and less predictable
    "deterministic": True,
    "force_col_wise": True,
    "max_bin": 127,
}

FitInfo = dict[str, Any]


class ForecasterError(RuntimeError):
    """A forecaster cannot be fitted or built (the message names the problem)."""


@runtime_checkable
class Forecaster(Protocol):
    """Maps feature rows to point forecasts; saved in and loaded from a bundle directory."""

    kind: ClassVar[str]
    feature_names: list[str]
    params: dict[str, Any]

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Point forecasts for a 2-D array of feature rows."""
        ...

    def importance(self) -> np.ndarray:
        """One non-negative importance per feature."""
        ...

    def save(self, directory: Path) -> list[str]:
        """Write the model files into ``directory``; return their names."""
        ...

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        spec: FeatureSpec,
        hyper: Mapping[str, Any],
        *,
        seed: int = 0,
        valid: tuple[np.ndarray, np.ndarray] | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> tuple[Forecaster, FitInfo]:
        """Fit on rows ``x`` and labels ``y``; ``valid`` enables early stopping (LightGBM).

        Returns:
            The fitted forecaster and fit details (LightGBM: ``best_iteration``).
        """
        ...

    @classmethod
    def load(cls, directory: Path, feature_names: list[str], params: dict[str, Any]) -> Forecaster:
        """The forecaster saved in ``directory`` (``params`` read from its ``params.json``)."""
        ...


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str))


@dataclass(frozen=True)
class TrainingRows:
    """What a forecaster learns its parameters from."""

    x: np.ndarray
    y: np.ndarray
    spec: FeatureSpec
    hyper: Mapping[str, Any]
    sample_weight: np.ndarray | None = None


class _JsonForecaster:
    """A forecaster whose whole state is ``params`` (stored as ``params.json``)."""

    kind: ClassVar[str] = ""

    def __init__(self, feature_names: list[str], params: Mapping[str, Any] | None = None) -> None:
        self.feature_names = list(feature_names)
        self.params: dict[str, Any] = dict(params or {})
        self._index = {name: i for i, name in enumerate(self.feature_names)}
        self._target_col = self._index.get(str(self.params.get("target", "temperature_2m")))

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=float)
        if rows.ndim != 2 or rows.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected rows of {len(self.feature_names)} features, got {rows.shape}"
            )
        return rows

    def _one_hot(self, name: object) -> np.ndarray:
        out = np.zeros(len(self.feature_names))
        if name in self._index:
            out[self._index[str(name)]] = 1.0
        return out

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        spec: FeatureSpec,
        hyper: Mapping[str, Any],
        *,
        seed: int = 0,
        valid: tuple[np.ndarray, np.ndarray] | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> tuple[Any, FitInfo]:
        """Fit on rows ``x`` and labels ``y`` (see :class:`Forecaster`)."""
        params = cls.fit_params(TrainingRows(x, y, spec, hyper, sample_weight))
        return cls(spec.feature_names, {"target": spec.target, **params}), {}

    @classmethod
    def fit_params(cls, rows: TrainingRows) -> dict[str, Any]:
        """The parameters learned from the rows (none for a baseline)."""
        return {}

    def save(self, directory: Path) -> list[str]:
        _write_json(directory / PARAMS_FILE, self.params)
        return [PARAMS_FILE]

    @classmethod
    def load(cls, directory: Path, feature_names: list[str], params: dict[str, Any]) -> Any:
        return cls(feature_names, params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, features={len(self.feature_names)})"


class PersistenceForecaster(_JsonForecaster):
    """The target now is the forecast."""

    kind: ClassVar[str] = "persistence"

    def predict(self, rows: np.ndarray) -> np.ndarray:
        if self._target_col is None:
            raise ForecasterError(f"the features lack the target {self.params.get('target')}")
        out: np.ndarray = self._rows(rows)[:, self._target_col].copy()
        return out

    def importance(self) -> np.ndarray:
        return self._one_hot(self.params.get("target"))


def seasonal_feature(spec: FeatureSpec) -> str | None:
    """The feature holding the target 24 h before the target time (None when absent)."""
    lag = (-spec.horizon_hours) % 24
    name = spec.target if lag == 0 else f"{spec.target}_lag{lag}"
    return name if name in spec.feature_names else None


class SeasonalNaiveForecaster(_JsonForecaster):
    """The target 24 h before the target time is the forecast."""

    kind: ClassVar[str] = "seasonal_naive"

    def __init__(self, feature_names: list[str], params: Mapping[str, Any] | None = None) -> None:
        super().__init__(feature_names, params)
        self._seasonal_col = self._index[str(self.params["seasonal_feature"])]

    @classmethod
    def fit_params(cls, rows: TrainingRows) -> dict[str, Any]:
        feature = seasonal_feature(rows.spec)
        if feature is None:
            raise ForecasterError(f"no seasonal feature for horizon {rows.spec.horizon_hours} h")
        return {"seasonal_feature": feature}

    def predict(self, rows: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._rows(rows)[:, self._seasonal_col].copy()
        return out

    def importance(self) -> np.ndarray:
        return self._one_hot(self.params.get("seasonal_feature"))


class ClimatologyForecaster(_JsonForecaster):
    """The (weighted) mean target of the training rows at the same target hour."""

    kind: ClassVar[str] = "climatology"

    def __init__(self, feature_names: list[str], params: Mapping[str, Any] | None = None) -> None:
        super().__init__(feature_names, params)
        self._hour_col = self._index["target_hour"]
        self._by_hour = np.asarray(self.params["by_hour"], dtype=float)

    @classmethod
    def fit_params(cls, rows: TrainingRows) -> dict[str, Any]:
        y, names = rows.y, rows.spec.feature_names
        hours = rows.x[:, names.index("target_hour")].astype(int) % 24
        weight = np.ones(len(y)) if rows.sample_weight is None else np.asarray(rows.sample_weight)
        overall = float(np.average(y, weights=weight))
        by_hour = [
            float(np.average(y[hours == h], weights=weight[hours == h]))
            if weight[hours == h].sum() > 0
            else overall
            for h in range(24)
        ]
        return {"by_hour": by_hour}

    def predict(self, rows: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._by_hour[self._rows(rows)[:, self._hour_col].astype(int) % 24]
        return out

    def importance(self) -> np.ndarray:
        return self._one_hot("target_hour")


class RidgeForecaster(_JsonForecaster):
    """Ridge regression on standardised features; predicts from stored coefficients (NumPy)."""

    kind: ClassVar[str] = "linear"

    def __init__(self, feature_names: list[str], params: Mapping[str, Any] | None = None) -> None:
        super().__init__(feature_names, params)
        self._mean = np.asarray(self.params["mean"], dtype=float)
        self._scale = np.asarray(self.params["scale"], dtype=float)
        self._coef = np.asarray(self.params["coef"], dtype=float)
        self._intercept = float(self.params["intercept"])

    @classmethod
    def fit_params(cls, rows: TrainingRows) -> dict[str, Any]:
        from sklearn.linear_model import Ridge
        from sklearn.preprocessing import StandardScaler

        alpha = float(rows.hyper.get("alpha", 1.0))
        weight = rows.sample_weight
        scaler = StandardScaler().fit(rows.x, sample_weight=weight)
        model = Ridge(alpha=alpha).fit(scaler.transform(rows.x), rows.y, sample_weight=weight)
        return {
            "alpha": alpha,
            "mean": scaler.mean_.tolist(),
            "scale": scaler.scale_.tolist(),
            "coef": np.asarray(model.coef_, dtype=float).tolist(),
            "intercept": float(model.intercept_),
        }

    def predict(self, rows: np.ndarray) -> np.ndarray:
        out: np.ndarray = ((self._rows(rows) - self._mean) / self._scale) @ self._coef
        return out + self._intercept

    def importance(self) -> np.ndarray:
        """|standardised coefficient| per feature."""
        out: np.ndarray = np.abs(self._coef)
        return out


def lightgbm_params(hyper: Mapping[str, Any], seed: int) -> tuple[dict[str, Any], int]:
    """LightGBM's parameters and the number of boosting rounds for hyperparameters."""
    params = {**LIGHTGBM_FIXED, "seed": seed}
    rounds = 300
    for key, value in hyper.items():
        if key in ("n_estimators", "num_boost_round", "num_iterations"):
            rounds = int(value)
        else:
            params[key] = int(value) if key in INT_PARAMS else value
    return params, max(1, rounds)


class LightGBMForecaster(_JsonForecaster):
    """Gradient-boosted trees (a LightGBM Booster, stored as its text model)."""

    kind: ClassVar[str] = "lightgbm"

    def __init__(
        self,
        feature_names: list[str],
        params: Mapping[str, Any] | None = None,
        booster: Any = None,
    ) -> None:
        super().__init__(feature_names, params)
        if booster is None:
            raise ForecasterError("a LightGBM forecaster needs its booster")
        self.booster = booster

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        spec: FeatureSpec,
        hyper: Mapping[str, Any],
        *,
        seed: int = 0,
        valid: tuple[np.ndarray, np.ndarray] | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> tuple[LightGBMForecaster, FitInfo]:
        import lightgbm as lgb

        names = spec.feature_names
        params, rounds = lightgbm_params(hyper, seed)
        train_set = lgb.Dataset(
            x, y, weight=sample_weight, feature_name=names, free_raw_data=True, params=params
        )
        info: FitInfo = {}
        if valid is not None:
            valid_set = lgb.Dataset(valid[0], valid[1], reference=train_set)
            booster = lgb.train(
                params,
                train_set,
                num_boost_round=rounds,
                valid_sets=[valid_set],
                callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
            )
            info["best_iteration"] = int(booster.best_iteration or rounds)
        else:
            booster = lgb.train(params, train_set, num_boost_round=rounds)
            info["best_iteration"] = rounds
        stored = {
            "target": spec.target,
            "hyperparams": dict(hyper),
            "num_boost_round": info["best_iteration"],
        }
        return cls(names, stored, booster), info

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(self._rows(rows), num_threads=1), dtype=float)

    def importance(self) -> np.ndarray:
        """Total split gain per feature."""
        return np.asarray(self.booster.feature_importance("gain"), dtype=float)

    def save(self, directory: Path) -> list[str]:
        self.booster.save_model(str(directory / MODEL_FILE))
        return [MODEL_FILE, *super().save(directory)]

    @classmethod
    def load(
        cls, directory: Path, feature_names: list[str], params: dict[str, Any]
    ) -> LightGBMForecaster:
        import lightgbm

        return cls(feature_names, params, lightgbm.Booster(model_file=str(directory / MODEL_FILE)))


#: the on-disk kind (``bundle.json``) -> its class
FORECASTER_KINDS: dict[str, type[_JsonForecaster]] = {
    cls.kind: cls
    for cls in (
        PersistenceForecaster,
        SeasonalNaiveForecaster,
        ClimatologyForecaster,
        RidgeForecaster,
        LightGBMForecaster,
    )
}
#: training's candidate name -> its class
CANDIDATES: dict[str, type[_JsonForecaster]] = {
    "persistence": PersistenceForecaster,
    "seasonal_naive": SeasonalNaiveForecaster,
    "climatology": ClimatologyForecaster,
    "ridge": RidgeForecaster,
    "lightgbm": LightGBMForecaster,
}


def make_forecaster(
    kind: str,
    feature_names: list[str],
    params: Mapping[str, Any] | None = None,
    booster: Any = None,
) -> Forecaster:
    """A forecaster of an on-disk ``kind`` from its stored parameters (and LightGBM booster).

    Raises:
        ForecasterError: an unknown kind.
    """
    cls = FORECASTER_KINDS.get(kind)
    if cls is None:
        raise ForecasterError(f"unknown model kind {kind!r}")
    if cls is LightGBMForecaster:
        return LightGBMForecaster(feature_names, params, booster)
    forecaster: Forecaster = cls(feature_names, params)  # type: ignore[assignment]
    return forecaster


def load_forecaster(
    directory: Path, kind: str, feature_names: list[str], params: dict[str, Any]
) -> Forecaster:
    """Load the forecaster a bundle directory holds (``params`` from its ``params.json``)."""
    cls = FORECASTER_KINDS.get(kind)
    if cls is None:
        raise ForecasterError(f"unknown model kind {kind!r}")
    forecaster: Forecaster = cls.load(directory, feature_names, params)
    return forecaster
