"""The pipeline DAG under Airflow 3: parsing, end-to-end runs with dag.test, failure paths.

Airflow reads its configuration when first imported, so the module fixture points
AIRFLOW_HOME (and the project's state) at a temporary folder before anything imports
airflow; each full run costs tens of seconds, so runs are shared through module fixtures.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from rps.orchestration import DAG_ID, TASK_IDS
from rps.orchestration.local_run import DagRunResult
from rps.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[2]
GOOD_END = "2026-11-20T00:00:00+00:00"
CORRUPT_END = "2026-11-21T00:00:00+00:00"
CONF_END = "2026-11-22T00:00:00+00:00"


@dataclass(frozen=True)
class Project:
    root: Path
    params_path: Path

    def settings(self, state: str, **overrides: Any) -> Settings:
        """Settings with their own state folder and the shared Airflow home."""
        return Settings(
            project_root=self.root,
            params_path=self.params_path,
            state_dir=self.root / state,
            airflow_home=self.root / "airflow-home",
            **overrides,
        )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """A temporary project with small params and the embedded Airflow home migrated."""
    root = tmp_path_factory.mktemp("dag-project")
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["data"]["history_days"] = 60
    raw["train"]["n_trials"] = 2
    raw["horizons"] = {"max_hours": 12, "group_starts": [1, 4, 7], "interval_folds": 2}
    params_path = root / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw))
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith(("RPS_", "AIRFLOW"))]:
        del os.environ[key]
    os.environ.update(
        {
            "RPS_PROJECT_ROOT": str(root),
            "RPS_PARAMS_PATH": str(params_path),
            "RPS_STATE_DIR": str(root / "state-env"),
            "RPS_AIRFLOW_HOME": str(root / "airflow-home"),
        }
    )
    from rps.settings import get_settings

    get_settings.cache_clear()
    from rps.orchestration.airflow_home import ensure_airflow_home

    proj = Project(root=root, params_path=params_path)
    ensure_airflow_home(proj.settings("state-env"))
    try:
        yield proj
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def run(settings: Settings, end: str, conf: dict[str, Any] | None = None) -> DagRunResult:
    from rps.orchestration.local_run import run_dag_locally

    return run_dag_locally(settings, conf=conf or {"reason": "test"}, end=end)


def alert_lines(settings: Settings) -> list[dict[str, Any]]:
    if not settings.alert_log.exists():
        return []
    return [json.loads(line) for line in settings.alert_log.read_text().splitlines()]


def snapshot(settings: Settings) -> dict[str, Any]:
    """Everything a rerun of the same interval must leave unchanged."""
    from rps.models.registry import list_versions

    files = {
        p.relative_to(settings.state_path).as_posix(): p.read_bytes()
        for folder in (settings.raw_dir, settings.processed_dir)
        for p in sorted(folder.iterdir())
        if p.suffix in {".csv", ".parquet"} or p.name.endswith(".meta.json")
    }
    log = subprocess.run(
        ["git", "-C", str(settings.dvc_repo_path), "log", "--format=%H"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    catalog = (settings.state_path / "datasets.jsonl").read_text().splitlines()
    return {
        "files": files,
        "dvc_commits": log,
        "catalog": catalog,
        "versions": [v["version"] for v in list_versions(settings)],
    }


@pytest.fixture(scope="module")
def good(project: Project) -> tuple[Settings, DagRunResult]:
    settings = project.settings("state-good")
    return settings, run(settings, GOOD_END)


@pytest.fixture(scope="module")
def rerun(good: tuple[Settings, DagRunResult]) -> tuple[dict[str, Any], dict[str, Any], Any]:
    settings, _ = good
    before = snapshot(settings)
    again = run(settings, GOOD_END)
    return before, snapshot(settings), again


def write_corrupt_tmy3(path: Path) -> Path:
    """pvlib's Greensboro TMY3 file with every dry-bulb temperature stuck at 99 degC."""
    from rps.data.sources.replay import default_recording

    with default_recording().open(newline="") as handle:
        rows = list(csv.reader(handle))
    column = rows[1].index("Dry-bulb (C)")
    for row in rows[2:]:
        row[column] = "99.0"
    with path.open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    return path


