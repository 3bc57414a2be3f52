"""The GitHub workflows, rulesets, deploy scripts and hooks, checked as data.

Each workflow is parsed as YAML and held to its contract: triggers and branches, a concurrency
group, secrets only through ``${{ secrets.* }}`` (and never pasted into a shell script),
uv caching, actions pinned to a version, the branch flow feature -> dev -> test -> main with its
required checks, and upstream actionlint (at the version ci-dev runs) plus shellcheck clean on
them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
RULESETS = REPO_ROOT / ".github" / "rulesets"
NAMES = ("ci-dev", "ci-test", "cd-production")

SECRET_REF = re.compile(r"secrets\.")
SECRET_EXPR = re.compile(r"\$\{\{\s*secrets\.[A-Z][A-Z0-9_]*\s*\}\}")
PINNED = re.compile(
    r"^(?:[\w.-]+/[\w./-]+@(?:v\d+(?:\.\d+){0,2}|\d+\.\d+\.\d+|[0-9a-f]{40})"
    r"|docker://[\w./-]+:\d+\.\d+\.\d+)$"
)


def load(name: str) -> dict[str, Any]:
    data: dict[Any, Any] = yaml.safe_load((WORKFLOWS / f"{name}.yml").read_text("utf-8"))
    # YAML 1.1 reads the key `on` as True
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def runs(workflow: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in steps(workflow))


def step_index(workflow: dict[str, Any], needle: str) -> int:
    for index, step in enumerate(steps(workflow)):
        if needle in json.dumps(step):
            return index
    raise AssertionError(f"no step mentions {needle!r}")


@pytest.mark.parametrize("name", NAMES)
def test_parses_with_a_concurrency_group_and_permissions(name: str) -> None:
    workflow = load(name)
    assert workflow["name"] == name
    group = workflow["concurrency"]["group"]
    assert group.startswith(f"{name}"), group
    assert "permissions" in workflow, "least privilege: declare the token's permissions"
    for job in workflow["jobs"].values():
        assert job.get("timeout-minutes"), "every job has a timeout"


@pytest.mark.parametrize("name", NAMES)
def test_secrets_only_through_expressions(name: str) -> None:
    text = (WORKFLOWS / f"{name}.yml").read_text("utf-8")
    references = len(SECRET_REF.findall(text))
    expressions = len(SECRET_EXPR.findall(text))
    assert references == expressions, "every secret is a whole ${{ secrets.NAME }} expression"
    for step in steps(load(name)):
        assert "secrets." not in str(step.get("run", "")), (
            f"step {step.get('name')!r} pastes a secret into its script; pass it through env"
        )
    for key in ("password", "token", "api_key"):
        for match in re.finditer(rf"^\s*{key}:\s*(.+)$", text, flags=re.MULTILINE | re.I):
            assert match.group(1).startswith("${{"), f"literal credential: {match.group(0)}"


@pytest.mark.parametrize("name", NAMES)
def test_actions_are_pinned_and_uv_is_cached(name: str) -> None:
    workflow = load(name)
    uses = [step["uses"] for step in steps(workflow) if "uses" in step]
    for ref in uses:
        assert PINNED.match(ref.split()[0]), f"{ref} is not pinned to a version"
    setup_uv = [step for step in steps(workflow) if step.get("uses", "").startswith("astral-sh/")]
    assert setup_uv, "uv is set up with astral-sh/setup-uv"
    for step in setup_uv:
        assert step["with"]["enable-cache"] is True
        assert step["with"]["cache-dependency-glob"] == "uv.lock"
    assert "--frozen" in runs(workflow) or name == "ci-dev"


def test_ci_dev_contract() -> None:
    workflow = load("ci-dev")
    assert workflow["on"]["push"]["branches"] == ["feature/**"]
    # the rulesets of dev, test and main require these checks: they must run on those PRs
    assert workflow["on"]["pull_request"]["branches"] == ["dev", "test", "main"]
    assert workflow["concurrency"]["cancel-in-progress"] is True
    script = runs(workflow)
    assert "make lint" in script
    assert "make test" in script  # the Makefile's test target: --cov-fail-under=80
    makefile = (REPO_ROOT / "Makefile").read_text("utf-8")
    assert "--cov-fail-under=80" in makefile
    assert "uv export --frozen" in script and "pip-audit" in script
    lint = [step["uses"] for step in steps(workflow) if "actionlint" in step.get("uses", "")]
    assert lint == [f"docker://rhysd/actionlint:{_local_actionlint_version()}"], (
        "ci-dev runs upstream actionlint at the version scripts/actionlint.sh runs locally"
    )


def _local_actionlint_version() -> str:
    script = (REPO_ROOT / "scripts" / "actionlint.sh").read_text("utf-8")
    found = re.search(r'^ACTIONLINT_VERSION="([0-9.]+)"$', script, flags=re.MULTILINE)
    assert found, "scripts/actionlint.sh pins ACTIONLINT_VERSION"
    return found.group(1)


def test_ci_test_contract() -> None:
    workflow = load("ci-test")
    assert workflow["on"] == {"pull_request": {"branches": ["test", "main"]}}
    assert workflow["permissions"]["pull-requests"] == "write"
    script = runs(workflow)
    # the DAG stops before promote: the new model is the challenger, champion does not move
    dag_runs = [line for line in script.splitlines() if "rps dag run" in line]
    unpromoted = [line for line in dag_runs if "--no-promote" in line]
    assert len(unpromoted) == 1, dag_runs
    baseline = [line for line in dag_runs if "--no-promote" not in line]
    assert all("--end" in line for line in baseline), "a baseline run is an earlier interval"
    assert "rps model promote" not in script and "rps run " not in script
    assert "rps model compare --candidate challenger --against champion" in script
    assert step_index(workflow, "--no-promote") < step_index(workflow, "rps model compare")
    baseline_step = steps(workflow)[step_index(workflow, "ci-test baseline")]
    assert baseline_step["if"] == "env.RPS_HUB_REPO_URL == ''", "a local champion only w/o hub"
    hub_step = steps(workflow)[step_index(workflow, "rps hub-check")]
    assert hub_step["if"] == "env.RPS_HUB_REPO_URL != ''"
    assert step_index(workflow, "rps hub-check") < step_index(workflow, "--no-promote")
    env = workflow["jobs"]["pipeline"]["env"]
    assert env["RPS_HUB_TOKEN"] == "${{ secrets.RPS_HUB_TOKEN }}"
    assert env["RPS_HUB_REPO_URL"] == "${{ vars.RPS_HUB_REPO_URL }}"
    assert "--output report.md" in script
    assert "cml comment create" in script
    assert any(step.get("uses", "").startswith("iterative/setup-cml@") for step in steps(workflow))
    post = step_index(workflow, "cml comment create")
    fail = step_index(workflow, "challenger is worse than the champion")
    assert step_index(workflow, "rps model compare") < post < fail, "post first, then fail"
    fail_step = steps(workflow)[fail]
    assert fail_step["if"] == "steps.compare.outputs.status != '0'"
    assert "exit 1" in fail_step["run"]
    assert "always()" in steps(workflow)[post]["if"]


def test_cd_production_contract() -> None:
    workflow = load("cd-production")
    assert workflow["on"]["push"] == {"branches": ["main"]}
    assert workflow["concurrency"] == {"group": "cd-production", "cancel-in-progress": False}
    assert workflow["env"]["IMAGE_REGISTRY"] == "${{ vars.IMAGE_REGISTRY || 'ghcr.io' }}"
    order = [
        "rps hub-check",
        "rps model promote",
        "rps deploy fetch-model",
        "docker/build-push-action",
        "aquasecurity/trivy-action",
        "docker push",
        "scripts/deploy.sh",
        "rps deploy verify",
        "rps deploy rollback",
    ]
    indices = [step_index(workflow, needle) for needle in order]
    assert indices == sorted(indices), dict(zip(order, indices, strict=True))
    indices = indices[2:]
    promote = steps(workflow)[step_index(workflow, "rps model promote")]
    assert "rps model info challenger" in promote["run"]
    assert 'echo "promoted=$challenger" >> "$GITHUB_OUTPUT"' in promote["run"]
    back = steps(workflow)[step_index(workflow, "rps model rollback")]
    assert back["if"] == "failure() && steps.promote.outputs.promoted != ''"
    assert step_index(workflow, "rps deploy rollback") < step_index(workflow, "rps model rollback")
    assert workflow["jobs"]["release"]["env"]["RPS_HUB_TOKEN"] == "${{ secrets.RPS_HUB_TOKEN }}"
    build = steps(workflow)[indices[1]]
    assert build["with"]["push"] is False and build["with"]["load"] is True
    tags = build["with"]["tags"]
    assert "steps.meta.outputs.image" in tags and ":latest" in tags
    trivy = steps(workflow)[indices[2]]
    assert trivy["with"]["exit-code"] == "1"
    verify = steps(workflow)[indices[5]]
    assert "--expect-version" in verify["run"]
    rollback = steps(workflow)[indices[6]]
    assert rollback["if"].startswith("failure()")
    assert rollback["env"]["RPS_API_TOKEN"] == "${{ secrets.RPS_API_TOKEN }}"
    logins = [s for s in steps(workflow) if s.get("uses", "").startswith("docker/login-action")]
    assert {s["if"] for s in logins} == {
        "env.IMAGE_REGISTRY == 'ghcr.io'",
        "env.IMAGE_REGISTRY == 'docker.io'",
    }


def _pr_checks(branch: str) -> set[str]:
    """The job names of the workflows that run on pull requests into ``branch``."""
    names = set()
    for name in NAMES:
        workflow = load(name)
        if branch in workflow["on"].get("pull_request", {}).get("branches", []):
            names |= {job.get("name", key) for key, job in workflow["jobs"].items()}
    return names


def test_rulesets_require_the_workflow_checks_and_reviews() -> None:
    ci_dev = {job.get("name", key) for key, job in load("ci-dev")["jobs"].items()}
    ci_test = {job.get("name", key) for key, job in load("ci-test")["jobs"].items()}
    # the spec: one peer review for test and main; every CI check green before a merge
    expected = {"dev": (0, ci_dev), "test": (1, ci_dev | ci_test), "main": (1, ci_dev | ci_test)}
    for branch, (reviews, required) in expected.items():
        ruleset = json.loads((RULESETS / f"{branch}.json").read_text("utf-8"))
        assert ruleset["target"] == "branch" and ruleset["enforcement"] == "active"
        assert ruleset["conditions"]["ref_name"]["include"] == [f"refs/heads/{branch}"]
        assert ruleset["bypass_actors"] == []
        rules = {rule["type"]: rule.get("parameters", {}) for rule in ruleset["rules"]}
        assert {"deletion", "non_fast_forward", "pull_request"} <= set(rules)
        assert rules["pull_request"]["required_approving_review_count"] == reviews
        status = rules["required_status_checks"]
        assert status["strict_required_status_checks_policy"] is True
        checks = {check["context"] for check in status["required_status_checks"]}
        assert checks == required, branch
        # a required check that never runs on that branch's pull requests would block merges
        assert checks <= _pr_checks(branch), checks - _pr_checks(branch)


def test_cd_runs_only_after_the_merge_into_main() -> None:
    workflow = load("cd-production")
    assert "pull_request" not in workflow["on"]
    assert set(workflow["on"]) == {"push", "workflow_dispatch"}


@pytest.fixture
def fake_gh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``gh`` that knows one existing ruleset ("dev: ...", id 7) and logs its calls."""
    assert shutil.which("jq"), "jq is missing: apt-get install jq (.ci/run installs it)"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "gh.log"
    script = bin_dir / "gh"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {log}\n'
        'if [ "$1 $2" = "api repos/o/r/rulesets" ]; then\n'
        "  printf '7\\tdev: pull requests with green CI\\n'\n"
        "fi\n",
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_apply_branch_protection_creates_or_updates(fake_gh: Path) -> None:
    script = REPO_ROOT / "scripts" / "apply-branch-protection.sh"
    result = subprocess.run(
        ["bash", str(script), "o/r"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    calls = fake_gh.read_text(encoding="utf-8").splitlines()
    assert "api --method PUT repos/o/r/rulesets/7 --input .github/rulesets/dev.json" in calls
    assert "api --method POST repos/o/r/rulesets --input .github/rulesets/main.json" in calls
    assert "api --method POST repos/o/r/rulesets --input .github/rulesets/test.json" in calls
    dry = subprocess.run(
        ["bash", str(script), "o/r", "--dry-run"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert dry.returncode == 0 and dry.stdout.count("dry-run:") == 3


def test_deploy_script_contract(tmp_path: Path) -> None:
    script = REPO_ROOT / "scripts" / "deploy.sh"
    env = {"PATH": os.environ["PATH"], "RPS_DEPLOY_IMAGE": "ghcr.io/o/rps-api:1"}
    dry = subprocess.run(
        ["bash", str(script)],
        env={**env, "RPS_DEPLOY_TARGET": "dry-run"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert dry.returncode == 0 and "would deploy ghcr.io/o/rps-api:1" in dry.stdout
    unknown = subprocess.run(
        ["bash", str(script)],
        env={**env, "RPS_DEPLOY_TARGET": "nomad://x"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert unknown.returncode == 2 and "unsupported target" in unknown.stderr
    missing = subprocess.run(
        ["bash", str(script)], env={"PATH": os.environ["PATH"]}, capture_output=True, check=False
    )
    assert missing.returncode != 0


def test_pre_commit_hooks_use_the_locked_tools() -> None:
    config = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text("utf-8"))
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert all(repo["repo"] == "local" for repo in config["repos"])
    for hook_id in ("ruff-check", "ruff-format", "mypy"):
        assert hooks[hook_id]["entry"].startswith("uv run --frozen "), hook_id
        assert hooks[hook_id]["language"] == "system"


def test_dockerignore_keeps_the_image_inputs_only() -> None:
    lines = (REPO_ROOT / ".dockerignore").read_text("utf-8").splitlines()
    assert lines[lines.index("*")] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "README.md", "params.yaml", "src", "model"}
    for excluded in (".venv", ".rps", ".git", "tests", "docs", "notebooks", "airflow"):
        assert excluded in lines


def _actionlint(root: Path) -> subprocess.CompletedProcess[str]:
    assert shutil.which("node") and shutil.which("npm"), "node and npm are needed (apt-get)"
    return subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "actionlint.sh"), str(root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


@pytest.mark.slow
def test_actionlint_is_clean(tmp_path: Path) -> None:
    """Upstream actionlint (scripts/actionlint.sh, the version ci-dev pins) finds nothing."""
    result = _actionlint(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout

    broken = tmp_path / ".github" / "workflows"
    broken.mkdir(parents=True)
    (broken / "x.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - run: echo ${{ github.no_such_property }}\n",
        encoding="utf-8",
    )
    result = _actionlint(tmp_path)
    assert result.returncode == 1 and "no_such_property" in result.stdout


EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


@pytest.mark.parametrize("name", NAMES)
def test_run_scripts_pass_shellcheck(name: str, tmp_path: Path) -> None:
    """shellcheck on every ``run:`` script, as actionlint's container does in CI."""
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: apt-get install shellcheck (.ci/run installs it)"
    for number, step in enumerate(steps(load(name))):
        if "run" not in step:
            continue
        script = tmp_path / f"{name}-{number}.sh"
        # expressions are substituted by Actions before bash runs: a plain word stands in
        body = EXPRESSION.sub("EXPR", str(step["run"]))
        script.write_text(f"#!/usr/bin/env bash\nset -e\n{body}\n", encoding="utf-8")
        result = subprocess.run(
            [shellcheck, "--severity=style", "--exclude=SC2050,SC2194,SC1091", str(script)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{name} step {step.get('name')!r}:\n{result.stdout}"
