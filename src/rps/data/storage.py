"""The object store: where dataset content lives, which is the DVC remote and nothing else.

Datasets are stored once, content-addressed by DVC (``<remote>/files/md5/<ab>/<cdef...>``),
in the remote that :mod:`rps.data.versioning` pushes to and loads from: a local folder, or
``s3://<bucket>/dvc`` on AWS or an S3-compatible server (``RPS_STORAGE_BACKEND=s3``,
``RPS_S3_*``). This module only makes sure the S3 bucket exists and turns S3 failures into
:class:`StorageError`; reads and writes go through DVC.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rps.settings import Settings

logger = logging.getLogger(__name__)

_MISSING = ("404", "NoSuchBucket", "NotFound")
_ALREADY_THERE = ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")


class StorageError(RuntimeError):
    """The object store is unreachable, refuses the credentials, or the bucket cannot be made."""


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code") or status or "")


def s3_client(settings: Settings, *, max_attempts: int = 5) -> Any:
    """A boto3 S3 client for the configured endpoint, region and credentials.

    Credentials left unset fall back to boto3's default chain (environment, profile).
    """
    import boto3
    from botocore.config import Config

    key_id, secret = settings.aws_access_key_id, settings.aws_secret_access_key
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=key_id.get_secret_value() if key_id else None,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=Config(retries={"max_attempts": max_attempts, "mode": "standard"}),
    )


def ensure_bucket(settings: Settings, bucket: str) -> None:
    """Create ``bucket`` on the configured S3 endpoint when it does not exist.

    Raises:
        StorageError: the endpoint is unreachable, the credentials are refused, or the bucket
            cannot be created; the message names the bucket and the endpoint.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    where = settings.s3_endpoint_url or "AWS S3"
    client = s3_client(settings)
    try:
        client.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        code = _code(exc)
        if code not in _MISSING:
            hint = (
                " (check RPS_AWS_ACCESS_KEY_ID / RPS_AWS_SECRET_ACCESS_KEY)"
                if code in ("403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied")
                else ""
            )
            raise StorageError(f"cannot access bucket {bucket!r} at {where}: {exc}{hint}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"cannot reach bucket {bucket!r} at {where}: {exc}") from exc
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if settings.s3_region and settings.s3_region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.s3_region}
    try:
        client.create_bucket(**kwargs)
        logger.info("created bucket %s at %s", bucket, where)
    except ClientError as exc:
        if _code(exc) not in _ALREADY_THERE:
            raise StorageError(f"cannot create bucket {bucket!r} at {where}: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"cannot create bucket {bucket!r} at {where}: {exc}") from exc
