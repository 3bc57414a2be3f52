"""The model registry: one registered model, two aliases, and a gate that never ships worse.

Every training registers its chosen model as a new version of
``settings.registered_model_name`` and points the alias ``challenger`` at it. The alias
``champion`` (what the server loads) moves only through:

* the **promotion gate** (:func:`decide_promotion`), run by training on the new model's
  holdout, with the current champion's forecasts *recomputed* on that same holdout from
  its bundle (all bundles share the feature code, so any champion can be rebuilt);
* ``rps model promote VERSION`` (a human override, recorded), and
* ``rps model rollback`` (back to the champion before the current one, recorded).

Promotion rule, in order (``alpha`` = ``train.promotion.significance``, ``m`` =
``train.promotion.non_inferiority_margin``; DM = one-sided Diebold-Mariano test on
per-sample squared errors, :func:`rps.models.evaluation.diebold_mariano`):

1. The candidate must beat persistence on the holdout: lower RMSE *and* DM p-value of
   "candidate more accurate than persistence" < ``alpha``. (Exempt: the candidate *is*
   the persistence baseline, registered when no learned model beats it.)
2. No champion yet: promote.
3. The champion forecasts another target or horizon, cannot be loaded, or shares fewer
   than :data:`MIN_COMPARE_ROWS` holdout rows: refuse (promote manually after review).
4. DM p-value of "candidate more accurate than champion" < ``alpha``: promote (superior).
5. RMSE_candidate <= RMSE_champion x (1 + m) *and* DM p-value of "champion more
   accurate than candidate" >= ``alpha``: promote (non-inferior).
6. Otherwise refuse.

History: each champion move is a version tag ``event.<UTC timestamp>`` holding JSON
(action, version, previous, by, reason, at) on the version that became champion;
:func:`history` collects them newest first. Version tags also record ``role``,
``model_kind``, ``gate_decision``, ``gate_reason``, ``dataset_md5``, ``promoted_by``,
``promoted_at`` and ``reason``.

Everything importing MLflow does so inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rps.data.schema import TIME
from rps.features.build import TARGET, FeatureError, FeatureSpec, build_features
from rps.models import evaluation as ev
from rps.models.bundle import BundleError, ModelBundle, find_bundle_dir, load_bundle
from rps.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from rps.params import Params

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
EVENT_PREFIX = "event."
HOLDOUT_OBSERVATIONS = "evaluation/holdout_observations.parquet"
MODEL_ARTIFACT = "model"
MIN_COMPARE_ROWS = 24
PROBE_TIMEOUT_S = 5.0
#: set (unless already set) whenever the tracking server is remote: fail fast, never hang
REMOTE_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
#: set unless already set: no run URLs on stdout, no download progress bars (CLI and task logs)
QUIET_ENV = {
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
#: run metrics shown by ``info``/``champion_info`` (the rest stay in MLflow)
HEADLINE_METRICS = (
    "holdout_rmse",
    "holdout_mae",
    "holdout_r2",
    "holdout_mape",
    "holdout_smape",
    "holdout_skill_vs_persistence",
    "holdout_directional_accuracy",
    "interval_coverage",
    "interval_width",
    "cv_rmse",
    "persistence_holdout_rmse",
    "duration_s",
)


class RegistryError(RuntimeError):
    """A registry operation failed; the message names the model, version or server."""


class ModelNotFoundError(RegistryError):
    """The registered model, version or alias does not exist."""


class TrackingUnavailableError(RegistryError):
    """The MLflow tracking/registry server cannot be reached."""


# the gate ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holdout:
    """The holdout a candidate was evaluated on, enough to re-score any other bundle."""

    issue_times: pd.DatetimeIndex
    y: np.ndarray
    y_now: np.ndarray  # the target at issue time: persistence forecasts
    horizon_hours: int
    target: str
    observations: pd.DataFrame  # covers the holdout plus the feature window before it


@dataclass(frozen=True)
class GateDecision:
    """The promotion gate's verdict and the evidence behind it."""

    promote: bool
    rule: str  # first_champion | superior | non_inferior | refused_*
    reason: str
    n: int
    candidate_rmse: float
    persistence_rmse: float
    champion_rmse: float | None = None
    champion_version: str | None = None
    dm_vs_persistence: ev.DMResult | None = None
    dm_vs_champion: ev.DMResult | None = None
    significance: float = 0.05
    margin: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (nested dataclasses become dicts)."""
        return asdict(self)


def decide_promotion(
    y: np.ndarray,
    candidate_pred: np.ndarray,
    persistence_pred: np.ndarray,
    champion_pred: np.ndarray | None = None,
    *,
    horizon: int,
    significance: float,
    margin: float,
    candidate_is_persistence: bool = False,
    champion_version: str | None = None,
) -> GateDecision:
    """Apply the promotion rule (module docstring) to forecasts on one holdout."""
    y = np.asarray(y, dtype=float)
    cand = np.asarray(candidate_pred, dtype=float)
    pers = np.asarray(persistence_pred, dtype=float)
    n = int(y.size)
    cand_rmse, pers_rmse = ev.rmse(y, cand), ev.rmse(y, pers)
    common: dict[str, Any] = {
        "n": n,
        "candidate_rmse": cand_rmse,
        "persistence_rmse": pers_rmse,
        "champion_version": champion_version,
        "significance": significance,
        "margin": margin,
    }
    dm_p = None
    if not candidate_is_persistence:
        dm_p = ev.diebold_mariano(y - cand, y - pers, horizon=horizon)
        common["dm_vs_persistence"] = dm_p
        if not (cand_rmse < pers_rmse and dm_p.p_value_better < significance):
            return GateDecision(
                promote=False,
                rule="refused_persistence",
                reason=(
                    f"does not beat persistence: RMSE {cand_rmse:.4f} vs {pers_rmse:.4f}, "
                    f"DM p={dm_p.p_value_better:.3g} (needs < {significance})"
                ),
                **common,
            )
    if champion_pred is None:
        what = "is the persistence baseline" if candidate_is_persistence else "beats persistence"
        return GateDecision(
            promote=True,
            rule="first_champion",
            reason=f"no champion yet; the candidate {what} (RMSE {cand_rmse:.4f})",
            **common,
        )
    champ = np.asarray(champion_pred, dtype=float)
    champ_rmse = ev.rmse(y, champ)
    dm_c = ev.diebold_mariano(y - cand, y - champ, horizon=horizon)
    common.update(champion_rmse=champ_rmse, dm_vs_champion=dm_c)
    label = f"champion v{champion_version}" if champion_version else "the champion"
    versus = f"RMSE {cand_rmse:.4f} vs {champ_rmse:.4f} ({label})"
    if dm_c.p_value_better < significance:
        return GateDecision(
            promote=True,
            rule="superior",
            reason=f"significantly better than {label}: {versus}, DM p={dm_c.p_value_better:.3g}",
            **common,
        )
    if cand_rmse <= champ_rmse * (1 + margin) and dm_c.p_value_worse >= significance:
        return GateDecision(
            promote=True,
            rule="non_inferior",
            reason=(
                f"non-inferior to {label}: {versus} within {margin:.0%}, and {label} is not "
                f"significantly better (DM p={dm_c.p_value_worse:.3g})"
            ),
            **common,
        )
    return GateDecision(
        promote=False,
        rule="refused_champion",
        reason=(
            f"worse than {label}: {versus}; margin {margin:.0%}, DM p(champion better)="
            f"{dm_c.p_value_worse:.3g}"
        ),
        **common,
    )


def _refuse(
    reason: str, holdout: Holdout, candidate_pred: np.ndarray, version: str
) -> GateDecision:
    return GateDecision(
        promote=False,
        rule="refused_incomparable",
        reason=reason,
        n=len(holdout.y),
        candidate_rmse=ev.rmse(holdout.y, candidate_pred),
        persistence_rmse=ev.rmse(holdout.y, holdout.y_now),
        champion_version=version,
    )


def predict_bundle(
    bundle: ModelBundle, observations: pd.DataFrame, issue_times: pd.DatetimeIndex
) -> np.ndarray:
    """A bundle's forecasts at ``issue_times`` from raw observations (NaN where incomplete)."""
    features = build_features(observations, bundle.feature_spec, with_target=False)
    rows = features.reindex(issue_times)[bundle.feature_names]
    ok = rows.notna().all(axis=1).to_numpy()
    out = np.full(len(issue_times), np.nan)
    if ok.any():
        out[ok] = bundle.predictor.predict(rows.to_numpy(dtype=float)[ok])
    return out


