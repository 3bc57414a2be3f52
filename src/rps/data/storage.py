"""Object storage behind one interface: a local folder or an S3 bucket (AWS, MinIO).

Keys are ``/``-separated relative paths (``datasets/<md5>/observations.parquet``). Stores are
write-once per key: putting different content under an existing key raises
:class:`StorageError`; putting identical content again is a no-op, so a retried pipeline step
is safe. Which backend is used is decided by :class:`~rps.settings.Settings` alone
(:func:`make_store`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from rps.settings import Settings

logger = logging.getLogger(__name__)

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_TMP_MARKER = ".rps-tmp-"
_CHUNK = 1024 * 1024


class StorageError(RuntimeError):
    """An object store operation failed (refused overwrite, unreachable store, bad key)."""


class ObjectNotFoundError(StorageError):
    """The requested key does not exist in the store."""


@runtime_checkable
class ObjectStore(Protocol):
    """A write-once key/value store of files."""

    def put_file(self, local_path: Path | str, key: str) -> str:
        """Store a local file under ``key``; returns the object's URI.

        Raises:
            StorageError: the key holds different content, or the write failed.
        """
        ...

    def get_file(self, key: str, local_path: Path | str) -> Path:
        """Copy the object ``key`` to ``local_path`` (atomically); returns ``local_path``.

        Raises:
            ObjectNotFoundError: no such key.
        """
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """All keys starting with ``prefix`` (a plain string prefix, as in S3), sorted."""
        ...

    def uri(self, key: str) -> str:
        """The URI of ``key`` (``file://...`` or ``s3://bucket/key``); the key need not exist."""
        ...


def dataset_key(md5: str) -> str:
    """The content-addressed key of a dataset file: ``datasets/<md5>/observations.parquet``.

    Raises:
        ValueError: ``md5`` is not 32 lowercase hex digits.
    """
    if not _MD5_RE.match(md5):
        raise ValueError(f"not an md5 hex digest: {md5!r}")
    return f"datasets/{md5}/observations.parquet"


def file_md5(path: Path | str) -> str:
    """The md5 hex digest of a file's content."""
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_key(key: str) -> str:
    """Validate a key: relative, ``/``-separated, no empty, ``.`` or ``..`` segments."""
    if not isinstance(key, str) or not key:
        raise StorageError(f"invalid object key {key!r}: empty")
    if key.startswith("/") or "\\" in key:
        raise StorageError(f"invalid object key {key!r}: must be a relative '/'-separated path")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise StorageError(f"invalid object key {key!r}: empty, '.' or '..' segment")
    if any(_TMP_MARKER in part for part in parts):
        raise StorageError(f"invalid object key {key!r}: contains reserved {_TMP_MARKER!r}")
    return key


def _same_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return file_md5(a) == file_md5(b)


def _atomic_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` via a temporary sibling and ``os.replace``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}{_TMP_MARKER}{uuid.uuid4().hex}")
    try:
        with source.open("rb") as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
            dst.flush()
            os.fsync(dst.fileno())
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


class LocalObjectStore:
    """Objects as files under a root folder; writes are atomic and never overwrite."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).split("/"))

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def put_file(self, local_path: Path | str, key: str) -> str:
        source = Path(local_path)
        target = self._path(key)
        if not source.is_file():
            raise StorageError(f"cannot store {key!r}: source file {source} does not exist")
        if target.exists():
            return self._existing(source, target, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}{_TMP_MARKER}{uuid.uuid4().hex}")
        try:
            with source.open("rb") as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
                dst.flush()
                os.fsync(dst.fileno())
            try:
                # link() creates the key only if it is absent: two concurrent writers of
                # different content cannot silently replace each other.
                os.link(tmp, target)
            except FileExistsError:
                return self._existing(source, target, key)
            except OSError:  # no hard links on this filesystem: replace after a re-check
                if target.exists():
                    return self._existing(source, target, key)
                tmp.replace(target)
        except OSError as exc:
            raise StorageError(f"cannot store {key!r} under {self.root}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        logger.debug("stored %s -> %s", source, target)
        return self.uri(key)

    def _existing(self, source: Path, target: Path, key: str) -> str:
        if _same_content(source, target):
            logger.debug("key %s already holds identical content", key)
            return self.uri(key)
        raise StorageError(
            f"refusing to overwrite key {key!r} in {self.root}: it holds different content"
        )

    def get_file(self, key: str, local_path: Path | str) -> Path:
        source = self._path(key)
        target = Path(local_path)
        if not source.is_file():
            raise ObjectNotFoundError(f"key {key!r} not found in {self.root}")
        try:
            _atomic_copy(source, target)
        except OSError as exc:
            raise StorageError(f"cannot copy key {key!r} to {target}: {exc}") from exc
        return target

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        keys = []
        for path in self.root.rglob("*"):
            if not path.is_file() or _TMP_MARKER in path.name:
                continue
            key = PurePosixPath(path.relative_to(self.root)).as_posix()
            if key.startswith(prefix):
                keys.append(key)
        return sorted(keys)


class S3ObjectStore:
    """Objects in an S3 bucket (AWS or an S3-compatible server such as MinIO or moto).

    The bucket is created on first use when missing. Each object carries its md5 in its
    metadata so that an identical re-put is recognised without downloading it.

    Args:
        bucket: the bucket name.
        endpoint_url: an S3-compatible server (MinIO, moto); None for AWS.
        region: the region (also the new bucket's location).
        access_key: the access key id; None: boto3's default credential chain.
        secret_key: the secret access key; None: boto3's default credential chain.
        max_attempts: attempts per request (botocore's "standard" retry mode, with backoff).
    """

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        max_attempts: int = 5,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(retries={"max_attempts": max_attempts, "mode": "standard"}),
        )
        self._bucket_ready = False

    def __repr__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3ObjectStore({self.bucket!r}{where})"

    # helpers ---------------------------------------------------------------------------
    @staticmethod
    def _code(exc: Exception) -> str:
        response = getattr(exc, "response", None) or {}
        error = response.get("Error", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(error.get("Code") or status or "")

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (once per instance).

        Raises:
            StorageError: the bucket is unreachable or cannot be created.
        """
        if self._bucket_ready:
            return
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if self._code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(f"cannot access bucket {self.bucket!r}: {exc}") from exc
            self._create_bucket()
        except BotoCoreError as exc:
            raise StorageError(f"cannot reach bucket {self.bucket!r}: {exc}") from exc
        self._bucket_ready = True

    def _create_bucket(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region and self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client.create_bucket(**kwargs)
            logger.info("created bucket %s", self.bucket)
        except ClientError as exc:
            if self._code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StorageError(f"cannot create bucket {self.bucket!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot create bucket {self.bucket!r}: {exc}") from exc

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"cannot inspect {self.uri(key)}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot reach {self.uri(key)}: {exc}") from exc
        return head

    def _stored_md5(self, key: str, head: dict[str, Any]) -> str:
        md5 = head.get("Metadata", {}).get("md5")
        if md5:
            return str(md5)
        etag = str(head.get("ETag", "")).strip('"')
        if etag and "-" not in etag:  # a single-part upload's ETag is its md5
            return etag
        # a multipart object written by another tool: compare by content
        digest = hashlib.md5(usedforsecurity=False)
        body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        for chunk in iter(lambda: body.read(_CHUNK), b""):
            digest.update(chunk)
        return digest.hexdigest()

    def _existing(self, md5: str, key: str, head: dict[str, Any]) -> str:
        if self._stored_md5(key, head) == md5:
            logger.debug("key %s already holds identical content", key)
            return self.uri(key)
        raise StorageError(
            f"refusing to overwrite key {key!r} in bucket {self.bucket!r}: "
            "it holds different content"
        )

    # interface ---------------------------------------------------------------------------
    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{_check_key(key)}"

    def exists(self, key: str) -> bool:
        _check_key(key)
        self.ensure_bucket()
        return self._head(key) is not None

    def put_file(self, local_path: Path | str, key: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        source = Path(local_path)
        _check_key(key)
        if not source.is_file():
            raise StorageError(f"cannot store {key!r}: source file {source} does not exist")
        self.ensure_bucket()
        md5 = file_md5(source)
        head = self._head(key)
        if head is not None:
            return self._existing(md5, key, head)
        try:
            with source.open("rb") as body:
                # If-None-Match: the write fails instead of replacing a concurrent writer's key
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, Metadata={"md5": md5}, IfNoneMatch="*"
                )
        except ClientError as exc:
            if self._code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                head = self._head(key)
                if head is not None:
                    return self._existing(md5, key, head)
            raise StorageError(f"cannot store {self.uri(key)}: {exc}") from exc
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"cannot store {self.uri(key)}: {exc}") from exc
        logger.debug("stored %s -> %s", source, self.uri(key))
        return self.uri(key)

    def get_file(self, key: str, local_path: Path | str) -> Path:
        from botocore.exceptions import BotoCoreError, ClientError

        _check_key(key)
        self.ensure_bucket()
        target = Path(local_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}{_TMP_MARKER}{uuid.uuid4().hex}")
        try:
            self._client.download_file(self.bucket, key, str(tmp))
            tmp.replace(target)
        except ClientError as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise ObjectNotFoundError(f"key {key!r} not found in {self.uri(key)}") from exc
            raise StorageError(f"cannot fetch {self.uri(key)}: {exc}") from exc
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"cannot fetch {self.uri(key)} to {target}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def list(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        self.ensure_bucket()
        keys: list[str] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot list s3://{self.bucket}/{prefix}: {exc}") from exc
        return sorted(keys)


def make_store(settings: Settings) -> ObjectStore:
    """The object store the settings select: a local folder, or the S3 bucket."""
    if settings.storage_backend == "s3":
        key_id = settings.aws_access_key_id
        secret = settings.aws_secret_access_key
        return S3ObjectStore(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key=key_id.get_secret_value() if key_id else None,
            secret_key=secret.get_secret_value() if secret else None,
        )
    return LocalObjectStore(settings.local_store_dir)
