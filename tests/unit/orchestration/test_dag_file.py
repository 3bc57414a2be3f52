"""The DAG file stays thin: Airflow-3 clean (ruff AIR) and only airflow.sdk/stdlib at top level."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from rps.orchestration import TASK_IDS

REPO_ROOT = Path(__file__).resolve().parents[3]
DAG_FILE = REPO_ROOT / "airflow" / "dags" / "rps_pipeline_dag.py"


def test_ruff_airflow_rules_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "AIR", "--no-cache", "airflow/"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_top_level_imports_are_airflow_sdk_and_stdlib() -> None:
    tree = ast.parse(DAG_FILE.read_text())
    modules = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module or "")
    third_party = {m for m in modules if m.split(".")[0] not in sys.stdlib_module_names}
    assert third_party == {"airflow.sdk"}


def test_every_task_makes_one_call_into_rps() -> None:
    tree = ast.parse(DAG_FILE.read_text())
    tasks = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("task" in ast.unparse(d) for d in node.decorator_list)
    }
    assert set(tasks) == set(TASK_IDS)
    for name, node in tasks.items():
        (imported,) = [n for n in node.body if isinstance(n, ast.ImportFrom)]
        assert imported.module == "rps.orchestration"
        (ret,) = [n for n in node.body if isinstance(n, ast.Return)]
        assert ast.unparse(ret.value).startswith(f"steps.{name}(get_current_context()")
