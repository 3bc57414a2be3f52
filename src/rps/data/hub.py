"""The hub (Dagshub): one repository URL, a user and a token give MLflow, DVC and git.

:class:`~rps.settings.Settings` derives the hub's URIs from ``RPS_HUB_REPO_URL``
(``<repo>.mlflow``, ``<repo>.s3`` with bucket ``dvc``, ``<repo>.git``) and its credentials
from ``RPS_HUB_USER``/``RPS_HUB_TOKEN``. :func:`check_hub` asks each of the three services
once with those credentials, so a wrong token or URL fails up front with a message naming the
hub, the service and the setting to check, instead of deep inside a pipeline task.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import httpx

from rps.git import GitError, run_git

if TYPE_CHECKING:
    from rps.settings import Settings

logger = logging.getLogger(__name__)

_REFUSED = (401, 403)
_TOKEN_HINT = (
    "check RPS_HUB_USER and RPS_HUB_TOKEN (an access token of a user with write access to the "
    "repository; on Dagshub: User settings > Tokens)"
)


class HubError(RuntimeError):
    """The hub refused the credentials, or one of its services is unreachable."""


def _scrub(text: str, settings: Settings) -> str:
    token = settings.hub_token.get_secret_value() if settings.hub_token else ""
    return text.replace(token, "***") if token else text


def check_tracking(settings: Settings) -> None:
    """One authenticated MLflow REST call (search one experiment) to the hub's tracking URI.

    Raises:
        HubError: refused credentials (401/403), another HTTP error, or no answer.
    """
    uri = settings.tracking_uri
    auth = None
    if settings.mlflow_tracking_username and settings.mlflow_tracking_password is not None:
        auth = (
            settings.mlflow_tracking_username,
            settings.mlflow_tracking_password.get_secret_value(),
        )
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search"
    try:
        response = httpx.get(url, params={"max_results": 1}, auth=auth, timeout=30.0)
    except httpx.HTTPError as exc:
        raise HubError(
            f"the hub {settings.hub_name}: its MLflow tracking server {uri} did not answer "
            f"({exc}); check RPS_HUB_REPO_URL (or RPS_HUB_TRACKING_URI)"
        ) from exc
    if response.status_code in _REFUSED:
        raise HubError(
            f"the hub {settings.hub_name} refused the token of user "
            f"{settings.mlflow_tracking_username!r} at its MLflow tracking server {uri} "
            f"(HTTP {response.status_code}): {_TOKEN_HINT}"
        )
    if response.status_code != 200:
        raise HubError(
            f"the hub {settings.hub_name}: its MLflow tracking server {uri} answered HTTP "
            f"{response.status_code}; check RPS_HUB_REPO_URL (or RPS_HUB_TRACKING_URI)"
        )


def check_dvc_remote(settings: Settings) -> None:
    """Ask the hub's S3 endpoint for the DVC remote's bucket with the token.

    Raises:
        HubError: refused credentials, a missing bucket, or no answer.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from rps.data.storage import s3_client

    bucket = settings.dvc_remote.removeprefix("s3://").split("/", 1)[0]
    where = f"{settings.s3_endpoint_url} (bucket {bucket!r})"
    try:
        s3_client(settings, max_attempts=2).head_bucket(Bucket=bucket)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in _REFUSED:
            raise HubError(
                f"the hub {settings.hub_name} refused the token at its DVC remote {where} "
                f"(HTTP {status}): {_TOKEN_HINT}"
            ) from exc
        raise HubError(
            f"the hub {settings.hub_name}: its DVC remote {where} answered {exc}; check "
            "RPS_HUB_DVC_REMOTE_URL (or RPS_HUB_S3_ENDPOINT_URL)"
        ) from exc
    except BotoCoreError as exc:
        raise HubError(
            f"the hub {settings.hub_name}: its DVC remote {where} did not answer ({exc}); "
            "check RPS_HUB_REPO_URL (or RPS_HUB_S3_ENDPOINT_URL)"
        ) from exc


def check_git(settings: Settings) -> None:
    """``git ls-remote`` of the hub's git repository with the token.

    Raises:
        HubError: git could not list the repository (refused credentials, wrong URL).
    """
    url = settings.data_git_remote
    if url is None:
        return
    try:
        run_git(
            settings.project_root,
            "-c",
            "credential.helper=",
            "ls-remote",
            "--heads",
            url,
            timeout=60,
        )
    except GitError as exc:
        raise HubError(
            f"the hub {settings.hub_name}: git could not read its repository "
            f"{settings.data_git_remote_display}: {_scrub(str(exc), settings)}; {_TOKEN_HINT}"
        ) from None


def check_hub(settings: Settings) -> list[str]:
    """Check the hub's MLflow, DVC remote and git with the configured credentials.

    Returns:
        One line per service checked (empty when no hub is configured).

    Raises:
        HubError: the first service that refused the credentials or did not answer.
    """
    if not settings.hub_repo_url:
        return []
    check_tracking(settings)
    check_dvc_remote(settings)
    check_git(settings)
    lines = [
        f"MLflow tracking  {settings.tracking_uri}  (user {settings.mlflow_tracking_username})",
        f"DVC remote       {settings.dvc_remote} at {settings.s3_endpoint_url}",
        f"git              {settings.data_git_remote_display}",
    ]
    logger.info("hub %s: %s", settings.hub_name, "; ".join(lines))
    return lines
