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


class DeployError(RuntimeError):
    """A deployment step failed; the message says which and why."""


__all__ = ["DeployError"]