def holdout_observations(
    observations: pd.DataFrame, spec: FeatureSpec, issue_times: pd.DatetimeIndex
) -> pd.DataFrame:
    """The observations needed to rebuild features over the holdout (stored with the run)."""
    margin = pd.Timedelta(hours=max(spec.window_hours, 14 * 24))
    times = pd.to_datetime(observations[TIME], utc=True)
    start = issue_times[0] - margin
    end = issue_times[-1] + pd.Timedelta(hours=spec.horizon_hours)
    keep = ((times >= start) & (times <= end)).to_numpy()
    return observations.loc[keep].reset_index(drop=True)


def evaluate_gate(
    settings: Settings,
    params: Params,
    holdout: Holdout,
    candidate_pred: np.ndarray,
    *,
    candidate_is_persistence: bool,
) -> GateDecision:
    """Run the promotion gate for a candidate against the current champion (read-only).

    Raises:
        RegistryError: the registry cannot be read.
    """
    client = _client(settings)
    name = settings.registered_model_name
    promotion = params.train.promotion
    champion = _alias_or_none(client, name, CHAMPION)
    kwargs: dict[str, Any] = {
        "horizon": holdout.horizon_hours,
        "significance": promotion.significance,
        "margin": promotion.non_inferiority_margin,
        "candidate_is_persistence": candidate_is_persistence,
    }
    if champion is None:
        return decide_promotion(holdout.y, candidate_pred, holdout.y_now, None, **kwargs)
    version = str(champion.version)
    try:
        with tempfile.TemporaryDirectory(prefix="rps-champion-") as tmp:
            bundle = load_bundle(download_bundle(settings, version, dst=Path(tmp)))
    except TrackingUnavailableError:
        raise
    except (BundleError, OSError, RegistryError) as exc:
        # a broken champion must not block training: refuse, and let a human decide
        return _refuse(
            f"champion v{version} cannot be loaded ({exc}); promote manually",
            holdout,
            candidate_pred,
            version,
        )
    spec = bundle.feature_spec
    if spec.target != holdout.target or spec.horizon_hours != holdout.horizon_hours:
        return _refuse(
            f"champion v{version} forecasts {spec.target} at +{spec.horizon_hours} h, the "
            f"candidate {holdout.target} at +{holdout.horizon_hours} h; promote manually",
            holdout,
            candidate_pred,
            version,
        )
    try:
        champ_pred = predict_bundle(bundle, holdout.observations, holdout.issue_times)
    except (FeatureError, ValueError) as exc:
        return _refuse(
            f"champion v{version} cannot forecast the holdout: {exc}",
            holdout,
            candidate_pred,
            version,
        )
    ok = np.isfinite(champ_pred)
    if ok.sum() < MIN_COMPARE_ROWS:
        return _refuse(
            f"champion v{version} forecasts only {int(ok.sum())} holdout rows "
            f"(< {MIN_COMPARE_ROWS})",
            holdout,
            candidate_pred,
            version,
        )
    return decide_promotion(
        holdout.y[ok],
        np.asarray(candidate_pred)[ok],
        holdout.y_now[ok],
        champ_pred[ok],
        champion_version=version,
        **kwargs,
    )


