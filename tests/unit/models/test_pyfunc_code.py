"""The rps modules a logged pyfunc carries: what importing the pyfunc executes, and enough."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rps
from rps.models.artifacts import pip_requirements
from rps.models.bundle import ModelBundle
from rps.models.candidates import fit_candidate
from rps.models.pyfunc_code import import_closure, stage_package
from rps.models.splits import prepare_data

SRC = Path(rps.__file__).resolve().parents[1]


def test_the_pyfunc_closure_holds_the_bundle_modules_and_nothing_of_the_pipeline() -> None:
    closure = import_closure()
    for module in (
        "rps",
        "rps.models",
        "rps.models.pyfunc",
        "rps.models.bundle",
        "rps.models.forecasters",
        "rps.features.spec",
        "rps.files",
    ):
        assert module in closure, module
    for heavy in ("rps.params", "rps.settings", "rps.models.train", "rps.features.build"):
        assert heavy not in closure, heavy


def test_imports_inside_functions_and_under_type_checking_are_not_followed() -> None:
    """The feature spec imports the params for type checking only; the features package
    imports its pandas builder inside ``__getattr__``."""
    assert import_closure("rps.features.spec") == ["rps", "rps.features", "rps.features.spec"]
    assert import_closure("rps.models.forecasters") == [
        "rps",
        "rps.features",
        "rps.features.spec",
        "rps.files",
        "rps.models",
        "rps.models.forecasters",
        "rps.models.single_row",
    ]
    assert import_closure("rps.features") == ["rps", "rps.features"]


def test_an_unknown_module_is_refused_by_name() -> None:
    with pytest.raises(ModuleNotFoundError, match=r"rps\.models\.nowhere is not a module"):
        import_closure("rps.models.nowhere")


def test_requirements_pin_what_serving_a_kind_needs_and_not_rps() -> None:
    lightgbm = pip_requirements("lightgbm")
    names = [pin.split("==")[0] for pin in lightgbm]
    assert names == ["mlflow-skinny", "numpy", "pandas", "filelock", "lightgbm"]
    assert all("==" in pin for pin in lightgbm)
    assert "lightgbm" not in [pin.split("==")[0] for pin in pip_requirements("linear")]
    assert pip_requirements("lightgbm_horizons") == lightgbm  # the trajectory's group models


@pytest.mark.slow  # a fresh interpreter importing MLflow
def test_a_bundle_loads_and_predicts_from_the_staged_package_alone(
    small_obs: pd.DataFrame, spec, params, tmp_path: Path
) -> None:
    """An interpreter whose ``rps`` is only the staged copy runs the pyfunc on a LightGBM
    bundle and forecasts what the bundle forecasts here."""
    data = prepare_data(small_obs, spec, params.train)
    x, y = data.x[data.train_pos], data.y[data.train_pos]
    forecaster, _ = fit_candidate("lightgbm", x, y, spec, {"n_estimators": 20}, seed=0)
    bundle_dir = ModelBundle(
        predictor=forecaster,
        feature_spec=spec,
        interval={"alpha": 0.1, "lower": -1.0, "upper": 1.0},
        reference_sample=x[:8],
    ).save(tmp_path / "bundle")
    staged = stage_package(tmp_path / "code")
    np.save(tmp_path / "rows.npy", x[:5])
    code = f"""
import json, sys
from pathlib import Path
from types import SimpleNamespace
import numpy as np
import pandas as pd
src = Path({str(SRC)!r})
sys.path = [{str(staged.parent)!r}] + [p for p in sys.path if Path(p).resolve() != src]
from rps.models.pyfunc import BundlePythonModel
import rps
model = BundlePythonModel()
model.load_context(SimpleNamespace(artifacts={{"bundle": {str(bundle_dir)!r}}}))
rows = pd.DataFrame(np.load({str(tmp_path / "rows.npy")!r}), columns={spec.feature_names!r})
out = model.predict(None, rows)
print(json.dumps({{"rps": rps.__file__, "prediction": out["prediction"].tolist()}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["rps"]).is_relative_to(staged)
    np.testing.assert_allclose(result["prediction"], forecaster.predict(x[:5]))
