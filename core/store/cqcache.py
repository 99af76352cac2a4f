"""A bounded set of mapped ConsumeQueues (issue 16, "idle queues are cheap").

A broker may hold many thousands of queues, nearly all idle. A queue's
offsets stay in memory once known; its files are mapped only while it is in
use or recently used. `OpenSet` keeps at most `capacity` queues mapped and
unmaps the least recently used one that nobody is using when another must be
mapped.

"In use" is a pin: whoever touches a queue's files (a read, a dispatch, a
flush of it, a trim) pins it first and unpins after; a pinned queue is never
unmapped, and pinning an unmapped one maps it again. A held long poll pins
nothing while it waits (it waits on the notifier, not on the files), so
thousands of consumers waiting on idle queues do not hold their maps.
When every mapped queue is pinned, the set grows past its capacity until
pins are released rather than fail an operation.

Locking: the set's lock guards the LRU order, the pins and the `in_lru` and
`closing` flags and is never held during I/O. Mapping, unmapping and
flushing a queue happen under that queue's own `io_lock`. To unmap, the
victim is chosen and marked `closing` under the set's lock, then unmapped
under its `io_lock`; a pin arriving in between takes the `io_lock` first or
after, and either cancels the close (the files are still mapped) or maps the
queue again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar


class Mappable:
    """The state the set keeps on each queue; subclasses map and unmap files."""

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.pins = 0  # users touching the files now (set's lock)
        self.in_lru = False  # mapped, not closing, in the LRU (set's lock)
        self.closing = False  # chosen to be unmapped, not yet done (io_lock, set's lock)
        self.mapped = False  # files open (io_lock)
        self.io_lock = threading.RLock()

    def _map(self) -> None:
        """Open the files (called holding `io_lock`, only when not mapped)."""
        raise NotImplementedError

    def _unmap(self) -> None:
        """Close the files (holding `io_lock`); what was written is left for
        the owner's next flush."""
        raise NotImplementedError


M = TypeVar("M", bound=Mappable)


class OpenSet(Generic[M]):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lru: OrderedDict[Hashable, M] = OrderedDict()  # oldest first
        self._lock = threading.Lock()
        self.maps = 0  # counters, for metrics and tests
        self.unmaps = 0

    def __len__(self) -> int:
        return len(self._lru)

    def keys(self) -> list[Hashable]:
        """Mapped queues, least recently used first."""
        with self._lock:
            return list(self._lru)

    def snapshot(self) -> list[M]:
        with self._lock:
            return list(self._lru.values())

    def admit(self, q: M) -> None:
        """Take in a queue its owner has just mapped (no one else knows it yet).
        It is not a victim itself: its caller is about to use it."""
        with self._lock:
            self.maps += 1
            self._lru[q.key] = q
            q.in_lru = True
            victims = self._choose_victims(spare=q)
        self._close(victims)

    def pin(self, q: M) -> None:
        """Mark `q` in use, mapping it if it is not; unmaps others over capacity."""
        with self._lock:
            q.pins += 1
            if q.in_lru:
                self._lru.move_to_end(q.key)
                return
        try:
            mapped_now = False
            with q.io_lock:
                if q.closing:  # chosen as a victim but not closed yet: keep it
                    q.closing = False
                elif not q.mapped:
                    q._map()
                    mapped_now = True
            with self._lock:
                self.maps += mapped_now
                q.closing = False
                self._lru[q.key] = q
                self._lru.move_to_end(q.key)
                q.in_lru = True
                victims = self._choose_victims()
        except BaseException:
            self.unpin(q)
            raise
        self._close(victims)

    def unpin(self, q: M) -> None:
        with self._lock:
            q.pins -= 1

    def forget(self, q: M) -> None:
        """Drop `q` from the set (its owner closes or deletes it)."""
        with self._lock:
            if q.in_lru:
                del self._lru[q.key]
                q.in_lru = False
            q.closing = False

    def clear(self) -> list[M]:
        """Drop every queue from the set; returns them (the store is closing)."""
        with self._lock:
            out = list(self._lru.values())
            for q in out:
                q.in_lru = False
            self._lru.clear()
            return out

    def _choose_victims(self, spare: M | None = None) -> list[M]:
        """Under the lock: the least recently used unpinned queues beyond capacity."""
        victims: list[M] = []
        excess = len(self._lru) - self.capacity
        if excess <= 0:
            return victims
        for q in self._lru.values():
            if q.pins == 0 and q is not spare:
                victims.append(q)
                if len(victims) == excess:
                    break
        for q in victims:
            del self._lru[q.key]
            q.in_lru = False
            q.closing = True
        return victims

    def _close(self, victims: list[M]) -> None:
        for q in victims:
            with q.io_lock:
                if not q.closing:  # a pin took it back meanwhile
                    continue
                q.closing = False
                if q.mapped:
                    q._unmap()
                    with self._lock:
                        self.unmaps += 1
