"""The fetcher: a consumer's pulls in flight, as plain logic.

One long-poll pull in flight per assigned queue. `due()` says which pulls
to send now (queues not pulling, not backing off, not paused by the push
consumer's flow control), to which broker (consumer/pull_source.py: the
master, or the slave its last answer suggested) and with what deadline;
`answered()` says what an answer, or a failure, means (if it is still the
queue's current pull): records to hand out,
a position to move, a back-off, a replica to avoid, a route to refresh, or
a refusal of access (`denied`: the consumer raises it from its next poll
instead of retrying; the queue waits `DENIED_BACKOFF_S` before it is pulled
again, should the caller poll on). The
clients own the calls: `PullConsumer` with gRPC futures, `AsyncPullConsumer`
with `grpc.aio`. Positions and generations live in consumer/positions.py:
a driver issues the pulls `due()` returns while it holds `positions.lock`,
so nothing moves a position between choosing a pull and sending it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from consumer.positions import PullCall, QueuePositions
from consumer.pull_source import REPLICA_TIMEOUT_S, PullSources
from consumer.queue_hooks import QueueHooks
from consumer.retry_plan import ACCESS_REFUSED
from core.errors import BrokerUnavailableError, RequestTimeoutError, TailraceError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.record import Record, iter_records
from core.route import MASTER_ID, MessageQueue, TopicRoute
from core.subscription import Subscription

log = logging.getLogger("consumer.pull_consumer")
RETRY_BACKOFF_S = 0.5
NOT_HELD_BACKOFF_S = 0.2
DENIED_BACKOFF_S = 5.0


@dataclass(slots=True)
class ReceivedMessage(Record):
    """A decoded record, with the broker group it came from and the broker
    (id) that served it."""

    broker_name: str = ""
    served_by: int = -1


@dataclass(frozen=True, slots=True)
class PullToSend:
    mq: MessageQueue
    broker_id: int
    address: str
    request: pb.PullRequest
    timeout_s: float


@dataclass(slots=True)
class Answered:
    records: list[ReceivedMessage] = field(default_factory=list)
    refresh_route: bool = False  # rebalance (which refreshes the route) before the next pulls


@dataclass(frozen=True, slots=True)
class PullSettings:
    group: str
    topic: str
    subscription: Subscription
    max_messages: int
    max_bytes: int
    long_poll_ms: int
    timeout_s: float


class Fetcher:
    def __init__(self, settings: PullSettings, positions: QueuePositions, hooks: QueueHooks) -> None:
        self.s = settings
        self.positions = positions
        self.hooks = hooks
        self.sources = PullSources()  # which broker each queue is pulled from
        self.retry_at: dict[MessageQueue, float] = {}
        self.failures: dict[MessageQueue, int] = {}
        self.served_by: Counter[int] = Counter()
        self.unreachable: dict[
            str, str
        ] = {}  # broker address -> the error of its last pull, until one succeeds
        self.denied: TailraceError | None = None  # a pull refused access, not raised yet

    def due(self, route: TopicRoute, now: float, skip: set[MessageQueue] | None = None) -> list[PullToSend]:
        """The pulls to send now. Call with `positions.lock` held, and send
        each before letting it go (`positions.issued`)."""
        s = self.s
        out = []
        for mq, offset in self.positions.offsets.items():
            if self.positions.pulling(mq) or self.retry_at.get(mq, 0) > now or self.hooks.paused(mq):
                continue
            if skip and mq in skip:
                continue
            bid, address = self.sources.address(mq, route)
            if address is None:
                self.retry_at[mq] = now + RETRY_BACKOFF_S
                continue
            self.sources.issued(mq, bid)
            req = pb.PullRequest(
                group=s.group,
                topic=s.topic,
                queue_id=mq.queue_id,
                queue_offset=offset,
                max_messages=s.max_messages,
                max_bytes=s.max_bytes,
                max_wait_ms=s.long_poll_ms,
                subscription=s.subscription.expression,
            )
            # replicas never hold a pull: a short deadline finds a hung one fast
            timeout = s.long_poll_ms / 1000 + s.timeout_s if bid == MASTER_ID else REPLICA_TIMEOUT_S
            out.append(PullToSend(mq, bid, address, req, timeout))
        return out

    def take_denied(self) -> TailraceError | None:
        """The refusal of access a pull met since the last call (once)."""
        err, self.denied = self.denied, None
        return err

    def answered(
        self,
        mq: MessageQueue,
        gen: int,
        call: PullCall,
        answer: pb.PullResponse | TailraceError,
        address: str,
        route: TopicRoute,
        now: float,
    ) -> Answered:
        """What the answer to the pull `call` of `mq` (generation `gen`, sent to
        `address`) means; nothing if it is no longer the queue's current pull
        (given up, moved, cancelled). An answer that cannot be used (a corrupt
        batch) is dropped and the queue retried, the others kept."""
        if not self.positions.answered(mq, gen, call):
            return Answered()
        try:
            return self._answered(mq, gen, answer, address, route, now)
        except TailraceError as exc:
            log.warning("pull result for %s dropped: %s", mq, exc)
            self.retry_at[mq] = now + RETRY_BACKOFF_S
            return Answered()

    def _answered(
        self,
        mq: MessageQueue,
        gen: int,
        answer: pb.PullResponse | TailraceError,
        address: str,
        route: TopicRoute,
        now: float,
    ) -> Answered:
        pulled_from = self.sources.issued_to(mq)
        if isinstance(answer, TailraceError):
            return self._failed(mq, answer, address, pulled_from, now)
        self.unreachable.pop(address, None)
        self.failures.pop(mq, None)
        resp = answer
        status = resp.status
        switched = self.sources.advised(mq, resp, route, now)
        if status == pb.RETRY_ELSEWHERE:  # this replica cannot serve the offset yet
            self.sources.retry_elsewhere(mq, switched)
            return Answered()
        if status == pb.FOUND:
            self.served_by[resp.served_by] += resp.count
            records = list(iter_records(resp.records, cls=ReceivedMessage))
            for r in records:
                r.broker_name = mq.broker_name
                r.served_by = resp.served_by
            self.positions.advance(mq, gen, resp.next_queue_offset)
            sub = self.s.subscription
            return Answered(records if sub.tags is None else [r for r in records if sub.matches(r.tags)])
        if status == pb.NO_NEW_MSG:
            if not switched and self.s.long_poll_ms > 0 and not resp.held:  # broker at its cap: back off
                self.retry_at[mq] = now + NOT_HELD_BACKOFF_S
            return Answered()
        if status in (pb.NO_MATCHED_MSG, pb.OFFSET_TOO_SMALL, pb.OFFSET_OVERFLOW):
            if status != pb.NO_MATCHED_MSG:
                log.warning(
                    "%s: offset %d is %s; moving to %d",
                    mq, self.positions.offsets.get(mq), pb.PullStatus.Name(status), resp.next_queue_offset,
                )  # fmt: skip
            self.positions.advance(mq, gen, resp.next_queue_offset)
        return Answered()

    def _failed(
        self, mq: MessageQueue, err: TailraceError, address: str, pulled_from: int, now: float
    ) -> Answered:
        if isinstance(err, BrokerUnavailableError | RequestTimeoutError):
            self.unreachable[address] = str(err)
        if isinstance(err, ACCESS_REFUSED):  # final: the caller hears of it, no retry
            self.denied = err
            self.retry_at[mq] = now + DENIED_BACKOFF_S
            return Answered()
        if pulled_from != MASTER_ID:  # a replica failed: back to the master at once
            log.warning("pull %s from broker %d failed: %s; back to the master", mq, pulled_from, err)
            self.sources.replica_failed(mq, pulled_from, now)
            return Answered(refresh_route=True)
        fails = self.failures[mq] = self.failures.get(mq, 0) + 1
        # errors a retry can fix: soon; others (e.g. the topic is gone): back off to 5 s
        delay = RETRY_BACKOFF_S if err.retriable else min(5.0, RETRY_BACKOFF_S * 2 ** min(fails, 4))
        log.warning("pull %s failed: %s; retrying in %.1fs", mq, err, delay)
        self.retry_at[mq] = now + delay
        return Answered(refresh_route=err.refresh_route)
