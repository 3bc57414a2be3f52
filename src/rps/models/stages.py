"""The model stages after training, each idempotent on the training run's id.

* :func:`evaluate_run` - the gate's evidence: the run's model and the current champion on
  the run's holdout (:func:`rps.models.gate.evaluate_gate`), stored with the run
  (``evaluation/gate.json`` and ``rps.gate_*`` tags). Read-only for the registry.
* :func:`register_candidate` - a registered version of the run's model (created once), its
  lineage tags, and the alias ``challenger``.
* :func:`promote_run` - applies the gate's decision and moves ``champion``; a version whose
  gate already decided keeps that decision. After a promotion, every API in
  ``settings.api_reload_urls`` is asked to reload (:func:`notify_reload`).

``rps model train`` runs them in a row (:func:`rps.models.train.train`); the DAG runs each
as its own task, and stops before :func:`promote_run` when asked not to promote.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rps.models import registry
from rps.models.errors import RegistryError
from rps.models.gate import GateDecision
from rps.models.tracking import get_client, mlflow_errors
from rps.settings import Settings

if TYPE_CHECKING:
    from rps.params import Params

log = logging.getLogger(__name__)

GATE_ARTIFACT = "evaluation/gate.json"
RELOAD_PATH = "/model/reload"
RELOAD_TIMEOUT_S = 10.0
#: run tags copied onto the registered version (run tag -> version tag)
VERSION_TAGS = {
    "rps.model_kind": "model_kind",
    "rps.candidate": "candidate",
    "rps.dataset_md5": "dataset_md5",
    "rps.dataset_uri": "dataset_uri",
    "rps.code_sha": "code_sha",
    "rps.code_dirty": "code_dirty",
    "rps.trained_at": "trained_at",
    "rps.drift_onset": "drift_onset",
}


class StageError(RegistryError):
    """A stage found its run not in the state the previous stage leaves it in."""


@dataclass(frozen=True)
class Promotion:
    """What the promote stage decided."""

    version: str
    promoted: bool  # the version is champion after this stage
    champion_version: str | None
    rule: str
    reason: str
    decided_before: bool = False  # an earlier promote of this run decided; nothing changed
    reloads: dict[str, str] = field(default_factory=dict)


def _run(settings: Settings, run_id: str) -> Any:
    client = get_client(settings)
    with mlflow_errors(f"training run {run_id}"):
        run = client.get_run(run_id)
    if run.info.status != "FINISHED":
        raise StageError(f"training run {run_id} is {run.info.status}, not FINISHED")
    if "rps.model_uri" not in run.data.tags:
        raise StageError(f"training run {run_id} logged no model (tag rps.model_uri)")
    return run


def evaluate_run(settings: Settings, params: Params, run_id: str) -> GateDecision:
    """The gate's decision for a run's model against the current champion, stored with the run.

    Raises:
        StageError: the run did not finish or logged no model.
        RegistryError: the run's artifacts or the registry cannot be read.
    """
    import mlflow
    import pandas as pd

    from rps.models.bundle import find_bundle_dir, load_bundle
    from rps.models.gate import (
        HOLDOUT_OBSERVATIONS,
        HOLDOUT_PREDICTIONS,
        Holdout,
        apply_horizon_gate,
        bundle_holdout,
        evaluate_gate,
        predict_bundle,
        recorded_forecasts,
    )

    run = _run(settings, run_id)
    tags = run.data.tags
    with tempfile.TemporaryDirectory(prefix="rps-evaluate-") as tmp:
        root = Path(tmp)
        with mlflow_errors(f"the model and holdout of run {run_id}"):
            model_dir = mlflow.artifacts.download_artifacts(
                artifact_uri=tags["rps.model_uri"], dst_path=str(root / "model")
            )
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=HOLDOUT_OBSERVATIONS, dst_path=str(root / "obs")
            )
        bundle = load_bundle(find_bundle_dir(Path(model_dir)))
        observations = pd.read_parquet(local)
        refit = bool(bundle.lineage.get("refit_with_holdout"))
        if refit:  # the served model has seen the holdout: judge the forecasts made before
            with mlflow_errors(f"the recorded holdout forecasts of run {run_id}"):
                recorded_csv = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=HOLDOUT_PREDICTIONS, dst_path=str(root / "pred")
                )
            recorded = pd.read_csv(recorded_csv)
    issue_times, y, y_now = bundle_holdout(bundle, observations)
    holdout = Holdout(
        issue_times=issue_times,
        y=y,
        y_now=y_now,
        horizon_hours=bundle.feature_spec.horizon_hours,
        target=bundle.feature_spec.target,
        observations=observations,
    )
    decision = evaluate_gate(
        settings,
        params,
        holdout,
        (
            recorded_forecasts(recorded, issue_times)
            if refit
            else predict_bundle(bundle, observations, issue_times)
        ),
        candidate_is_persistence=bundle.kind == "persistence",
        drift_onset=pd.Timestamp(tags["rps.drift_onset"]) if "rps.drift_onset" in tags else None,
    )
    decision = apply_horizon_gate(decision, bundle.metrics_by_horizon)
    client = get_client(settings)
    with mlflow_errors(f"storing the gate evidence of run {run_id}"):
        client.log_dict(run_id, decision.to_dict(), GATE_ARTIFACT)
        client.set_tag(run_id, "rps.gate_rule", decision.rule)
        client.set_tag(run_id, "rps.gate_against", decision.champion_version or "")
    log.info("run %s: gate %s (%s)", run_id, decision.rule, decision.reason)
    return decision


def _stored_decision(settings: Settings, run_id: str) -> GateDecision | None:
    """The evidence :func:`evaluate_run` stored, if it was judged against today's champion."""
    import mlflow

    client = get_client(settings)
    run = _run(settings, run_id)
    if "rps.gate_rule" not in run.data.tags:
        return None
    champion = registry.alias_or_none(client, settings.registered_model_name, registry.CHAMPION)
    current = str(champion.version) if champion is not None else ""
    if run.data.tags.get("rps.gate_against", "") != current:
        return None
    with mlflow_errors(f"the gate evidence of run {run_id}"):
        data = mlflow.artifacts.load_dict(f"runs:/{run_id}/{GATE_ARTIFACT}")
    return GateDecision.from_dict(data)


