"""One send's attempts as plain logic, shared by `Producer` (threads) and
`AsyncProducer` (asyncio): no sockets, no sleeping, the clock passed in.

`SendLogic.steps(...)` is a generator of actions: `RouteLookup`,
`AutoCreateLookup`, `Call` and `Pause`. The driver carries each one out and
sends its result back in (a value, or the TailraceError it failed with); the
generator's return value is the receipts, or it raises the send's error. So
the retry plan (consumer/retry_plan.py), the circuit breaker
(consumer/circuit.py), the queue choice and the at-least-once accounting are
written once, and each client only does the I/O its way (the h11 pattern).
"""

from __future__ import annotations

import itertools
import time
import zlib
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass

from consumer.circuit import CircuitBreaker, Grant
from consumer.retry_plan import Failure, classify, plan
from core.errors import (
    BrokerUnavailableError,
    InvalidArgumentError,
    InvalidQueueError,
    LeaseExpiredError,
    OutcomeUnknownError,
    RequestTimeoutError,
    TailraceError,
    UnknownTopicError,
)
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.roles import SendStatus
from core.route import MessageQueue, TopicRoute

MIN_RPC_TIMEOUT_S = 0.05  # the least time a send waits for room in the window
MIN_ATTEMPT_S = 0.01  # with less time left than this, a send makes no further attempt
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
    transaction_id: str = ""  # a transactional send's (end it with Producer.end_transaction)


@dataclass(slots=True)
class OutgoingMessage:
    body: bytes
    tags: str = ""
    keys: str = ""
    properties: Mapping[str, str] | None = None
    born_ms: int | None = None  # None: when the send starts (a proxy passes its client's)
    deliver_at_ms: int = 0  # epoch ms not to deliver before (0: now); the master's timer holds it


# ---- the actions a driver carries out ------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteLookup:
    """The topic's route (`refresh`: ask the nameservers again), within
    `timeout_s` -> TopicRoute."""

    topic: str
    refresh: bool
    timeout_s: float


@dataclass(frozen=True, slots=True)
class AutoCreateLookup:
    """The groups whose masters create topics on first send, within
    `timeout_s` -> TopicRoute."""

    topic: str
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Call:
    """One SendBatch RPC -> pb.SendResponse."""

    address: str
    request: pb.SendBatchRequest
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float


Action = RouteLookup | AutoCreateLookup | Call | Pause
Steps = Generator[Action, object, list[SendReceipt]]


def send_status(wire: int) -> SendStatus:
    """The protobuf status as the enum of the same name; a status this client
    does not know is a broker it cannot talk to (a newer protocol)."""
    name = pb.SendStatus.Name(wire) if wire in pb.SendStatus.values() else str(wire)
    try:
        return SendStatus[name]
    except KeyError:
        raise TailraceError(f"the broker answered an unknown send status {name}") from None


def by_key(queues: list[MessageQueue], key: str) -> MessageQueue:
    """A selector that sends every message of one key to one queue."""
    return queues[zlib.crc32(key.encode()) % len(queues)]


