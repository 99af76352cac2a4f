"""ConsumePool: a push consumer's processing threads, counting what runs.

The threads (`consume_threads`) of `PushConsumer` (consumer/push_consumer.py)
and their one queue of tasks. It counts tasks from submission to their end,
so closing can wait for the batches in flight, for a while, and say how
many it abandons. A task that raises is logged; one submitted after shutdown
is dropped.

Handing work to a thread costs far more in Python than a cheap handler does
(a `ThreadPoolExecutor` future per message was most of a push consumer's
time), so:

- a *run* of tasks goes in as one entry (`submit_run`: the batches of one
  queue's polled messages, each `per_task` messages), not a task each;
- a thread takes a *chunk* of tasks at a time, sized from what tasks have
  cost lately (`ChunkPlan`): about `CHUNK_S` of work, so one task when tasks
  are slow (every thread gets one: they run in parallel), hundreds when they
  cost microseconds (one hand-off, one wake-up, one bookkeeping step for all);
- a chunk that runs past `GIVE_BACK_S` (tasks got slower than planned) hands
  the tasks it has not started back to the front of the queue for the other
  threads; only as many threads are woken as the queued chunks need, the
  one that went to sleep last first (its caches are warm: with 64 threads
  and cheap tasks, waking the longest asleep cost ~10% of the throughput).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)
CHUNK_S = 0.001  # a chunk is about this much work
GIVE_BACK_S = 0.01  # a chunk running this long gives the rest back
MAX_CHUNK = 1024  # tasks in one chunk, at most
DECAY = 0.25  # weight of the newest chunk in the cost estimate

# fn(ctx, items, per_task, deadline): process `items` (`per_task` at a time),
# stopping early once past `deadline` (perf_counter) but only at a task's end;
# returns how many items it is done with (a multiple of per_task, or all).
RunFn = Callable[[Any, list[Any], int, float], int]


class ChunkPlan:
    """How many tasks a thread takes at once, from the tasks' recent cost (wall
    time per task: a handler that sleeps or waits counts as slow, as it
    should, since other threads can run meanwhile)."""

    def __init__(self, chunk_s: float = CHUNK_S, max_chunk: int = MAX_CHUNK) -> None:
        self.chunk_s = chunk_s
        self.max_chunk = max_chunk
        self.cost_s = chunk_s  # per task; until measured, as if slow: one at a time

    def size(self, queued: int) -> int:
        """Tasks to take of `queued`."""
        return max(1, min(queued, self.max_chunk, int(self.chunk_s / self.cost_s)))

    def chunks(self, queued: int) -> int:
        """Threads that `queued` tasks keep busy."""
        n = self.size(queued)
        return (queued + n - 1) // n

    def ran(self, tasks: int, elapsed_s: float) -> None:
        """`tasks` took `elapsed_s`."""
        if tasks > 0:
            per_task = max(elapsed_s / tasks, 1e-9)
            self.cost_s += (per_task - self.cost_s) * DECAY


@dataclass(slots=True)
class Run:
    """Queued tasks: `fn(ctx, items[i : i + per_task], ...)` for i from `start`."""

    fn: RunFn
    ctx: Any
    items: list[Any]
    per_task: int
    start: int = 0

    @property
    def tasks(self) -> int:
        return -(-(len(self.items) - self.start) // self.per_task)

    def split(self, tasks: int) -> Run:
        """Take the first `tasks` tasks off as a run of their own."""
        end = min(len(self.items), self.start + tasks * self.per_task)
        head = Run(self.fn, self.ctx, self.items, self.per_task, self.start)
        head.items = self.items[self.start : end]
        head.start = 0
        self.start = end
        return head


def _one(ctx: Any, items: list[Any], per_task: int, deadline: float) -> int:
    """A single task as a run: `ctx` is the function, `items[0]` its arguments."""
    ctx(*items[0])
    return 1


class ConsumePool:
    def __init__(self, threads: int, chunk_s: float = CHUNK_S, give_back_s: float = GIVE_BACK_S) -> None:
        self._runs: deque[Run] = deque()
        self._queued = 0  # tasks in _runs
        self.plan = ChunkPlan(chunk_s)
        self._give_back_s = give_back_s
        self._lock = threading.Lock()
        # sleeping threads' locks (held: a thread sleeps acquiring its own), the latest
        # last: woken first, so the same few warm threads do the work
        self._parked: list[threading.Lock] = []
        self._idle = threading.Condition(self._lock)  # wait_idle waits here
        self._inflight = 0  # tasks submitted, not finished
        self._woken = 0  # woken, not yet back for a chunk
        self._closed = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"consume_{i}", daemon=True) for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        """One task: `fn(*args)`."""
        self._put(Run(_one, fn, [args], 1))

    def submit_run(self, fn: RunFn, ctx: Any, items: list[Any], per_task: int) -> None:
        """Tasks over `items`, `per_task` at a time (see `RunFn`), in order."""
        if items:
            self._put(Run(fn, ctx, items, per_task))

    def wait_idle(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for every task to end; how many still run or wait."""
        with self._lock:
            self._idle.wait_for(lambda: self._inflight == 0, timeout_s)
            return self._inflight

    def shutdown(self) -> None:
        """No new tasks; those not started are dropped, running ones go on."""
        with self._lock:
            self._closed = True
            self._inflight -= self._queued
            self._runs.clear()
            self._queued = 0
            while self._parked:
                self._parked.pop().release()
            self._idle.notify_all()

    def _put(self, run: Run) -> None:
        tasks = run.tasks
        with self._lock:
            if self._closed:
                return
            self._runs.append(run)
            self._queued += tasks
            self._inflight += tasks
            self._wake()

    def _wake(self) -> None:
        """Wake as many sleeping threads as the queued chunks need (lock held)."""
        n = min(self.plan.chunks(self._queued) - self._woken, len(self._parked))
        for _ in range(n):
            self._woken += 1
            self._parked.pop().release()

    def _take(self) -> list[Run]:
        """A chunk off the queue's front (lock held, the queue not empty)."""
        want = self.plan.size(self._queued)
        chunk: list[Run] = []
        while want > 0 and self._runs:
            run = self._runs[0]
            tasks = run.tasks
            if tasks > want or run.start:  # (a run handed back part-done starts anew)
                chunk.append(run.split(min(tasks, want)))
                tasks = min(tasks, want)
                if not run.tasks:
                    self._runs.popleft()
            else:
                chunk.append(self._runs.popleft())
            want -= tasks
            self._queued -= tasks
        return chunk

    def _worker(self) -> None:
        park = threading.Lock()
        park.acquire()
        while True:
            with self._lock:
                while not self._runs and not self._closed:
                    self._parked.append(park)
                    self._lock.release()
                    park.acquire()  # until whoever wakes it (and counted it) releases it
                    self._lock.acquire()
                    self._woken = max(0, self._woken - 1)
                if self._closed:
                    return
                chunk = self._take()
                if self._runs:
                    self._wake()
            if self._run(chunk) > 1:
                # let the GIL go after a chunk of cheap tasks: the dispatcher (and gRPC's
                # callback thread) would otherwise wait out the 5 ms switch interval while
                # a busy pool holds it, and the pulls they issue with them. (Not after a
                # single task: slow ones let it go anyway, and with many threads the extra
                # hand-off per task costs a third of the throughput.)
                time.sleep(0)

    def _run(self, chunk: list[Run]) -> int:
        """Run a chunk; how many tasks it finished."""
        start = time.perf_counter()
        deadline = start + self._give_back_s
        finished = 0  # tasks
        rest: list[Run] = []
        for i, run in enumerate(chunk):
            if i and time.perf_counter() > deadline:
                rest = chunk[i:]
                break
            try:
                done = run.fn(run.ctx, run.items, run.per_task, deadline)
            except Exception:  # its batches stay pending (never committed past): say so
                log.exception("processing task failed")
                done = len(run.items)
            tasks = run.tasks
            run.start = done
            finished += tasks - run.tasks
            if run.start < len(run.items):  # stopped early
                rest = [run, *chunk[i + 1 :]]
                break
        elapsed = time.perf_counter() - start
        with self._lock:
            self.plan.ran(finished, elapsed)
            self._inflight -= finished
            left = sum(r.tasks for r in rest)
            if left and not self._closed:
                self._runs.extendleft(reversed(rest))
                self._queued += left
                self._wake()
            else:
                self._inflight -= left
            if self._inflight == 0:
                self._idle.notify_all()
        return finished
