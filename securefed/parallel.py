"""A small, fork-safe helper pool for splitting one large numeric job over the CPU's cores.

Used where a single operation streams over tens of megabytes (mask generation, encoding) and the
work splits into independent contiguous ranges whose results are bit-identical to the sequential
computation. numpy ufuncs and the ``cryptography`` ciphers release the GIL, so threads scale.

Protocol objects stay sans-I/O: they never see a thread; they call a pure function that may
internally run its ranges here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

__all__ = ["MAX_WORKERS", "run_all", "split_range"]

MAX_WORKERS = max(1, min(4, os.cpu_count() or 1))


class _Pool:
    """One lazily created pool per process, recreated in a forked child."""

    lock = threading.Lock()
    executor: ThreadPoolExecutor | None = None

    @classmethod
    def get(cls) -> ThreadPoolExecutor:
        with cls.lock:
            if cls.executor is None:
                cls.executor = ThreadPoolExecutor(
                    max(1, MAX_WORKERS - 1), thread_name_prefix="securefed"
                )
            return cls.executor

    @classmethod
    def reset_after_fork(cls) -> None:
        cls.lock = threading.Lock()
        cls.executor = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_Pool.reset_after_fork)


def split_range(
    total: int, *, min_part: int, max_parts: int = MAX_WORKERS
) -> list[tuple[int, int]]:
    """``[0, total)`` as up to ``max_parts`` contiguous ``(start, stop)`` ranges of at least
    ``min_part`` items (one range when ``total < 2 * min_part``)."""
    parts = max(1, min(max_parts, total // max(1, min_part)))
    size = -(-total // parts) if total else 0
    return (
        [(start, min(start + size, total)) for start in range(0, total, size)] if size else [(0, 0)]
    )


def run_all(tasks: Sequence[Callable[[], None]]) -> None:
    """Run ``tasks``: the first on the calling thread, the rest on the pool; wait for all.

    The first exception raised by any task is re-raised after every task has finished.
    """
    if len(tasks) == 1:
        tasks[0]()
        return
    futures = [_Pool.get().submit(task) for task in tasks[1:]]
    try:
        tasks[0]()
    finally:
        errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
