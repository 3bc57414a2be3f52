"""Where the served model comes from: a bundle folder, or the registry's champion alias.

* :class:`BundleDirSource` (``RPS_MODEL_DIR`` / ``rps serve --model-dir``): an immutable bundle,
  e.g. baked into an image; a reload re-reads the folder.
* :class:`RestRegistrySource` (the default when the tracking URI is ``http(s)://``): asks the
  MLflow server's REST API which version ``models:/<name>@<alias>`` points to and downloads
  that exact version's bundle (:mod:`rps.serving.registry_client`; no mlflow import).
* :class:`MlflowRegistrySource` (a local tracking store, e.g. the embedded SQLite default):
  the same through ``rps.models.registry`` (imported lazily; needs the ``pipeline`` extra).

:func:`model_source` picks one from the settings.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from rps.serving.model_store import ModelLoadError
from rps.serving.registry_client import (
    NoChampionError,
    RegistryClient,
    RegistryRequestError,
    RegistryUnavailableError,
)
from rps.settings import Settings

logger = logging.getLogger(__name__)

SourceMode = Literal["model_dir", "registry"]


@dataclass(frozen=True)
class SourceBundle:
    """A located bundle.

    Attributes:
        path: The directory holding ``bundle.json``.
        version: The registry version when known.
        source: Where it came from, for ``/model/info``.
        download_root: A temporary download folder to delete once the bundle is cached.
    """

    path: Path
    version: str | None
    source: str
    download_root: Path | None = None


class ModelSource(Protocol):
    """Locates the bundle to serve."""

    mode: SourceMode

    def champion_version(self) -> str | None:
        """The version to serve now (cheap; None when the source has no versions).

        Raises:
            NoChampionError: the registry has no such model or alias yet.
            RegistryUnavailableError: the registry did not answer.
        """
        ...

    def fetch(self, version: str | None = None) -> SourceBundle:
        """Locate (download) the bundle of ``version`` (None: the current one).

        Raises:
            ModelLoadError: (reason ``download``) it cannot be delivered, or (reason
                ``no_champion``) the registry has no champion yet.
        """
        ...


class BundleDirSource:
    """A bundle folder on disk."""

    mode: SourceMode = "model_dir"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def champion_version(self) -> str | None:
        return None

    def fetch(self, version: str | None = None) -> SourceBundle:
        if not self.directory.exists():
            raise ModelLoadError(f"model_dir {self.directory} does not exist", reason="download")
        return SourceBundle(path=self.directory.resolve(), version=None, source=str(self.directory))


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` as ``(name, alias, version)``.

    Raises:
        ValueError: any other form.
    """
    if not uri.startswith("models:/"):
        raise ValueError(f"model URI {uri!r} is not models:/<name>@<alias> or models:/<name>/<n>")
    body = uri.removeprefix("models:/").strip("/")
    if "@" in body:
        name, alias = body.rsplit("@", 1)
        return name, alias, None
    if "/" in body:
        name, version = body.rsplit("/", 1)
        return name, None, version
    raise ValueError(f"model URI {uri!r} names no alias or version")


class _Registry(ABC):
    """The version lookup and download every registry source implements; the rest is shared."""

    mode: SourceMode = "registry"

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.name, self.alias, self.pinned = parse_model_uri(uri)

    @abstractmethod
    def _lookup(self) -> str:
        """The version the alias (or the pinned version) names now."""

    @abstractmethod
    def _download(self, version: str, dst: Path) -> Path:
        """Download ``version``'s bundle under ``dst``; return its folder."""

    def champion_version(self) -> str | None:
        return self.pinned if self.pinned is not None else self._lookup()

    def fetch(self, version: str | None = None) -> SourceBundle:
        try:
            version = version or self.champion_version()
        except NoChampionError as exc:
            message = f"no champion {self.uri} yet: {exc}"
            raise ModelLoadError(message, reason="no_champion") from exc
        except (RegistryRequestError, RegistryUnavailableError) as exc:
            raise ModelLoadError(f"{self.uri}: {exc}", reason="download") from exc
        assert version is not None
        root = Path(tempfile.mkdtemp(prefix="rps-serving-download-"))
        try:
            path = self._download(version, root)
        except Exception as exc:  # registry clients raise many kinds
            shutil.rmtree(root, ignore_errors=True)
            raise ModelLoadError(
                f"cannot download {self.uri} (version {version}): {type(exc).__name__}: {exc}",
                reason="download",
            ) from exc
        return SourceBundle(
            path=path,
            version=version,
            source=f"{self.uri} (version {version})",
            download_root=root,
        )


class RestRegistrySource(_Registry):
    """The champion of an MLflow server, through its REST API (no mlflow import)."""

    def __init__(self, uri: str, client: RegistryClient) -> None:
        super().__init__(uri)
        self.client = client

    def _lookup(self) -> str:
        assert self.alias is not None
        return self.client.alias_version(self.name, self.alias).version

    def _download(self, version: str, dst: Path) -> Path:
        return self.client.download_bundle(self.name, version, dst)


class MlflowRegistrySource(_Registry):
    """The champion of a local tracking store, through ``rps.models.registry`` (mlflow)."""

    def __init__(self, uri: str, settings: Settings) -> None:
        super().__init__(uri)
        self.settings = settings.model_copy(update={"registered_model_name": self.name})

    def _lookup(self) -> str:
        try:
            from rps.models.registry import (
                ModelNotFoundError,
                TrackingUnavailableError,
                resolve_version,
            )
        except ImportError as exc:
            raise RegistryRequestError(
                f"a local tracking store needs mlflow (install the pipeline extra): {exc}"
            ) from exc
        assert self.alias is not None
        try:
            return str(resolve_version(self.settings, self.alias).version)
        except ModelNotFoundError as exc:
            raise NoChampionError(str(exc)) from exc
        except TrackingUnavailableError as exc:
            raise RegistryUnavailableError(str(exc)) from exc

    def _download(self, version: str, dst: Path) -> Path:
        from rps.models.registry import download_bundle

        return Path(download_bundle(self.settings, ref=version, dst=dst))


def model_source(settings: Settings) -> ModelSource:
    """The source the settings select: ``model_dir`` when set, else the registry."""
    if settings.model_dir is not None:
        directory = settings.model_dir
        if not directory.is_absolute():
            directory = settings.project_root / directory
        return BundleDirSource(directory)
    registry = settings.mlflow_registry_uri or settings.tracking_uri
    if registry.startswith(("http://", "https://")):
        auth = None
        if settings.mlflow_tracking_username and settings.mlflow_tracking_password:
            auth = (
                settings.mlflow_tracking_username,
                settings.mlflow_tracking_password.get_secret_value(),
            )
        client = RegistryClient(registry, timeout=settings.http_timeout_s, auth=auth)
        return RestRegistrySource(settings.champion_uri, client)
    return MlflowRegistrySource(settings.champion_uri, settings)
