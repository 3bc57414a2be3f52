"""The MLflow pyfunc face of a model bundle (imports mlflow: load lazily).

The registry stores each model as a pyfunc whose only artifact is the bundle directory, so
``mlflow.pyfunc.load_model("models:/<name>@champion")`` works for ad-hoc use while the
prediction service reads the bundle natively (:func:`rps.models.bundle.load_bundle`).
The logged model carries this module and the few it imports (``code_paths``,
:mod:`rps.models.pyfunc_code`), so loading it needs no installed ``rps`` package: keep
its imports to the bundle's. MLflow puts that copy first on ``sys.path`` of the process
that loads the model, so a process that has ``rps`` installed and loads the pyfunc hands the
partial copy to the interpreters it spawns afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel

from rps.models.bundle import ModelBundle, load_bundle

BUNDLE_ARTIFACT = "bundle"
OUTPUT_COLUMNS = ("prediction", "lower", "upper")


class BundlePythonModel(PythonModel):  # type: ignore[misc]
    """Feature rows in, point forecast and interval bounds out."""

    # the input schema comes from the explicit signature, not from type hints
    _skip_type_hint_validation = True

    def __init__(self) -> None:
        self._bundle: ModelBundle | None = None

    def load_context(self, context: Any) -> None:
        """Load the bundle from the model's ``bundle`` artifact (checksums verified)."""
        self._bundle = load_bundle(Path(context.artifacts[BUNDLE_ARTIFACT]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Forecast each row of ``model_input`` (columns: the bundle's feature names)."""
        if self._bundle is None:
            self.load_context(context)
        assert self._bundle is not None
        frame = pd.DataFrame(model_input)
        missing = [n for n in self._bundle.feature_names if n not in frame.columns]
        if missing:
            raise ValueError(f"model input lacks feature columns {missing[:5]}")
        rows = frame[self._bundle.feature_names].to_numpy(dtype=float)
        point, lower, upper = self._bundle.predict_with_interval(rows)
        return pd.DataFrame(dict(zip(OUTPUT_COLUMNS, (point, lower, upper), strict=True)))
