"""OffsetStore: a consumer group's committed offsets, kept on each queue's master.

The part of `PullConsumer` (consumer/pull_consumer.py) that talks to the
brokers' offset table (RocketMQ's RemoteBrokerOffsetStore): where a queue
starts when this member takes it (the group's committed offset, else the
queue's first or last offset), and committing positions, each queue on its
own. It remembers the last offset committed per queue, so an unchanged one is
not sent again. A commit answered `NOT_MASTER` goes to the master that answer
names (a consumer given a slave's address reads there and commits on the
master), which is then used for that group until it fails; a commit that
fails stays pending and is retried with the next one (never lost, and reads
go on meanwhile).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from consumer.connection import ConnectionPool
from core.errors import NotMasterError, TailraceError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import MessageQueue

log = logging.getLogger(__name__)


class OffsetStore:
    def __init__(
        self,
        pool: ConnectionPool,
        group: str,
        topic: str,
        start: Literal["first", "last"],
        master_of: Callable[[str], str | None],
        on_commit: Callable[[MessageQueue, int], None] | None = None,
        trusted: Callable[[str, str], bool] = lambda _group, _address: False,
    ) -> None:
        """`master_of(broker_name)`: the address of a broker group's master in
        the current route, or None; `on_commit`: told of every acknowledged
        commit."""
        self.pool = pool
        self.group = group
        self.topic = topic
        self.start = start
        self.master_of = master_of
        self.on_commit = on_commit
        self.committed: dict[MessageQueue, int] = {}  # last offset stored (or found) per queue
        self.trusted = trusted  # (group, address): whether that address may be its master
        # broker group -> (the master a NOT_MASTER answer named, the route's master then)
        self.named: dict[str, tuple[str, str | None]] = {}

    def start_offset(self, mq: MessageQueue) -> int | None:
        """Where this member reads `mq` from: the group's committed offset, else
        the queue's first or last offset; None when that cannot be read now."""
        address = self.master_of(mq.broker_name)
        if address is None:
            return None
        conn = self.pool.get(address)
        try:
            r = conn.call(
                conn.stub.QueryOffset,
                pb.QueryOffsetRequest(group=self.group, topic=self.topic, queue_id=mq.queue_id),
            )
            if r.found:
                self.committed[mq] = r.offset
                return int(r.offset)
            offs = conn.call(conn.stub.GetQueueOffsets, pb.GetQueueOffsetsRequest(topic=self.topic))
        except TailraceError as exc:
            log.warning("cannot find the start of %s: %s (will retry)", mq, exc)
            return None
        for q in offs.queues:
            if q.queue_id == mq.queue_id:
                start = int(q.min_offset if self.start == "first" else q.max_offset)
                break
        else:
            start = 0
        # nothing to commit until this member moves past it: committing a start
        # it never read could overwrite what the previous owner commits meanwhile
        self.committed[mq] = start
        return start

    def commit(
        self,
        positions: dict[MessageQueue, int],
        commit_point: Callable[[MessageQueue, int], int | None],
        raise_errors: bool = True,
    ) -> None:
        """Commit each queue on its own: one failing broker does not keep the
        others' offsets from being stored. `commit_point(mq, pulled)` turns a
        position into the offset to store (None: skip the queue). The first
        error is raised at the end (or only logged, with `raise_errors=False`)."""
        first: TailraceError | None = None
        for mq, pulled in positions.items():
            off = commit_point(mq, pulled)
            if off is None or self.committed.get(mq) == off:
                continue
            req = pb.CommitOffsetRequest(group=self.group, topic=self.topic, queue_id=mq.queue_id, offset=off)
            try:
                self._commit(mq.broker_name, req)
            except TailraceError as exc:
                log.warning(
                    "commit of %s at %d failed: %s (kept; retried with the next commit)", mq, off, exc
                )
                first = first or exc
                continue
            self.committed[mq] = off
            if self.on_commit is not None:
                self.on_commit(mq, off)
        if first is not None and raise_errors:
            raise first

    def _commit(self, broker_name: str, req: pb.CommitOffsetRequest) -> None:
        """Commit on the group's master: the one a NOT_MASTER answer named
        (while the route's master is what it was then), else the route's. A
        NOT_MASTER that names another broker is followed once, at once, if
        that broker checks out as the group's master (`trusted`): an answer
        cannot send offsets to any address it likes."""
        route_master = self.master_of(broker_name)
        named = self.named.get(broker_name)
        if named is not None and named[1] != route_master:
            del self.named[broker_name]  # the route moved on: so do we
            named = None
        address = named[0] if named is not None else route_master
        if address is None:
            raise TailraceError(f"no master known for {broker_name}")
        for _ in range(2):
            conn = self.pool.get(address)
            try:
                conn.call(conn.stub.CommitOffset, req)
                return
            except NotMasterError as exc:
                following = exc.master_address
                if not following or following == address or not self.trusted(broker_name, following):
                    self.named.pop(broker_name, None)
                    raise
                self.named[broker_name] = (following, route_master)
                address = following
            except TailraceError:
                self.named.pop(broker_name, None)  # the named master failed: ask the route again
                raise
        raise TailraceError(f"{broker_name}: NOT_MASTER answers kept naming other brokers")
