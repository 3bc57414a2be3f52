"""Roll a release back to the previous one in the deploy history.

A release is an image and a model version. Going back may take two moves, done in order:

1. **The image** (when the target's image differs and a way to run it is given): restart a
   local container from the previous image (``container``), or run a redeploy command with
   the previous image in its environment (``redeploy_command``: the CD pipeline's deploy
   script).
2. **The model**: if the service (``url``) still serves another version than the target's,
   ``POST /model/rollback`` (bearer token) swaps it back to the model it served before.

Then the service is verified against the target version (:mod:`rps.deploy.verify`) and the
rollback is recorded in the history, so the next rollback goes one release further back.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from rps.deploy import DeployError, run_bounded
from rps.deploy.engine import Engine
from rps.deploy.history import DeployHistory, Release
from rps.deploy.verify import DEFAULT_BOUNDS, VerifyReport, check_health, verify_deployment

logger = logging.getLogger(__name__)


@dataclass
class RollbackResult:
    """What a rollback did.

    Attributes:
        target: The release rolled back to.
        abandoned: The release rolled back from (None when the history had none).
        steps: One line per action taken.
        report: The verification of the target (None when not verified).
    """

    target: Release
    abandoned: Release | None
    steps: list[str] = field(default_factory=list)
    report: VerifyReport | None = None

    @property
    def ok(self) -> bool:
        return self.report is None or self.report.ok


def plan(
    history: DeployHistory, *, to_image: str | None = None, to_version: str | None = None
) -> tuple[Release | None, Release]:
    """The current release and the one to go back to.

    Args:
        history: The deploy history.
        to_image: Go to this image instead of the previous release's.
        to_version: Go to this model version instead of the previous release's.

    Raises:
        DeployError: there is no previous release and no explicit target.
    """
    current = history.current()
    previous = history.previous()
    if previous is None and not (to_image and to_version):
        raise DeployError(
            f"no previous release in {history.path} to roll back to "
            "(give --to-image and --to-version)"
        )
    base = previous or current
    image = to_image or (base.image if base else "")
    version = to_version or (base.model_version if base else "")
    if not image or not version:
        raise DeployError("the rollback target needs both an image and a model version")
    digest = base.model_digest if base and base.key == (image, version) else ""
    target = Release(action="rollback", image=image, model_version=version, model_digest=digest)
    return current, target


def served_version(
    url: str, *, timeout_s: float = 10.0, transport: httpx.BaseTransport | None = None
) -> str | None:
    """The model version the service at ``url`` reports (None when it does not answer)."""
    try:
        with httpx.Client(base_url=url, timeout=timeout_s, transport=transport) as client:
            response = client.get("/model/info")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        return str(response.json().get("version"))
    except (ValueError, AttributeError):
        return None


def service_rollback(
    url: str,
    token: str | None,
    *,
    expect_version: str,
    timeout_s: float = 60.0,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """``POST /model/rollback`` and check the service now serves ``expect_version``.

    Returns:
        A one-line description of the swap.

    Raises:
        DeployError: no token, the service refused (e.g. 409: no previous model), or it rolled
            back to another version than ``expect_version``.
    """
    if not token:
        raise DeployError("a model rollback needs the API token (RPS_API_TOKEN or --token)")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=url, timeout=timeout_s, transport=transport) as client:
            response = client.post("/model/rollback", headers=headers)
    except httpx.HTTPError as exc:
        raise DeployError(f"POST {url}/model/rollback failed: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:300]}
    if response.status_code != 200:
        raise DeployError(
            f"the service refused the model rollback (HTTP {response.status_code}): "
            f"{body.get('detail')}"
        )
    now = str(body.get("model_version"))
    if now != str(expect_version):
        raise DeployError(
            f"the service rolled back to model v{now}, but the previous release is "
            f"v{expect_version}: roll back the image too (--container or --redeploy-command)"
        )
    return f"service model v{body.get('previous_version')} -> v{now} (POST /model/rollback)"


def run_redeploy(command: str, target: Release, *, timeout_s: float = 1800.0) -> str:
    """Run the deploy command for ``target`` (``RPS_DEPLOY_IMAGE`` etc. in its environment).

    Raises:
        DeployError: the command failed.
    """
    env = {
        **os.environ,
        "RPS_DEPLOY_IMAGE": target.image,
        "RPS_DEPLOY_MODEL_VERSION": target.model_version,
        "RPS_DEPLOY_ACTION": "rollback",
    }
    logger.info("redeploying %s: %s", target.label(), command)
    result = run_bounded(
        ["bash", "-c", command],  # the operator's own command line
        what="redeploy command",
        timeout=timeout_s,
        env=env,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).decode(errors="replace")[-1500:]
        raise DeployError(f"redeploy command exited {result.returncode}: {tail}")
    return f"redeployed {target.image} ({command})"


def rollback(
    history: DeployHistory,
    *,
    url: str | None = None,
    token: str | None = None,
    engine: Engine | None = None,
    container: str | None = None,
    port: int = 8000,
    redeploy_command: str | None = None,
    to_image: str | None = None,
    to_version: str | None = None,
    verify: bool = True,
    wait_s: float = 60.0,
    model_dir: Path | None = None,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
    reason: str = "",
    transport: httpx.BaseTransport | None = None,
) -> RollbackResult:
    """Go back to the previous release (see the module doc for the moves).

    Args:
        history: The deploy history (read for the target, appended with the rollback).
        url: The running service (for the model rollback and the verification).
        token: Its admin bearer token.
        engine: The container engine (with ``container``).
        container: Restart this local container from the previous image.
        port: The port that container answers on.
        redeploy_command: A shell command that deploys ``$RPS_DEPLOY_IMAGE``.
        to_image: Override the target image.
        to_version: Override the target model version.
        verify: Verify the service against the target version afterwards.
        wait_s: How long verification waits for the service to be healthy.
        model_dir: A local copy of the target bundle for the verification's test row.
        bounds: The sane forecast range for the verification.
        reason: Recorded with the rollback.
        transport: An httpx transport (tests).

    Raises:
        DeployError: there is nothing to roll back to, or a move failed.
    """
    current, target = plan(history, to_image=to_image, to_version=to_version)
    result = RollbackResult(target=target, abandoned=current)
    if not (url or container or redeploy_command):
        raise DeployError("nothing to act on: give --url, --container or --redeploy-command")
    image_changes = current is None or current.image != target.image
    if container:
        if engine is None:
            raise DeployError("restarting a container needs a container engine")
        if image_changes or not url:
            from rps.deploy.image import run_container

            run_container(engine, target.image, name=container, port=port)
            result.steps.append(f"restarted container {container} from {target.image}")
    elif redeploy_command and image_changes:
        result.steps.append(run_redeploy(redeploy_command, target))
    if url:
        if result.steps:  # a restarted service needs a moment before it reports its model
            with httpx.Client(base_url=url, timeout=10.0, transport=transport) as client:
                health = check_health(client, wait_s=wait_s)
            if not health.ok:
                raise DeployError(f"{target.image} did not become healthy: {health.detail}")
        serving = served_version(url, transport=transport)
        if serving != target.model_version:
            result.steps.append(
                service_rollback(
                    url, token, expect_version=target.model_version, transport=transport
                )
            )
        else:
            result.steps.append(f"service serves model v{serving}")
    history.append(
        Release(
            action="rollback",
            image=target.image,
            model_version=target.model_version,
            model_digest=target.model_digest,
            engine=engine.name if engine else "",
            detail=reason or "; ".join(result.steps),
            rolled_back_from=current.label() if current else "",
        )
    )
    if url and verify:
        result.report = verify_deployment(
            url,
            target.model_version,
            model_dir=model_dir,
            bounds=bounds,
            wait_s=wait_s,
            transport=transport,
        )
    return result
