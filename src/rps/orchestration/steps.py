"""The DAG's task bodies: one function per task, each a thin call into the library.

Every function takes the Airflow task context (any mapping with ``dag_run``,
``data_interval_end``, ``logical_date``, ``ti``) and the upstream task's *manifest*, and
returns the manifest extended with its own outputs. A manifest holds paths, hashes and IDs
only (it travels through XCom), never data.

The run's interval comes from the context, never from the wall clock: the interval ends at
``data_interval_end`` (falling back to the logical date, then to the run's ``run_after`` for
a manual run without a logical date) and spans ``data.history_days`` before it. Running the
same interval again therefore names and writes the same files, and versioning identical
content is a no-op.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import pandas as pd

from rps.models.tracking import finished_runs, get_client
from rps.orchestration import DAG_ID

if TYPE_CHECKING:
    from rps.data.pipeline import Interval
    from rps.params import Params
    from rps.settings import Settings

logger = logging.getLogger(__name__)

Manifest = dict[str, Any]
ALLOWED_CONF_KEYS: tuple[str, ...] = ("reason", "source", "promote", "adapt", "drift_onset")
SOURCES: tuple[str, ...] = ("open_meteo", "replay", "synthetic")
DATA_TASKS = frozenset({"extract", "quality_gate", "transform", "profile", "load", "version"})

P = ParamSpec("P")
R = TypeVar("R")
_settings_override: list[Settings] = []  # a stack: the innermost using_settings() wins


class RunConfError(ValueError):
    """The run's conf holds an unknown key or an invalid value."""


@dataclass(frozen=True)
class RunConf:
    """The validated ``dag_run.conf``.

    Attributes:
        reason: why the run happened (``schedule``, ``manual``, ``drift``, or an alert's
            ``"<AlertName>: <summary>"``).
        source: the weather source for this run (default: ``settings.source``).
        promote: False stops before the promote task: ``champion`` stays where it is.
        adapt: train for a new regime (:mod:`rps.models.adaptation`); also implied by a
            drift alert's name as the reason, or by ``drift_onset``.
        drift_onset: the drift's onset (ISO 8601; default: estimated).
    """

    reason: str
    source: str | None = None
    promote: bool = True
    adapt: bool = False
    drift_onset: pd.Timestamp | None = None

    @property
    def adapts(self) -> bool:
        """Whether the run retrains for a drift (explicitly, by onset, or by its reason)."""
        from rps.models.adaptation import is_drift_reason

        return self.adapt or self.drift_onset is not None or is_drift_reason(self.reason)


@dataclass(frozen=True)
class RunInfo:
    """What a task needs to know about its run."""

    dag_id: str
    run_id: str | None
    interval_end: pd.Timestamp
    conf: RunConf
    try_number: int | None = None
    log_url: str | None = None


# task errors ----------------------------------------------------------------------------
# Airflow's worker puts the task's exception into the failure callback's context; the
# in-process runner (dag.test) does not. Task bodies remember their exception here so the
# failure alert can include it (and the quality gate's report) either way.
_task_errors: dict[tuple[str | None, str | None], BaseException] = {}


def _error_key(context: Mapping[str, Any]) -> tuple[str | None, str | None]:
    ti = context.get("ti") or context.get("task_instance")
    run_id = getattr(context.get("dag_run"), "run_id", None) or context.get("run_id")
    return (run_id, getattr(ti, "task_id", None))


