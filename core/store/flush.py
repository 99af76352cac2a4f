"""Durability threads: group commit for sync flush, periodic flush otherwise.

Group commit: an appender publishes its records, then waits until the log is
flushed past its end. One thread runs `fdatasync` for whoever is waiting; the
appenders that arrive while it runs are all covered by the next one, so
concurrent appenders share a sync instead of queueing for one each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from core.store.commitlog import CommitLog

log = logging.getLogger(__name__)


class GroupCommit:
    def __init__(self, clog: CommitLog) -> None:
        self._clog = clog
        self._cond = threading.Condition()
        self._wanted = 0
        self._closed = False
        self.syncs = 0
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()
        clog.add_flush_listener(self._wake)  # any flush (e.g. a checkpoint) releases waiters

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait_durable(self, end: int, timeout_s: float) -> bool:
        """Block until the log is flushed to at least `end`; False on timeout."""
        clog = self._clog
        if clog.flushed >= end:
            return True
        deadline = time.monotonic() + timeout_s
        with self._cond:
            if end > self._wanted:
                self._wanted = end
                self._cond.notify_all()
            while clog.flushed < end:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return clog.flushed >= end
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        clog = self._clog
        while True:
            with self._cond:
                while self._wanted <= clog.flushed and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                clog.flush()  # wakes the waiters through the flush listener
                self.syncs += 1
            except OSError:
                log.exception("group commit flush failed")
                time.sleep(0.01)  # back off; waiters time out with FLUSH_DISK_TIMEOUT

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()


class PeriodicService:
    """Runs each (interval_s, task) on one background thread until closed."""

    def __init__(self, name: str, tasks: list[tuple[float, Callable[[], object]]]) -> None:
        self._tasks = tasks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        due = [time.monotonic() + interval for interval, _ in self._tasks]
        while True:
            timeout = max(0.0, min(due) - time.monotonic())
            if self._stop.wait(timeout):
                return
            now = time.monotonic()
            for i, (interval, task) in enumerate(self._tasks):
                if now >= due[i]:
                    try:
                        task()
                    except Exception:
                        log.exception("background task %s failed", getattr(task, "__name__", task))
                    due[i] = now + interval

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
