"""The write side both append paths share: the store's write lock, and the
publish step they end with, written once.

An append (MessageStore.append, append_system) encodes records and writes
them after the log's end; a replicated append (ReplicaOps.append_replicated)
copies its master's bytes to the same offsets. Both then, under the write
lock, call `Publisher.publish`, and after releasing it `notify`:

1. dispatch the records' ConsumeQueue entries, unpublished (readers do not
   see them yet);
2. apply the batch's system records, in log order (core/store/system.py);
   if step 1 or 2 fails (a full disk under a ConsumeQueue, offsets.json or
   topics.json), zero the written bytes, drop segments the batch rolled
   into, zero the queue slots written, remove the queues the batch created
   (files too), and re-raise: nothing is published, so no record stays in
   the log whose index or applied state is missing (on a slave too: the
   chunk is undone and replicated again);
3. publish the CommitLog's new end (readers and flushers see the records);
4. raise each queue's `max_offset` (its entries become readable only now);
   a queue the batch created begins at the batch's first offset for it (0 on
   the append path; mid-way on a slave whose log began at its master's oldest
   retained segment);
5. `notify` (outside the lock): tell the append listeners (long polling)
   which queues grew; a listener's failure is logged, never reported as a
   failed append.

System records are applied last of the fallible steps because their
application cannot be undone (a file was rewritten); a batch with several
(a replicated chunk) whose second one fails keeps the first applied, which
is harmless: the slave replicates the same bytes again and re-applying is
idempotent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from core.errors import StoreClosedError
from core.record import Entry
from core.store.commitlog import CommitLog
from core.store.cqset import ConsumeQueueSet

log = logging.getLogger("core.store.store")

QueueKey = tuple[str, int]  # (topic, queue id)
Listener = Callable[[Iterable[QueueKey]], None]


class Publisher:
    def __init__(
        self,
        commitlog: CommitLog,
        cqs: ConsumeQueueSet,
        apply_system: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.lock = threading.Lock()  # the store's write lock: one writer at a time
        self.closed = False  # set under the lock by close()
        self._clog = commitlog
        self._cqs = cqs
        self._apply_system = apply_system
        self._listeners: list[Listener] = []

    def check_open(self) -> None:
        """Raise StoreClosedError once the store is closed (under the lock)."""
        if self.closed:
            raise StoreClosedError("store is closed")

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def publish(
        self,
        start: int,
        end: int,
        entries: Sequence[Entry],
        firsts: Mapping[QueueKey, int],
        nexts: Mapping[QueueKey, int],
        system: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> None:
        """Steps 1-4 above, under the write lock, for the bytes [start, end)
        just written: `entries` to dispatch; per queue, the first queue offset
        written (`firsts`, where a failure rolls back to) and the next one
        (`nexts`, its new `max_offset`); the (kind, payload) of the system
        records among them."""
        cqs = self._cqs
        queues = cqs.queues
        created = [(key, q) for key, q in firsts.items() if key not in queues]
        try:
            if entries:
                cqs.dispatch(entries, publish=False)
            for kind, payload in system:
                self._apply_system(kind, payload)
        except BaseException:
            self._undo(start, end, firsts, {key for key, _ in created})
            raise
        self._clog.publish(end)
        # (a queue a topic deletion in `system` dropped is gone: deletion.py)
        for key, q in created:  # first: lock-free readers never see slots below it
            if (cq := queues.get(key)) is not None:
                cq.min_offset = q
        for key, q in nexts.items():
            if (cq := queues.get(key)) is not None:
                cq.max_offset = q

    def _undo(self, start: int, end: int, firsts: Mapping[QueueKey, int], new: set[QueueKey]) -> None:
        """Take back an unpublished batch: its bytes, its queue slots, the queues it made."""
        self._clog.discard(start, end)
        cqs = self._cqs
        for key, q in firsts.items():
            cq = cqs.get(*key)
            if cq is None:
                continue
            if key in new:  # a queue this batch made: gone again, files and all
                cqs.discard(key)
            else:
                cq.rollback(q)

    def notify(self, grown: Iterable[QueueKey]) -> None:
        """Step 5, after the write lock is released."""
        for listener in self._listeners:
            try:
                listener(grown)
            except Exception:
                log.exception("append listener failed")
