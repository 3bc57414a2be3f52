"""Model sources, checksum checks by reason, the stored-observation reader and the request
checks that need no model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from rps.serving.errors import UnavailableError
from rps.serving.model_store import ModelLoadError, verify_checksums
from rps.serving.schemas import PredictRequest
from rps.serving.sources import BundleDirSource, model_source, parse_model_uri
from rps.serving.stored import StoredObservations
from rps.settings import Settings
from tests.unit.serving.bundles import PARAMS_FILE


def test_model_uris_name_an_alias_or_a_version() -> None:
    assert parse_model_uri("models:/m@champion") == ("m", "champion", None)
    assert parse_model_uri("models:/m/3") == ("m", None, "3")
    for bad in ("runs:/abc/model", "models:/m"):
        with pytest.raises(ValueError, match="models:/"):
            parse_model_uri(bad)


def test_the_settings_pick_the_source(tmp_path: Path) -> None:
    """model_dir wins; an http tracking URI gives the REST client; else the mlflow store."""
    bundle = model_source(Settings(model_dir=tmp_path, state_dir=tmp_path))
    assert isinstance(bundle, BundleDirSource) and bundle.mode == "model_dir"
    rest = model_source(Settings(mlflow_tracking_uri="http://127.0.0.1:1", state_dir=tmp_path))
    assert type(rest).__name__ == "RestRegistrySource" and rest.mode == "registry"
    local = model_source(Settings(state_dir=tmp_path))
    assert type(local).__name__ == "MlflowRegistrySource"


def test_a_missing_bundle_folder_is_a_download_refusal(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist") as refused:
        BundleDirSource(tmp_path / "absent").fetch()
    assert refused.value.reason == "download"


def test_checksum_refusals_name_the_file(bundle_dir: Path, tmp_path: Path) -> None:
    """A changed, a missing file and a wrong digest are all 'checksum' refusals."""
    copy = tmp_path / "b"
    shutil.copytree(bundle_dir, copy)
    digest = verify_checksums(copy)
    with pytest.raises(ModelLoadError, match="is not the expected") as wrong:
        verify_checksums(copy, "0" * 64)
    (copy / "params.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"mismatch for params\.json") as changed:
        verify_checksums(copy, digest)
    (copy / "params.json").unlink()
    with pytest.raises(ModelLoadError, match=r"params\.json is missing") as missing:
        verify_checksums(copy)
    assert {e.value.reason for e in (wrong, changed, missing)} == {"checksum"}


def _store(folder: Path, hours: int, *, start: str = "2024-03-01") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    times = pd.date_range(start, periods=hours, freq="h", tz="UTC")
    frame = pd.DataFrame({"time": times, "temperature_2m": np.arange(hours, dtype=float)})
    frame.loc[3, "temperature_2m"] = np.nan
    path = folder / "observations.parquet"
    frame.to_parquet(path)
    return path


def test_stored_observations_read_without_pandas_in_the_reader(tmp_path: Path) -> None:
    """The window holds the newest hours in order; actuals come once per file version."""
    from rps.params import load_params

    params = load_params(PARAMS_FILE)
    stored = StoredObservations(tmp_path / "processed")
    with pytest.raises(UnavailableError, match="no stored observations"):
        stored.new_actuals("temperature_2m") or stored.window(_spec(params))
    _store(tmp_path / "processed", 48)
    actuals = stored.new_actuals("temperature_2m")
    assert len(actuals) == 47  # the NaN hour is left out
    assert actuals[0] == (int(pd.Timestamp("2024-03-01", tz="UTC").timestamp()), 0.0)
    assert stored.new_actuals("temperature_2m") == []  # unchanged file
    with pytest.raises(UnavailableError, match="lacks columns"):
        stored.window(_spec(params))


def _spec(params: object) -> object:
    from rps.features.build import FeatureSpec

    return FeatureSpec.from_params(
        params.data.variables,  # type: ignore[attr-defined]
        params.data.target,  # type: ignore[attr-defined]
        params.features,  # type: ignore[attr-defined]
    )


def _obs(*hours: str) -> list[dict[str, object]]:
    return [{"time": f"2024-03-01T{h}Z", "temperature_2m": 1.0} for h in hours]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"observations": _obs("00:00:00", "01:30:00")}, "observations[1].time must be on the"),
        ({"observations": _obs("00:00:00", "02:00:00")}, "a gap before observations[1]"),
        ({"observations": _obs("01:00:00", "00:00:00")}, "times not increasing"),
        (
            {"rows": [{"a": 1.0}], "issue_times": ["2024-03-01T00:00:00Z"] * 2},
            "issue_times has 2 items, rows has 1",
        ),
    ],
)
def test_request_checks_that_need_no_model_are_in_the_schema(
    body: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        PredictRequest.model_validate(body)
