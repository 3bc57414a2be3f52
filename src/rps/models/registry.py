"""The model registry: one registered model, two aliases, recorded moves of ``champion``.

Every training registers its chosen model as a new version of
``settings.registered_model_name`` and points the alias ``challenger`` at it. The alias
``champion`` (what the server loads) moves only through:

* the **promotion gate** (:mod:`rps.models.gate`), on the new model's holdout;
* ``rps model promote VERSION`` (a human override, recorded), and
* ``rps model rollback`` (back to the champion before the current one, recorded).

History: each champion move is a version tag ``event.<UTC timestamp>`` holding JSON
(action, version, previous, by, reason, at) on the version that became champion;
:func:`history` collects them newest first. Version tags also record ``role``,
``model_kind``, ``gate_decision``, ``gate_reason``, ``dataset_md5``, ``promoted_by``,
``promoted_at`` and ``reason``.

Everything importing MLflow does so inside functions, so importing this module is cheap
(no pandas either). The errors and the tracking setup are re-exported from
:mod:`rps.models.errors` and :mod:`rps.models.tracking`.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rps.models.bundle import find_bundle_dir
from rps.models.errors import ModelNotFoundError, RegistryError, TrackingUnavailableError
from rps.models.tracking import (
    configure_tracking,
    ensure_experiment,
    get_client,
    is_remote,
    mlflow_errors,
)
from rps.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from rps.models.gate import GateDecision

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "ModelNotFoundError",
    "RegistryError",
    "TrackingUnavailableError",
    "apply_gate",
    "champion_info",
    "configure_tracking",
    "download_bundle",
    "ensure_experiment",
    "history",
    "is_remote",
    "list_versions",
    "log_and_register",
    "log_model",
    "promote",
    "register_run",
    "resolve_version",
    "rollback",
    "version_info",
    "version_of_run",
]

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
EVENT_PREFIX = "event."
MODEL_ARTIFACT = "model"


#: run metrics shown by ``info``/``champion_info`` (the rest stay in MLflow)
#: the run artifact holding the holdout scores of every horizon (``metrics_by_horizon``)
METRICS_BY_HORIZON = "evaluation/metrics_by_horizon.json"
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
    "interval_score",
    "cv_rmse",
    "persistence_holdout_rmse",
    "duration_s",
)


def alias_or_none(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
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
    return _resolve(get_client(settings), settings.registered_model_name, ref)


def _resolve(client: MlflowClient, name: str, ref: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    ref = str(ref).strip()
    if ref[:1] in ("v", "V") and ref[1:].isdigit():
        ref = ref[1:]
    _resolve_model(client, name)
    if ref.isdigit():
        with mlflow_errors(f"model {name} version {ref}"):
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
    found = alias_or_none(client, name, ref)
    if found is None:
        raise ModelNotFoundError(f"model {name} has no version or alias {ref!r}")
    return found


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    with mlflow_errors(f"model {name} versions"):
        found = list(client.search_model_versions(f"name='{name}'"))
    return sorted(found, key=lambda mv: int(mv.version), reverse=True)


def log_model(
    settings: Settings,
    bundle_dir: Path,
    *,
    signature: Any,
    input_example: Any,
    pip_requirements: list[str],
) -> str:
    """Log the bundle as a pyfunc model in the active run, without registering it.

    The model carries the ``rps`` modules it loads with (``code_paths``,
    :func:`rps.models.pyfunc_code.stage_package`), so with ``pip_requirements`` that name
    its libraries it is served without the ``rps`` package installed.

    Returns:
        The logged model's URI (what :func:`register_run` registers).
    """
    import mlflow

    from rps.models import pyfunc
    from rps.models.pyfunc_code import stage_package

    with (
        mlflow_errors("logging the model"),
        tempfile.TemporaryDirectory(prefix="rps-pyfunc-code-") as code_root,
    ):
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(Path(pyfunc.__file__).with_name("pyfunc_entry.py")),
            artifacts={pyfunc.BUNDLE_ARTIFACT: str(bundle_dir)},
            code_paths=[str(stage_package(Path(code_root)))],
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements,
            # a folder without uv.lock: MLflow would otherwise copy the lock of the uv
            # project in the working directory into the model, and `--env-manager uv`
            # would restore that whole project instead of `pip_requirements`
            uv_project_path=code_root,
        )
    return str(info.model_uri)


def log_and_register(settings: Settings, bundle_dir: Path, **model: Any) -> str:
    """:func:`log_model` (same keyword arguments), then register it as a new version.

    Returns:
        The new version number.
    """
    import mlflow

    model_uri = log_model(settings, bundle_dir, **model)
    name = settings.registered_model_name
    with mlflow_errors(f"registering model {name}"):
        version = mlflow.register_model(model_uri, name).version
    return str(version)


def version_of_run(settings: Settings, run_id: str) -> str | None:
    """The registered version created from a training run (None: not registered yet)."""
    client = get_client(settings)
    name = settings.registered_model_name
    with mlflow_errors(f"model {name} versions of run {run_id}"):
        found = list(client.search_model_versions(f"name='{name}' and run_id='{run_id}'"))
    return str(min(int(mv.version) for mv in found)) if found else None


def register_run(
    settings: Settings, run_id: str, model_uri: str, *, tags: Mapping[str, str]
) -> tuple[str, bool]:
    """Register a run's logged model once, tag it and point ``challenger`` at it.

    Idempotent on the run id: a run already registered returns its version (tags and the
    alias are set again, to the same values).

    Returns:
        ``(version, created)``.
    """
    import mlflow

    name = settings.registered_model_name
    version = version_of_run(settings, run_id)
    created = version is None
    if version is None:
        with mlflow_errors(f"registering model {name} from run {run_id}"):
            version = str(mlflow.register_model(model_uri, name).version)
    client = get_client(settings)
    with mlflow_errors(f"tagging model {name} version {version}"):
        current = dict(client.get_model_version(name, version).tags or {})
        if current.get("role") not in (CHAMPION, "retired", "rolled_back"):
            client.set_model_version_tag(name, version, "role", CHALLENGER)
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, str(value))
        client.set_registered_model_alias(name, CHALLENGER, version)
    return version, created


def apply_gate(settings: Settings, version: str, decision: GateDecision) -> bool:
    """Record the gate's verdict on a version and move ``champion`` when it promotes.

    Returns:
        Whether the version became champion.
    """
    client = get_client(settings)
    name = settings.registered_model_name
    with mlflow_errors(f"tagging model {name} version {version}"):
        for key, value in gate_tags(decision, final=True).items():
            client.set_model_version_tag(name, version, key, value)
    if decision.promote:
        _move_champion(client, name, version, action="gate", by="gate", reason=decision.reason)
    return decision.promote


def gate_tags(decision: GateDecision, *, final: bool) -> dict[str, str]:
    """The version tags describing a gate decision (``pending`` until promote decides)."""
    verdict = "promoted" if decision.promote else "refused"
    return {
        "gate_decision": verdict if final else "pending",
        "gate_rule": decision.rule,
        "gate_reason": decision.reason[:4000],
        "gate_against": decision.champion_version or "",
    }


def _now() -> datetime:
    return datetime.now(UTC)


def _move_champion(
    client: MlflowClient, name: str, version: str, *, action: str, by: str, reason: str
) -> dict[str, Any]:
    previous = alias_or_none(client, name, CHAMPION)
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
    with mlflow_errors(f"moving {name}@{CHAMPION} to version {version}"):
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


def promote(settings: Settings, ref: str, *, by: str, reason: str) -> dict[str, Any]:
    """Make a version champion by hand (no gate), recording who and why.

    Raises:
        ModelNotFoundError: the version does not exist.
        RegistryError: it is already the champion.
    """
    client = get_client(settings)
    name = settings.registered_model_name
    target = _resolve(client, name, ref)
    current = alias_or_none(client, name, CHAMPION)
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
    client = get_client(settings)
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
    client = get_client(settings)
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
    client = get_client(settings)
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
    client = get_client(settings)
    name = settings.registered_model_name
    mv = _resolve(client, name, ref)
    tags = dict(mv.tags or {})
    run_params: dict[str, str] = {}
    metrics: dict[str, float] = {}
    if mv.run_id:
        with mlflow_errors(f"run {mv.run_id}"):
            run = client.get_run(mv.run_id)
        run_params = dict(run.data.params)
        metrics = {k: float(v) for k, v in run.data.metrics.items() if k in HEADLINE_METRICS}
    by_horizon = _metrics_by_horizon(client, mv.run_id) if mv.run_id else []
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
        "drift_onset": tags.get("drift_onset", ""),  # set by a run that adapted to drift
        "params": run_params,
        "metrics": metrics,
        "metrics_by_horizon": by_horizon,
        "source": mv.source,
    }


def _metrics_by_horizon(client: MlflowClient, run_id: str) -> list[dict[str, float]]:
    """The run's holdout scores per horizon (empty for a run without a trajectory)."""
    import mlflow

    folder = METRICS_BY_HORIZON.rsplit("/", 1)[0]
    with mlflow_errors(f"the artifacts of run {run_id}"):
        stored = {a.path for a in client.list_artifacts(run_id, folder)}
        if METRICS_BY_HORIZON not in stored:
            return []
        data = mlflow.artifacts.load_dict(f"runs:/{run_id}/{METRICS_BY_HORIZON}")
    return [dict(row) for row in data.get("metrics_by_horizon", [])]


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
    with mlflow_errors(f"downloading {uri}"):
        path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target))
    return find_bundle_dir(Path(path))
