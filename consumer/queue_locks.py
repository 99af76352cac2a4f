"""QueueLocks: an orderly push consumer's locks on its queues.

The orderly-mode half of `PushConsumer` (consumer/push_consumer.py) that
talks to the masters' queue locks (`LockQueues`/`UnlockQueues`, as
RocketMQ's RebalanceLockManager): a queue is pulled and processed only while
this member holds its lock, a lease renewed every `lease_ms`/4 (every 0.2 s
while some assigned queue is not held yet: its owner is handing it over). On
taking a lock the queue's cache is dropped and it is read again from the
group's committed offset. A queue given up is unlocked once committed,
unless a handler still runs on it: that one's lock is kept (renewed) until
the handler returns, so the next owner never runs beside it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from consumer.connection import ConnectionPool
from consumer.process_queue import ProcessQueue
from consumer.pull_consumer import PullConsumer
from core.errors import TailraceError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import MessageQueue

log = logging.getLogger(__name__)


def _by_group(mqs: list[MessageQueue]) -> dict[str, list[MessageQueue]]:
    """Queues by broker group (lock calls go to each group's master)."""
    out: dict[str, list[MessageQueue]] = {}
    for mq in mqs:
        out.setdefault(mq.broker_name, []).append(mq)
    return out


class QueueLocks:
    def __init__(
        self,
        pull: PullConsumer,
        group: str,
        lease_ms: int,
        stop: threading.Event,
        drop_cached: Callable[[MessageQueue], None],
    ) -> None:
        """`pull`: the consumer whose assigned queues are locked; `stop`: ends
        `keep`; `drop_cached(mq)`: forget what was pulled of a queue (called
        when its lock is taken, before it is read again from the commit)."""
        self.pull = pull
        self.group = group
        self.lease_ms = lease_ms
        self.stop = stop
        self.drop_cached = drop_cached
        self._locked: dict[MessageQueue, float] = {}  # held locks, valid until (monotonic)
        self._draining: dict[MessageQueue, ProcessQueue] = {}  # given up, a handler still running
        self._lock_calls = threading.Lock()

    def holds(self, mq: MessageQueue) -> bool:
        return self._locked.get(mq, 0.0) > time.monotonic()

    def held(self) -> list[MessageQueue]:
        """The queues a lock was taken for and not yet let go."""
        return list(self._locked)

    def keep(self) -> None:
        """Take and renew the assigned queues' locks: every lease/4, or every
        0.2 s while some assigned queue is not held (its owner is handing over).
        Runs on its own thread until `stop` is set."""
        while not self.stop.is_set():
            try:
                self.round()
            except Exception:
                log.exception("queue lock renewal failed")
            all_held = all(self.holds(mq) for mq in self.pull.assignment)
            self.stop.wait(self.lease_ms / 4000 if all_held else 0.2)

    def round(self) -> None:
        """One round of taking and renewing locks."""
        with self._lock_calls:  # never interleaved with an unlock (a late grant would re-lock)
            self._round_locked()

    def release(self, mq: MessageQueue, pq: ProcessQueue | None) -> None:
        """`mq` was given up and committed: unlock it for the next owner, or,
        while a handler still runs on it, keep it locked until that returns."""
        if pq is not None and pq.busy:
            # its handler outlived the revoke wait: keep the lock (renewed) until
            # it returns, so the next owner never runs beside it
            log.warning("%s: a handler is still running; the lock is kept until it returns", mq)
            self._draining[mq] = pq
            return
        self._locked.pop(mq, None)  # committed: the next owner may start from there
        self.unlock([mq])

    def unlock(self, mqs: list[MessageQueue], pool: ConnectionPool | None = None) -> None:
        """Unlock `mqs` (through `pool`, once the pull consumer's is closed)."""
        with self._lock_calls:
            self._unlock_locked(mqs, pool)

    def _round_locked(self) -> None:
        for mq, pq in list(self._draining.items()):  # a late handler returned: hand the queue over
            if not pq.busy:
                del self._draining[mq]
                self._locked.pop(mq, None)
                self._unlock_locked([mq])
        for name, mqs in _by_group([*self.pull.assignment, *self._draining]).items():
            address = self.pull.master_of(name)
            if address is None:
                continue
            conn = self.pull.pool.get(address)
            sent = time.monotonic()
            req = pb.LockQueuesRequest(
                group=self.group, topic=self.pull.topic, client_id=self.pull.client_id,
                queue_ids=[mq.queue_id for mq in mqs], lease_ms=self.lease_ms,
            )  # fmt: skip
            try:
                got = set(conn.call(conn.stub.LockQueues, req).locked)
            except TailraceError as exc:
                log.warning("locking queues on %s: %s", address, exc)
                continue
            assigned = set(self.pull.assignment)
            for mq in mqs:
                if mq in self._draining:
                    if mq.queue_id in got:
                        self._locked[mq] = sent + 0.75 * self.lease_ms / 1000
                elif mq.queue_id in got and mq not in assigned:  # given up meanwhile: let it go
                    self._unlock_locked([mq])
                elif mq.queue_id in got:
                    if not self.holds(mq):
                        # a fresh lock (or one that lapsed): drop what was cached
                        # and read from the group's commit (the queue is paused
                        # until held, so no pull races this)
                        self.drop_cached(mq)
                        if not self.pull.restart_from_committed(mq):
                            continue  # its commit cannot be read yet: next round
                    self._locked[mq] = sent + 0.75 * self.lease_ms / 1000
                else:
                    self._locked.pop(mq, None)

    def _unlock_locked(self, mqs: list[MessageQueue], pool: ConnectionPool | None = None) -> None:
        for name, group_mqs in _by_group(mqs).items():
            address = self.pull.master_of(name)
            if address is None:
                continue
            conn = (pool or self.pull.pool).get(address)
            req = pb.LockQueuesRequest(group=self.group, topic=self.pull.topic, client_id=self.pull.client_id,
                                       queue_ids=[mq.queue_id for mq in group_mqs])  # fmt: skip
            try:
                conn.call(conn.stub.UnlockQueues, req)
            except TailraceError as exc:  # the lease frees it anyway
                log.warning("unlocking queues on %s: %s", address, exc)
