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

from rps.features.spec import HORIZON, SAME_HOUR
from rps.files import write_atomic
from rps.models.single_row import BoosterPredictor

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
    # row-wise histograms grow the same trees as col-wise (checked on the CV folds and the
    # horizon groups) in ~10 % less time per round on these few thousand rows of ~100
    # features (docs/BENCHMARKS.md "Training")
    "force_row_wise": True,
    "max_bin": 127,
}

FitInfo = dict[str, Any]
#: validation rows and labels (early stopping), or None
ValidRows = tuple[np.ndarray, np.ndarray] | None


class ForecasterError(RuntimeError):
    """A forecaster cannot be fitted or built (the message names the problem)."""


@dataclass(frozen=True)
class TrainingRows:
    """What a forecaster learns its parameters from."""

    x: np.ndarray
    y: np.ndarray
    spec: FeatureSpec
    hyper: Mapping[str, Any]
    sample_weight: np.ndarray | None = None
    # True for the rows of a new regime (at or after a drift onset); None: one regime
    regime: np.ndarray | None = None


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
        cls, rows: TrainingRows, *, seed: int = 0, valid: ValidRows = None
    ) -> tuple[Forecaster, FitInfo]:
        """Fit on ``rows``; ``valid`` (rows and labels) enables early stopping (LightGBM).

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
        cls, rows: TrainingRows, *, seed: int = 0, valid: ValidRows = None
    ) -> tuple[Any, FitInfo]:
        """Fit on ``rows`` (see :class:`Forecaster`)."""
        params = cls.fit_params(rows)
        return cls(rows.spec.feature_names, {"target": rows.spec.target, **params}), {}

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
    if spec.horizon_features:
        return SAME_HOUR[0]  # right at every horizon of a stacked row
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
        z = scaler.transform(rows.x)
        regime_alpha = rows.hyper.get("regime_alpha")
        regime = rows.regime
        if regime_alpha is not None and regime is not None and 0 < regime.sum() < len(regime):
            from rps.models.regime import regime_ridge

            coef, intercept = regime_ridge(
                z,
                rows.y,
                weight=weight,
                regime=regime,
                alpha=alpha,
                regime_alpha=float(regime_alpha),
            )
        else:
            model = Ridge(alpha=alpha).fit(z, rows.y, sample_weight=weight)
            coef, intercept = np.asarray(model.coef_, dtype=float), float(model.intercept_)
        return {
            "alpha": alpha,
            "mean": scaler.mean_.tolist(),
            "scale": scaler.scale_.tolist(),
            "coef": coef.tolist(),
            "intercept": intercept,
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


def _train_booster(
    rows: TrainingRows,
    keep: np.ndarray | slice,
    labels: np.ndarray,
    *,
    rounds: int,
    seed: int,
    valid: ValidRows,
) -> tuple[Any, int]:
    """A LightGBM Booster on ``rows.x[keep]`` and ``labels``; early stopping on ``valid``.

    Returns:
        The booster and its number of rounds (the best iteration with ``valid``).
    """
    import lightgbm as lgb

    params, default_rounds = lightgbm_params(rows.hyper, seed)
    weight = None if rows.sample_weight is None else rows.sample_weight[keep]
    train_set = lgb.Dataset(
        rows.x[keep],
        labels,
        weight=weight,
        feature_name=rows.spec.feature_names,
        free_raw_data=True,
        params=params,
    )
    rounds = rounds or default_rounds
    if valid is None or len(valid[1]) == 0:
        return lgb.train(params, train_set, num_boost_round=rounds), rounds
    valid_set = lgb.Dataset(valid[0], valid[1], reference=train_set)
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=rounds,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    return booster, int(booster.best_iteration or rounds)


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
        self._predict_booster = BoosterPredictor(booster)

    @classmethod
    def fit(
        cls, rows: TrainingRows, *, seed: int = 0, valid: ValidRows = None
    ) -> tuple[LightGBMForecaster, FitInfo]:
        booster, best = _train_booster(rows, slice(None), rows.y, rounds=0, seed=seed, valid=valid)
        stored: dict[str, Any] = {"target": rows.spec.target, "hyperparams": dict(rows.hyper)}
        stored["num_boost_round"] = best
        return cls(rows.spec.feature_names, stored, booster), {"best_iteration": best}

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self._predict_booster(self._rows(rows))

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


#: the first lead time of each group of horizons that one LightGBM model forecasts
DEFAULT_GROUP_STARTS: tuple[int, ...] = (1, 2, 3, 4, 7, 13, 25)
#: keys of a horizon model's hyperparameters that are not LightGBM's
GROUP_STARTS, GROUP_ROUNDS, MAX_HORIZON = "group_starts", "group_rounds", "max_horizon"


class HorizonForecaster(_JsonForecaster):
    """Direct multi-horizon forecasts: one LightGBM per group of lead times.

    A row carries its lead time (the ``horizon_hours`` feature) and goes to the model of its
    group, which forecasts the change of the target from the issue time. Horizons listed in
    ``params["fallback"]`` are served by a baseline (``persistence``: the target now;
    ``seasonal_naive``: the target at the same hour a day earlier), chosen where the model
    does not beat it. Stored as ``model_hNN.txt`` per group (NN: its first horizon).
    """

    kind: ClassVar[str] = "lightgbm_horizons"

    def __init__(
        self,
        feature_names: list[str],
        params: Mapping[str, Any] | None = None,
        boosters: Mapping[int, Any] | None = None,
    ) -> None:
        super().__init__(feature_names, params)
        if HORIZON not in self._index or self._target_col is None:
            raise ForecasterError(f"a horizon model needs the features {HORIZON} and the target")
        self._horizon_col = self._index[HORIZON]
        self._same_hour_col = self._index.get(SAME_HOUR[0])
        self.starts = np.asarray(sorted(int(s) for s in self.params[GROUP_STARTS]))
        self.max_horizon = int(self.params[MAX_HORIZON])
        self.boosters = dict(boosters or {})
        self._predict_boosters = {s: BoosterPredictor(b) for s, b in self.boosters.items()}
        self.fallback = {int(h): str(b) for h, b in self.params.get("fallback", {}).items()}
        # served by a baseline, by horizon (index 0 unused): 1 persistence, 2 seasonal naive
        self._baseline_of = np.zeros(self.max_horizon + 1, dtype=np.int8)
        for horizon, baseline in self.fallback.items():
            seasonal = baseline == "seasonal_naive" and self._same_hour_col is not None
            self._baseline_of[horizon] = 2 if seasonal else 1

    @classmethod
    def fit(
        cls, rows: TrainingRows, *, seed: int = 0, valid: ValidRows = None
    ) -> tuple[HorizonForecaster, FitInfo]:
        """One model per group holding training rows (``hyper`` may set ``group_starts``,
        ``group_rounds`` (start -> rounds) and ``max_horizon``); the groups fit side by side."""
        from rps.models.parallel import in_order  # training only: not in a served model's code

        hyper = dict(rows.hyper)
        starts = sorted(int(s) for s in hyper.pop(GROUP_STARTS, DEFAULT_GROUP_STARTS))
        by_group = {int(k): int(v) for k, v in dict(hyper.pop(GROUP_ROUNDS, {})).items()}
        names = rows.spec.feature_names
        target_col, horizon_col = names.index(rows.spec.target), names.index(HORIZON)
        horizons = rows.x[:, horizon_col].astype(int)
        max_horizon = int(hyper.pop(MAX_HORIZON, horizons.max()))
        now = rows.x[:, target_col]
        plain = TrainingRows(rows.x, rows.y, rows.spec, hyper, rows.sample_weight)
        group = group_index(starts, horizons)

        def fit_group(g: int) -> tuple[Any, int]:
            keep = np.flatnonzero(group == g)
            valid_g = None
            if valid is not None:
                in_group = group_index(starts, valid[0][:, horizon_col].astype(int)) == g
                x_v = valid[0][in_group]
                valid_g = (x_v, valid[1][in_group] - x_v[:, target_col])
            labels, rounds_g = rows.y[keep] - now[keep], by_group.get(starts[g], 0)
            return _train_booster(plain, keep, labels, rounds=rounds_g, seed=seed, valid=valid_g)

        groups = [int(g) for g in np.unique(group)]
        boosters: dict[int, Any] = {}
        rounds: dict[str, int] = {}
        for g, (booster, best) in zip(groups, in_order(fit_group, groups), strict=True):
            boosters[starts[g]], rounds[str(starts[g])] = booster, best
        stored = {
            "target": rows.spec.target,
            "hyperparams": hyper,
            GROUP_STARTS: starts,
            MAX_HORIZON: max_horizon,
            "num_boost_round": rounds,
            "fallback": {},
        }
        info: FitInfo = {
            "best_iteration": round(float(np.mean(list(rounds.values())))),
            "best_iterations": {int(k): v for k, v in rounds.items()},
        }
        return cls(names, stored, boosters), info

    def with_fallback(self, fallback: Mapping[int, str]) -> HorizonForecaster:
        """The same models, with ``fallback`` (horizon -> baseline) serving those horizons."""
        unknown = set(fallback.values()) - {"persistence", "seasonal_naive"}
        if unknown:
            raise ForecasterError(f"unknown fallback baselines {sorted(unknown)}")
        params = {**self.params, "fallback": {str(h): b for h, b in sorted(fallback.items())}}
        return HorizonForecaster(self.feature_names, params, self.boosters)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        x = self._rows(rows)
        horizons = x[:, self._horizon_col].astype(int)
        if horizons.size and (horizons.min() < 1 or horizons.max() > self.max_horizon):
            raise ForecasterError(f"this model forecasts horizons 1..{self.max_horizon} h")
        now = x[:, self._target_col]
        out = now.copy()  # persistence, kept where it serves
        baseline = self._baseline_of[horizons]
        if self._same_hour_col is not None:
            out[baseline == 2] = x[baseline == 2, self._same_hour_col]
        learned = baseline == 0
        group = group_index(self.starts.tolist(), horizons)
        for g in np.unique(group[learned]):
            booster = self._predict_boosters.get(int(self.starts[g]))
            if booster is None:
                raise ForecasterError(f"no model for the horizons from {self.starts[g]} h")
            keep = learned & (group == g)
            out[keep] += booster(x[keep])
        return out

    def importance(self) -> np.ndarray:
        """Total split gain per feature, summed over the groups."""
        total = np.zeros(len(self.feature_names))
        for booster in self.boosters.values():
            total += np.asarray(booster.feature_importance("gain"), dtype=float)
        return total

    def save(self, directory: Path) -> list[str]:
        files = []
        for start, booster in sorted(self.boosters.items()):
            name = f"model_h{start:02d}.txt"
            booster.save_model(str(directory / name))
            files.append(name)
        return [*files, *super().save(directory)]

    @classmethod
    def load(
        cls, directory: Path, feature_names: list[str], params: dict[str, Any]
    ) -> HorizonForecaster:
        import lightgbm

        boosters = {
            int(start): lightgbm.Booster(model_file=str(directory / f"model_h{int(start):02d}.txt"))
            for start in params["num_boost_round"]
        }
        return cls(feature_names, params, boosters)


def group_index(starts: list[int], horizons: np.ndarray) -> np.ndarray:
    """The index of each horizon's group (the last start at or below it)."""
    out: np.ndarray = np.searchsorted(np.asarray(starts), horizons, side="right") - 1
    return out


#: the on-disk kind (``bundle.json``) -> its class
FORECASTER_KINDS: dict[str, type[_JsonForecaster]] = {
    cls.kind: cls
    for cls in (
        PersistenceForecaster,
        SeasonalNaiveForecaster,
        ClimatologyForecaster,
        RidgeForecaster,
        LightGBMForecaster,
        HorizonForecaster,
    )
}
#: training's candidate name -> its class
CANDIDATES: dict[str, type[_JsonForecaster]] = {
    "persistence": PersistenceForecaster,
    "seasonal_naive": SeasonalNaiveForecaster,
    "climatology": ClimatologyForecaster,
    "ridge": RidgeForecaster,
    "lightgbm": HorizonForecaster,
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
    if cls is HorizonForecaster:
        return HorizonForecaster(feature_names, params, booster)
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
