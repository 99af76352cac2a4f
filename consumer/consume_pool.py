"""ConsumePool: a push consumer's processing threads, counting what runs.

A thread pool (`consume_threads` threads) for `PushConsumer`
(consumer/push_consumer.py) that counts its tasks from submission to their
end, so closing can wait for the batches in flight, for a while, and say how
many it abandons. A task that raises is logged (a future would swallow it);
a task submitted after shutdown is dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class ConsumePool:
    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="consume")
        self._inflight = 0  # submitted, not finished
        self._cond = threading.Condition()

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        with self._cond:
            self._inflight += 1
        try:
            self._executor.submit(self._tracked, fn, *args)
        except RuntimeError:  # shut down meanwhile
            self._finished()

    def wait_idle(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for every task to end; how many still run."""
        with self._cond:
            self._cond.wait_for(lambda: self._inflight == 0, timeout_s)
            return self._inflight

    def shutdown(self) -> None:
        """No new tasks; those not started are cancelled, running ones go on."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _tracked(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # a future would swallow it: the batch stays pending, say so
            log.exception("processing task failed")
        finally:
            self._finished()

    def _finished(self) -> None:
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()