def register_candidate(settings: Settings, run_id: str) -> str:
    """Register the run's model (once), copy its lineage tags, alias it ``challenger``.

    Returns:
        The version number.

    Raises:
        StageError: the run did not finish or logged no model.
    """
    run = _run(settings, run_id)
    tags = {VERSION_TAGS[k]: v for k, v in run.data.tags.items() if k in VERSION_TAGS}
    tags["run_id"] = run_id
    rmse = run.data.metrics.get("holdout_rmse")
    if rmse is not None and math.isfinite(rmse):
        tags["holdout_rmse"] = f"{rmse:.6g}"
    decision = _stored_decision(settings, run_id)
    if decision is not None:
        tags.update(registry.gate_tags(decision, final=False))
    version, created = registry.register_run(
        settings, run_id, run.data.tags["rps.model_uri"], tags=tags
    )
    with mlflow_errors(f"tagging run {run_id}"):
        get_client(settings).set_tag(run_id, "rps.version", version)
    log.info(
        "run %s: %s version %s (challenger)", run_id, "new" if created else "existing", version
    )
    return version


def promote_run(
    settings: Settings, params: Params, run_id: str, *, notify: bool = True
) -> Promotion:
    """Apply the gate to the run's registered version; move ``champion`` when it passes.

    Idempotent: when the gate already decided for this version (an earlier promote), that
    decision stands and nothing moves. The evidence of :func:`evaluate_run` is reused when
    it was judged against the current champion, else the gate is evaluated again.

    Raises:
        StageError: the run has no registered version (run :func:`register_candidate`).
    """
    client = get_client(settings)
    name = settings.registered_model_name
    version = registry.version_of_run(settings, run_id)
    if version is None:
        raise StageError(f"training run {run_id} has no registered version of {name}")
    champion = registry.alias_or_none(client, name, registry.CHAMPION)
    champion_version = str(champion.version) if champion is not None else None
    with mlflow_errors(f"model {name} version {version}"):
        tags = dict(client.get_model_version(name, version).tags or {})
    if tags.get("gate_decision") in ("promoted", "refused"):
        return Promotion(
            version=version,
            promoted=champion_version == version,
            champion_version=champion_version,
            rule=tags.get("gate_rule", ""),
            reason=tags.get("gate_reason", ""),
            decided_before=True,
        )
    decision = _stored_decision(settings, run_id) or evaluate_run(settings, params, run_id)
    promoted = registry.apply_gate(settings, version, decision)
    with mlflow_errors(f"tagging run {run_id}"):
        client.set_tag(run_id, "rps.gate", "promoted" if promoted else "refused")
    reloads = notify_reload(settings) if promoted and notify else {}
    return Promotion(
        version=version,
        promoted=promoted,
        champion_version=version if promoted else champion_version,
        rule=decision.rule,
        reason=decision.reason,
        reloads=reloads,
    )


def reload_urls(settings: Settings) -> list[str]:
    """The API base URLs of ``settings.api_reload_urls`` (comma separated, blanks dropped)."""
    return [url.strip().rstrip("/") for url in settings.api_reload_urls.split(",") if url.strip()]


def notify_reload(settings: Settings) -> dict[str, str]:
    """``POST /model/reload`` on every configured API; never raises.

    A failure is logged and reported (the API also polls the registry, so a missed call
    only delays the switch).

    Returns:
        URL -> ``ok`` or the error.
    """
    import httpx

    headers = {}
    if settings.api_token is not None:
        headers["Authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
    outcome: dict[str, str] = {}
    for base in reload_urls(settings):
        url = f"{base}{RELOAD_PATH}"
        try:
            response = httpx.post(url, headers=headers, timeout=RELOAD_TIMEOUT_S)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("the new champion could not be announced to %s: %s", url, exc)
            outcome[url] = f"error: {exc}"
        else:
            log.info("asked %s to reload the champion", url)
            outcome[url] = "ok"
    return outcome
