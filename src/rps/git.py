"""One way to call git: a subprocess with a clean environment and errors that name the command."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["GitError", "run_git"]

# variables a parent git process (a hook, a test run inside a worktree) sets for itself; inherited,
# they would point this call at the wrong repository
_INHERITED_GIT_VARIABLES = frozenset(
    {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_PREFIX"}
)


class GitError(RuntimeError):
    """A git command could not run or exited non-zero."""


def run_git(
    repo: Path, *args: str, check: bool = True, timeout: float | None = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``git -C repo ARGS`` and return the finished process (text output).

    Raises:
        GitError: git is missing, timed out, or (with ``check``) exited non-zero; the message
            names the command, the repository and git's own error text.
    """
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED_GIT_VARIABLES}
    command = ["git", "-C", str(repo), *args]
    try:
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"cannot run git {' '.join(args)} in {repo}: {exc}") from exc
    if check and result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip()
        raise GitError(f"git {' '.join(args)} failed in {repo}: {detail}")
    return result
