"""Blocking control-path calls of one asyncio client, on threads of its own.

The asyncio clients run their few blocking calls (group membership,
rebalancing, commits, route lookups, a push consumer's send backs) in
worker threads so the event loop never waits on them. Not in the loop's
default executor: that one is shared with the application (and its own
`asyncio.to_thread` calls) and has few threads on a small machine, so a
slow call there (a send back to a master that does not answer) would hold
up every poll's housekeeping behind it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class ControlThreads:
    def __init__(self, name: str, workers: int = 1) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """`fn(*args, **kwargs)` on one of these threads. Cancelling the
        caller does not stop a call already running: it runs to its end."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def close(self) -> None:
        """Wait for the calls still running, then stop the threads."""
        stop = functools.partial(self._pool.shutdown, wait=True)
        await asyncio.get_running_loop().run_in_executor(None, stop)