# MLflow plumbing ---------------------------------------------------------------------------


def is_remote(uri: str) -> bool:
    """True for an HTTP(S) tracking server (as opposed to a local file or database)."""
    return uri.startswith(("http://", "https://"))


def _probe(uri: str, settings: Settings) -> None:
    import httpx

    auth = None
    if settings.mlflow_tracking_username and settings.mlflow_tracking_password:
        auth = (
            settings.mlflow_tracking_username,
            settings.mlflow_tracking_password.get_secret_value(),
        )
    try:
        response = httpx.get(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S, auth=auth)
    except httpx.HTTPError as exc:
        raise TrackingUnavailableError(f"MLflow server {uri} is unreachable: {exc}") from exc
    if response.status_code >= 500:
        raise TrackingUnavailableError(
            f"MLflow server {uri} is unhealthy: HTTP {response.status_code} on /health"
        )


def configure_tracking(settings: Settings) -> None:
    """Point MLflow at the settings' tracking and registry URIs.

    For a remote server: probe ``/health`` (5 s timeout), disable HTTP retries and cap the
    request timeout (unless the environment sets them), and pass credentials. Also silences
    MLflow's run-URL printing and download progress bars (unless set, :data:`QUIET_ENV`).

    Raises:
        TrackingUnavailableError: the server does not answer.
    """
    import mlflow

    tracking = settings.tracking_uri
    registry = settings.mlflow_registry_uri or tracking
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if settings.mlflow_tracking_username:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", settings.mlflow_tracking_username)
    if settings.mlflow_tracking_password:
        os.environ.setdefault(
            "MLFLOW_TRACKING_PASSWORD", settings.mlflow_tracking_password.get_secret_value()
        )
    for uri in dict.fromkeys((tracking, registry)):
        if is_remote(uri):
            for key, value in REMOTE_HTTP_ENV.items():
                os.environ.setdefault(key, value)
            _probe(uri, settings)
        elif uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