def pb_message(m: OutgoingMessage | bytes, born_ms: int) -> pb.Message:
    try:
        if isinstance(m, bytes | bytearray):
            return pb.Message(body=bytes(m), born_ms=born_ms)
        return pb.Message(
            body=m.body,
            tags=m.tags,
            keys=m.keys,
            properties=dict(m.properties or {}),
            born_ms=born_ms if m.born_ms is None else m.born_ms,
            deliver_at_ms=m.deliver_at_ms,
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidArgumentError(f"not a valid message: {exc}") from exc


class SendLogic:
    """The state a producer keeps across sends (circuit breaker, round robin)
    and the attempts of each send."""

    def __init__(
        self,
        broker: str | None,
        selector: Selector | None,
        retries: int,
        retry_timeout_s: float,
        rpc_timeout_s: float,
        backoff_s: float,
        clock: Callable[[], float],
    ) -> None:
        """`broker`: the one broker of a producer given `broker=`; None for a
        producer that looks routes up on nameservers."""
        self.single = broker or ""
        self.nameservers = broker is None
        self.selector = selector
        self.retries = retries
        self.retry_timeout_s = retry_timeout_s
        self.rpc_timeout_s = rpc_timeout_s
        self.clock = clock
        self.breaker = CircuitBreaker(open_after_s=retry_timeout_s, avoid_s=backoff_s)
        self._rr = itertools.count()

    def limit(self, timeout_s: float | None) -> float:
        return self.retry_timeout_s if timeout_s is None else min(timeout_s, self.retry_timeout_s)

    # ---- one send --------------------------------------------------------------------

    def steps(
        self,
        topic: str,
        messages: Sequence[OutgoingMessage | bytes],
        queue: MessageQueue | None = None,
        queue_id: int = -1,
        key: str | None = None,
        timeout_s: float | None = None,
    ) -> Steps:
        """The attempts of one send (see the module doc for how to drive it)."""
        born = int(time.time() * 1000)
        msgs = [pb_message(m, born) for m in messages]
        if not -1 <= queue_id < 1 << 31:
            raise InvalidQueueError(f"queue id {queue_id} out of range (-1 lets the broker pick)")
        limit = self.limit(timeout_s)
        deadline = self.clock() + limit
        breaker = self.breaker
        # a topic nothing can be written to for retry_timeout_s fails at once too; only
        # sends free to go to any group count for it (a pinned one says nothing of the rest)
        free = queue is None and not (key is not None and self.selector is not None) and queue_id == -1
        gate = f"topic {topic}"
        gate_grant = breaker.allow(gate, self.clock()) if free else Grant.GO
        if not gate_grant:
            raise BrokerUnavailableError(f"cannot write {topic!r}: {breaker.why(gate, self.clock())}")
        probes: list[str] = [gate] if gate_grant is Grant.PROBE else []  # probes this send holds
        try:
            return (
                yield from self._attempts(
                    topic, msgs, queue, queue_id, key, deadline, limit, free, gate, probes
                )
            )
        finally:
            for k in probes:  # a probe that ended with no verdict must not hold its circuit for good
                breaker.release(k)

    def _attempts(
        self,
        topic: str,
        msgs: list[pb.Message],
        queue: MessageQueue | None,
        queue_id: int,
        key: str | None,
        deadline: float,
        limit: float,
        free: bool,
        gate: str,
        probes: list[str],
    ) -> Steps:
        breaker = self.breaker
        tried: set[str] = set()
        last: TailraceError | None = None
        waiting: list[SendReceipt] | None = None  # the last SLAVE_NOT_AVAILABLE answer
        unknown = False  # an attempt may have stored the batch
        refresh = False
        attempt = 0
        failure: Failure | None = None
        while True:
            attempt += 1
            now = self.clock()
            left = deadline - now
            once = limit <= 0 and attempt == 1  # retry_timeout_s = 0: one attempt, its RPC deadline
            if once:
                left = self.rpc_timeout_s
            elif left < MIN_ATTEMPT_S:
                break
            if free and attempt > 1:  # the topic closed meanwhile (this send's probe failed): over
                grant = breaker.allow(gate, now)
                if not grant:
                    last = BrokerUnavailableError(f"cannot write {topic!r}: {breaker.why(gate, now)}")
                    break
                if grant is Grant.PROBE:
                    probes.append(gate)
            try:
                target = yield from self._target(topic, queue, queue_id, key, tried, refresh, left)
            except UnknownTopicError as exc:  # no such topic, and no broker creates it
                if unknown:
                    raise OutcomeUnknownError(f"an earlier try may have stored it, then {exc}") from exc
                raise
            failure, mq, address, route_error = target
            if failure is None:
                grant = breaker.allow(address, self.clock())
                if not grant:  # open: fail at once, or take another group's queue
                    last = BrokerUnavailableError(f"circuit open: {breaker.why(address, self.clock())}")
                    if mq is not None and free:
                        route = yield RouteLookup(topic, False, max(MIN_ATTEMPT_S, deadline - self.clock()))
                        if isinstance(route, TopicRoute) and any(
                            q.broker_name not in tried | {mq.broker_name} for q in route.write_queues()
                        ):
                            tried.add(mq.broker_name)
                            continue
                    break
                if grant is Grant.PROBE:
                    probes.append(address)
                req = pb.SendBatchRequest(
                    topic=topic, queue_id=mq.queue_id if mq is not None else -1, messages=msgs
                )
                timeout = self.rpc_timeout_s if once else min(self.rpc_timeout_s, deadline - self.clock())
                if timeout < MIN_ATTEMPT_S:
                    break
                answer = yield Call(address, req, timeout)
                failure, result = self._judge(answer, mq, address, len(msgs))
                if address in probes:
                    probes.remove(address)  # judged: its verdict is in
                if isinstance(result, list):
                    if failure is None:
                        if free:
                            breaker.succeeded(gate)
                            if gate in probes:
                                probes.remove(gate)
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
            if free:
                if failure in (Failure.FATAL, Failure.SLAVE_NOT_AVAILABLE):
                    breaker.answered(gate)  # bad input, or a master that answers: the topic is fine
                else:
                    breaker.failed(gate, self.clock(), str(last))
                if gate in probes:
                    probes.remove(gate)
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
                yield Pause(step.pause_s)
                tried.clear()  # every group may be tried again
        if waiting is not None and failure is Failure.SLAVE_NOT_AVAILABLE and not unknown:
            return waiting  # nothing stored, said in each receipt's status
        if last is None:
            last = RequestTimeoutError(f"no attempt finished within {limit:g} s")
        if unknown:
            raise OutcomeUnknownError(f"the send may have been stored (retries failed too): {last}")
        raise last

    def _target(
        self,
        topic: str,
        queue: MessageQueue | None,
        queue_id: int,
        key: str | None,
        tried: set[str],
        refresh: bool,
        left: float,
    ) -> Generator[Action, object, tuple[Failure | None, MessageQueue | None, str, TailraceError | None]]:
        """(None, queue, master address, None) to send to, or (NO_ROUTE, ...)
        when the route has none now (a failover under way, an unknown topic),
        with the route's error if there was one."""
        route = yield RouteLookup(topic, refresh, left)
        mq: MessageQueue | None = None
        address = ""
        err = route if isinstance(route, TailraceError) else None
        if isinstance(route, TopicRoute):
            try:
                if queue is not None:
                    mq, address = queue, route.master_address(queue.broker_name) or ""
                elif self.single and queue_id != -1:
                    g = route.groups[0]
                    mq, address = MessageQueue(g.broker_name, queue_id), g.brokers[0].address
                else:
                    mq, address = self._choose(route, key, tried)
            except TailraceError as exc:
                err = exc
        if err is not None:
            if queue is None and self.nameservers and isinstance(err, UnknownTopicError):
                creating = yield AutoCreateLookup(topic, max(MIN_ATTEMPT_S, left / 2))
                if isinstance(creating, UnknownTopicError):
                    raise creating  # masters are registered, none creates topics: create it first
                if isinstance(creating, TopicRoute):  # else none registered yet: retried
                    master = self._creating_master(creating)
                    if master:
                        return None, None, master, None  # it creates the topic on first send
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
                if q.broker_name not in exclude
                and not self.breaker.avoid(route.master_address(q.broker_name) or "", now)
            ]
            pool = ok or [q for q in queues if q.broker_name not in exclude] or queues
            mq = pool[next(self._rr) % len(pool)]
        return mq, route.master_address(mq.broker_name) or ""

    def _creating_master(self, creating: TopicRoute) -> str:
        """A live master of `creating` (the groups whose masters create a topic
        on first send: RocketMQ sends an unknown topic to the cluster's
        auto-create brokers), round robin, avoiding one that just failed; ""
        when there is none (retried)."""
        masters = [g.master.address for g in creating.groups if g.master is not None]
        if not masters:
            return ""
        now = self.clock()
        pool = [m for m in masters if not self.breaker.avoid(m, now)] or masters
        return pool[next(self._rr) % len(pool)]

    def _judge(
        self, answer: object, mq: MessageQueue | None, address: str, n: int
    ) -> tuple[Failure | None, list[SendReceipt] | TailraceError]:
        """What a SendBatch's answer (or failure) means: (None, receipts) when
        stored; (SLAVE_NOT_AVAILABLE, receipts) when the master stored nothing
        for want of slaves; else (failure, error). Tells the circuit breaker."""
        if isinstance(answer, TailraceError):
            failure = classify(answer)
            if failure in (Failure.REFUSED, Failure.OUTCOME_UNKNOWN):
                self.breaker.failed(address, self.clock(), str(answer))
            else:
                self.breaker.answered(address)
            return failure, answer
        assert isinstance(answer, pb.SendResponse)
        if answer.status == pb.NOT_MASTER:
            self.breaker.refused(address, self.clock())
            return Failure.NOT_MASTER, BrokerUnavailableError(f"{address} is not the master of {mq}")
        if answer.status == pb.MASTER_LEASE_EXPIRED:  # up, and the master, but takes no sends for now
            self.breaker.refused(address, self.clock())
            return Failure.LEASE_EXPIRED, LeaseExpiredError(f"{address} ({mq}): {answer.detail}")
        self.breaker.succeeded(address)
        receipts = receipts_of(answer, mq, address, n)
        if answer.status == pb.SLAVE_NOT_AVAILABLE:
            return Failure.SLAVE_NOT_AVAILABLE, receipts
        return None, receipts


def receipts_of(resp: pb.SendResponse, mq: MessageQueue | None, address: str, n: int) -> list[SendReceipt]:
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
            t,
        )
        for q, p, t in zip(
            resp.queue_offsets, resp.physical_offsets, _ids(resp, len(resp.queue_offsets)), strict=True
        )
    ]


def _ids(resp: pb.SendResponse, n: int) -> list[str]:
    """A transactional send's ids, one per stored message ("" for any other send)."""
    ids = list(resp.transaction_ids)
    return ids if len(ids) == n else [""] * n
