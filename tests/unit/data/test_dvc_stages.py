"""dvc.yaml describes the same data tasks as `rps pipeline` and the DAG, and DVC reads it."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import yaml

from rps.data.pipeline import DATA_TASKS

ROOT = Path(__file__).resolve().parents[3]


def test_stages_are_the_pipeline_tasks_in_order() -> None:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    stages = spec["stages"]
    assert tuple(stages) == DATA_TASKS
    previous = None
    for name, stage in stages.items():
        assert stage["cmd"].startswith(f"rps pipeline --task {name} "), stage["cmd"]
        outs = [next(iter(out)) if isinstance(out, dict) else out for out in stage["outs"]]
        assert outs == [f"${{manifests}}/{name}.json"]
        if previous is not None:  # each stage depends on the one before: one sequence
            assert stage["deps"] == [f"${{manifests}}/{previous}.json"]
        previous = name


def test_dvc_dag_prints_the_stages() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "dag", "--md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    nodes = dict(re.findall(r'(node\d+)\["(\w+)"\]', result.stdout))
    assert sorted(nodes.values()) == sorted(DATA_TASKS)
    edges = {(nodes[a], nodes[b]) for a, b in re.findall(r"(node\d+)-->(node\d+)", result.stdout)}
    assert edges == set(itertools.pairwise(DATA_TASKS))