def _client(settings: Settings) -> MlflowClient:
    from mlflow import MlflowClient

    configure_tracking(settings)
    tracking = settings.tracking_uri
    return MlflowClient(
        tracking_uri=tracking, registry_uri=settings.mlflow_registry_uri or tracking
    )


@contextmanager
def _mlflow_errors(what: str) -> Iterator[None]:
    """Turn MLflow's exceptions into the registry's typed errors."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if code == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFoundError(f"{what}: {message}") from exc
        if "Max retries" in message or "Connection" in message or "timed out" in message:
            raise TrackingUnavailableError(f"{what}: {message}") from exc
        raise RegistryError(f"{what}: {message}") from exc


def ensure_experiment(settings: Settings) -> str:
    """The id of ``settings.mlflow_experiment`` (created on first use).

    A local store keeps artifacts under ``settings.artifact_root``; a remote server uses
    its own default artifact root.
    """
    import mlflow

    name = settings.mlflow_experiment
    with _mlflow_errors(f"experiment {name}"):
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            location = None if is_remote(settings.tracking_uri) else settings.artifact_root
            return str(mlflow.create_experiment(name, artifact_location=location))
    if experiment.lifecycle_stage != "active":
        raise RegistryError(f"experiment {name} is deleted; restore it or choose another name")
    return str(experiment.experiment_id)


def _alias_or_none(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise RegistryError(f"model {name} alias {alias}: {exc}") from exc


def resolve_version(settings: Settings, ref: str) -> ModelVersion:
    """A model version by number (``"3"``), alias (``"champion"``) or ``"latest"``.

    Raises:
        ModelNotFoundError: no such registered model, version or alias.
    """
    return _resolve(_client(settings), settings.registered_model_name, ref)


def _resolve(client: MlflowClient, name: str, ref: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    ref = str(ref).strip()
    if ref[:1] in ("v", "V") and ref[1:].isdigit():
        ref = ref[1:]
    _resolve_model(client, name)
    if ref.isdigit():
        with _mlflow_errors(f"model {name} version {ref}"):
            try:
                return client.get_model_version(name, ref)
            except MlflowException as exc:
                if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                    raise ModelNotFoundError(f"model {name} has no version {ref}") from exc
                raise
    if ref == "latest":
        versions = _versions(client, name)
        if not versions:
            raise ModelNotFoundError(f"model {name} has no versions")
        return versions[0]
    found = _alias_or_none(client, name, ref)
    if found is None:
        raise ModelNotFoundError(f"model {name} has no version or alias {ref!r}")
    return found


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    with _mlflow_errors(f"model {name} versions"):
        found = list(client.search_model_versions(f"name='{name}'"))
    return sorted(found, key=lambda mv: int(mv.version), reverse=True)


def log_and_register(
    settings: Settings,
    bundle_dir: Path,
    *,
    signature: Any,
    input_example: pd.DataFrame,
    pip_requirements: list[str],
) -> str:
    """Log the bundle as a pyfunc model in the active run and register a new version.

    Returns:
        The new version number.
    """
    import mlflow

    from rps.models import pyfunc

    name = settings.registered_model_name
    with _mlflow_errors(f"registering model {name}"):
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(Path(pyfunc.__file__).with_name("pyfunc_entry.py")),
            artifacts={pyfunc.BUNDLE_ARTIFACT: str(bundle_dir)},
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements,
            registered_model_name=name,
        )
    version = info.registered_model_version
    if version is None:
        raise RegistryError(f"model {name} was logged but not registered")
    return str(version)


def _now() -> datetime:
    return datetime.now(UTC)


def _move_champion(
    client: MlflowClient, name: str, version: str, *, action: str, by: str, reason: str
) -> dict[str, Any]:
    previous = _alias_or_none(client, name, CHAMPION)
    prev = str(previous.version) if previous is not None else None
    now = _now()
    event = {
        "action": action,
        "version": version,
        "previous": prev,
        "by": by,
        "reason": reason,
        "at": now.isoformat(timespec="microseconds"),
    }
    with _mlflow_errors(f"moving {name}@{CHAMPION} to version {version}"):
        client.set_registered_model_alias(name, CHAMPION, version)
        tags = {
            f"{EVENT_PREFIX}{now:%Y%m%dT%H%M%S%f}Z": json.dumps(event),
            "role": CHAMPION,
            "promoted_by": by,
            "promoted_at": event["at"],
            "reason": reason,
            "previous_champion": prev or "",
        }
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        if prev is not None and prev != version:
            client.set_model_version_tag(
                name, prev, "role", "rolled_back" if action == "rollback" else "retired"
            )
    log.info("%s@%s: %s -> %s (%s by %s: %s)", name, CHAMPION, prev, version, action, by, reason)
    return event


def record_version(
    settings: Settings, version: str, *, decision: GateDecision, tags: Mapping[str, str]
) -> bool:
    """Tag a freshly registered version, alias it ``challenger``, apply the gate.

    Returns:
        Whether the version became champion.
    """
    client = _client(settings)
    name = settings.registered_model_name
    with _mlflow_errors(f"tagging model {name} version {version}"):
        all_tags = {
            **tags,
            "role": CHALLENGER,
            "gate_decision": "promoted" if decision.promote else "refused",
            "gate_rule": decision.rule,
            "gate_reason": decision.reason[:4000],
            "gate_against": decision.champion_version or "",
        }
        for key, value in all_tags.items():
            client.set_model_version_tag(name, version, key, str(value))
        client.set_registered_model_alias(name, CHALLENGER, version)
    if decision.promote:
        _move_champion(client, name, version, action="gate", by="gate", reason=decision.reason)
    return decision.promote


def promote(settings: Settings, ref: str, *, by: str, reason: str) -> dict[str, Any]:
    """Make a version champion by hand (no gate), recording who and why.

    Raises:
        ModelNotFoundError: the version does not exist.
        RegistryError: it is already the champion.
    """
    client = _client(settings)
    name = settings.registered_model_name
    target = _resolve(client, name, ref)
    current = _alias_or_none(client, name, CHAMPION)
    if current is not None and str(current.version) == str(target.version):
        raise RegistryError(f"version {target.version} is already the champion of {name}")
    return _move_champion(client, name, str(target.version), action="promote", by=by, reason=reason)


def rollback(settings: Settings, *, by: str, reason: str) -> dict[str, Any]:
    """Move ``champion`` back to the version that was champion before the current one.

    The previous champion is taken from the newest non-rollback event that made the
    current champion champion, so repeated rollbacks walk back through the history.

    Raises:
        ModelNotFoundError: there is no champion.
        RegistryError: the champion has no predecessor.
    """
    client = _client(settings)
    name = settings.registered_model_name
    current = _resolve(client, name, CHAMPION)
    version = str(current.version)
    for event in _history(client, name):
        if event["version"] == version and event["action"] != "rollback":
            previous = event.get("previous")
            if not previous:
                break
            _resolve(client, name, str(previous))  # still registered?
            return _move_champion(
                client, name, str(previous), action="rollback", by=by, reason=reason
            )
    raise RegistryError(f"champion v{version} of {name} has no previous champion to roll back to")


def _history(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    events = []
    for mv in _versions(client, name):
        for key, value in (mv.tags or {}).items():
            if key.startswith(EVENT_PREFIX):
                try:
                    events.append(json.loads(value))
                except ValueError:
                    log.warning("unreadable history tag %s on version %s", key, mv.version)
    return sorted(events, key=lambda e: str(e.get("at", "")), reverse=True)


def history(settings: Settings) -> list[dict[str, Any]]:
    """Every champion move (gate, promote, rollback), newest first.

    Raises:
        ModelNotFoundError: the registered model does not exist.
    """
    client = _client(settings)
    name = settings.registered_model_name
    _resolve_model(client, name)
    return _history(client, name)


def _aliases(client: MlflowClient, name: str) -> dict[str, list[str]]:
    """Version -> its aliases (sorted)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFoundError(f"registered model {name} does not exist") from exc
        raise RegistryError(f"registered model {name}: {exc}") from exc
    out: dict[str, list[str]] = {}
    for alias, version in sorted((model.aliases or {}).items()):
        out.setdefault(str(version), []).append(alias)
    return out


