"""Pop consumption against the master of a broker group, by name: the
native Pop, AckPop, and ChangeInvisible RPCs, for callers
that hold receipt handles rather than positions (`tailrace proxy` serving
RocketMQ 5's SimpleConsumer and PushConsumer).

Pop state lives on the masters (master/popper.py), so every call goes to
the group's live master as the topic's route names it. A master that
answers NOT_MASTER, or that cannot be reached (a failover under way, a
stale route), is tried again within the caller's time: the master the
answer named at once, or else the route's after refreshing it, with the
producer's pauses (consumer/retry_plan.py), so a call made while a slave
is being promoted lands on the new master; a call whose outcome is unknown
(sent, then the connection broke or the deadline passed) is never tried
again: it may have been carried out. Whatever fails then is raised as the
TailraceError it is. Routes and connections are the
caller's (the proxy shares its producer's), so this holds no sockets of its
own and nothing to close.

With `bodies_elsewhere` (the proxy's), a Pop lets the master leave out the
bodies of a cold queue (one its redirect advice sends to a slave): they are
read here from that slave, the master for what it cannot serve
(consumer/cold_reads.py). A message whose exact tag the expression does not
match (the master filtered by tag hash) is acked at once; one whose body
no broker served is given back (visible again in 1 s). `bodies` counts
where the bodies came from. A slave that failed (an error, a timeout, a
wrong record) is kept out for `PENALTY_S`: meanwhile its broker group's
pops ask for the bodies (no `bodies_elsewhere`), so the master reads them
at once instead of every pop spending time on that slave first.

The bodies' reads have time of their own: a held pop with
`bodies_elsewhere` is asked to answer `COLD_FETCH_S` sooner than one
without (the long poll gives up that much, the reads never get less), and
they end before the messages' invisibility does: a body is delivered only
while at least `KEEP_S` (at most half the invisible time) of it is left
(by this host's wall clock against the master's deadline). What is not
read by then is given back at once, while its handle is still live (no
other pop has it yet: no duplicate); its attempt was counted when it was
handed out, as for any message a client does not get.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from consumer.cold_reads import Fetched, RoutedPull, fetch_bodies
from consumer.connection import ConnectionPool
from consumer.retry_plan import Failure, classify, pause_for
from consumer.routing import Routes, live_master
from core.errors import TailraceError, for_code
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pop.ops import PoppedElsewhere, PoppedMessage
from core.record import decode_record
from core.route import MASTER_ID
from core.subscription import Subscription

log = logging.getLogger(__name__)
MIN_CALL_S = 0.05  # less time than this left: no second try
WAIT_MARGIN_S = 0.5  # a held pop is asked to answer this long before the call's deadline
COLD_FETCH_S = 1.5  # and this much sooner with bodies_elsewhere: the bodies' reads after the answer
KEEP_S = 1.0  # a cold body is delivered only with this much of its invisibility left (or half of it)
GIVE_BACK_MS = 1000  # a popped message whose body could not be read is visible again this soon
SETTLE_S = 1.0  # at most this long, past the caller's time, to ack or give back what it does not get
QUICK_RETRIES = 1  # tries again at once, then after the producer's pauses (consumer/retry_plan.py)
# failures after which nothing was done: tried again until the call's time is up (a failover)
RETRIED = (Failure.NOT_MASTER, Failure.LEASE_EXPIRED, Failure.NO_ROUTE, Failure.REFUSED)
PENALTY_S = 10.0  # a slave whose read failed is not read from for this long (its group's pops carry bodies)


@dataclass(frozen=True)
class PopBatch:
    messages: list[PoppedMessage]
    address: str  # the master that handed them out (a v2 message's store host)
    held: bool  # the master held the pop waiting for messages


@dataclass(frozen=True)
class AckOutcome:
    handle: str
    error: TailraceError | None  # None: acked


class PopClient:
    def __init__(
        self,
        routes: Routes,
        pool: ConnectionPool,
        clock: Callable[[], float] = time.monotonic,
        bodies_elsewhere: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.routes = routes
        self.pool = pool
        self.clock = clock
        self.sleep = sleep
        self.wall = wall  # seconds, against the masters' wall-clock deadlines
        self.bodies_elsewhere = bodies_elsewhere
        # popped messages by where their bodies came from: "pop" (the master's answer),
        # "slave" and "master_pull" (read here); "tag_mismatch" (acked), "given_back"
        self.bodies: Counter[str] = Counter()
        self._penalty: dict[tuple[str, int], float] = {}  # (broker name, broker id): kept out until (clock)
        self._lock = threading.Lock()  # receives run on many threads

    def pop(
        self,
        broker_name: str,
        group: str,
        topic: str,
        invisible_ms: int,
        timeout_s: float,
        queue_id: int = -1,
        max_messages: int = 32,
        wait_ms: int = 0,
        tag_expression: str = "*",
    ) -> PopBatch:
        """Up to `max_messages` of `topic` on `broker_name` (queue -1: any),
        each invisible to other pops for `invisible_ms`; the master holds the
        pop up to `wait_ms` (cut to leave the call's deadline a margin) when
        it has nothing. `tag_expression`: "*" (or "") all, else tags joined
        by "||"; what it does not match counts as consumed."""
        deadline = self.clock() + timeout_s
        req = pb.PopRequest(
            group=group,
            topic=topic,
            queue_id=queue_id,
            max_messages=max_messages,
            invisible_ms=invisible_ms,
            tag_expression=tag_expression,
            bodies_elsewhere=self.bodies_elsewhere and not self._penalized(broker_name),
        )
        margin = WAIT_MARGIN_S + (COLD_FETCH_S if req.bodies_elsewhere else 0.0)
        reply, address = self._call(
            broker_name, topic, "Pop", req, timeout_s, wait_ms=max(0, wait_ms), margin_s=margin
        )
        messages: list[PoppedMessage] = []
        elsewhere: list[PoppedElsewhere] = []
        for m in reply.messages:
            if m.record:
                messages.append(
                    PoppedMessage(
                        decode_record(m.record), m.record, m.attempt, m.receipt_handle, m.deadline_ms
                    )
                )
            else:
                elsewhere.append(
                    PoppedElsewhere(
                        m.queue_id, m.queue_offset, m.size, m.read_from, m.attempt, m.receipt_handle,
                        m.deadline_ms, m.physical_offset,
                    )
                )  # fmt: skip
        self._add("pop", len(messages))
        if elsewhere:
            keep_s = min(KEEP_S, invisible_ms / 2000)
            messages += self._read_elsewhere(
                broker_name, group, topic, tag_expression, elsewhere, deadline, keep_s
            )
        return PopBatch(messages, address, reply.held)

    def _read_elsewhere(
        self,
        broker_name: str,
        group: str,
        topic: str,
        tag_expression: str,
        refs: list[PoppedElsewhere],
        deadline: float,
        keep_s: float,
    ) -> list[PoppedMessage]:
        """The bodies of a cold pop, from the brokers the master named
        (the master for the rest), read by `deadline` and while `keep_s` of
        the messages' invisibility is left; what cannot be delivered is
        settled: acked (another tag) or given back (no body, or too late)."""
        pull = RoutedPull(self.routes, self.pool, broker_name, group, topic)
        last_s = min(r.deadline_ms for r in refs) / 1000 - keep_s  # wall clock: the last moment to deliver
        end = min(deadline, self.clock() + last_s - self.wall())
        got = fetch_bodies(refs, pull, Subscription.parse(tag_expression), end, self.clock, topic)
        now = self.wall()
        late = {m.handle for m in got.messages if m.deadline_ms / 1000 - keep_s < now}
        if late:  # an answer came too late: their handles are (nearly) stale, another pop may have them
            got.missing += [r for r in refs if r.handle in late]
            got.messages = [m for m in got.messages if m.handle not in late]
        for broker_id in got.failed:
            with self._lock:
                self._penalty[(broker_name, broker_id)] = self.clock() + PENALTY_S
            log.warning(
                "cold reads: %s broker %d failed (%s): its group's bodies come from the master for %.0f s",
                broker_name, broker_id, got.errors[-1] if got.errors else "a wrong record", PENALTY_S,
            )  # fmt: skip
        self._add("slave", sum(n for b, n in got.served_by.items() if b != MASTER_ID))
        self._add("master_pull", got.served_by[MASTER_ID])
        if got.errors:
            log.info(
                "cold reads from %s: %d run(s) from the master instead: %s",
                broker_name,
                got.fallbacks,
                got.errors[0],
            )
        self._settle(broker_name, group, topic, got)
        return got.messages

    def _add(self, what: str, n: int) -> None:
        with self._lock:
            self.bodies[what] += n

    def counts(self) -> dict[str, int]:
        """A copy of `bodies`, taken under its lock."""
        with self._lock:
            return dict(self.bodies)

    def _penalized(self, broker_name: str) -> bool:
        """Whether a slave of `broker_name` failed a read less than PENALTY_S ago."""
        now = self.clock()
        with self._lock:
            for key, until in list(self._penalty.items()):
                if until <= now:
                    del self._penalty[key]
            return any(name == broker_name for name, _ in self._penalty)

    def _settle(self, broker_name: str, group: str, topic: str, got: Fetched) -> None:
        end = self.clock() + SETTLE_S
        # the tag's hash matched, the tag did not: consumed, as the master does; acked, and once
        # more what a failure left (a second ack of one acked answers INVALID_RECEIPT_HANDLE)
        handles = [m.handle for m in got.mismatched]
        for _ in range(2):
            left = end - self.clock()
            if not handles or left < MIN_CALL_S:
                break
            try:
                outcomes = self.ack(broker_name, group, topic, handles, left)
            except TailraceError as exc:
                log.info("could not ack %d message(s) of another tag: %s", len(handles), exc)
                continue
            self._add("tag_mismatch", sum(o.error is None for o in outcomes))
            handles = [o.handle for o in outcomes if o.error is not None and o.error.retriable]
        if handles:  # they come back after their invisibility: acked then (a hot pop acks them itself)
            log.info("%d message(s) of another tag not acked", len(handles))
        for ref in got.missing:
            left = end - self.clock()
            if left < MIN_CALL_S:
                log.info("%d message(s) without a body not given back in time", len(got.missing))
                return
            try:
                self.change_invisible(broker_name, group, topic, ref.handle, GIVE_BACK_MS, left)
                self._add("given_back", 1)
            except TailraceError as exc:  # it comes back after its invisible time instead
                log.info("could not give back a message without a body: %s", exc)

    def ack(
        self, broker_name: str, group: str, topic: str, handles: Sequence[str], timeout_s: float
    ) -> list[AckOutcome]:
        """Ack handles of one broker group with one call; one outcome per
        handle, in order (a handle refused alone, e.g. INVALID_RECEIPT_HANDLE,
        is its outcome; a failure of the call is raised)."""
        req = pb.AckPopRequest(group=group, topic=topic, receipt_handles=list(handles))
        reply, _ = self._call(broker_name, topic, "AckPop", req, timeout_s)
        return [
            AckOutcome(r.receipt_handle, for_code(r.error_code)(r.detail) if r.error_code else None)
            for r in reply.results
        ]

    def change_invisible(
        self, broker_name: str, group: str, topic: str, handle: str, invisible_ms: int, timeout_s: float
    ) -> tuple[str, int]:
        """A new invisibility from now on (0: visible at once): (the new
        handle, its deadline in wall-clock ms). The old handle is dead from then on."""
        req = pb.ChangeInvisibleRequest(
            group=group, topic=topic, receipt_handle=handle, invisible_ms=invisible_ms
        )
        reply, _ = self._call(broker_name, topic, "ChangeInvisible", req, timeout_s)
        return reply.receipt_handle, reply.deadline_ms

    def renew(
        self, broker_name: str, group: str, topic: str, handle: str, invisible_ms: int, timeout_s: float
    ) -> int:
        """Keep a handed-out message invisible until now + `invisible_ms` at
        least, with the same handle (a proxy renewing a push consumer's
        message): its deadline in wall-clock ms. INVALID_RECEIPT_HANDLE once
        it is acked, changed or handed out again."""
        req = pb.ChangeInvisibleRequest(
            group=group, topic=topic, receipt_handle=handle, invisible_ms=invisible_ms, keep_handle=True
        )
        reply, _ = self._call(broker_name, topic, "ChangeInvisible", req, timeout_s, tries=2)
        return int(reply.deadline_ms)

    def dead_letter(self, broker_name: str, group: str, topic: str, handle: str, timeout_s: float) -> None:
        """Store a handed-out message in `%DLQ%<group>` and settle it (the
        broker acks it); INVALID_RECEIPT_HANDLE if the handle is stale."""
        req = pb.PopDeadLetterRequest(group=group, topic=topic, receipt_handle=handle)
        self._call(broker_name, topic, "PopDeadLetter", req, timeout_s)

    def _call(
        self,
        broker_name: str,
        topic: str,
        method: str,
        request: Any,
        timeout_s: float,
        wait_ms: int = -1,
        tries: int = 0,
        margin_s: float = WAIT_MARGIN_S,
    ) -> Any:
        """(the answer, the master's address) of `method` on `broker_name`'s
        master. Tried again while `timeout_s` lasts after a failure that did
        nothing (NOT_MASTER: the master it names, else the route's; lease
        expired, no live master, a refused connection, a busy master: with a
        fresh route), the first retry at once, then after the producer's
        pauses, so a failover's new master is found within a fraction of a
        second of its appearing in the routes. Never after a failure whose
        outcome is unknown (the request went out: a retry could pop a second
        batch, or answer a done ack INVALID_RECEIPT_HANDLE). `wait_ms` (a
        Pop): the hold asked of the master, cut at each try to the time left
        less `margin_s`. `tries` (0: no limit): a renewal makes two, so the
        proxy's one renewing thread does not wait a failover out for each
        handle (it tries each again a second later)."""
        deadline = self.clock() + timeout_s
        named: str | None = None  # the master a NOT_MASTER answer named
        for attempt in itertools.count(1):
            sent = False
            try:
                address = named or self._master(broker_name, topic, attempt > 1, deadline - self.clock())
                conn = self.pool.get(address)
                left = max(MIN_CALL_S, deadline - self.clock())
                if wait_ms >= 0:
                    request.max_wait_ms = max(0, min(wait_ms, int((left - margin_s) * 1000)))
                sent = True
                return conn.call(getattr(conn.stub, method), request, left), address
            except TailraceError as exc:
                failure = classify(exc)
                if not sent and failure is Failure.OUTCOME_UNKNOWN:  # e.g. no master yet: nothing went out
                    failure = Failure.REFUSED
                if failure not in RETRIED:
                    raise
                named = getattr(exc, "master_address", None) or None
                pause = pause_for(attempt, QUICK_RETRIES)  # the first retry at once (a named master)
                if attempt == tries or deadline - self.clock() - pause < MIN_CALL_S:
                    raise
                if attempt == 1 or attempt % 10 == 0:
                    log.info("%s on %s: %s; trying again", method, broker_name, exc)
                if pause:
                    self.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def _master(self, broker_name: str, topic: str, refresh: bool, timeout_s: float) -> str:
        return live_master(self.routes, broker_name, topic, refresh, max(MIN_CALL_S, timeout_s))
