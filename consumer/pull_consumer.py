"""PullConsumer: reads every queue of a topic with long polling.

One pull per queue is in flight at a time (a gRPC future held by the broker
until records arrive or the long-poll wait ends), so a record in any queue
is seen as soon as it is stored, and queues are read in parallel. `poll()`
returns what has arrived. Positions start from the group's committed offset,
or from `first`/`last` when it has none; `commit()` stores them, and
`poll()` auto-commits the positions of what earlier polls returned every
`auto_commit_interval_ms` (at least once: after a crash, messages after the
last commit are delivered again, none is skipped). Consumer-group
rebalancing across several consumers arrives with issue 4; for now a
consumer reads all queues of its topic.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Literal

import grpc

from consumer.connection import BrokerConnection
from core.errors import TailraceError
from core.grpc_status import error_from_rpc
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.record import Record, iter_records
from core.subscription import Subscription

log = logging.getLogger(__name__)
ReceivedMessage = Record
RETRY_BACKOFF_S = 0.5


class PullConsumer:
    def __init__(
        self,
        broker: str,
        group: str,
        topic: str,
        subscription: str = "*",
        start: Literal["first", "last"] = "first",
        long_poll_ms: int = 20_000,
        max_messages: int = 256,
        max_bytes: int = 1024 * 1024,
        auto_commit_interval_ms: int = 5_000,
        timeout_s: float = 10.0,
    ) -> None:
        if start not in ("first", "last"):
            raise ValueError("start must be 'first' or 'last'")
        self.conn = BrokerConnection(broker, timeout_s)
        self.group = group
        self.topic = topic
        self.subscription = Subscription.parse(subscription)
        self.long_poll_ms = long_poll_ms
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.auto_commit_s = auto_commit_interval_ms / 1000
        self.served_by: Counter[int] = Counter()
        stub = self.conn.stub
        offsets = self.conn.call(stub.GetQueueOffsets, pb.GetQueueOffsetsRequest(topic=topic))
        self.queues = sorted(q.queue_id for q in offsets.queues)
        self._positions: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        for q in offsets.queues:
            r = self.conn.call(
                stub.QueryOffset,
                pb.QueryOffsetRequest(group=group, topic=topic, queue_id=q.queue_id),
            )
            if r.found:
                self._positions[q.queue_id] = self._committed[q.queue_id] = r.offset
            else:
                self._positions[q.queue_id] = q.min_offset if start == "first" else q.max_offset
        self._generation = dict.fromkeys(self.queues, 0)
        self._inflight: dict[int, grpc.Future[pb.PullResponse]] = {}
        self._retry_at: dict[int, float] = {}
        self._done: queue.Queue[tuple[int, int, grpc.Future[pb.PullResponse]]] = queue.Queue()
        self._last_commit = time.monotonic()
        self._lock = threading.Lock()
        self._closed = False

    # ---- positions ----------------------------------------------------------------

    def position(self, queue_id: int) -> int:
        return self._positions[queue_id]

    def positions(self) -> dict[int, int]:
        return dict(self._positions)

    def seek(self, queue_id: int, offset: int) -> None:
        """Read `queue_id` from `offset` on (a pull in flight is discarded)."""
        with self._lock:
            self._positions[queue_id] = offset
            self._generation[queue_id] += 1
            call = self._inflight.pop(queue_id, None)
        if call is not None:
            call.cancel()

    def commit(self, positions: dict[int, int] | None = None) -> None:
        """Store the group's offsets (default: everything polled so far)."""
        for q, off in (positions or self.positions()).items():
            if self._committed.get(q) == off:
                continue
            self.conn.call(
                self.conn.stub.CommitOffset,
                pb.CommitOffsetRequest(group=self.group, topic=self.topic, queue_id=q, offset=off),
            )
            self._committed[q] = off

    # ---- polling -------------------------------------------------------------------

    def poll(self, timeout_ms: int = 1000) -> list[Record]:
        """Messages that arrived, waiting up to `timeout_ms` for the first."""
        if self._closed:
            raise TailraceError("consumer is closed")
        if self.auto_commit_s and time.monotonic() - self._last_commit >= self.auto_commit_s:
            self.commit()
            self._last_commit = time.monotonic()
        self._issue_pulls()
        out: list[Record] = []
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            left = deadline - time.monotonic()
            try:
                item = (
                    self._done.get(timeout=max(0.0, left)) if left > 0 else self._done.get_nowait()
                )
            except queue.Empty:
                break
            out.extend(self._complete(*item))
            self._issue_pulls()
            if out and self._done.empty():
                break
        return out

    def _issue_pulls(self) -> None:
        now = time.monotonic()
        stub = self.conn.stub
        with self._lock:
            for q in self.queues:
                if q in self._inflight or self._retry_at.get(q, 0) > now:
                    continue
                req = pb.PullRequest(
                    group=self.group,
                    topic=self.topic,
                    queue_id=q,
                    queue_offset=self._positions[q],
                    max_messages=self.max_messages,
                    max_bytes=self.max_bytes,
                    max_wait_ms=self.long_poll_ms,
                    subscription=self.subscription.expression,
                )
                call = stub.Pull.future(req, timeout=self.long_poll_ms / 1000 + self.conn.timeout_s)
                gen = self._generation[q]
                self._inflight[q] = call
                call.add_done_callback(lambda f, q=q, gen=gen: self._done.put((q, gen, f)))

    def _complete(self, q: int, gen: int, call: grpc.Future[pb.PullResponse]) -> Iterable[Record]:
        with self._lock:
            if self._inflight.get(q) is call:
                del self._inflight[q]
            if gen != self._generation[q] or call.cancelled():
                return []
        try:
            resp: pb.PullResponse = call.result()
        except grpc.RpcError as exc:
            err = error_from_rpc(exc)
            log.warning(
                "pull %s/%d failed: %s; retrying in %.1fs", self.topic, q, err, RETRY_BACKOFF_S
            )
            self._retry_at[q] = time.monotonic() + RETRY_BACKOFF_S
            return []
        status = resp.status
        if status == pb.FOUND:
            self.served_by[resp.served_by] += resp.count
            records = list(iter_records(resp.records))
            self._positions[q] = resp.next_queue_offset
            if self.subscription.tags is None:
                return records
            return [r for r in records if self.subscription.matches(r.tags)]
        if status in (pb.NO_MATCHED_MSG, pb.OFFSET_TOO_SMALL, pb.OFFSET_OVERFLOW):
            if status != pb.NO_MATCHED_MSG:
                log.warning(
                    "%s/%d: offset %d is %s; moving to %d",
                    self.topic, q, self._positions[q], pb.PullStatus.Name(status),
                    resp.next_queue_offset,
                )  # fmt: skip
            self._positions[q] = resp.next_queue_offset
        return []

    def close(self, commit: bool = True) -> None:
        """Stop pulling, commit what was polled (unless told not to), disconnect."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            calls = list(self._inflight.values())
            self._inflight.clear()
        for c in calls:
            c.cancel()
        try:
            if commit:
                self.commit()
        finally:
            self.conn.close()

    def __enter__(self) -> PullConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
