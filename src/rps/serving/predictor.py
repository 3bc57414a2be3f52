"""The served model: loading, verification, and atomic hot swaps shared by all workers.

A :class:`ServedModel` is immutable once built: the verified bundle, its identity and the
arrays the hot path needs (training bounds, drift reference). The :class:`ModelManager` holds
one reference to the current model; a request reads that reference once and uses that object
to the end, so a swap (one assignment) never disturbs requests in flight.

The bundle comes from a :class:`~rps.serving.sources.ModelSource`: a bundle folder
(``RPS_MODEL_DIR``) or, by default, the registry's champion alias. In registry mode the manager
asks the registry every ``check_seconds`` which version the alias points to and reloads when it
moved (and on ``POST /model/reload``); while the registry does not answer it keeps serving and
retries with exponential backoff (tenacity), and :attr:`ModelManager.registry` says so.

A candidate replaces the current model only if it downloads, its checksums verify, it loads and
a smoke prediction on its reference sample is finite; otherwise it is refused with the name of
the failed check (``ModelLoadError.reason``) and the current model stays. Accepted bundles are
copied into a content-addressed cache and, with several workers (launched by ``rps serve``,
which sets ``RPS_SERVE_INSTANCE``), committed to the shared model stack
(:mod:`rps.serving.model_store`); every other worker notices the new generation within
``poll_seconds`` and swaps to the same bundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import tenacity

from rps.models.bundle import BundleError, find_bundle_dir, load_bundle
from rps.serving.model_store import (
    MAX_HISTORY,
    BundleCache,
    ModelEntry,
    ModelLoadError,
    SharedModelState,
    SharedStack,
    verify_checksums,
)
from rps.serving.registry_client import NoChampionError, RegistryUnavailableError
from rps.serving.served import Forecast, ServedModel, build_served_model, smoke_test
from rps.serving.sources import ModelSource

logger = logging.getLogger(__name__)

__all__ = [
    "Forecast",
    "ModelLoadError",
    "ModelManager",
    "NoPreviousModelError",
    "RegistryStatus",
    "ServedModel",
    "SwapResult",
]


class NoPreviousModelError(RuntimeError):
    """A rollback was asked for but there is no earlier model."""


@dataclass(frozen=True)
class SwapResult:
    """What a reload or rollback did."""

    changed: bool
    previous: ServedModel | None
    current: ServedModel
    detail: str


@dataclass(frozen=True)
class RegistryStatus:
    """The outcome of the last registry check (registry mode only).

    Attributes:
        reachable: The registry answered the last check.
        champion_version: The version the alias pointed to (None: no champion yet).
        checked_at: When the last check ended.
        detail: The error of the last check, if any.
    """

    reachable: bool
    champion_version: str | None
    checked_at: datetime
    detail: str | None = None


RefusalCallback = Callable[[str, str], None]


class ModelManager:
    """The current model of this worker, and reload/rollback shared with the other workers."""

    def __init__(
        self,
        *,
        name: str,
        source: ModelSource,
        cache: BundleCache | None,
        shared: SharedModelState | None,
        poll_seconds: float = 1.0,
        retry_seconds: float = 30.0,
        check_seconds: float = 30.0,
        backoff_max_seconds: float = 300.0,
    ) -> None:
        """Create a manager without a model (call :meth:`start`).

        Args:
            name: The registered model name reported with every model.
            source: Locates the bundle (see :func:`rps.serving.sources.model_source`).
            cache: Where accepted bundles are copied (None: serve from the source path).
            shared: The cross-worker model stack (None: this process only).
            poll_seconds: How often to look for swaps made by other workers.
            retry_seconds: How often to retry the initial load of a ``model_dir`` while no
                model is served.
            check_seconds: How often to ask the registry for the champion's version
                (registry mode; 0 turns the check off, leaving ``POST /model/reload``).
            backoff_max_seconds: Longest wait between checks while the registry is down.
        """
        self.name = name
        self.source = source
        self.cache = cache
        self.shared = shared
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.check_seconds = check_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.current: ServedModel | None = None
        self.last_error: str | None = None
        self.registry: RegistryStatus | None = None
        self.followed_version: str | None = None
        self.on_swap: list[Callable[[ServedModel | None, ServedModel], None]] = []
        self.on_refused: list[RefusalCallback] = []
        self._entries: tuple[ModelEntry, ...] = ()
        self._loaded: dict[str, ServedModel] = {}
        self._generation = 0
        self._stamp: tuple[int, int] | None = None
        self._op_lock = asyncio.Lock()
        self._local_lock = threading.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def mode(self) -> str:
        """``registry`` or ``model_dir``."""
        return self.source.mode

    # loading ----------------------------------------------------------------------------------
    def load_path(
        self, directory: Path, *, version: str | None, alias: str, source: str
    ) -> ServedModel:
        """Verify, load and smoke-test a bundle, and cache a copy (blocking).

        Raises:
            ModelLoadError: any failure; ``reason`` names the check that refused the bundle.
        """
        try:
            bundle_dir = find_bundle_dir(directory)
        except (BundleError, OSError) as exc:
            raise ModelLoadError(str(exc), reason="load") from exc
        verify_checksums(bundle_dir)
        try:
            bundle = load_bundle(bundle_dir, verify=False)  # verified just above
        except BundleError as exc:
            raise ModelLoadError(str(exc), reason="load") from exc
        except Exception as exc:  # e.g. LightGBM refusing a damaged model file
            raise ModelLoadError(
                f"bundle at {directory} failed to load: {type(exc).__name__}: {exc}",
                reason="load",
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

    def load_from_source(self, version: str | None = None) -> ServedModel:
        """Load the champion (``version``, or whatever the source holds now; blocking)."""
        located = self.source.fetch(version)
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
            raise ModelLoadError(
                f"bundle at {entry.path} no longer has checksum {entry.checksum}",
                reason="checksum",
            )
        return model

    def _refused(self, exc: ModelLoadError, what: str) -> None:
        logger.error("%s refused by the %s check: %s", what, exc.reason, exc)
        for callback in self.on_refused:
            callback(exc.reason, str(exc))

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
        if entries and entries[-1].alias == "champion" and self.mode == "registry":
            self.followed_version = entries[-1].version
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
        """Load the first model and start following other workers (and the registry)."""
        await self._initial_load()
        self._tasks.append(asyncio.create_task(self._watch(), name="model-watch"))
        if self.mode == "registry" and self.check_seconds > 0:
            self._tasks.append(asyncio.create_task(self._follow(), name="registry-follow"))

    async def stop(self) -> None:
        """Stop the background tasks."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

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
            if exc.reason == "no_champion":
                logger.warning("no model loaded yet: %s", exc)
            else:
                self._refused(exc, "initial model")
            return
        self._install(model, (model.entry,), 0)

    async def reload(self, version: str | None = None) -> SwapResult:
        """Load the champion (``version``, else the current one) and swap to it if it passes.

        Raises:
            ModelLoadError: the candidate was refused (the current model stays).
        """
        async with self._op_lock:
            previous = self.current
            try:
                candidate = await asyncio.to_thread(self.load_from_source, version)
            except ModelLoadError as exc:
                self._refused(exc, f"champion {version or ''}".strip())
                raise

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

    # following other workers and the registry -------------------------------------------------
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

    async def check_registry(self) -> bool:
        """Ask the registry for the champion's version; reload when it moved. True on a swap.

        A version this worker already followed (served, refused, or rolled back from) is not
        loaded again until the alias moves; ``POST /model/reload`` always tries.

        Raises:
            RegistryUnavailableError: the registry did not answer (the caller backs off).
        """
        await self.sync()  # another worker may already have swapped
        try:
            version = await asyncio.to_thread(self.source.champion_version)
        except NoChampionError as exc:
            self.registry = RegistryStatus(True, None, datetime.now(UTC), str(exc))
            return False
        except RegistryUnavailableError as exc:
            self.registry = RegistryStatus(
                False,
                self.registry.champion_version if self.registry else None,
                datetime.now(UTC),
                str(exc),
            )
            raise
        self.registry = RegistryStatus(True, version, datetime.now(UTC))
        if version is None or version == self.followed_version:
            return False
        logger.info("champion moved to version %s; reloading", version)
        self.followed_version = version
        try:
            result = await self.reload(version)
        except ModelLoadError:
            return False  # logged and counted; the current model stays
        return result.changed

    async def _follow(self) -> None:
        def down(state: tenacity.RetryCallState) -> None:
            wait = state.next_action.sleep if state.next_action else 0.0
            logger.warning(
                "registry unreachable (attempt %d), serving on; next check in %.0f s: %s",
                state.attempt_number,
                wait,
                self.registry.detail if self.registry else "",
            )

        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                async for attempt in tenacity.AsyncRetrying(
                    retry=tenacity.retry_if_exception_type(RegistryUnavailableError),
                    wait=tenacity.wait_exponential(
                        multiplier=self.check_seconds,
                        min=self.check_seconds,
                        max=self.backoff_max_seconds,
                    ),
                    before_sleep=down,
                ):
                    with attempt:
                        await self.check_registry()
            except asyncio.CancelledError:
                raise
            except Exception:  # the follower must survive anything
                logger.exception("registry check failed; retrying")

    async def _watch(self) -> None:
        last_retry = time.monotonic()
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.sync()
                if (
                    self.current is None
                    and self.mode == "model_dir"
                    and time.monotonic() - last_retry >= self.retry_seconds
                ):
                    last_retry = time.monotonic()
                    await self._initial_load()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must survive anything
                logger.exception("model watcher failed; retrying")
