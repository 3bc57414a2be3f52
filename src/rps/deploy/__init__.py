"""Deployment: fetch the champion bundle, build the image, verify a release, roll it back.

The pieces, each usable from Python and from ``rps deploy``:

* :mod:`rps.deploy.fetch`: download the champion from the registry into a build-context
  folder, verify its checksums, stamp the registry version into it.
* :mod:`rps.deploy.engine` and :mod:`rps.deploy.image`: podman or docker commands, the local
  Debian base image where no registry is reachable, image builds and container runs.
* :mod:`rps.deploy.history`: the deploy history (``<state>/deploy/history.jsonl``): which image
  and model version each release was, so a rollback knows where to go.
* :mod:`rps.deploy.verify`: post-deploy checks of a running service.
* :mod:`rps.deploy.rollback`: back to the previous release (service-level model rollback and/or
  a re-run of the previous image).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence


class DeployError(RuntimeError):
    """A deployment step failed; the message says which and why."""


def run_bounded(
    argv: Sequence[str],
    *,
    what: str,
    timeout: float | None,
    env: Mapping[str, str],
    capture: bool = True,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` (whatever its exit code) within ``timeout`` seconds.

    Raises:
        DeployError: ``what`` did not finish in time.
    """
    try:
        return subprocess.run(
            list(argv), check=False, capture_output=capture, timeout=timeout, env=env, input=stdin
        )
    except subprocess.TimeoutExpired as exc:
        raise DeployError(f"{what} timed out after {timeout} s") from exc


__all__ = ["DeployError", "run_bounded"]