def task_body(
    func: Callable[Concatenate[Mapping[str, Any], P], R],
) -> Callable[Concatenate[Mapping[str, Any], P], R]:
    """Mark a task body: its exception is remembered for :func:`on_failure`."""

    @functools.wraps(func)
    def wrapper(context: Mapping[str, Any], /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(context, *args, **kwargs)
        except Exception as exc:
            _task_errors[_error_key(context)] = exc
            raise

    return wrapper


# settings ---------------------------------------------------------------------------------
@contextlib.contextmanager
def using_settings(settings: Settings) -> Iterator[None]:
    """Make in-process task runs (``dag.test``) use ``settings`` instead of the environment."""
    _settings_override.append(settings)
    try:
        yield
    finally:
        _settings_override.pop()


def current_settings() -> Settings:
    """The settings a task runs with: the in-process override, else a fresh read of the env."""
    if _settings_override:
        return _settings_override[-1]
    from rps.settings import Settings

    return Settings()


def _config() -> tuple[Settings, Params]:
    from rps.params import load_params

    settings = current_settings()
    return settings, load_params(settings.params_file)


# the run's conf and interval ------------------------------------------------------------
def parse_conf(conf: Mapping[str, Any] | None, *, default_reason: str = "manual") -> RunConf:
    """Validate a run's conf: ``reason`` (text), ``source`` (a source name), ``promote`` and
    ``adapt`` (booleans), ``drift_onset`` (an ISO 8601 time).

    Raises:
        RunConfError: naming the unknown key(s) or the invalid value.
    """
    conf = dict(conf or {})
    unknown = sorted(set(conf) - set(ALLOWED_CONF_KEYS))
    if unknown:
        raise RunConfError(
            f"unknown conf key(s) {', '.join(repr(k) for k in unknown)}: "
            f"allowed keys are {', '.join(ALLOWED_CONF_KEYS)}"
        )
    reason = conf.get("reason", default_reason)
    if not isinstance(reason, str) or not reason.strip():
        raise RunConfError(f"conf key 'reason' must be a non-empty string, got {reason!r}")
    source = conf.get("source")
    if source is not None and source not in SOURCES:
        raise RunConfError(f"conf key 'source' must be one of {', '.join(SOURCES)}: {source!r}")
    flags = {}
    for key, default in (("promote", True), ("adapt", False)):
        value = conf.get(key, default)
        if not isinstance(value, bool):
            raise RunConfError(f"conf key {key!r} must be true or false, got {value!r}")
        flags[key] = value
    onset = conf.get("drift_onset")
    if onset is not None:
        try:
            onset = _utc_hour(onset)
        except (ValueError, TypeError) as exc:
            raise RunConfError(
                f"conf key 'drift_onset' must be an ISO 8601 time, got {onset!r}"
            ) from exc
    return RunConf(
        reason=reason.strip(),
        source=source,
        promote=flags["promote"],
        adapt=flags["adapt"],
        drift_onset=onset,
    )


def _utc_hour(value: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.floor("h")


def run_info(context: Mapping[str, Any]) -> RunInfo:
    """The run's id, interval end and validated conf, from an Airflow task context.

    Raises:
        RunConfError: the conf is invalid.
        ValueError: the context carries no interval end, logical date or run_after.
    """
    dag_run = context.get("dag_run")
    run_type = str(getattr(dag_run, "run_type", "") or "")
    default_reason = "schedule" if run_type.endswith("scheduled") else "manual"
    conf = parse_conf(getattr(dag_run, "conf", None), default_reason=default_reason)
    end = (
        context.get("data_interval_end")
        or context.get("logical_date")
        or getattr(dag_run, "run_after", None)
    )
    if end is None:
        raise ValueError("the task context has no data_interval_end, logical_date or run_after")
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    return RunInfo(
        dag_id=str(getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", None) or DAG_ID),
        run_id=getattr(dag_run, "run_id", None) or context.get("run_id"),
        interval_end=_utc_hour(end),
        conf=conf,
        try_number=getattr(ti, "try_number", None),
        log_url=getattr(ti, "log_url", None),
    )


def _fail_fast(exc: Exception) -> Exception:
    """An exception Airflow will not retry (AirflowFailException when Airflow is present)."""
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:  # pragma: no cover - only outside Airflow
        return exc
    return AirflowFailException(str(exc))


def _info_and_interval(context: Mapping[str, Any], params: Params) -> tuple[RunInfo, Interval]:
    from rps.data.pipeline import Interval

    try:
        info = run_info(context)
    except RunConfError as exc:
        raise _fail_fast(exc) from exc
    return info, Interval.ending_at(info.interval_end, params)


# data tasks: the same sequence as `rps pipeline` and the DVC stages (rps.data.pipeline) ------
def _data_task(name: str, context: Mapping[str, Any], manifest: Manifest) -> Manifest:
    from rps.data.pipeline import run_data_task

    settings, params = _config()
    info, interval = _info_and_interval(context, params)
    return run_data_task(name, settings, params, interval, manifest, source_name=info.conf.source)


@task_body
def extract(context: Mapping[str, Any]) -> Manifest:
    """Validate the conf, then fetch the run's interval into a raw file (never overwritten)."""
    _, params = _config()
    info, interval = _info_and_interval(context, params)
    logger.info(
        "run %s (%s): %s .. %s", info.run_id, info.conf.reason, interval.start, interval.end
    )
    return _data_task("extract", context, {"reason": info.conf.reason})


@task_body
def quality_gate(context: Mapping[str, Any], manifest: Manifest) -> Manifest:
    """Run the quality gate on the raw file; a failure raises QualityGateError (no retry)."""
    return _data_task("validate", context, manifest)


@task_body
def transform(context: Mapping[str, Any], manifest: Manifest) -> Manifest:
    """Clean the gate-passed raw file into the processed Parquet dataset."""
    return _data_task("transform", context, manifest)


@task_body
def profile(context: Mapping[str, Any], manifest: Manifest) -> Manifest:
    """Profile the processed dataset into MLflow (once per dataset content)."""
    return _data_task("profile", context, manifest)


@task_body
def load(context: Mapping[str, Any], manifest: Manifest) -> Manifest:
    """Add the processed dataset to DVC and push it to the remote (the object store)."""
    return _data_task("load", context, manifest)


@task_body
def version(context: Mapping[str, Any], manifest: Manifest) -> Manifest:
    """Commit the dataset's DVC pointer (a no-op for content already versioned last)."""
    return _data_task("version", context, manifest)


# callbacks --------------------------------------------------------------------------------
def on_failure(context: Mapping[str, Any]) -> None:
    """``on_failure_callback``: alert with the error (and the gate's report); never raises."""
    from rps.orchestration.alerts import failure_event, send_alert

    try:
        settings = current_settings()
        remembered = _task_errors.pop(_error_key(context), None)
        error = context.get("exception") or remembered
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        end = context.get("data_interval_end") or context.get("logical_date")
        event = failure_event(
            dag_id=str(getattr(dag_run, "dag_id", None) or DAG_ID),
            run_id=getattr(dag_run, "run_id", None),
            task_id=getattr(ti, "task_id", None),
            error=error if isinstance(error, BaseException) else None,
            interval_end=_utc_hour(end).isoformat() if end is not None else None,
            try_number=getattr(ti, "try_number", None),
            log_url=getattr(ti, "log_url", None),
        )
        if error is not None and not isinstance(error, BaseException):
            event["error"] = str(error)
        send_alert(settings, event)
        if event["task_id"] in DATA_TASKS:
            from rps.data.pipeline import write_status

            write_status(
                settings,
                last_run_failed=True,
                last_failure_at=pd.Timestamp.now(tz="UTC").isoformat(),
                last_failed_task=event["task_id"],
            )
    except Exception:  # the callback must not turn a task failure into another failure
        logger.exception("the failure alert could not be built or sent")


# model tasks ------------------------------------------------------------------------------
# train logs a run and its candidate (no registry side effect); evaluate stores the gate's
# evidence with the run; register creates the version (alias challenger); promote applies the
# gate and moves champion, unless the run's conf says {"promote": false}. Each is idempotent on
# the training run's id (rps.models.stages), so a retried task or a rerun interval repeats
# nothing: train reuses a finished run of the same dataset, params, code and drift onset.
RUN_TAG_PARAMS = "rps.orchestration.params_sha256"
RUN_TAG_INTERVAL = "rps.orchestration.interval_end"
RUN_TAG_REASON = "rps.orchestration.reason"
NO_DRIFT = "none"


class ModelStepError(RuntimeError):
    """A model task found the training run or the registry not in the expected state."""


def params_fingerprint(params: Params) -> str:
    """sha256 of the validated params (any change retrains)."""
    return hashlib.sha256(params.model_dump_json().encode()).hexdigest()


def find_training_run(
    settings: Settings,
    *,
    dataset_md5: str,
    params_sha: str,
    code_sha: str,
    drift: str = NO_DRIFT,
) -> str | None:
    """A finished training run of this dataset, params, code and drift setting (its id).

    Reruns of an interval reuse it instead of training (and registering) again."""
    tags = {
        "rps.dataset_md5": dataset_md5,
        RUN_TAG_PARAMS: params_sha,
        "rps.code_sha": code_sha,
        "rps.orchestration.drift": drift,
    }
    for run in finished_runs(settings, settings.mlflow_experiment, tags, max_results=5):
        if "rps.model_uri" in run.data.tags:
            return str(run.info.run_id)
    return None


@task_body
def train(context: Mapping[str, Any], manifest: Manifest) -> Manifest:
    """Train on the dataset version, log the run and its candidate (or reuse a run); a
    drift-triggered run (:class:`RunConf`) trains for the new regime."""
    from rps.models.train import code_version, train_candidate

    settings, params = _config()
    info, _ = _info_and_interval(context, params)
    conf = info.conf
    dataset_md5 = str(manifest["dataset_md5"])
    params_sha = params_fingerprint(params)
    code_sha, _ = code_version(settings.project_root)
    drift = NO_DRIFT
    if conf.adapts:
        drift = conf.drift_onset.isoformat() if conf.drift_onset is not None else "estimated"
    found = find_training_run(
        settings, dataset_md5=dataset_md5, params_sha=params_sha, code_sha=code_sha, drift=drift
    )
    if found is not None:
        logger.info("dataset %s already trained in run %s", dataset_md5, found)
        return {**manifest, "train_run_id": found, "train_reused": True, "adapted": conf.adapts}
    run = train_candidate(
        settings,
        params,
        dataset_md5=dataset_md5,
        adapt=conf.adapts,
        onset=conf.drift_onset,
        run_tags={
            RUN_TAG_PARAMS: params_sha,
            RUN_TAG_INTERVAL: info.interval_end.isoformat(),
            RUN_TAG_REASON: conf.reason,
            "rps.orchestration.drift": drift,
        },
    )
    return {
        **manifest,
        "train_run_id": run.run_id,
        "train_reused": False,
        "adapted": conf.adapts,
        "drift_onset": run.drift_onset,
    }


@task_body
def evaluate(context: Mapping[str, Any], manifest: Manifest) -> Manifest:
    """Compute the gate's evidence (the candidate against the current champion) for the run."""
    from rps.models.stages import evaluate_run

    settings, params = _config()
    run_id = str(manifest["train_run_id"])
    decision = evaluate_run(settings, params, run_id)
    run = get_client(settings).get_run(run_id)
    return {
        **manifest,
        "candidate": run.data.tags.get("rps.candidate"),
        "holdout_rmse": decision.candidate_rmse,
        "persistence_rmse": decision.persistence_rmse,
        "champion_rmse": decision.champion_rmse,
        "gate_rule": decision.rule,
        "gate_passes": decision.promote,
    }


@task_body
def register(context: Mapping[str, Any], manifest: Manifest) -> Manifest:
    """Register the run's model as a version with alias ``challenger`` (once per run)."""
    from rps.models.stages import register_candidate

    settings = current_settings()
    version = register_candidate(settings, str(manifest["train_run_id"]))
    return {
        **manifest,
        "model_version": version,
        "model_uri": f"models:/{settings.registered_model_name}/{version}",
    }


@task_body
def promote(context: Mapping[str, Any], manifest: Manifest) -> Manifest:
    """Apply the gate and move ``champion`` (skipped when the run's conf says not to)."""
    from rps.models.registry import CHAMPION, ModelNotFoundError, version_info
    from rps.models.stages import promote_run

    settings, params = _config()
    info, _ = _info_and_interval(context, params)
    if not info.conf.promote:
        try:
            champion: str | None = str(version_info(settings, CHAMPION)["version"])
        except ModelNotFoundError:
            champion = None
        logger.info("conf promote=false: champion stays at %s", champion)
        return {
            **manifest,
            "promoted": False,
            "promotion_skipped": True,
            "champion_version": champion,
            "promotion_reason": "not promoted: the run's conf says promote=false",
        }
    outcome = promote_run(settings, params, str(manifest["train_run_id"]))
    return {
        **manifest,
        "promoted": outcome.promoted,
        "promotion_skipped": False,
        "champion_version": outcome.champion_version,
        "promotion_reason": outcome.reason,
        "api_reloads": outcome.reloads,
    }


SUMMARY_KEYS: tuple[str, ...] = (
    "reason",
    "data_source",
    "interval_start",
    "interval_end",
    "raw_path",
    "dataset_md5",
    "dvc_git_rev",
    "storage_uri",
    "profile_run_id",
    "train_run_id",
    "train_reused",
    "candidate",
    "holdout_rmse",
    "persistence_rmse",
    "model_version",
    "adapted",
    "drift_onset",
    "gate_rule",
    "promoted",
    "promotion_skipped",
    "champion_version",
    "promotion_reason",
)


@task_body
def notify(context: Mapping[str, Any], manifest: Manifest) -> Manifest:
    """Send the run's success summary through the alert channels."""
    from rps.orchestration.alerts import send_alert, success_event

    settings = current_settings()
    info = run_info(context)
    summary = {key: manifest.get(key) for key in SUMMARY_KEYS if key in manifest}
    outcome = send_alert(
        settings, success_event(dag_id=info.dag_id, run_id=info.run_id, summary=summary)
    )
    return {**manifest, "alert": outcome}
