"""A small client of the MLflow registry's REST API, so the serving process needs no mlflow.

Two calls serve the API: :meth:`RegistryClient.alias_version` (one GET, cheap enough to run
every few seconds) and :meth:`RegistryClient.download_bundle`, which asks the server where the
version's files are (``model-versions/get-download-uri``) and fetches the folder holding
``bundle.json``:

* ``mlflow-artifacts:/...`` (a server run with ``--serve-artifacts``, e.g. an S3 store behind
  it): listed and downloaded through the artifacts proxy ``/api/2.0/mlflow-artifacts/``;
* a local path or ``file://`` URI (a server whose artifact root is a folder this host sees):
  copied from there.

Other schemes (``s3://`` read directly by the client) are refused with a clear error: run the
MLflow server as the artifact proxy instead.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx

from rps.models.bundle import BUNDLE_FILE, BundleError, find_bundle_dir

logger = logging.getLogger(__name__)

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
MAX_LISTED = 10_000


class RegistryUnavailableError(RuntimeError):
    """The registry did not answer (network error, timeout, 5xx)."""


class RegistryRequestError(RuntimeError):
    """The registry answered, but not with what was asked for (auth, bad name, bad files)."""


class NoChampionError(RegistryRequestError):
    """The registered model or its alias does not exist (yet)."""


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version the alias points to."""

    name: str
    version: str
    run_id: str | None
    source: str | None


class RegistryClient:
    """REST calls against one MLflow tracking server (``http(s)://host:port``)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        auth: tuple[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, auth=auth, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(
                f"MLflow registry {self.base_url} is unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code >= 500:
            raise RegistryUnavailableError(
                f"MLflow registry {self.base_url} answered HTTP {response.status_code} on {path}"
            )
        return response

    def _json(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        response = self._get(path, params)
        if response.status_code != 200:
            detail = _error_message(response)
            if response.status_code in (400, 404) and (
                "not found" in detail.lower() or "RESOURCE_DOES_NOT_EXIST" in response.text
            ):
                raise NoChampionError(detail)
            raise RegistryRequestError(
                f"MLflow registry answered HTTP {response.status_code} on {path}: {detail}"
            )
        data: dict[str, Any] = response.json()
        return data

    def alias_version(self, name: str, alias: str) -> RegisteredVersion:
        """The version ``models:/<name>@<alias>`` points to.

        Raises:
            NoChampionError: no such model or alias.
            RegistryUnavailableError: the server did not answer.
            RegistryRequestError: any other refusal.
        """
        data = self._json(f"{API}/registered-models/alias", {"name": name, "alias": alias})
        mv = data.get("model_version") or {}
        if "version" not in mv:
            raise RegistryRequestError(f"no model version in the answer for {name}@{alias}")
        return RegisteredVersion(
            name=name,
            version=str(mv["version"]),
            run_id=mv.get("run_id") or None,
            source=mv.get("source") or None,
        )

    def download_uri(self, name: str, version: str) -> str:
        """Where the files of a model version are stored."""
        data = self._json(
            f"{API}/model-versions/get-download-uri", {"name": name, "version": version}
        )
        uri = data.get("artifact_uri")
        if not uri:
            raise RegistryRequestError(f"no artifact URI for {name} version {version}")
        return str(uri)

    def download_bundle(self, name: str, version: str, dst: Path) -> Path:
        """Fetch the bundle folder of a model version into ``dst``; return the folder.

        Raises:
            RegistryRequestError: no bundle among the version's files, or an unsupported store.
            RegistryUnavailableError: the server did not answer.
        """
        uri = self.download_uri(name, version)
        parsed = urlparse(uri)
        if parsed.scheme == "mlflow-artifacts":
            return self._download_proxied(unquote(parsed.path).strip("/"), dst)
        if parsed.scheme in ("", "file"):
            return _copy_local(Path(unquote(parsed.path)), dst)
        raise RegistryRequestError(
            f"artifact store {uri} is not readable by the serving client; run the MLflow server "
            "with --serve-artifacts (mlflow-artifacts:/) or share the artifact folder"
        )

    def _list(self, path: str) -> list[dict[str, Any]]:
        response = self._get(ARTIFACTS_API, {"path": path})
        if response.status_code != 200:
            raise RegistryRequestError(
                f"cannot list artifacts {path}: HTTP {response.status_code} "
                f"{_error_message(response)}"
            )
        files: list[dict[str, Any]] = response.json().get("files", [])
        return files

    def _download_proxied(self, root: str, dst: Path) -> Path:
        # breadth-first listing until bundle.json shows up (it sits a few folders down)
        pending, bundle_dir = [root], None
        listed = 0
        while pending and bundle_dir is None:
            folder = pending.pop(0)
            for item in self._list(folder):
                listed += 1
                path = f"{folder}/{item['path'].rsplit('/', 1)[-1]}"
                if item.get("is_dir"):
                    pending.append(path)
                elif path.endswith(f"/{BUNDLE_FILE}"):
                    bundle_dir = folder
            if listed > MAX_LISTED:
                break
        if bundle_dir is None:
            raise RegistryRequestError(f"no {BUNDLE_FILE} among the artifacts under {root}")
        target = dst / "bundle"
        target.mkdir(parents=True, exist_ok=True)
        for item in self._list(bundle_dir):
            if item.get("is_dir"):
                continue
            name = item["path"].rsplit("/", 1)[-1]
            response = self._get(f"{ARTIFACTS_API}/{bundle_dir}/{name}")
            if response.status_code != 200:
                raise RegistryRequestError(
                    f"cannot download {bundle_dir}/{name}: HTTP {response.status_code}"
                )
            (target / name).write_bytes(response.content)
        return target


def _copy_local(root: Path, dst: Path) -> Path:
    if not root.is_dir():
        raise RegistryRequestError(f"artifact folder {root} does not exist on this host")
    try:
        bundle_dir = find_bundle_dir(root)
    except BundleError as exc:
        raise RegistryRequestError(str(exc)) from exc
    target = dst / "bundle"
    shutil.copytree(bundle_dir, target, dirs_exist_ok=True)
    return target


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.text)
    except ValueError:
        return response.text[:300]
