"""Producer: route-aware sends over every writable queue of every group.

Queue choice: round robin over the writable queues of every broker group
with a live master, or a user `selector(queues, key)` (e.g. by key, for
per-key order). A broker that just failed is avoided for `backoff_s`.

Retries: a send that fails with a retriable error (dead connection, passed
deadline, broker shutting down, NOT_MASTER, a fenced master) is retried after
a route refresh: at once up to `retries` times (on another group when there
is one), then with a growing pause (50 ms up to 250 ms) until `retry_timeout_s` has passed, which
covers a failover (the new master appears in the routes within about the
controller's lease). A send the master refused with SLAVE_NOT_AVAILABLE
(nothing stored: too few in-sync slaves for now) is retried the same way,
and its status is returned only when the time is up. A failure whose outcome was unknown (the connection died
mid-call, the deadline passed) may have stored the batch: a retry then may
store it twice (at least once, as in RocketMQ; consumers deduplicate by key),
and when every attempt fails the caller gets `OutcomeUnknownError`, not a
plain failure. Errors that retrying cannot fix (bad input) are raised at once.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from consumer.connection import ConnectionPool
from consumer.routing import NameserverRoutes, Routes, SingleBrokerRoutes
from core.errors import (
    BrokerUnavailableError,
    InvalidArgumentError,
    InvalidQueueError,
    OutcomeUnknownError,
    RequestTimeoutError,
    TailraceError,
    UnknownTopicError,
)
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.roles import SendStatus
from core.route import MessageQueue, TopicRoute

# Retries after the first ones pause 50 ms, doubling up to this: short enough
# that a send lands within a fraction of a second of a new master appearing.
MAX_RETRY_PAUSE_S = 0.25
Selector = Callable[[list[MessageQueue], str], MessageQueue]


@dataclass(frozen=True, slots=True)
class SendReceipt:
    status: SendStatus
    message_id: str
    topic: str
    queue_id: int
    queue_offset: int
    physical_offset: int
    served_by: int
    broker_name: str = ""
    epoch: int = 0  # the master epoch it was acknowledged in (0: no controller)
    address: str = ""  # the broker that answered


@dataclass(slots=True)
class OutgoingMessage:
    body: bytes
    tags: str = ""
    keys: str = ""
    properties: Mapping[str, str] | None = None


def send_status(wire: int) -> SendStatus:
    """The protobuf status as the enum of the same name; a status this client
    does not know is a broker it cannot talk to (a newer protocol)."""
    name = pb.SendStatus.Name(wire) if wire in pb.SendStatus.values() else str(wire)
    try:
        return SendStatus[name]
    except KeyError:
        raise TailraceError(f"the broker answered an unknown send status {name}") from None


def outcome_unknown(err: TailraceError) -> bool:
    """Whether a failed call may have been carried out: its deadline passed,
    or the connection broke after the call was sent (a refused connection
    or a broker that answered with an error did nothing)."""
    if isinstance(err, RequestTimeoutError):
        return True
    if isinstance(err, BrokerUnavailableError):
        text = err.message.lower()
        return not ("failed to connect" in text or "connection refused" in text or "not the master" in text)
    return False


def by_key(queues: list[MessageQueue], key: str) -> MessageQueue:
    """A selector that sends every message of one key to one queue."""
    import zlib

    return queues[zlib.crc32(key.encode()) % len(queues)]


def _pb_message(m: OutgoingMessage | bytes, born_ms: int) -> pb.Message:
    try:
        if isinstance(m, bytes | bytearray):
            return pb.Message(body=bytes(m), born_ms=born_ms)
        return pb.Message(
            body=m.body, tags=m.tags, keys=m.keys, properties=dict(m.properties or {}), born_ms=born_ms
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidArgumentError(f"not a valid message: {exc}") from exc


class Producer:
    def __init__(
        self,
        broker: str | None = None,
        namesrv: Sequence[str] | str | None = None,
        timeout_s: float = 10.0,
        max_in_flight: int = 4,
        selector: Selector | None = None,
        retries: int = 2,
        backoff_s: float = 5.0,
        retry_timeout_s: float = 20.0,
    ) -> None:
        if (broker is None) == (namesrv is None):
            raise ValueError("give either broker= or namesrv=")
        if isinstance(namesrv, str):
            namesrv = [a for a in namesrv.split(",") if a]
        self.single = broker is not None
        self.routes: Routes = (
            SingleBrokerRoutes(broker) if broker is not None else NameserverRoutes(list(namesrv or []))
        )
        self.pool = ConnectionPool(timeout_s)
        self.selector = selector
        self.retries = retries
        self.retry_timeout_s = retry_timeout_s
        self.backoff_s = backoff_s
        self._avoid: dict[str, float] = {}
        self._rr = itertools.count()
        self._executor = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="send")
        self._window = threading.BoundedSemaphore(max_in_flight)

    # ---- choosing a queue ---------------------------------------------------------------

    def _choose(
        self, route: TopicRoute, key: str | None, exclude: set[str]
    ) -> tuple[MessageQueue | None, str]:
        queues = route.write_queues()
        if not queues:
            if self.single:  # the broker may auto-create the topic and pick a queue
                g = route.groups[0]
                return None, g.brokers[0].address
            raise BrokerUnavailableError(f"no writable queue of {route.topic!r} has a live master")
        if key is not None and self.selector is not None:
            mq = self.selector(queues, key)  # stable per key: ignores back-offs
        else:
            now = time.monotonic()
            ok = [
                q
                for q in queues
                if q.broker_name not in exclude and self._avoid.get(self._master(route, q), 0.0) <= now
            ]
            pool = ok or [q for q in queues if q.broker_name not in exclude] or queues
            mq = pool[next(self._rr) % len(pool)]
        return mq, self._master(route, mq)

    def _no_route(self, topic: str, err: TailraceError) -> tuple[TopicRoute, str] | None:
        """`topic` has no route. Through nameservers, do as one broker does: send
        it to a live master that creates topics on first send (RocketMQ sends an
        unknown topic to the cluster's auto-create brokers); that broker picks
        the queue and registers the topic at once. Returns (a route of its
        group, its address), or None to retry as before (another error, one
        broker, no master registered yet). Raises UnknownTopicError, which is
        not to be retried, when no registered master creates topics."""
        if self.single or not isinstance(err, UnknownTopicError):
            return None
        assert isinstance(self.routes, NameserverRoutes)
        try:
            creating = self.routes.auto_create_route(topic)
        except BrokerUnavailableError:
            return None
        masters = [(g, g.master.address) for g in creating.groups if g.master is not None]
        now = time.monotonic()
        pool = [m for m in masters if self._avoid.get(m[1], 0.0) <= now] or masters
        group, address = pool[next(self._rr) % len(pool)]
        return TopicRoute(topic, (group,)), address

    @staticmethod
    def _master(route: TopicRoute, mq: MessageQueue) -> str:
        g = route.group(mq.broker_name)
        m = g.master if g is not None else None
        return m.address if m is not None else ""

    # ---- sending -----------------------------------------------------------------------

    def send(
        self,
        topic: str,
        body: bytes,
        tags: str = "",
        keys: str = "",
        properties: Mapping[str, str] | None = None,
        queue_id: int = -1,
        key: str | None = None,
    ) -> SendReceipt:
        msg = OutgoingMessage(body, tags, keys, properties)
        return self.send_batch(topic, [msg], queue_id=queue_id, key=key)[0]

    def send_batch(
        self,
        topic: str,
        messages: Sequence[OutgoingMessage | bytes],
        queue_id: int = -1,
        key: str | None = None,
        queue: MessageQueue | None = None,
    ) -> list[SendReceipt]:
        """Store messages in one queue with one RPC.

        The queue is `queue` if given, else chosen (round robin, or the
        selector with `key`). `queue_id` other than -1 picks a queue id on a single
        broker (producer given `broker=`).
        """
        born = int(time.time() * 1000)
        msgs = [_pb_message(m, born) for m in messages]
        if not -1 <= queue_id < 1 << 31:
            raise InvalidQueueError(f"queue id {queue_id} out of range (-1 lets the broker pick)")
        tried: set[str] = set()
        last: TailraceError | None = None
        unknown = False  # an attempt may have stored the batch
        deadline = time.monotonic() + self.retry_timeout_s
        pause = 0.05
        attempt = -1
        while True:
            attempt += 1
            if attempt > self.retries:
                if time.monotonic() >= deadline:
                    break
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, MAX_RETRY_PAUSE_S)
                tried.clear()  # every group may be tried again
            try:
                route = self.routes.get(topic, refresh=attempt > 0)
                if queue is not None:
                    mq: MessageQueue | None = queue
                    address = self._master(route, queue)
                elif self.single and queue_id != -1:
                    mq = MessageQueue(route.groups[0].broker_name, queue_id)
                    address = route.groups[0].brokers[0].address
                else:
                    mq, address = self._choose(route, key, tried)
            except TailraceError as err:  # no route, or no live master in it (failover)
                if not (err.retriable or err.refresh_route):
                    raise
                last = err
                unrouted = self._no_route(topic, err) if queue is None else None
                if unrouted is None:
                    continue
                route, address = unrouted  # a master that creates the topic on first send
                mq = None
            if not address:
                last = BrokerUnavailableError(f"no live master for {mq}")
                continue
            req = pb.SendBatchRequest(
                topic=topic, queue_id=mq.queue_id if mq is not None else -1, messages=msgs
            )
            conn = self.pool.get(address)
            try:
                resp = conn.call(conn.stub.SendBatch, req)
            except TailraceError as err:
                if not (err.retriable or err.refresh_route):
                    if unknown:
                        raise OutcomeUnknownError(f"an earlier try may have stored it, then {err}") from err
                    raise
                unknown = unknown or outcome_unknown(err)
                if not isinstance(err, UnknownTopicError):  # the broker itself is fine
                    self._avoid[address] = time.monotonic() + self.backoff_s
                if mq is not None and queue is None:
                    tried.add(mq.broker_name)
                last = err
                continue
            if resp.status == pb.NOT_MASTER:
                self._avoid[address] = time.monotonic() + self.backoff_s
                last = BrokerUnavailableError(f"{address} is not the master of {mq}")
                continue
            if resp.status == pb.SLAVE_NOT_AVAILABLE and time.monotonic() < deadline:
                # nothing stored: the master waits for its slaves (a failover, a
                # slave lost or catching up); the same queue is retried after a pause
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, MAX_RETRY_PAUSE_S)
                queue = queue or mq
                last = BrokerUnavailableError(f"{address}: {resp.detail}")
                continue
            if resp.status == pb.SLAVE_NOT_AVAILABLE and unknown:
                # this attempt stored nothing, but an earlier one may have
                raise OutcomeUnknownError(f"an earlier try may have stored it, then {resp.detail}")
            status = send_status(resp.status)
            name = mq.broker_name if mq is not None else route.groups[0].broker_name
            if not resp.queue_offsets:  # nothing stored (e.g. SLAVE_NOT_AVAILABLE): one receipt each, no id
                none = SendReceipt(
                    status, "", resp.topic, resp.queue_id, -1, -1, resp.served_by, name, resp.epoch, address
                )
                return [none] * len(msgs)
            prefix = resp.broker_name or name
            return [
                SendReceipt(
                    status,
                    f"{prefix}@{p:016X}",
                    resp.topic,
                    resp.queue_id,
                    q,
                    p,
                    resp.served_by,
                    name,
                    resp.epoch,
                    address,
                )
                for q, p in zip(resp.queue_offsets, resp.physical_offsets, strict=True)
            ]
        assert last is not None
        if unknown:
            raise OutcomeUnknownError(f"the send may have been stored (retries failed too): {last}")
        raise last

    def send_batch_async(
        self,
        topic: str,
        messages: Sequence[OutgoingMessage | bytes],
        queue_id: int = -1,
        key: str | None = None,
    ) -> Future[list[SendReceipt]]:
        """Like send_batch, without waiting; at most `max_in_flight` calls are
        outstanding (this blocks while the window is full)."""
        self._window.acquire()
        fut = self._executor.submit(self.send_batch, topic, messages, queue_id, key)
        fut.add_done_callback(lambda _: self._window.release())
        return fut

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.pool.close()
        self.routes.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
