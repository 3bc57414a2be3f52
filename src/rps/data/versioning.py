"""Dataset versions with DVC: a git + DVC workspace whose remote is the object store.

The workspace (``settings.dvc_repo_path``, the data registry) tracks one file,
``data/observations.parquet``. Its DVC remote ``storage`` is the project's object store: a
folder, or the S3 bucket (``s3://<bucket>/dvc``) when ``RPS_STORAGE_BACKEND=s3``; nothing else
writes dataset copies. :func:`push_dataset` (the pipeline's ``load`` step) ``dvc add``-s the
content and pushes it to that remote; :func:`version_dataset` (``version``) does the same
(a no-op when already pushed), commits the ``.dvc`` pointer (when ``settings.dvc_git_commit``),
pushes the commit to the registry's git remote (``settings.data_git_remote``, when set),
and registers the version in a JSON-lines catalog (``<state>/datasets.jsonl``). A version is
registered only after every push succeeded; any failure rolls the workspace, the git history
and the catalog back to their previous state.

Only public DVC APIs are used: ``dvc.repo.Repo`` methods (``init``, ``add``, ``push``,
``checkout``, ``config``) and ``dvc.api`` (``get_url``, ``open``); git runs through
:func:`rps.git.run_git`. A version is loaded with ``dvc.api.open`` at the git revision that
recorded it (the DVC cache, else the remote), and its bytes are checked against its md5.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from rps.data.catalog import (
    CATALOG_NAME,
    MIN_PREFIX,
    PATH_IN_REPO,
    DatasetNotFoundError,
    DatasetVersion,
    VersioningError,
    append_catalog,
    list_datasets,
    read_catalog,
    resolve,
)
from rps.data.storage import StorageError, ensure_bucket
from rps.files import file_digest, file_lock, write_atomic
from rps.git import GitError, run_git

if TYPE_CHECKING:
    from dvc.repo import Repo

    from rps.settings import Settings

logger = logging.getLogger(__name__)

__all__ = [
    "CATALOG_NAME",
    "MIN_PREFIX",
    "DatasetNotFoundError",
    "DatasetVersion",
    "VersioningError",
    "ensure_dvc_repo",
    "list_datasets",
    "load_dataset",
    "push_dataset",
    "remote_url",
    "version_dataset",
]

REMOTE_NAME = "storage"
GIT_REMOTE_NAME = "origin"
GIT_BRANCH = "main"
_GIT_USER = ("rps", "rps@localhost")


# helpers -------------------------------------------------------------------------------
def _git(repo_path: Path, *args: str, check: bool = True) -> Any:
    try:
        return run_git(repo_path, *args, check=check, timeout=300)
    except GitError as exc:
        raise VersioningError(str(exc)) from exc


def _head(repo_path: Path) -> str | None:
    result = _git(repo_path, "rev-parse", "--verify", "-q", "HEAD", check=False)
    return result.stdout.strip() or None


@contextlib.contextmanager
def _quiet_dvc() -> Iterator[None]:
    """Silence DVC's INFO chatter (git hints) for the duration; warnings still pass."""
    dvc_logger = logging.getLogger("dvc")
    level = dvc_logger.level
    dvc_logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        dvc_logger.setLevel(level)


@contextlib.contextmanager
def _open_repo(repo_path: Path) -> Iterator[Repo]:
    from dvc.repo import Repo

    with _quiet_dvc(), Repo(str(repo_path)) as repo:
        yield repo


