"""Long polling: pulls that wait for a record to arrive in their queue.

A waiting pull blocks on a condition variable (no CPU) until the append path
notifies its queue or the wait ends. Notifying is free when nobody waits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable


class _Waiters:
    __slots__ = ("cond", "count")

    def __init__(self, lock: threading.Lock) -> None:
        self.cond = threading.Condition(lock)
        self.count = 0


class ArrivalNotifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[Hashable, _Waiters] = {}
        self._closed = False

    def wait(self, key: Hashable, ready: Callable[[], bool], timeout_s: float) -> bool:
        """Block until `ready()` is true (re-checked on each notify of `key`),
        `timeout_s` passes, or the notifier closes; returns `ready()`.

        `ready` should also turn true when the caller stops caring (e.g. its
        RPC was cancelled); whoever makes it so calls `notify(key)`.
        """
        with self._lock:
            if self._closed:
                return ready()
            w = self._waiting.get(key)
            if w is None:
                w = self._waiting[key] = _Waiters(self._lock)
            w.count += 1
            try:
                w.cond.wait_for(lambda: self._closed or ready(), timeout_s)
                return ready()
            finally:
                w.count -= 1
                if w.count == 0:
                    del self._waiting[key]

    def close(self) -> None:
        """Release every waiter now and make later waits return at once
        (shutdown: held pulls must not keep the process alive)."""
        with self._lock:
            self._closed = True
            for w in self._waiting.values():
                w.cond.notify_all()

    def notify(self, keys: Iterable[Hashable]) -> None:
        if not self._waiting:  # no lock on the hot path when nobody waits
            return
        with self._lock:
            for key in keys:
                w = self._waiting.get(key)
                if w is not None:
                    w.cond.notify_all()

    def notify_all(self) -> None:
        """Re-check every waiter (e.g. the confirmed offset moved)."""
        if not self._waiting:
            return
        with self._lock:
            for w in self._waiting.values():
                w.cond.notify_all()

    def waiting(self, key: Hashable | None = None) -> int:
        """Waiters of `key`, or of every key."""
        with self._lock:
            if key is not None:
                w = self._waiting.get(key)
                return w.count if w is not None else 0
            return sum(w.count for w in self._waiting.values())
