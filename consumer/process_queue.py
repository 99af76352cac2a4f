"""One assigned queue's messages between pull and processing (a push consumer).

Pulled messages wait here until the handler has processed them. The queue
knows what is cached (count and bytes: flow control pauses pulling above the
limits) and the lowest offset not yet processed, which is the only offset
that may be committed: a crash then redelivers what was in flight, never
skips it, however the pool's threads finish out of order.
"""

from __future__ import annotations

import heapq
import threading
from collections import deque

from consumer.pull_consumer import ReceivedMessage


class ProcessQueue:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, int] = {}  # offset -> body bytes, not processed yet
        self._heap: list[int] = []  # pending offsets (lazily cleaned)
        self._waiting: deque[ReceivedMessage] = deque()  # orderly: not handed to a thread yet
        self.bytes = 0
        self.max_seen = -1  # highest offset ever added
        self.dropped = False  # given up in a rebalance: results are ignored
        self.busy = False  # orderly: a thread is processing this queue
        self.idle = threading.Condition(self._lock)

    def add(self, messages: list[ReceivedMessage], orderly: bool = False) -> list[ReceivedMessage]:
        """Cache `messages`; returns those to process: all of them but any
        offset already waiting here (pulled again by a retried pull: it is
        processed once, where it was first added)."""
        again: list[int] = []
        with self._lock:
            pending, heap = self._pending, self._heap
            added, top = 0, self.max_seen
            for m in messages:
                off = m.queue_offset
                if off in pending:
                    again.append(off)
                    continue
                size = pending[off] = len(m.body)
                added += size
                if off > top:  # the usual case: above every pending offset, a valid heap leaf
                    top = off
                    heap.append(off)
                else:
                    heapq.heappush(heap, off)
                if orderly:
                    self._waiting.append(m)
            self.bytes += added
            self.max_seen = top
        if not again:
            return messages
        skip = set(again)
        return [m for m in messages if m.queue_offset not in skip]

    def done(self, offsets: list[int]) -> None:
        """These offsets are processed (or handed to the retry path). Nothing
        waits on this (`wait_idle` waits for `release`): no notify."""
        with self._lock:
            pending, heap = self._pending, self._heap
            for off in offsets:
                size = pending.pop(off, None)
                if size is not None:
                    self.bytes -= size
            while heap and heap[0] not in pending:
                heapq.heappop(heap)

    def take(self, n: int) -> list[ReceivedMessage]:
        """Orderly: the next `n` messages in offset order."""
        with self._lock:
            return [self._waiting.popleft() for _ in range(min(n, len(self._waiting)))]

    def put_back(self, messages: list[ReceivedMessage]) -> None:
        """Orderly: a batch to process again first (it failed)."""
        with self._lock:
            self._waiting.extendleft(reversed(messages))

    @property
    def count(self) -> int:
        return len(self._pending)

    def lowest_pending(self) -> int | None:
        with self._lock:
            return self._heap[0] if self._heap else None

    def commit_point(self, pulled: int) -> int:
        """What may be committed for a queue pulled up to `pulled`."""
        low = self.lowest_pending()
        return pulled if low is None else min(low, pulled)

    def over(self, max_messages: int, max_bytes: int, max_span: int) -> bool:
        """Flow control: too many messages or bytes waiting, or too wide a span
        between the oldest unprocessed and the newest pulled offset (one stuck
        message would otherwise let pulling go on while nothing can be committed)."""
        if len(self._pending) >= max_messages or self.bytes >= max_bytes:
            return True
        low = self.lowest_pending()
        return low is not None and self.max_seen - low >= max_span

    def wait_idle(self, timeout_s: float) -> bool:
        """Orderly revoke: wait until no thread is processing this queue."""
        with self._lock:
            return self.idle.wait_for(lambda: not self.busy, timeout_s)

    def acquire(self) -> bool:
        """Orderly: become the one thread processing this queue (False: one is)."""
        with self._lock:
            if self.busy or not self._waiting or self.dropped:
                return False
            self.busy = True
            return True

    def release(self) -> bool:
        """Orderly: stop processing; True when messages arrived meanwhile."""
        with self._lock:
            self.busy = False
            self.idle.notify_all()
            return bool(self._waiting) and not self.dropped