def _resolve_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFoundError(f"registered model {name} does not exist") from exc
        raise RegistryError(f"registered model {name}: {exc}") from exc


def list_versions(settings: Settings) -> list[dict[str, Any]]:
    """Every version, newest first: aliases, role, kind, holdout RMSE, gate decision."""
    client = _client(settings)
    name = settings.registered_model_name
    aliases = _aliases(client, name)
    rows = []
    for mv in _versions(client, name):
        tags = mv.tags or {}
        rows.append(
            {
                "version": str(mv.version),
                "aliases": aliases.get(str(mv.version), []),
                "role": tags.get("role", ""),
                "model_kind": tags.get("model_kind", ""),
                "holdout_rmse": tags.get("holdout_rmse", ""),
                "gate_decision": tags.get("gate_decision", ""),
                "dataset_md5": tags.get("dataset_md5", ""),
                "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
                    timespec="seconds"
                ),
                "run_id": mv.run_id,
            }
        )
    return rows


def version_info(settings: Settings, ref: str) -> dict[str, Any]:
    """Lineage and metrics of a version (number or alias).

    Raises:
        ModelNotFoundError: no such version or alias.
    """
    client = _client(settings)
    name = settings.registered_model_name
    mv = _resolve(client, name, ref)
    tags = dict(mv.tags or {})
    run_params: dict[str, str] = {}
    metrics: dict[str, float] = {}
    if mv.run_id:
        with _mlflow_errors(f"run {mv.run_id}"):
            run = client.get_run(mv.run_id)
        run_params = dict(run.data.params)
        metrics = {k: float(v) for k, v in run.data.metrics.items() if k in HEADLINE_METRICS}
    return {
        "name": name,
        "version": str(mv.version),
        "aliases": _aliases(client, name).get(str(mv.version), []),
        "run_id": mv.run_id,
        "model_kind": tags.get("model_kind", ""),
        "candidate": tags.get("candidate", ""),
        "dataset_md5": tags.get("dataset_md5", run_params.get("dataset_md5", "")),
        "dataset_uri": tags.get("dataset_uri", run_params.get("dataset_uri", "")),
        "code_sha": tags.get("code_sha", run_params.get("code_sha", "")),
        "code_dirty": tags.get("code_dirty", run_params.get("code_dirty", "")),
        "trained_at": tags.get("trained_at", ""),
        "role": tags.get("role", ""),
        "gate_decision": tags.get("gate_decision", ""),
        "gate_reason": tags.get("gate_reason", ""),
        "params": run_params,
        "metrics": metrics,
        "source": mv.source,
    }


