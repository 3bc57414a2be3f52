"""Independent model fits side by side on the cores this process may use.

The fits run in threads: LightGBM and NumPy release the GIL while they compute. Every fit
keeps its own ``num_threads=1`` booster and seed, so the models are the same as when fitted
one after another and are used in the same order; only the wall time changes
(docs/BENCHMARKS.md "Training"). A fit that itself fans out (a horizon model's groups inside
an out-of-fold fit) runs its parts one after another in its worker thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_worker = threading.local()


def fit_workers() -> int:
    """Fits at once: ``RPS_FIT_WORKERS`` (settings), else the CPUs this process may use."""
    from rps.settings import get_settings

    configured = get_settings().fit_workers
    if configured:
        return configured
    if hasattr(os, "sched_getaffinity"):  # Linux: the CPUs this process may run on
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def in_order(fit: Callable[[T], R], items: Sequence[T]) -> Generator[R, None, None]:
    """``fit(item)`` of each item, yielded in the items' order while the fits run side by side.

    Closing the generator early (a pruned trial) cancels the fits not yet started and waits
    for the running ones.
    """
    workers = 1 if getattr(_worker, "busy", False) else min(fit_workers(), len(items))
    if workers <= 1:
        for item in items:
            yield fit(item)
        return

    def run(item: T) -> R:
        _worker.busy = True
        return fit(item)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rps-fit") as pool:
        futures: list[Future[R]] = [pool.submit(run, item) for item in items]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()
