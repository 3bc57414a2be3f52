"""Fetch the champion bundle from the registry into a build-context folder, verified.

The folder becomes ``/app/model`` in the image. Besides checking every file against the
bundle's ``checksums.json``, the fetch writes the registry version into the bundle's lineage
(``model_version``) and re-seals ``checksums.json``: a server loading a bundle from a directory
reports that lineage field as its version, so the image answers ``/model/info`` with the
registry version that ``rps deploy verify --expect-version`` expects. ``DEPLOY.json`` beside
the bundle records the registry's digest, the sealed digest and where the bundle came from.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rps.deploy import DeployError
from rps.files import write_atomic
from rps.models.bundle import BundleError, find_bundle_dir, load_bundle, sha256_file
from rps.settings import Settings

logger = logging.getLogger(__name__)

DEPLOY_FILE = "DEPLOY.json"
VERSION_KEY = "model_version"


@dataclass(frozen=True)
class FetchedModel:
    """A verified bundle in a build-context folder.

    Attributes:
        path: The folder (holds ``bundle.json`` directly).
        name: The registered model name.
        version: The registry version.
        ref: What was asked for (``champion``, a number, an alias).
        digest: The bundle digest as sealed in the folder (what the server reports).
        registry_digest: The digest of the bundle as the registry delivered it.
        fetched_at: ISO 8601 UTC.
    """

    path: Path
    name: str
    version: str
    ref: str
    digest: str
    registry_digest: str
    fetched_at: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def make_readable(directory: Path) -> None:
    """Make a bundle folder world-readable (the image's service user is not its owner)."""
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def stamp_version(directory: Path, version: str) -> str:
    """Record ``version`` as the bundle's ``lineage.model_version`` and re-seal the checksums.

    The bundle must verify before it is touched. A bundle that already records this version
    is left as it is.

    Args:
        directory: A bundle folder (``bundle.json`` directly inside).
        version: The registry version.

    Returns:
        The bundle digest after stamping.

    Raises:
        DeployError: the bundle does not verify.
    """
    try:
        bundle = load_bundle(directory, verify=True)
    except BundleError as exc:
        raise DeployError(f"bundle at {directory} does not verify: {exc}") from exc
    if str(bundle.lineage.get(VERSION_KEY, "")) == version:
        return bundle.checksum
    meta_path = directory / "bundle.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    previous = meta.setdefault("lineage", {}).get(VERSION_KEY)
    if previous not in (None, ""):
        logger.warning("bundle records model_version %s; stamping %s", previous, version)
    meta["lineage"][VERSION_KEY] = version
    _write_json(meta_path, meta)
    checksums: dict[str, str] = json.loads((directory / "checksums.json").read_text("utf-8"))
    checksums = {name: sha256_file(directory / name) for name in sorted(checksums)}
    _write_json(directory / "checksums.json", checksums)
    try:
        return load_bundle(directory, verify=True).checksum
    except BundleError as exc:  # pragma: no cover - we just sealed it
        raise DeployError(f"bundle at {directory} does not verify after stamping: {exc}") from exc


def read_deploy_file(directory: Path) -> FetchedModel | None:
    """The ``DEPLOY.json`` record of a fetched bundle folder, if there is one."""
    path = directory / DEPLOY_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["path"] = directory
        return FetchedModel(**data)
    except (ValueError, TypeError) as exc:
        raise DeployError(f"{path} is not a deploy record: {exc}") from exc


def install_bundle(
    source: Path, dest: Path, *, name: str, version: str, ref: str = "champion"
) -> FetchedModel:
    """Copy a bundle into ``dest`` (replacing it), verify, stamp and record it.

    Args:
        source: A folder holding a bundle (possibly nested, as MLflow downloads are).
        dest: The build-context folder (replaced atomically when complete).
        name: The registered model name.
        version: The registry version of the bundle.
        ref: What was asked for.

    Raises:
        DeployError: the bundle is incomplete or a checksum differs.
    """
    try:
        bundle_dir = find_bundle_dir(source)
        registry_digest = load_bundle(bundle_dir, verify=True).checksum
    except BundleError as exc:
        raise DeployError(f"the registry's bundle does not verify: {exc}") from exc
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        shutil.copytree(bundle_dir, staging, dirs_exist_ok=True)
        (staging / DEPLOY_FILE).unlink(missing_ok=True)
        fetched = FetchedModel(
            path=dest,
            name=name,
            version=version,
            ref=ref,
            digest=stamp_version(staging, version),  # the copy, sealed with its registry version
            registry_digest=registry_digest,
            fetched_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        record = fetched.to_dict()
        record.pop("path")
        _write_json(staging / DEPLOY_FILE, record)
        make_readable(staging)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
            staging.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("bundle %s v%s in %s (digest %s)", name, version, dest, fetched.digest[:12])
    return fetched


def fetch_model(settings: Settings, *, ref: str = "champion", dest: Path) -> FetchedModel:
    """Download ``ref`` from the model registry into ``dest``, verified and stamped.

    Args:
        settings: Registry URIs and the registered model name.
        ref: ``champion`` (default), another alias, or a version number.
        dest: The build-context folder to (re)write.

    Raises:
        DeployError: the registry has no such model, the download failed or does not verify.
    """
    try:
        from rps.models import registry
    except ImportError as exc:  # the pipeline extra (MLflow) is not installed
        raise DeployError(f"the model registry client is unavailable: {exc}") from exc
    try:
        info = registry.version_info(settings, ref)
        version = str(info["version"])
        with tempfile.TemporaryDirectory(prefix="rps-fetch-") as tmp:
            # download the exact version, so an alias moving meanwhile cannot mix them up
            downloaded = registry.download_bundle(settings, ref=version, dst=Path(tmp))
            return install_bundle(
                downloaded, dest, name=settings.registered_model_name, version=version, ref=ref
            )
    except (registry.RegistryError, BundleError) as exc:
        raise DeployError(f"cannot fetch {ref!r}: {exc}") from exc


def bundle_version(directory: Path) -> tuple[str, str]:
    """The ``(version, digest)`` a server will report for the bundle in ``directory``."""
    try:
        bundle = load_bundle(directory, verify=True)
    except BundleError as exc:
        raise DeployError(f"bundle at {directory} does not verify: {exc}") from exc
    for key in (VERSION_KEY, "registry_version", "version"):  # the server's order
        value = bundle.lineage.get(key)
        if value not in (None, ""):
            return str(value), bundle.checksum
    return bundle.checksum[:12], bundle.checksum