# parsing -----------------------------------------------------------------------------------
def test_dagbag_loads_with_the_expected_graph(project: Project) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from rps.orchestration.airflow_home import dags_folder

    bag = DagBag(dag_folder=str(dags_folder(project.settings("state-env"))))
    assert bag.import_errors == {}
    dag = bag.get_dag(DAG_ID)
    assert dag is not None
    assert sorted(dag.task_ids) == sorted(TASK_IDS)
    edges = {(up, down) for up in dag.task_ids for down in dag.get_task(up).downstream_task_ids}
    assert edges == set(itertools.pairwise(TASK_IDS))
    extract = dag.get_task("extract")
    assert extract.retries == 3 and extract.retry_exponential_backoff == 2.0
    assert all(dag.get_task(t).retries == 0 for t in TASK_IDS[1:])
    assert all(dag.get_task(t).on_failure_callback for t in TASK_IDS)
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.timetable.expression == "0 0 * * *"  # settings.dag_schedule @daily (expanded)


# the scheduled path --------------------------------------------------------------------------
def test_end_to_end_run_leaves_a_champion(good: tuple[Settings, DagRunResult]) -> None:
    from rps.models.registry import champion_info

    settings, result = good
    assert result.succeeded, [(t.task_id, t.state) for t in result.tasks]
    assert [t.task_id for t in result.tasks] == list(TASK_IDS)
    assert all(t.state == "success" for t in result.tasks)
    champion = champion_info(settings)
    (summary,) = [e for e in alert_lines(settings) if e["event"] == "run_succeeded"]
    assert summary["champion_version"] == champion["version"] == summary["model_version"]
    assert summary["dataset_md5"] == champion["dataset_md5"]
    assert summary["interval_end"] == GOOD_END
    assert summary["interval_start"] == "2026-09-21T00:00:00+00:00"  # 60 days before
    assert (settings.raw_dir / "raw_data_20261120_000000.csv").is_file()
    status = json.loads((settings.state_path / "pipeline_status.json").read_text())
    assert status["last_run_failed"] is False
    assert status["last_dataset_md5"] == summary["dataset_md5"]


def test_same_interval_twice_changes_nothing(rerun: tuple[dict[str, Any], ...]) -> None:
    before, after, again = rerun
    assert again.succeeded
    assert after["files"].keys() == before["files"].keys()
    assert after["files"] == before["files"]  # same names, same bytes
    assert after["dvc_commits"] == before["dvc_commits"]  # no new DVC commit
    assert after["catalog"] == before["catalog"]  # same dataset md5, no new version
    assert after["versions"] == before["versions"]  # no duplicate model version


# failure paths -----------------------------------------------------------------------------
def test_corrupt_source_fails_at_the_gate_and_alerts(project: Project) -> None:
    corrupt = write_corrupt_tmy3(project.root / "corrupt_tmy3.csv")
    settings = project.settings("state-corrupt", replay_file=corrupt)
    result = run(settings, CORRUPT_END)
    assert result.state == "failed"
    assert result.task("extract").state == "success"
    assert result.task("quality_gate").state == "failed"
    for task_id in TASK_IDS[2:]:
        assert result.task(task_id).state in {"upstream_failed", None}
    assert not settings.processed_dir.exists() or not any(settings.processed_dir.iterdir())
    (alert,) = alert_lines(settings)
    assert alert["event"] == "task_failed" and alert["task_id"] == "quality_gate"
    assert alert["error_type"] == "QualityGateError"
    failures = alert["quality_report"]["failures"]
    ranged = [f for f in failures if f["check"] == "range" and f["column"] == "temperature_2m"]
    assert ranged, failures
    assert set(ranged[0]) >= {"check", "column", "observed", "allowed"}
    assert "60.0" in str(ranged[0]["allowed"]) and "99" in str(ranged[0]["observed"])
    status = json.loads((settings.state_path / "pipeline_status.json").read_text())
    assert status["last_run_failed"] is True and status["last_failed_task"] == "quality_gate"


def test_unknown_conf_key_fails_the_run_naming_it(project: Project) -> None:
    settings = project.settings("state-conf")
    result = run(settings, CONF_END, conf={"reason": "drift", "full_refresh": True})
    assert result.state == "failed"
    assert result.task("extract").state == "failed"
    assert result.task("extract").try_number == 1  # a bad conf is not retried
    assert all(result.task(t).state in {"upstream_failed", None} for t in TASK_IDS[1:])
    (alert,) = alert_lines(settings)
    assert alert["task_id"] == "extract" and "'full_refresh'" in alert["error"]
    assert not settings.raw_dir.exists() or not any(settings.raw_dir.iterdir())