def champion_info(settings: Settings) -> dict[str, Any]:
    """What the server reports about the model it serves.

    Returns:
        ``name``, ``version``, ``alias``, ``run_id``, ``dataset_md5``, ``code_sha``,
        ``metrics`` (headline holdout metrics), ``trained_at``, ``model_kind``, ``uri``.

    Raises:
        ModelNotFoundError: there is no champion.
    """
    info = version_info(settings, CHAMPION)
    return {
        "name": info["name"],
        "version": info["version"],
        "alias": CHAMPION,
        "run_id": info["run_id"],
        "dataset_md5": info["dataset_md5"],
        "code_sha": info["code_sha"],
        "metrics": info["metrics"],
        "trained_at": info["trained_at"],
        "model_kind": info["model_kind"],
        "uri": f"models:/{info['name']}@{CHAMPION}",
    }


def download_bundle(settings: Settings, ref: str = CHAMPION, dst: Path | None = None) -> Path:
    """Download a registered model and return the directory holding its ``bundle.json``.

    Args:
        settings: tracking/registry URIs and the registered model name.
        ref: a version number, an alias, or a full ``models:/...`` URI.
        dst: the download folder (default: a new temporary folder, left for the caller;
            always a copy, even when the artifact store is a local folder).

    Raises:
        ModelNotFoundError: no such version or alias.
        RegistryError: the download failed.
        BundleError: the model holds no bundle.
    """
    import mlflow

    name = settings.registered_model_name
    if ref.startswith("models:/"):
        configure_tracking(settings)
        uri = ref
    else:
        mv = resolve_version(settings, ref)
        uri = f"models:/{name}/{mv.version}"
    target = Path(tempfile.mkdtemp(prefix="rps-bundle-")) if dst is None else Path(dst)
    target.mkdir(parents=True, exist_ok=True)
    with _mlflow_errors(f"downloading {uri}"):
        path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target))
    return find_bundle_dir(Path(path))


