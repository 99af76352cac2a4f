"""Producer: route-aware sends over every writable queue of every group.

Queue choice: round robin over the writable queues of every broker group
with a live master, or a user `selector(queues, key)` (e.g. by key, for
per-key order). A broker that just failed is avoided for `backoff_s` where
another group can take the send.

Retries follow `consumer/retry_plan.py` (a pure function of the failure, the
attempt and the clock): at once to another group up to `retries` times,
then with short pauses until the send's time is up (`retry_timeout_s`, or
the `timeout_s` given to the call, whichever is shorter): that rides out a
failover. No call blocks longer than that: every RPC's deadline is cut to
the time left. A broker that has failed for `retry_timeout_s` opens its
circuit (`consumer/circuit.py`): later sends to it fail at once, saying
why, until a probe gets through. A failure whose outcome was unknown (the
connection died mid-call, the deadline passed) may have stored the batch: a
retry then may store it twice (at least once, as in RocketMQ), and when
every attempt fails the caller gets `OutcomeUnknownError`. Bad input is
raised at once.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from consumer.circuit import CircuitBreaker
from consumer.connection import ConnectionPool
from consumer.retry_plan import Failure, classify, outcome_unknown, plan
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

MIN_RPC_TIMEOUT_S = 0.05  # the last attempt of a send still gets this long
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


__all__ = ["OutgoingMessage", "Producer", "SendReceipt", "by_key", "outcome_unknown", "send_status"]


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (broker is None) == (namesrv is None):
            raise ValueError("give either broker= or namesrv=")
        if isinstance(namesrv, str):
            namesrv = [a for a in namesrv.split(",") if a]
        self.single = broker or ""  # the one broker's address, when given one
        self.routes: Routes = (
            SingleBrokerRoutes(broker) if broker is not None else NameserverRoutes(list(namesrv or []))
        )
        self.pool = ConnectionPool(timeout_s)
        self.selector = selector
        self.retries = retries
        self.retry_timeout_s = retry_timeout_s
        self.backoff_s = backoff_s
        self.clock = clock
        self.breaker = CircuitBreaker(open_after_s=retry_timeout_s, avoid_s=backoff_s)
        self._rr = itertools.count()
        self._executor = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="send")
        self.max_in_flight = max_in_flight
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
            now = self.clock()
            ok = [
                q
                for q in queues
                if q.broker_name not in exclude and not self.breaker.avoid(self._master(route, q), now)
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
        now = self.clock()
        pool = [m for m in masters if not self.breaker.avoid(m[1], now)] or masters
        group, address = pool[next(self._rr) % len(pool)]
        return TopicRoute(topic, (group,)), address

    @staticmethod
    def _master(route: TopicRoute, mq: MessageQueue) -> str:
        return route.master_address(mq.broker_name) or ""

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
        timeout_s: float | None = None,
    ) -> list[SendReceipt]:
        """Store messages in one queue with one RPC.

        The queue is `queue` if given, else chosen (round robin, or the
        selector with `key`). `queue_id` other than -1 picks a queue id on a single
        broker (producer given `broker=`). Returns or raises within
        `timeout_s` (default and cap: `retry_timeout_s`).
        """
        born = int(time.time() * 1000)
        msgs = [_pb_message(m, born) for m in messages]
        if not -1 <= queue_id < 1 << 31:
            raise InvalidQueueError(f"queue id {queue_id} out of range (-1 lets the broker pick)")
        limit = self.retry_timeout_s if timeout_s is None else min(timeout_s, self.retry_timeout_s)
        deadline = self.clock() + limit
        tried: set[str] = set()
        last: TailraceError | None = None
        waiting: list[SendReceipt] | None = None  # the last SLAVE_NOT_AVAILABLE answer
        unknown = False  # an attempt may have stored the batch
        refresh = False
        attempt = 0
        failure: Failure | None = None
        gate = f"topic {topic}"  # a topic nothing can be written to for retry_timeout_s fails at once too
        while True:
            attempt += 1
            now = self.clock()
            if not self.breaker.allow(gate, now):
                last = BrokerUnavailableError(f"cannot write {topic!r}: {self.breaker.why(gate, now)}")
                break
            failure, mq, address, route_error = self._attempt_target(
                topic, queue, queue_id, key, tried, refresh
            )
            if failure is None and not self.breaker.allow(address, now):  # open: at once, or another group
                last = BrokerUnavailableError(f"circuit open: {self.breaker.why(address, now)}")
                self.breaker.answered(gate)  # the topic was not tried: no verdict on it
                if mq is not None and queue is None and self._other_group(topic, tried | {mq.broker_name}):
                    tried.add(mq.broker_name)
                    continue
                break
            if failure is None:
                failure, result = self._call(topic, mq, address, msgs, deadline)
                if isinstance(result, list):
                    if failure is None:
                        self.breaker.succeeded(gate)
                        return result
                    waiting = result  # SLAVE_NOT_AVAILABLE: nothing stored; the same queue again
                    queue = queue or mq
                    last = BrokerUnavailableError(f"{address}: too few in-sync slaves; nothing stored")
                else:
                    last = result
                unknown = unknown or failure is Failure.OUTCOME_UNKNOWN
                if mq is not None and queue is None:
                    tried.add(mq.broker_name)
            else:
                last = route_error or BrokerUnavailableError(f"no live master for {mq}")
            assert failure is not None
            if failure in (Failure.FATAL, Failure.SLAVE_NOT_AVAILABLE):
                self.breaker.answered(gate)  # bad input, or a master that answers: the topic is fine
            else:
                self.breaker.failed(gate, self.clock(), str(last))
            if failure is Failure.FATAL:
                assert last is not None
                if unknown:
                    raise OutcomeUnknownError(f"an earlier try may have stored it, then {last}") from last
                raise last
            step = plan(failure, attempt, self.clock(), deadline, self.retries)
            if not step.retry:
                break
            refresh = step.refresh_route
            if step.pause_s > 0:
                time.sleep(step.pause_s)
                tried.clear()  # every group may be tried again
        if waiting is not None and failure is Failure.SLAVE_NOT_AVAILABLE and not unknown:
            return waiting  # nothing stored, said in each receipt's status
        if last is None:
            last = RequestTimeoutError(f"no attempt finished within {limit:g} s")
        if unknown:
            raise OutcomeUnknownError(f"the send may have been stored (retries failed too): {last}")
        raise last

    def _attempt_target(
        self,
        topic: str,
        queue: MessageQueue | None,
        queue_id: int,
        key: str | None,
        tried: set[str],
        refresh: bool,
    ) -> tuple[Failure | None, MessageQueue | None, str, TailraceError | None]:
        """(None, queue, master address, None) to send to, or (NO_ROUTE, ...)
        when the route has none now (a failover under way, an unknown topic),
        with the route's error if there was one."""
        mq: MessageQueue | None
        try:
            route = self.routes.get(topic, refresh=refresh)
            if queue is not None:
                mq, address = queue, self._master(route, queue)
            elif self.single and queue_id != -1:
                g = route.groups[0]
                mq, address = MessageQueue(g.broker_name, queue_id), g.brokers[0].address
            else:
                mq, address = self._choose(route, key, tried)
        except TailraceError as err:
            unrouted = self._no_route(topic, err) if queue is None else None  # may raise: no such topic
            if unrouted is not None:
                return None, None, unrouted[1], None  # a master that creates the topic on first send
            failure = classify(err)
            if self.single and failure in (Failure.REFUSED, Failure.OUTCOME_UNKNOWN):
                self.breaker.failed(self.single, self.clock(), str(err))  # the broker did not answer
                return Failure.REFUSED, None, "", err
            if self.single:
                self.breaker.answered(self.single)
            return (Failure.FATAL if failure is Failure.FATAL else Failure.NO_ROUTE), None, "", err
        if not address:
            return Failure.NO_ROUTE, mq, "", None
        return None, mq, address, None

    def _other_group(self, topic: str, exclude: set[str]) -> bool:
        """Whether a group outside `exclude` has a writable queue and a live master."""
        try:
            route = self.routes.get(topic)
        except TailraceError:
            return False
        return any(q.broker_name not in exclude for q in route.write_queues())

    def _call(
        self, topic: str, mq: MessageQueue | None, address: str, msgs: list[pb.Message], deadline: float
    ) -> tuple[Failure | None, list[SendReceipt] | TailraceError]:
        """One SendBatch: (None, receipts) when stored; (SLAVE_NOT_AVAILABLE,
        receipts) when the master stored nothing for want of slaves; else
        (failure, error). Tells the circuit breaker how the broker did."""
        req = pb.SendBatchRequest(topic=topic, queue_id=mq.queue_id if mq is not None else -1, messages=msgs)
        conn = self.pool.get(address)
        timeout = max(MIN_RPC_TIMEOUT_S, min(self.pool.timeout_s, deadline - self.clock()))
        try:
            resp = conn.call(conn.stub.SendBatch, req, timeout)
        except TailraceError as err:
            failure = classify(err)
            if failure in (Failure.REFUSED, Failure.OUTCOME_UNKNOWN):
                self.breaker.failed(address, self.clock(), str(err))
            else:
                self.breaker.answered(address)
            return failure, err
        if resp.status == pb.NOT_MASTER:
            self.breaker.refused(address, self.clock())
            return Failure.NOT_MASTER, BrokerUnavailableError(f"{address} is not the master of {mq}")
        self.breaker.succeeded(address)
        receipts = self._receipts(resp, mq, address, len(msgs))
        if resp.status == pb.SLAVE_NOT_AVAILABLE:
            return Failure.SLAVE_NOT_AVAILABLE, receipts
        return None, receipts

    def _receipts(
        self, resp: pb.SendResponse, mq: MessageQueue | None, address: str, n: int
    ) -> list[SendReceipt]:
        status = send_status(resp.status)
        name = mq.broker_name if mq is not None else resp.broker_name
        if not resp.queue_offsets:  # nothing stored (e.g. SLAVE_NOT_AVAILABLE): one receipt each, no id
            none = SendReceipt(
                status, "", resp.topic, resp.queue_id, -1, -1, resp.served_by, name, resp.epoch, address
            )
            return [none] * n
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

    def send_batch_async(
        self,
        topic: str,
        messages: Sequence[OutgoingMessage | bytes],
        queue_id: int = -1,
        key: str | None = None,
        timeout_s: float | None = None,
    ) -> Future[list[SendReceipt]]:
        """Like send_batch, without waiting for the answer; at most
        `max_in_flight` calls are outstanding. Waiting for room counts against
        `timeout_s` too (RequestTimeoutError when none was made in time)."""
        limit = self.retry_timeout_s if timeout_s is None else min(timeout_s, self.retry_timeout_s)
        t0 = self.clock()
        if not self._window.acquire(timeout=limit):
            raise RequestTimeoutError(f"{self.max_in_flight} sends still in flight after {limit:g} s")
        left = max(MIN_RPC_TIMEOUT_S, limit - (self.clock() - t0))
        fut = self._executor.submit(self.send_batch, topic, messages, queue_id, key, None, left)
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
