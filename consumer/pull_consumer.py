"""PullConsumer: a member of a consumer group, reading its share of a topic.

Composition (after aiokafka's consumer): routes (`consumer/routing.py`), a
membership heartbeat (`consumer/membership.py`), the averaging allocation
(`core/route.py`), the group's committed offsets (`consumer/offset_store.py`),
which broker each queue is pulled from (`consumer/pull_source.py`: the
master, or the slave its last answer suggested), each queue's position and
pull in flight (`consumer/positions.py`), and a fetcher kept here: one
long-poll pull in flight per assigned queue (a gRPC future the broker holds
until records arrive or the wait ends), so queues are read in parallel and
an arrival anywhere is seen at once. `poll()` returns what has arrived.

Group protocol (client-side, RocketMQ style): every member heartbeats to the
master of every group that hosts the topic; the first group's reply lists the
live members. Each member computes its share with the averaging allocation
and rebalances when the member list changes and every
`rebalance_interval_ms`. A queue it gives up is committed first; a queue it
takes starts from the group's committed offset, or from `first`/`last`. A
member that leaves commits, then unregisters; one that vanishes is dropped by
the brokers after three missed heartbeats. At least once: after a crash or a
move, messages after the last commit are delivered again, none is skipped.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import grpc

from consumer.connection import ConnectionPool, rpc_error
from consumer.fetcher import Fetcher, PullSettings, ReceivedMessage
from consumer.membership import Membership
from consumer.offset_store import OffsetStore
from consumer.positions import QueuePositions
from consumer.profile import Profile, client_setup
from consumer.queue_hooks import QueueHooks
from consumer.routing import Routes, routes_for
from core.errors import (
    InvalidArgumentError,
    TailraceError,
    UnknownTopicError,
)
from core.offsets import validate_group
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.record import validate_topic
from core.route import MessageQueue, TopicRoute, allocate_average
from core.subscription import Subscription

log = logging.getLogger(__name__)
__all__ = ["PullConsumer", "ReceivedMessage"]


class PullConsumer:
    def __init__(
        self,
        broker: str | None = None,
        group: str = "",
        topic: str = "",
        subscription: str = "*",
        start: Literal["first", "last"] = "first",
        namesrv: Sequence[str] | str | None = None,
        long_poll_ms: int = 20_000,
        max_messages: int = 256,
        max_bytes: int = 1024 * 1024,
        auto_commit_interval_ms: int = 5_000,
        heartbeat_ms: int = 3_000,
        rebalance_interval_ms: int = 20_000,
        client_id: str | None = None,
        timeout_s: float = 10.0,
        on_commit: Callable[[MessageQueue, int], None] | None = None,
        hooks: QueueHooks | None = None,
        members_of: PullConsumer | None = None,
        route_timeout_s: float = 0.0,
        profile: str | Path | Profile | None = None,
    ) -> None:
        """`members_of`: take the group's members from that consumer of the same
        group (a push consumer's retry topic), so both split their queues over
        the same view; this one sends no membership heartbeats of its own.
        `route_timeout_s`: with nameservers, how long to keep asking for the
        route of a topic they do not route yet (it may be being created)
        before failing with `UnknownTopicError` (0: fail at once).
        `profile`: the client profile (consumer/profile.py; None:
        `$TAILRACE_PROFILE`, else plaintext); its nameservers are used when
        neither `broker` nor `namesrv` is given."""
        security, broker, namesrv = client_setup(profile, broker, namesrv)
        if start not in ("first", "last"):
            raise InvalidArgumentError("start must be 'first' or 'last'")
        if (broker is None) == (namesrv is None):
            raise InvalidArgumentError("give either broker= or namesrv=")
        validate_group(group)
        validate_topic(topic)
        if not 10 <= heartbeat_ms <= 3_600_000:
            raise InvalidArgumentError("heartbeat_ms must be in 10..3600000")
        if isinstance(namesrv, str):
            namesrv = [a for a in namesrv.split(",") if a]
        self.group = group
        self.topic = topic
        self.start = start
        self.subscription = Subscription.parse(subscription)
        self.long_poll_ms = long_poll_ms
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.auto_commit_s = auto_commit_interval_ms / 1000
        self.hooks = hooks or QueueHooks()
        self.rebalance_s = rebalance_interval_ms / 1000
        self.client_id = client_id or f"{socket.gethostname()}@{os.getpid()}@{uuid.uuid4().hex[:8]}"
        self.nameservers = list(namesrv or [])
        self.security = security
        self.routes: Routes = routes_for(broker, namesrv, security)
        self.pool = ConnectionPool(timeout_s, security)
        self.timeout_s = timeout_s
        self._offsets = OffsetStore(
            self.pool, group, topic, start, self.master_of, on_commit, self._master_checks_out
        )
        self._queues = QueuePositions()  # per assigned queue: position, pull in flight
        settings = PullSettings(
            group, topic, self.subscription, max_messages, max_bytes, long_poll_ms, timeout_s
        )
        self._fetcher = Fetcher(settings, self._queues, self.hooks)  # the pulls, as plain logic
        self._sources = self._fetcher.sources
        self.served_by = self._fetcher.served_by
        self.unreachable = (
            self._fetcher.unreachable
        )  # broker address -> its last pull's error, until one works
        self._done: queue.Queue[tuple[MessageQueue, int, grpc.Future[pb.PullResponse], str]] = queue.Queue()
        self._closed = False
        self._owns_membership = members_of is None
        if members_of is None:
            self.membership = Membership(
                self.pool,
                self.routes,
                group,
                topic,
                self.client_id,
                heartbeat_ms,
                lambda: {mq.broker_name for mq in list(self._queues.offsets)},
            )
            self._changed: threading.Event = self.membership.changed
        else:
            self.client_id = members_of.client_id
            self.membership = members_of.membership
            self._changed = self.membership.subscribe()
        self._last_rebalance = 0.0
        self._last_commit = time.monotonic()
        try:
            self._route: TopicRoute = self._first_route(route_timeout_s)
            if self._owns_membership:
                self.membership.beat()  # join before the first allocation
                if self.membership.denied is not None:
                    raise self.membership.denied  # this account may not use the group
            self.rebalance()
        except BaseException:
            self.pool.close()
            self.routes.close()
            raise
        if self._owns_membership:
            self.membership.start()

    def _first_route(self, timeout_s: float) -> TopicRoute:
        """The topic's route; one the nameservers do not have yet is asked for
        again (pauses from 50 ms up to 500 ms) until `timeout_s` has passed."""
        deadline = time.monotonic() + timeout_s
        pause = 0.05
        while True:
            try:
                return self.routes.get(self.topic)
            except UnknownTopicError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    waited = f" after waiting {timeout_s:g} s" if timeout_s > 0 else ""
                    raise UnknownTopicError(
                        f"topic {self.topic!r} is not routed by the nameservers "
                        f"{', '.join(self.nameservers)}{waited}: {exc.message}"
                    ) from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, 0.5)

    # ---- assignment -----------------------------------------------------------------

    @property
    def assignment(self) -> list[MessageQueue]:
        return sorted(self._queues.offsets)

    def rebalance(self) -> None:
        """Recompute this member's queues; commit the ones given up."""
        try:
            self._route = self.routes.get(self.topic, refresh=True)
        except TailraceError as exc:
            log.warning("route refresh for %s failed: %s", self.topic, exc)
        members = self.membership.members  # without us in it (not joined, or dropped): nothing
        mine = set(allocate_average(self._route.read_queues(), members, self.client_id))
        current = set(self._queues.offsets)
        dropped, added = current - mine, mine - current
        if dropped:
            for mq in dropped:
                self.hooks.revoked(mq)  # a push consumer stops processing it first
            gone = {mq: self._queues.offsets[mq] for mq in dropped}
            self._queues.drop(dropped)
            self._commit(gone, raise_errors=False)
            for mq in dropped:
                self.hooks.released(mq)
        for mq in sorted(added):
            start = self._offsets.start_offset(mq)
            if start is not None:
                self._queues.add(mq, start)
        if dropped or added:
            log.info(
                "%s: %d members, now %d queues (+%d -%d)",
                self.client_id, len(members), len(self._queues.offsets), len(added), len(dropped),
            )  # fmt: skip
        self._last_rebalance = time.monotonic()

    def master_of(self, broker_name: str) -> str | None:
        """The address of a broker group's master (the last route seen)."""
        return self._route.master_address(broker_name)

    def _master_checks_out(self, broker_name: str, address: str) -> bool:
        """Whether `address` (named by a NOT_MASTER answer) is `broker_name`'s
        master: the route lists it in that group, or it says so itself (a
        consumer given one broker's address knows no other)."""
        g = self._route.group(broker_name)
        if g is not None and any(b.address == address for b in g.brokers):
            return True
        conn = self.pool.get(address)
        try:
            st = conn.call(conn.stub.Status, pb.StatusRequest(), 2.0)
        except TailraceError:
            return False
        return bool(st.broker_name == broker_name and st.role == "master")

    @property
    def last_advice(self) -> dict[MessageQueue, tuple[int, int, str]]:
        """Per queue: (answered by, suggested broker, reason) of the last advice."""
        return self._sources.last_advice

    @property
    def _pull_from(self) -> dict[MessageQueue, int]:
        """The broker id each queue is pulled from (tests look at it)."""
        return self._sources.pull_from

    @property
    def on_commit(self) -> Callable[[MessageQueue, int], None] | None:
        """Told of every acknowledged commit (verification logs)."""
        return self._offsets.on_commit

    def restart_from_committed(self, mq: MessageQueue) -> bool:
        """Read `mq` again from the group's committed offset (orderly: the
        previous owner committed after this member was assigned the queue)."""
        start = self._offsets.start_offset(mq)
        if start is None:
            return False
        return self._queues.move(mq, start)

    # ---- positions and commits ----------------------------------------------------------

    def position(self, queue_id: int, broker_name: str | None = None) -> int:
        for mq, off in self._queues.offsets.items():
            if mq.queue_id == queue_id and broker_name in (None, mq.broker_name):
                return off
        raise KeyError(queue_id)

    def positions(self) -> dict[int, int]:
        """Positions by queue id (single-group view; see `queue_positions`)."""
        return {mq.queue_id: off for mq, off in self._queues.offsets.items()}

    def queue_positions(self) -> dict[MessageQueue, int]:
        return dict(self._queues.offsets)

    def seek(self, queue_id: int, offset: int, broker_name: str | None = None) -> None:
        """Read a queue from `offset` on (a pull in flight is discarded)."""
        if not 0 <= offset < 1 << 64:
            raise InvalidArgumentError(f"offset must be in 0..2^64-1, got {offset}")
        self._queues.move_where(
            lambda mq: mq.queue_id == queue_id and broker_name in (None, mq.broker_name), offset
        )

    def commit(self, positions: dict[int, int] | None = None) -> None:
        """Store the group's offsets (default: everything polled so far)."""
        if positions is None:
            self._commit(dict(self._queues.offsets))
        else:
            self._commit(
                {mq: positions[mq.queue_id] for mq in self._queues.offsets if mq.queue_id in positions}
            )

    def _commit(self, positions: dict[MessageQueue, int], raise_errors: bool = True) -> None:
        """Commit each queue on its own (see `OffsetStore.commit`), at the
        offsets the hooks say."""
        self._offsets.commit(positions, self.hooks.commit_point, raise_errors)

    # ---- polling -----------------------------------------------------------------------

    def poll(self, timeout_ms: int = 1000) -> list[ReceivedMessage]:
        """Messages that arrived, waiting up to `timeout_ms` for the first."""
        if self._closed:
            raise TailraceError("consumer is closed")
        self.raise_denied()
        self.housekeeping()
        self._issue_pulls()
        out: list[ReceivedMessage] = []
        answered: set[MessageQueue] = set()
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            left = deadline - time.monotonic()
            try:
                item = self._done.get(timeout=min(left, 0.2)) if left > 0 else self._done.get_nowait()
            except queue.Empty:
                if left <= 0 or self._changed.is_set():
                    break
                self._issue_pulls(answered)  # queues whose retry back-off ended
                continue
            out.extend(self._complete(*item))
            if not out:
                self.raise_denied()  # a pull was refused access: the caller hears of it now
            answered.add(item[0])
            # a queue answered in this call is pulled again in the next one, after
            # the caller has taken these messages (flow control sees them then)
            self._issue_pulls(answered)
            if out and self._done.empty():
                break
        return out

    def raise_denied(self) -> None:
        """Raise the refusal of access (UNAUTHENTICATED, PERMISSION_DENIED) a
        pull or the group's heartbeat met, once: it is final (core/errors.py),
        so it is the caller's to see, as Kafka's poll raises its
        authorization errors, not something to retry in silence."""
        denied = self._fetcher.take_denied() or self.membership.denied
        if denied is not None:
            raise denied

    def housekeeping(self) -> None:
        """What a poll does before pulling: rebalance when the group changed
        (or every `rebalance_interval_ms`), auto-commit when it is due. Blocking
        (the asyncio consumer runs it in a worker thread)."""
        now = time.monotonic()
        if self._changed.is_set() or now - self._last_rebalance >= self.rebalance_s:
            self._changed.clear()
            self.rebalance()
        if self.auto_commit_s and now - self._last_commit >= self.auto_commit_s:
            try:
                self.commit()
            except TailraceError as exc:
                log.warning("auto-commit failed: %s", exc)
            self._last_commit = now

    def _issue_pulls(self, skip: set[MessageQueue] | None = None) -> None:
        with self._queues.lock:  # held while pulls go out: nothing moves a position meanwhile
            for p in self._fetcher.due(self._route, time.monotonic(), skip):
                call = self.pool.get(p.address).stub.Pull.future(p.request, timeout=p.timeout_s)
                gen = self._queues.issued(p.mq, call)
                call.add_done_callback(
                    lambda f, mq=p.mq, gen=gen, a=p.address: self._done.put((mq, gen, f, a))
                )

    def _complete(
        self, mq: MessageQueue, gen: int, call: grpc.Future[pb.PullResponse], address: str
    ) -> list[ReceivedMessage]:
        answer: pb.PullResponse | TailraceError
        try:
            answer = call.result()
        except grpc.RpcError as exc:
            answer = rpc_error(exc, address, self.security)
        except grpc.FutureCancelledError:
            answer = TailraceError("cancelled")  # a moved queue's pull: its answer is not wanted
        result = self._fetcher.answered(mq, gen, call, answer, address, self._route, time.monotonic())
        if result.refresh_route:
            self._changed.set()  # rebalance, which refreshes the route
        return result.records

    def close(self, commit: bool = True) -> None:
        """Stop pulling, commit what was polled (unless told not to), leave the group."""
        if self._closed:
            return
        self._closed = True
        if self._owns_membership:
            self.membership.stop()
        self._queues.cancel_all()
        try:
            if commit:
                self._commit(dict(self._queues.offsets))
        finally:
            if self._owns_membership:
                self.membership.leave()
            self.pool.close()
            self.routes.close()

    def __enter__(self) -> PullConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