# compare -----------------------------------------------------------------------------------


@dataclass
class Comparison:
    """``rps model compare``: two versions on the candidate's holdout."""

    candidate_version: str
    against_version: str
    against_ref: str
    decision: GateDecision
    metrics: dict[str, dict[str, float]]  # model label -> metric -> value
    n: int
    holdout_start: str
    holdout_end: str
    report: Path | None = None
    plots: list[Path] = field(default_factory=list)

    @property
    def candidate_worse(self) -> bool:
        """The gate would refuse the candidate (``rps model compare`` exits 1)."""
        return not self.decision.promote


def _holdout_of(
    bundle: ModelBundle, observations: pd.DataFrame
) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    spec = bundle.feature_spec
    features = build_features(observations, spec)
    start = pd.Timestamp(bundle.lineage["holdout_start"])
    end = pd.Timestamp(bundle.lineage["holdout_end"])
    window = features.loc[start:end]
    window = window.dropna(subset=[*spec.feature_names, TARGET])
    index = pd.DatetimeIndex(window.index)
    return index, window[TARGET].to_numpy(dtype=float), window[spec.target].to_numpy(dtype=float)


def _scores(
    y: np.ndarray,
    pred: np.ndarray,
    y_now: np.ndarray,
    hours: np.ndarray,
    interval: Mapping[str, float] | None,
) -> dict[str, float]:
    out = ev.point_metrics(y, pred, y_now)
    if interval is not None:
        out["interval_coverage"] = ev.interval_coverage(
            y, pred + interval["lower"], pred + interval["upper"]
        )
    for hour, value in ev.error_by_hour(y, pred, hours).items():
        out[f"rmse_hour_{hour:02d}"] = value
    return out


def compare_versions(
    settings: Settings,
    params: Params,
    candidate: str,
    against: str = CHAMPION,
    *,
    output: Path | None = None,
) -> Comparison:
    """Score two versions on the candidate's holdout and apply the promotion rule.

    The candidate's training run stores the holdout observations
    (:data:`HOLDOUT_OBSERVATIONS`); both bundles rebuild their features from them.

    Raises:
        ModelNotFoundError: an unknown version or alias.
        RegistryError: the candidate run lacks its holdout data, or the models forecast
            different targets or horizons.
    """
    client = _client(settings)
    name = settings.registered_model_name
    cand_mv = _resolve(client, name, candidate)
    against_mv = _resolve(client, name, against)
    import mlflow

    with tempfile.TemporaryDirectory(prefix="rps-compare-") as tmp:
        root = Path(tmp)
        cand = load_bundle(download_bundle(settings, str(cand_mv.version), dst=root / "candidate"))
        other = load_bundle(
            download_bundle(settings, str(against_mv.version), dst=root / "against")
        )
        if not cand_mv.run_id:
            raise RegistryError(f"version {cand_mv.version} has no training run")
        with _mlflow_errors(f"holdout data of version {cand_mv.version} (run {cand_mv.run_id})"):
            local = mlflow.artifacts.download_artifacts(
                run_id=cand_mv.run_id,
                artifact_path=HOLDOUT_OBSERVATIONS,
                dst_path=str(root / "obs"),
            )
        observations = pd.read_parquet(local)
    for key in ("holdout_start", "holdout_end"):
        if key not in cand.lineage:
            raise RegistryError(f"version {cand_mv.version} records no {key} in its lineage")
    spec = cand.feature_spec
    if (other.feature_spec.target, other.feature_spec.horizon_hours) != (
        spec.target,
        spec.horizon_hours,
    ):
        raise RegistryError(
            f"versions {cand_mv.version} and {against_mv.version} forecast different "
            "targets or horizons"
        )
    issue_times, y, y_now = _holdout_of(cand, observations)
    cand_pred = predict_bundle(cand, observations, issue_times)
    other_pred = predict_bundle(other, observations, issue_times)
    ok = np.isfinite(cand_pred) & np.isfinite(other_pred)
    if ok.sum() < MIN_COMPARE_ROWS:
        raise RegistryError(f"only {int(ok.sum())} holdout rows are forecast by both versions")
    issue_times, y, y_now = issue_times[ok], y[ok], y_now[ok]
    cand_pred, other_pred = cand_pred[ok], other_pred[ok]
    promotion = params.train.promotion
    decision = decide_promotion(
        y,
        cand_pred,
        y_now,
        other_pred,
        horizon=spec.horizon_hours,
        significance=promotion.significance,
        margin=promotion.non_inferiority_margin,
        candidate_is_persistence=cand.kind == "persistence",
        champion_version=str(against_mv.version),
    )
    target_times = issue_times + pd.Timedelta(hours=spec.horizon_hours)
    hours = np.asarray(target_times.hour)
    cand_label = f"v{cand_mv.version} ({cand.kind})"
    other_label = f"v{against_mv.version} ({other.kind})"
    metrics = {
        cand_label: _scores(y, cand_pred, y_now, hours, cand.interval),
        other_label: _scores(y, other_pred, y_now, hours, other.interval),
        "persistence": _scores(y, y_now, y_now, hours, None),
    }
    result = Comparison(
        candidate_version=str(cand_mv.version),
        against_version=str(against_mv.version),
        against_ref=against,
        decision=decision,
        metrics=metrics,
        n=int(ok.sum()),
        holdout_start=str(cand.lineage["holdout_start"]),
        holdout_end=str(cand.lineage["holdout_end"]),
    )
    if output is not None:
        _write_report(
            output,
            result,
            target_times=target_times,
            y=y,
            forecasts={cand_label: cand_pred, other_label: other_pred, "persistence": y_now},
            hours=hours,
        )
    return result


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4g}"


