"""QueuePositions: a pull consumer's per-queue read positions.

The bookkeeping part of `PullConsumer` (consumer/pull_consumer.py): for each
assigned queue, the next offset to pull, the pull in flight, and a
generation. Moving a position (a seek, a restart from the commit, giving the
queue up) bumps the generation and cancels the pull in flight, so an answer
to an older pull never moves the position again. Everything is guarded by
`lock`; the fetcher holds it while it issues pulls (`issued` is called with
it held). Reads of `offsets` without it see a consistent dict (the GIL), as
the position accessors always have.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from core.route import MessageQueue


class PullCall(Protocol):
    """A pull in flight: a gRPC future, or a grpc.aio call."""

    def cancel(self) -> bool: ...

    def cancelled(self) -> bool: ...


class QueuePositions:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.offsets: dict[MessageQueue, int] = {}  # next offset to pull, per assigned queue
        self._generation: dict[MessageQueue, int] = {}  # kept after a queue is given up
        self._inflight: dict[MessageQueue, PullCall] = {}

    def add(self, mq: MessageQueue, offset: int) -> None:
        """A queue taken in a rebalance, read from `offset`."""
        with self.lock:
            self.offsets[mq] = offset
            self._generation.setdefault(mq, 0)

    def drop(self, mqs: Iterable[MessageQueue]) -> None:
        """Queues given up: their pulls in flight are cancelled, their answers ignored."""
        with self.lock:
            for mq in mqs:
                self._generation[mq] = self._generation.get(mq, 0) + 1
                self._cancel_locked(mq)
                del self.offsets[mq]

    def move(self, mq: MessageQueue, offset: int) -> bool:
        """Read `mq` from `offset` on (a pull in flight is discarded); False if
        the queue is not assigned."""
        with self.lock:
            if mq not in self.offsets:
                return False
            self._move_locked(mq, offset)
        return True

    def move_where(self, match: Callable[[MessageQueue], bool], offset: int) -> None:
        """Read every assigned queue `match` picks from `offset` on."""
        with self.lock:
            for mq in list(self.offsets):
                if match(mq):
                    self._move_locked(mq, offset)

    def pulling(self, mq: MessageQueue) -> bool:
        """A pull of `mq` is in flight (call with `lock` held)."""
        return mq in self._inflight

    def issued(self, mq: MessageQueue, call: PullCall) -> int:
        """A pull of `mq` went out (call with `lock` held); its generation."""
        gen = self._generation[mq]
        self._inflight[mq] = call
        return gen

    def answered(self, mq: MessageQueue, gen: int, call: PullCall) -> bool:
        """A pull finished; True if its answer still counts (the queue is
        assigned, its position was not moved meanwhile, it was not cancelled)."""
        with self.lock:
            if self._inflight.get(mq) is call:
                del self._inflight[mq]
            return not (gen != self._generation.get(mq) or call.cancelled() or mq not in self.offsets)

    def advance(self, mq: MessageQueue, gen: int, offset: int) -> None:
        """Move on to `offset` after an answer of generation `gen` (unless the
        position was moved meanwhile)."""
        with self.lock:
            if gen == self._generation.get(mq):
                self.offsets[mq] = offset

    def cancel_all(self) -> None:
        """Cancel every pull in flight (closing)."""
        with self.lock:
            calls = list(self._inflight.values())
            self._inflight.clear()
        for c in calls:
            c.cancel()

    def _move_locked(self, mq: MessageQueue, offset: int) -> None:
        self.offsets[mq] = offset
        self._generation[mq] += 1
        self._cancel_locked(mq)

    def _cancel_locked(self, mq: MessageQueue) -> None:
        call = self._inflight.pop(mq, None)
        if call is not None:
            call.cancel()
