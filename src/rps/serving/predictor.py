"""The served model: loading, verification, and atomic hot swaps shared by all workers.

A :class:`ServedModel` is immutable once built: the verified bundle, its identity and the
arrays the hot path needs (training bounds, drift reference). The :class:`ModelManager` holds
one reference to the current model; a request reads that reference once and uses that object
to the end, so a swap (one assignment) never disturbs requests in flight.

Sources, in order: ``settings.model_dir`` (a bundle directory, e.g. baked into the image; a
reload re-reads it, so repointing a symlink or replacing the folder publishes a new model), else
the registry's champion via ``rps.models.registry.download_bundle`` (imported lazily, so a
server with a ``model_dir`` never imports MLflow).

A candidate replaces the current model only if it loads, its checksums verify and a smoke
prediction on its reference sample is finite. Accepted bundles are copied into a
content-addressed cache (``state/serving/bundles/<digest>``). With several workers (launched by
``rps serve``, which sets ``RPS_SERVE_INSTANCE``) the stack of served models lives in a JSON file
under a file lock: the worker that handles a reload or rollback commits the new stack, and every
other worker notices the new generation within ``poll_seconds`` and swaps to the same bundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rps.models.bundle import (
    BundleError,
    ModelBundle,
    bundle_digest,
    find_bundle_dir,
    load_bundle,
    sha256_file,
)
from rps.params import DriftParams
from rps.serving.drift import DriftMonitor, ReferenceProfile, training_bounds
from rps.settings import Settings

logger = logging.getLogger(__name__)

MAX_HISTORY = 5
SMOKE_ROWS = 32


class ModelLoadError(RuntimeError):
    """A candidate model could not be loaded, failed verification or its smoke test."""


class NoPreviousModelError(RuntimeError):
    """A rollback was asked for but there is no earlier model."""


@dataclass(frozen=True)
class ModelEntry:
    """A served model's identity, as recorded in the shared model stack."""

    path: str
    checksum: str
    version: str
    alias: str
    source: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelEntry:
        return cls(**{f.name: str(data[f.name]) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Forecast:
    """Point forecasts, interval bounds and out-of-range flags of a batch of rows."""

    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    ood: np.ndarray  # (n, n_features) bool


@dataclass(frozen=True)
class ServedModel:
    """A verified bundle ready to serve (never mutated; a swap replaces the whole object)."""

    bundle: ModelBundle
    name: str
    version: str
    alias: str
    source: str
    path: Path
    loaded_at: datetime
    feature_index: Mapping[str, int]
    lower_bounds: np.ndarray
    upper_bounds: np.ndarray
    profile: ReferenceProfile

    @property
    def checksum(self) -> str:
        return self.bundle.checksum

    @property
    def feature_names(self) -> list[str]:
        return self.bundle.feature_names

    @property
    def entry(self) -> ModelEntry:
        return ModelEntry(
            path=str(self.path),
            checksum=self.checksum,
            version=self.version,
            alias=self.alias,
            source=self.source,
        )

    def predict(self, rows: np.ndarray) -> Forecast:
        """Forecast a ``(n, n_features)`` array of rows in feature order."""
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite output is checked
            point, lower, upper = self.bundle.predict_with_interval(rows)
        ood = (rows < self.lower_bounds) | (rows > self.upper_bounds)
        return Forecast(point=point, lower=lower, upper=upper, ood=ood)

    def new_drift_monitor(self, params: DriftParams) -> DriftMonitor:
        """An empty drift window against this model's training reference."""
        return DriftMonitor(
            self.profile, n_features=len(self.feature_names), window_size=params.window_size
        )


def _version_of(bundle: ModelBundle, hint: str | None) -> str:
    if hint:
        return hint
    for key in ("model_version", "registry_version", "version"):
        value = bundle.lineage.get(key)
        if value not in (None, ""):
            return str(value)
    return bundle.checksum[:12]


def smoke_test(bundle: ModelBundle) -> None:
    """Predict the first reference rows and require finite output of the right shape.

    Raises:
        ModelLoadError: the prediction fails or is not finite.
    """
    n_features = len(bundle.feature_names)
    sample = bundle.reference_sample
    if sample is not None and sample.ndim == 2 and sample.shape[1] == n_features and len(sample):
        rows = np.asarray(sample[:SMOKE_ROWS], dtype=float)
    else:
        means = [bundle.reference_stats.get(name, {}).get("mean") for name in bundle.feature_names]
        if any(m is None for m in means):
            raise ModelLoadError("bundle has neither a reference sample nor feature means")
        rows = np.asarray([means], dtype=float)
    try:
        point, lower, upper = bundle.predict_with_interval(rows)
    except Exception as exc:  # any failure of a foreign model refuses it
        raise ModelLoadError(f"smoke prediction failed: {type(exc).__name__}: {exc}") from exc
    for label, output in (("prediction", point), ("lower", lower), ("upper", upper)):
        values = np.asarray(output)
        if values.shape != (len(rows),):
            raise ModelLoadError(f"smoke {label} has shape {values.shape}, not ({len(rows)},)")
        if not np.all(np.isfinite(values)):
            raise ModelLoadError(f"smoke {label} is not finite on the reference sample")


def build_served_model(
    bundle: ModelBundle,
    *,
    name: str,
    version: str | None,
    alias: str,
    source: str,
    path: Path,
) -> ServedModel:
    """Wrap a loaded bundle with what the hot path needs (after :func:`smoke_test`)."""
    lower, upper = training_bounds(bundle.feature_names, bundle.reference_stats)
    return ServedModel(
        bundle=bundle,
        name=name,
        version=_version_of(bundle, version),
        alias=alias,
        source=source,
        path=path,
        loaded_at=datetime.now(UTC),
        feature_index={n: i for i, n in enumerate(bundle.feature_names)},
        lower_bounds=lower,
        upper_bounds=upper,
        profile=ReferenceProfile.build(
            bundle.feature_names, bundle.reference_stats, bundle.reference_sample
        ),
    )


class BundleCache:
    """Content-addressed copies of accepted bundles, so every worker can load any of them."""

    def __init__(self, root: Path, *, keep: int = MAX_HISTORY + 2) -> None:
        self.root = root
        self.keep = keep

    def store(self, source: Path, checksum: str) -> Path:
        """Copy a verified bundle to ``root/<checksum>`` (kept if already there) and return it.

        Raises:
            ModelLoadError: the copy does not match the checksums (the source changed).
        """
        target = self.root / checksum
        if (target / "bundle.json").exists():
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".incoming-"))
        try:
            shutil.copytree(source, staging, dirs_exist_ok=True)
            _verify_files(staging, checksum)
            try:
                staging.rename(target)
            except OSError:
                if not (target / "bundle.json").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def prune(self, referenced: set[str], *, min_age_s: float = 600.0) -> None:
        """Delete cached bundles beyond the newest ``keep`` that no stack entry references.

        Only copies older than ``min_age_s`` go, so a copy another worker is about to commit
        stays.
        """

        def mtime(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except OSError:  # another worker pruned it meanwhile
                return 0.0

        if not self.root.exists():
            return
        now = time.time()
        cached = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        cached.sort(key=mtime, reverse=True)
        for path in cached[self.keep :]:
            if path.name not in referenced and now - mtime(path) > min_age_s:
                shutil.rmtree(path, ignore_errors=True)


def _verify_files(directory: Path, checksum: str) -> None:
    try:
        checksums: dict[str, str] = json.loads((directory / "checksums.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"copied bundle lacks checksums: {exc}") from exc
    if bundle_digest(checksums) != checksum:
        raise ModelLoadError("bundle changed while it was being copied")
    for name, expected in checksums.items():
        if sha256_file(directory / name) != expected:
            raise ModelLoadError(f"bundle file {name} changed while it was being copied")


@dataclass(frozen=True)
class SharedStack:
    """The model stack as last committed (``entries[-1]`` is served)."""

    generation: int
    entries: tuple[ModelEntry, ...]


class SharedModelState:
    """The served-model stack of one server instance in a JSON file under a file lock."""

    def __init__(self, path: Path, instance: str) -> None:
        self.path = path
        self.instance = instance
        self._lock_path = path.with_suffix(".lock")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cross-process lock (blocking)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def stamp(self) -> tuple[int, int] | None:
        """``(mtime_ns, size)`` of the file, to notice changes cheaply."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def read(self) -> SharedStack | None:
        """The committed stack of this instance, or None (absent, unreadable, other instance)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("instance") != self.instance:
                return None
            entries = tuple(ModelEntry.from_dict(e) for e in data["entries"])
            return SharedStack(generation=int(data["generation"]), entries=entries)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable model state %s: %s", self.path, exc)
            return None

    def write(self, stack: SharedStack) -> None:
        """Replace the file atomically."""
        data = {
            "instance": self.instance,
            "generation": stack.generation,
            "entries": [dataclasses.asdict(e) for e in stack.entries],
            "written_at": datetime.now(UTC).isoformat(),
            "written_by": os.getpid(),
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".model_state.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
        Path(tmp).replace(self.path)


@dataclass(frozen=True)
class SwapResult:
    """What a reload or rollback did."""

    changed: bool
    previous: ServedModel | None
    current: ServedModel
    detail: str


@dataclass(frozen=True)
class SourceBundle:
    """A located champion bundle.

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


SourceResolver = Callable[[], SourceBundle]


def resolve_source(settings: Settings) -> SourceBundle:
    """Locate the current champion bundle: ``settings.model_dir``, else the registry alias.

    From the registry, the champion's version is read first and that exact version is
    downloaded, so the reported version always matches the bundle even if the alias moves.

    Raises:
        ModelLoadError: the directory is missing, or the registry cannot deliver a bundle.
    """
    if settings.model_dir is not None:
        directory = settings.model_dir
        if not directory.is_absolute():
            directory = settings.project_root / directory
        if not directory.exists():
            raise ModelLoadError(f"model_dir {directory} does not exist")
        return SourceBundle(path=directory.resolve(), version=None, source=str(directory))
    try:
        from rps.models.registry import champion_info, download_bundle
    except ImportError as exc:
        raise ModelLoadError(f"no model_dir set and the registry is unavailable: {exc}") from exc
    ref, version = "champion", None
    try:
        info = champion_info(settings)
        if info.get("version") is not None:
            version = str(info["version"])
            ref = version
    except Exception as exc:  # the download below reports the registry's problem
        logger.warning("champion version unknown: %s", exc)
    download_root = Path(tempfile.mkdtemp(prefix="rps-serving-download-"))
    try:
        directory = Path(download_bundle(settings, ref=ref, dst=download_root))
    except Exception as exc:  # registry clients raise many kinds
        shutil.rmtree(download_root, ignore_errors=True)
        raise ModelLoadError(
            f"cannot download {settings.champion_uri} (ref {ref}): {type(exc).__name__}: {exc}"
        ) from exc
    return SourceBundle(
        path=directory,
        version=version,
        source=f"{settings.champion_uri} (version {version})" if version else settings.champion_uri,
        download_root=download_root,
    )


class ModelManager:
    """The current model of this worker, and reload/rollback shared with the other workers."""

    def __init__(
        self,
        *,
        name: str,
        resolver: SourceResolver,
        cache: BundleCache | None,
        shared: SharedModelState | None,
        poll_seconds: float = 1.0,
        retry_seconds: float = 30.0,
    ) -> None:
        """Create a manager without a model (call :meth:`start`).

        Args:
            name: The registered model name reported with every model.
            resolver: Locates the champion bundle (see :func:`resolve_source`).
            cache: Where accepted bundles are copied (None: serve from the source path).
            shared: The cross-worker model stack (None: this process only).
            poll_seconds: How often to look for swaps made by other workers.
            retry_seconds: How often to retry the initial load while no model is served.
        """
        self.name = name
        self.resolver = resolver
        self.cache = cache
        self.shared = shared
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.current: ServedModel | None = None
        self.last_error: str | None = None
        self.on_swap: list[Callable[[ServedModel | None, ServedModel], None]] = []
        self._entries: tuple[ModelEntry, ...] = ()
        self._loaded: dict[str, ServedModel] = {}
        self._generation = 0
        self._stamp: tuple[int, int] | None = None
        self._op_lock = asyncio.Lock()
        self._local_lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    # loading ----------------------------------------------------------------------------------
    def load_path(
        self, directory: Path, *, version: str | None, alias: str, source: str
    ) -> ServedModel:
        """Load, verify and smoke-test a bundle, and cache a copy (blocking).

        Raises:
            ModelLoadError: any failure; the message says which check refused the bundle.
        """
        try:
            bundle = load_bundle(directory)
            bundle_dir = find_bundle_dir(directory)
        except BundleError as exc:
            raise ModelLoadError(str(exc)) from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(
                f"bundle at {directory} is malformed: {type(exc).__name__}: {exc}"
            ) from exc
        except Exception as exc:  # e.g. LightGBM refusing a damaged model file
            raise ModelLoadError(
                f"bundle at {directory} failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        smoke_test(bundle)
        served_path = bundle_dir
        if self.cache is not None:
            try:
                served_path = self.cache.store(bundle_dir, bundle.checksum)
            except OSError as exc:
                logger.warning("cannot cache bundle %s (%s); serving it in place", bundle_dir, exc)
        return build_served_model(
            bundle, name=self.name, version=version, alias=alias, source=source, path=served_path
        )

    def load_from_source(self) -> ServedModel:
        """Load the current champion from the configured source (blocking)."""
        located = self.resolver()
        root = located.download_root
        try:
            model = self.load_path(
                located.path, version=located.version, alias="champion", source=located.source
            )
        except BaseException:
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)
            raise
        if root is not None and root != model.path and root not in model.path.parents:
            shutil.rmtree(root, ignore_errors=True)  # served from the cache copy
        return model

    def _load_entry(self, entry: ModelEntry) -> ServedModel:
        known = self._loaded.get(entry.checksum)
        if known is not None:
            if known.alias == entry.alias:
                return known
            return dataclasses.replace(known, alias=entry.alias)
        model = self.load_path(
            Path(entry.path), version=entry.version, alias=entry.alias, source=entry.source
        )
        if model.checksum != entry.checksum:
            raise ModelLoadError(f"bundle at {entry.path} no longer has checksum {entry.checksum}")
        return model

    # swapping ---------------------------------------------------------------------------------
    def _install(
        self, model: ServedModel, entries: tuple[ModelEntry, ...], generation: int
    ) -> None:
        previous = self.current
        self._entries = entries
        self._generation = generation
        keep = {e.checksum for e in entries[-3:]}
        self._loaded = {c: m for c, m in self._loaded.items() if c in keep}
        self._loaded[model.checksum] = model
        self.current = model  # the one assignment requests observe
        self.last_error = None
        if previous is None or previous.checksum != model.checksum:
            logger.info(
                "serving %s version %s (%s) from %s",
                model.name,
                model.version,
                model.checksum[:12],
                model.path,
            )
        for callback in self.on_swap:
            callback(previous, model)

    def _transact(
        self, change: Callable[[tuple[ModelEntry, ...]], tuple[ModelEntry, ...] | None]
    ) -> tuple[tuple[ModelEntry, ...], int] | None:
        """Apply ``change`` to the committed stack under the lock; None when it is a no-op."""
        lock = self.shared.locked() if self.shared is not None else self._locked_local()
        with lock:
            committed = self.shared.read() if self.shared is not None else None
            if committed is not None:
                entries, generation = committed.entries, committed.generation
            else:
                entries, generation = self._entries, self._generation
            changed = change(entries)
            if changed is None:
                return None
            changed = changed[-MAX_HISTORY:]
            generation += 1
            if self.shared is not None:
                self.shared.write(SharedStack(generation=generation, entries=changed))
                self._stamp = self.shared.stamp()
            if self.cache is not None:
                self.cache.prune({entry.checksum for entry in changed})
            return changed, generation

    @contextlib.contextmanager
    def _locked_local(self) -> Iterator[None]:
        with self._local_lock:
            yield

    async def start(self) -> None:
        """Load the first model (following the shared stack when other workers moved it)."""
        await self._initial_load()
        self._task = asyncio.create_task(self._watch(), name="model-watch")

    async def stop(self) -> None:
        """Stop watching for swaps."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _initial_load(self) -> None:
        committed = self.shared.read() if self.shared is not None else None
        if committed is not None and committed.entries:
            try:
                model = await asyncio.to_thread(self._load_entry, committed.entries[-1])
            except ModelLoadError as exc:
                logger.error("cannot load the committed model: %s", exc)
            else:
                self._install(model, committed.entries, committed.generation)
                return
        try:
            model = await asyncio.to_thread(self.load_from_source)
        except ModelLoadError as exc:
            self.last_error = str(exc)
            logger.error("no model loaded: %s", exc)
            return
        self._install(model, (model.entry,), 0)

    async def reload(self) -> SwapResult:
        """Load the current champion and swap to it when it passes every check.

        Raises:
            ModelLoadError: the candidate was refused (the current model stays).
        """
        async with self._op_lock:
            previous = self.current
            candidate = await asyncio.to_thread(self.load_from_source)

            def push(entries: tuple[ModelEntry, ...]) -> tuple[ModelEntry, ...] | None:
                if entries and entries[-1].checksum == candidate.checksum:
                    return None
                base = entries or ((previous.entry,) if previous is not None else ())
                return (*base, candidate.entry)

            committed = await asyncio.to_thread(self._transact, push)
            if committed is None:
                if previous is None or previous.checksum != candidate.checksum:
                    self._install(candidate, self._entries or (candidate.entry,), self._generation)
                current = self.current or candidate
                return SwapResult(False, previous, current, "already serving this bundle")
            self._install(candidate, *committed)
            return SwapResult(True, previous, candidate, "swapped to the current champion")

    async def rollback(self) -> SwapResult:
        """Swap back to the model served before the current one.

        Raises:
            NoPreviousModelError: nothing to roll back to.
            ModelLoadError: the previous bundle no longer loads (the current model stays).
        """
        async with self._op_lock:
            previous = self.current
            loaded: dict[str, ServedModel] = {}

            def pop(entries: tuple[ModelEntry, ...]) -> tuple[ModelEntry, ...] | None:
                if len(entries) < 2:
                    raise NoPreviousModelError("no previous model to roll back to")
                target = dataclasses.replace(entries[-2], alias="rollback")
                loaded["model"] = self._load_entry(target)
                return (*entries[:-2], target)

            committed = await asyncio.to_thread(self._transact, pop)
            assert committed is not None  # pop never returns None
            model = loaded["model"]
            self._install(model, *committed)
            return SwapResult(True, previous, model, "rolled back to the previous model")

    # following other workers ----------------------------------------------------------------
    async def sync(self) -> bool:
        """Adopt a stack another worker committed; True when this worker swapped."""
        if self.shared is None:
            return False
        stamp = self.shared.stamp()
        if stamp is None or stamp == self._stamp:
            return False
        committed = self.shared.read()
        if committed is None or not committed.entries:
            self._stamp = stamp
            return False
        if committed.generation == self._generation and self.current is not None:
            self._stamp = stamp
            return False
        async with self._op_lock:
            top = committed.entries[-1]
            try:
                model = await asyncio.to_thread(self._load_entry, top)
            except ModelLoadError as exc:
                logger.error("cannot follow the swap to %s: %s", top.version, exc)
                self._stamp = stamp
                return False
            self._stamp = stamp
            changed = self.current is None or self.current.checksum != model.checksum
            self._install(model, committed.entries, committed.generation)
            return changed

    async def _watch(self) -> None:
        last_retry = time.monotonic()
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.sync()
                if self.current is None and time.monotonic() - last_retry >= self.retry_seconds:
                    last_retry = time.monotonic()
                    await self._initial_load()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must survive anything
                logger.exception("model watcher failed; retrying")