def _write_report(
    output: Path,
    result: Comparison,
    *,
    target_times: pd.DatetimeIndex,
    y: np.ndarray,
    forecasts: Mapping[str, np.ndarray],
    hours: np.ndarray,
) -> None:
    from rps.models import plots

    output.parent.mkdir(parents=True, exist_ok=True)
    stem = output.with_suffix("")
    labels = list(result.metrics)
    cand_label, other_label = labels[0], labels[1]
    forecast_png = plots.forecast_vs_actual(
        Path(f"{stem}_forecast.png"),
        target_times,
        y,
        forecasts,
        title="Holdout: forecasts vs actual",
    )
    by_hour = {label: ev.error_by_hour(y, pred, hours) for label, pred in forecasts.items()}
    hour_png = plots.error_by_hour(Path(f"{stem}_error_by_hour.png"), by_hour)
    result.plots = [forecast_png, hour_png]
    d = result.decision
    rows = [
        "rmse",
        "mae",
        "r2",
        "mape",
        "smape",
        "skill_vs_persistence",
        "directional_accuracy",
        "interval_coverage",
    ]
    lines = [
        f"# Model comparison: v{result.candidate_version} vs {result.against_ref} "
        f"(v{result.against_version})",
        "",
        f"Holdout of the candidate: {result.holdout_start} .. {result.holdout_end} "
        f"({result.n} forecasts, issue times).",
        "",
        f"**Gate: {'PASS - would promote' if d.promote else 'REFUSE - candidate is worse'}** "
        f"({d.rule}): {d.reason}",
        "",
        f"| metric | {cand_label} | {other_label} | delta | persistence |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in rows:
        a = result.metrics[cand_label].get(key, float("nan"))
        b = result.metrics[other_label].get(key, float("nan"))
        p = result.metrics["persistence"].get(key, float("nan"))
        lines.append(f"| {key} | {_fmt(a)} | {_fmt(b)} | {_fmt(a - b)} | {_fmt(p)} |")
    lines += ["", "## Diebold-Mariano tests (squared error, one-sided)", ""]
    lines += ["| comparison | statistic | p (candidate better) | p (candidate worse) | lag |"]
    lines += ["|---|---:|---:|---:|---:|"]
    for label, dm in (
        (f"vs {other_label}", d.dm_vs_champion),
        ("vs persistence", d.dm_vs_persistence),
    ):
        if dm is not None:
            lines.append(
                f"| {label} | {_fmt(dm.statistic)} | {_fmt(dm.p_value_better)} | "
                f"{_fmt(dm.p_value_worse)} | {dm.lag} |"
            )
    lines += [
        "",
        f"Significance {d.significance}, non-inferiority margin {d.margin:.0%}.",
        "",
        f"![forecasts]({forecast_png.name})",
        "",
        f"![error by hour]({hour_png.name})",
        "",
    ]
    output.write_text("\n".join(lines), encoding="utf-8")
    result.report = output