def test_a_run_off_the_main_thread_runs_in_a_child_with_its_interval_and_conf(
    project: Project,
) -> None:
    """Off the main thread the run goes to a child process, which gets the same logical
    date (floored to the hour), conf and settings (its alert lands in this state folder)."""
    settings = project.settings("state-child")
    conf = {"reason": "drift", "full_refresh": True}
    results: list[DagRunResult] = []
    worker = threading.Thread(
        target=lambda: results.append(run(settings, "2026-11-22T00:40:00+00:00", conf))
    )
    worker.start()
    worker.join(timeout=600)
    (result,) = results
    assert result.logical_date == "2026-11-22T00:00:00+00:00"
    assert result.conf == conf
    assert result.state == "failed" and result.task("extract").state == "failed"
    (alert,) = alert_lines(settings)
    assert alert["task_id"] == "extract" and "'full_refresh'" in alert["error"]


def test_retrain_trigger_runs_in_process(project: Project, good: Any) -> None:
    """trigger_retrain without an API URL: a full run with conf reason=drift (reuses the model)."""
    from rps.orchestration.trigger import start_retrain

    settings, _ = good
    result = start_retrain("drift", settings)
    assert result.via == "in-process" and result.state == "success"
    last = alert_lines(settings)[-1]
    assert last["event"] == "run_succeeded" and last["reason"] == "drift"
    assert last["run_id"] == result.run_id
    assert last["train_reused"] is False  # a new interval: new data, a new model version


# model stages: promote or not ----------------------------------------------------------------
STAGES_END = "2026-11-20T00:00:00+00:00"
LATER_END = "2026-11-24T00:00:00+00:00"
#: a search space that cannot fit anything: the challenger falls back to persistence
WEAK_SPACE = {
    "lightgbm": {"num_leaves": [2, 2], "learning_rate": [0.01, 0.01], "n_estimators": [1, 2]},
    "ridge": {"alpha": [1e7, 1e8]},
}


@pytest.fixture(scope="module")
def staged(project: Project) -> tuple[Settings, DagRunResult, DagRunResult]:
    """From a fresh state: a run that promotes, then a --no-promote run of a worse model."""
    settings = project.settings("state-stages")
    first = run(settings, STAGES_END)
    raw = yaml.safe_load(project.params_path.read_text())
    raw["train"]["search_space"] = WEAK_SPACE
    weak_path = project.root / "params-weak.yaml"
    weak_path.write_text(yaml.safe_dump(raw))
    weak = Settings(
        project_root=project.root,
        params_path=weak_path,
        state_dir=settings.state_path,
        airflow_home=project.root / "airflow-home",
    )
    second = run(weak, LATER_END, conf={"reason": "test", "promote": False})
    return settings, first, second


def test_a_no_promote_run_leaves_the_champion_and_adds_a_challenger(
    staged: tuple[Settings, DagRunResult, DagRunResult],
) -> None:
    from rps.models.registry import history, version_info

    settings, first, second = staged
    assert first.succeeded and second.succeeded, [(t.task_id, t.state) for t in second.tasks]
    assert version_info(settings, "champion")["version"] == "1"
    assert version_info(settings, "challenger")["version"] == "2"
    assert [e["version"] for e in history(settings)] == ["1"]  # champion moved once
    summaries = [e for e in alert_lines(settings) if e["event"] == "run_succeeded"]
    assert summaries[0]["promoted"] is True and summaries[0]["model_version"] == "1"
    assert summaries[1]["promoted"] is False and summaries[1]["promotion_skipped"] is True
    assert summaries[1]["model_version"] == "2" and summaries[1]["champion_version"] == "1"
    assert version_info(settings, "2")["gate_decision"] in ("pending", "refused")


def test_compare_fails_for_a_worse_challenger_and_refuses_a_version_against_itself(
    staged: tuple[Settings, DagRunResult, DagRunResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer
    from typer.testing import CliRunner

    from rps.cli import model as model_cli
    from rps.settings import get_settings

    settings, _, _ = staged
    monkeypatch.setenv("RPS_STATE_DIR", str(settings.state_path))
    app = typer.Typer()
    model_cli.register(app)
    get_settings.cache_clear()
    try:
        worse = CliRunner().invoke(
            app, ["model", "compare", "--candidate", "challenger", "--against", "champion"]
        )
        itself = CliRunner().invoke(
            app, ["model", "compare", "--candidate", "champion", "--against", "1"]
        )
    finally:
        get_settings.cache_clear()
    assert worse.exit_code == 1, worse.output
    assert "REFUSED" in worse.output
    assert itself.exit_code == 1
    assert "same version (v1)" in itself.output and "compared with itself" in itself.output