@contextlib.contextmanager
def _locked(repo_path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on the DVC workspace."""
    with file_lock(repo_path.parent / f".{repo_path.name}.lock"):
        yield


def _is_s3(url: str) -> bool:
    return url.startswith("s3://")


def remote_url(settings: Settings) -> str:
    """The DVC remote's URL: ``settings.dvc_remote``, a relative folder made absolute."""
    url = settings.dvc_remote
    if "://" in url:
        return url
    path = Path(url).expanduser()
    return str(path if path.is_absolute() else settings.project_root / path)


def _desired_remote(settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """The ``storage`` remote's settings: (repo level, local level with the credentials)."""
    url = remote_url(settings)
    shared: dict[str, str] = {"url": url}
    private: dict[str, str] = {}
    if _is_s3(url):
        shared["region"] = settings.s3_region
        if settings.s3_endpoint_url:
            shared["endpointurl"] = settings.s3_endpoint_url
        if settings.aws_access_key_id is not None:
            private["access_key_id"] = settings.aws_access_key_id.get_secret_value()
        if settings.aws_secret_access_key is not None:
            private["secret_access_key"] = settings.aws_secret_access_key.get_secret_value()
    return shared, private


def _ensure_s3_bucket(settings: Settings, url: str) -> None:
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    try:
        ensure_bucket(settings, bucket)
    except StorageError as exc:
        raise VersioningError(f"DVC remote {url}: {exc}") from exc


def _remote_config(settings: Settings) -> dict[str, str]:
    """The ``storage`` remote's full config (URL, endpoint, credentials) for ``dvc.api``."""
    shared, private = _desired_remote(settings)
    return {**shared, **private}


def _configure_remote(repo_path: Path, settings: Settings) -> bool:
    """Make the ``storage`` remote match the settings; True when the repo config changed."""
    shared, private = _desired_remote(settings)
    changed = False
    with _open_repo(repo_path) as repo:
        current = repo.config.read("repo")
        current_remote = {k: str(v) for k, v in current["remote"].get(REMOTE_NAME, {}).items()}
        core = current.get("core", {})
        if (
            current_remote != shared
            or core.get("remote") != REMOTE_NAME
            or str(core.get("analytics", "")).lower() != "false"
        ):
            with repo.config.edit("repo") as conf:
                conf["remote"][REMOTE_NAME] = dict(shared)
                conf["core"]["remote"] = REMOTE_NAME
                conf["core"]["analytics"] = False
            changed = True
            logger.info("DVC remote %r set to %s", REMOTE_NAME, shared["url"])
        site_cache = str(repo_path / ".dvc" / "tmp" / "site-cache")
        local = repo.config.read("local")
        local_remote = {k: str(v) for k, v in local["remote"].get(REMOTE_NAME, {}).items()}
        if local_remote != private or local.get("core", {}).get("site_cache_dir") != site_cache:
            # .dvc/config.local is git-ignored by DVC: credentials never reach a commit
            with repo.config.edit("local") as conf:
                if private:
                    conf["remote"][REMOTE_NAME] = dict(private)
                else:
                    conf["remote"].pop(REMOTE_NAME, None)
                conf["core"]["site_cache_dir"] = site_cache
    if _is_s3(shared["url"]):
        _ensure_s3_bucket(settings, shared["url"])
    return changed


def _ensure_repo(settings: Settings) -> Path:
    repo_path = settings.dvc_repo_path.absolute()
    repo_path.mkdir(parents=True, exist_ok=True)
    if not (repo_path / ".git").exists():
        _git(repo_path, "init", "-q", "--initial-branch", GIT_BRANCH)
        logger.info("initialised git repository %s", repo_path)
    for key, value in (
        ("user.name", _GIT_USER[0]),
        ("user.email", _GIT_USER[1]),
        ("commit.gpgsign", "false"),
    ):
        if _git(repo_path, "config", "--local", "--get", key, check=False).returncode != 0:
            _git(repo_path, "config", "--local", key, value)
    created = not (repo_path / ".dvc").is_dir()
    if created:
        from dvc.repo import Repo

        try:
            with _quiet_dvc():
                Repo.init(str(repo_path)).close()
        except Exception as exc:
            raise VersioningError(f"dvc init failed in {repo_path}: {exc}") from exc
        logger.info("initialised DVC repository %s", repo_path)
    try:
        changed = _configure_remote(repo_path, settings)
    except VersioningError:
        raise
    except Exception as exc:
        raise VersioningError(f"cannot configure the DVC remote in {repo_path}: {exc}") from exc
    if created or changed:
        setup = [".dvc/config", ".dvc/.gitignore", ".dvcignore"]
        _git(repo_path, "add", "--", *[p for p in setup if (repo_path / p).exists()])
        if _git(repo_path, "diff", "--cached", "--quiet", check=False).returncode != 0:
            subject = "Initialise DVC repository" if created else "Update DVC remote"
            _git(repo_path, "commit", "-q", "-m", f"{subject} ({remote_url(settings)})")
    _configure_git_remote(repo_path, settings)
    return repo_path


def _configure_git_remote(repo_path: Path, settings: Settings) -> None:
    """Point the registry's git remote ``origin`` at ``settings.data_git_remote`` (or drop it)."""
    url = settings.data_git_remote
    current = _git(repo_path, "remote", "get-url", GIT_REMOTE_NAME, check=False)
    if url is None:
        if current.returncode == 0:
            _git(repo_path, "remote", "remove", GIT_REMOTE_NAME)
    elif current.returncode != 0:
        _git(repo_path, "remote", "add", GIT_REMOTE_NAME, url)
    elif current.stdout.strip() != url:
        _git(repo_path, "remote", "set-url", GIT_REMOTE_NAME, url)


def _push_git(repo_path: Path, settings: Settings) -> None:
    """Push the registry's history to its git remote, when one is configured."""
    if settings.data_git_remote is None:
        return
    result = _git(
        repo_path, "push", "-q", GIT_REMOTE_NAME, f"HEAD:refs/heads/{GIT_BRANCH}", check=False
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise VersioningError(
            f"git push of the data registry to {settings.data_git_remote_display} failed: "
            f"{detail} (check RPS_DATA_GIT_REMOTE_URL or the hub settings and the token's "
            "write access)"
        )
    logger.info("pushed the data registry to %s", settings.data_git_remote_display)


def _storage_uri(repo_path: Path, settings: Settings) -> str:
    """The remote URL of the workspace's current ``data/observations.parquet``."""
    import dvc.api

    url = str(
        dvc.api.get_url(
            PATH_IN_REPO,
            repo=str(repo_path),
            remote=REMOTE_NAME,
            remote_config=_remote_config(settings),
        )
    )
    return url if "://" in url else Path(url).absolute().as_uri()


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return int(pq.read_metadata(path).num_rows)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise VersioningError(f"{path} is not a readable parquet file: {exc}") from exc


def _copy_into(source: Path, target: Path) -> None:
    if not target.is_file() or file_digest(target, "md5") != file_digest(source, "md5"):
        write_atomic(target, source.read_bytes())


# public API ----------------------------------------------------------------------------
def ensure_dvc_repo(settings: Settings) -> Path:
    """Create (or reconcile) the git + DVC workspace at ``settings.dvc_repo_path``.

    A new workspace gets ``git init`` (local identity ``rps <rps@localhost>``), ``dvc init``
    and the default remote ``storage`` = ``settings.dvc_remote``; an S3 remote also gets
    ``endpointurl``/``region`` from the settings and its credentials in
    ``.dvc/config.local`` (git-ignored), and its bucket is created when missing. An existing
    workspace has its remote updated when the settings changed. Setup changes are committed.

    Returns:
        The workspace's absolute path.

    Raises:
        VersioningError: git or DVC failed, or the S3 bucket is unreachable.
    """
    repo_path = settings.dvc_repo_path.absolute()
    with _locked(repo_path):
        return _ensure_repo(settings)


def version_dataset(
    settings: Settings, parquet_path: Path | str, *, message: str
) -> DatasetVersion:
    """Version a parquet file: ``dvc add`` it, push it to the remote, commit and register it.

    Versioning content identical to the latest version is a no-op that returns the
    registered version (no new commit, no new catalog line). Versioning an older version's
    content again makes it the latest: a new commit and a new catalog line for that md5
    (:func:`list_datasets` still lists each md5 once, at its latest registration).

    Args:
        settings: selects the workspace, the remote and the catalog.
        parquet_path: the dataset file (copied into the workspace).
        message: the git commit's subject; the md5 is appended.

    Returns:
        The registered version.

    Raises:
        VersioningError: the file is missing or not parquet, or ``dvc add``/``dvc push``/git
            failed; nothing is registered and the workspace is rolled back.
    """
    source = Path(parquet_path)
    if not source.is_file():
        raise VersioningError(f"cannot version {source}: file not found")
    rows = _parquet_rows(source)
    md5 = file_digest(source, "md5")
    with _rolled_back_on_failure(settings, source) as repo_path:
        size, storage_uri = _add_and_push(settings, repo_path, source, md5)
        git_rev: str | None = None
        if settings.dvc_git_commit:
            paths = [f"{PATH_IN_REPO}.dvc", str(Path(PATH_IN_REPO).parent / ".gitignore")]
            _git(repo_path, "add", "--", *paths)
            if _git(repo_path, "diff", "--cached", "--quiet", "--", *paths, check=False).returncode:
                _git(repo_path, "commit", "-q", "-m", f"{message} [dataset {md5}]", "--", *paths)
                logger.info("committed dataset %s in %s", md5, repo_path)
            git_rev = _head(repo_path)
            _push_git(repo_path, settings)
        return _register(
            settings, md5, size=size, rows=rows, git_rev=git_rev, storage_uri=storage_uri
        )


def push_dataset(settings: Settings, parquet_path: Path | str) -> str:
    """Put a parquet file into the object store (the DVC remote); returns its URI there.

    ``dvc add`` + ``dvc push`` of the file as the workspace's ``data/observations.parquet``,
    without a commit or a catalog line (:func:`version_dataset` does those). Idempotent.

    Raises:
        VersioningError: the file is missing or not parquet, or the push failed; the
            workspace is rolled back.
    """
    source = Path(parquet_path)
    if not source.is_file():
        raise VersioningError(f"cannot store {source}: file not found")
    _parquet_rows(source)
    md5 = file_digest(source, "md5")
    with _rolled_back_on_failure(settings, source) as repo_path:
        return _add_and_push(settings, repo_path, source, md5)[1]


@contextlib.contextmanager
def _rolled_back_on_failure(settings: Settings, source: Path) -> Iterator[Path]:
    """Lock and prepare the workspace; on any failure restore it as it was."""
    repo_path = settings.dvc_repo_path.absolute()
    with _locked(repo_path):
        _ensure_repo(settings)
        data_file = repo_path / PATH_IN_REPO
        dvc_file = data_file.with_name(data_file.name + ".dvc")
        gitignore = data_file.parent / ".gitignore"
        snapshot = {p: p.read_bytes() if p.exists() else None for p in (dvc_file, gitignore)}
        head_before = _head(repo_path)
        try:
            yield repo_path
        except BaseException as exc:
            logger.warning("versioning %s failed (%s): rolling back %s", source, exc, repo_path)
            _rollback(repo_path, snapshot, data_file, dvc_file, head_before)
            if isinstance(exc, VersioningError) or not isinstance(exc, Exception):
                raise
            raise VersioningError(f"versioning {source} failed: {exc}") from exc


def _add_and_push(settings: Settings, repo_path: Path, source: Path, md5: str) -> tuple[int, str]:
    """``dvc add`` the file into the workspace and ``dvc push`` it; returns (size, URI)."""
    data_file = repo_path / PATH_IN_REPO
    dvc_file = data_file.with_name(data_file.name + ".dvc")
    _copy_into(source, data_file)
    remote = remote_url(settings)
    with _open_repo(repo_path) as repo:
        stages = repo.add([str(data_file)])
        out = stages[0].outs[0]
        added_md5 = str(out.hash_info.value)
        if added_md5 != md5:
            raise VersioningError(
                f"dvc add recorded md5 {added_md5} for {source}, expected {md5} (file changed?)"
            )
        size = int(out.meta.size) if out.meta.size is not None else source.stat().st_size
        try:
            repo.push(targets=[str(dvc_file)], remote=REMOTE_NAME)
        except Exception as exc:
            raise VersioningError(f"dvc push of dataset {md5} to {remote} failed: {exc}") from exc
    storage_uri = _storage_uri(repo_path, settings)
    logger.info("pushed dataset %s to %s", md5, storage_uri)
    return size, storage_uri


def _register(
    settings: Settings,
    md5: str,
    *,
    size: int,
    rows: int,
    git_rev: str | None,
    storage_uri: str,
) -> DatasetVersion:
    remote = remote_url(settings)

    catalog = read_catalog(settings)
    if catalog and catalog[-1].md5 == md5:
        return catalog[-1]
    version = DatasetVersion(
        md5=md5, size=size, rows=rows, git_rev=git_rev, remote=remote, storage_uri=storage_uri
    )
    append_catalog(settings, version)
    return version


def _rollback(
    repo_path: Path,
    snapshot: dict[Path, bytes | None],
    data_file: Path,
    dvc_file: Path,
    head_before: str | None,
) -> None:
    """Undo a failed :func:`version_dataset`: commit, pointer files, workspace copy."""
    try:
        head_now = _head(repo_path)
        if head_now != head_before:
            if head_before is None:
                _git(repo_path, "update-ref", "-d", "HEAD", check=False)
            else:
                _git(repo_path, "reset", "-q", "--soft", head_before, check=False)
        for path, content in snapshot.items():
            if content is None:
                path.unlink(missing_ok=True)
            else:
                write_atomic(path, content)
        rel = [str(p.relative_to(repo_path)) for p in snapshot]
        _git(repo_path, "reset", "-q", "--", *rel, check=False)
        if snapshot[dvc_file] is None:
            data_file.unlink(missing_ok=True)
        else:
            with _open_repo(repo_path) as repo:
                repo.checkout(targets=[str(dvc_file)], force=True)
    except Exception:  # the original error matters more; leave a trace of this one
        logger.exception("rolling back the DVC workspace %s failed", repo_path)


def load_dataset(settings: Settings, md5: str | None = None) -> tuple[pd.DataFrame, DatasetVersion]:
    """Load a registered version from the DVC cache, else from the remote (``dvc.api.open``).

    The file is read at the git revision that recorded the version (the workspace for the
    latest version when git commits are off) and its bytes are checked against the md5.

    Args:
        settings: selects the workspace, remote and catalog.
        md5: the version's md5 or a prefix of at least 7 characters; default: the latest.

    Returns:
        The dataset and its version record.

    Raises:
        DatasetNotFoundError: no such version (the message lists the newest known ones), or
            its content is neither in the cache nor on the remote.
        VersioningError: the workspace or the remote is unusable, or the bytes read do not
            match the md5.
    """
    import dvc.api
    from dvc.exceptions import PathMissingError

    version = resolve(settings, md5)
    repo_path = settings.dvc_repo_path.absolute()
    with _locked(repo_path):
        _ensure_repo(settings)
        rev = version.git_rev
        if rev is None and version != list_datasets(settings)[-1]:
            raise DatasetNotFoundError(
                f"dataset {version.md5} has no git revision (RPS_DVC_GIT_COMMIT was off) and is "
                "not the latest version: only the latest can be loaded from the workspace"
            )
        try:
            with dvc.api.open(
                version.path_in_repo,
                repo=str(repo_path),
                rev=rev,
                remote=REMOTE_NAME,
                mode="rb",
                remote_config=_remote_config(settings),
            ) as handle:
                payload = handle.read()
        except (FileNotFoundError, PathMissingError) as exc:
            raise DatasetNotFoundError(
                f"dataset {version.md5} is neither in the DVC cache of {repo_path} "
                f"nor on the remote {remote_url(settings)}: {exc}"
            ) from exc
        except Exception as exc:
            raise VersioningError(
                f"cannot fetch dataset {version.md5} from {remote_url(settings)}: {exc}"
            ) from exc
    import hashlib

    got = hashlib.md5(payload, usedforsecurity=False).hexdigest()
    if got != version.md5:
        raise VersioningError(
            f"dataset {version.md5} read back with md5 {got}: the DVC cache or the remote "
            "holds corrupt content"
        )
    frame = pd.read_parquet(io.BytesIO(payload))
    logger.info("loaded dataset %s (%d rows)", version.md5, len(frame))
    return frame, version
