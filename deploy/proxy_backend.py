"""The cluster as `tailrace proxy` reaches it: our own client library.

The proxy is a client of the cluster, with an account of its own (its
profile): routes come from the nameservers, messages go to masters through
`consumer.Producer` (its retries, failover handling and circuit breaker),
pops, acks and invisibility changes to the named broker group's master
(`consumer.PopClient`, over the producer's routes and connections), and
the limits it tells RocketMQ clients (the body size, the deliveries before
a dead letter) are read from the masters' Status (`details.limits`) at
start and every 30 s.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

from consumer.pop_client import PopClient
from consumer.producer import Producer
from consumer.profile import Profile
from consumer.routing import group_from_pb
from consumer.send_logic import OutgoingMessage
from consumer.transactions import TransactionClient
from core.errors import TailraceError
from core.pb.tailrace.v1 import broker_pb2 as bpb
from core.record import Record
from core.rocketmq.consume import Popped
from core.rocketmq.service import Stored
from core.rocketmq.transactions import MAX_REPORTS, Check, Report
from core.rocketmq.translate import Incoming
from core.route import GroupRoute, MessageQueue, TopicRoute

log = logging.getLogger(__name__)
HEADROOM_BYTES = 64 * 1024  # of a record's limit, kept for topic, tags, keys and properties
LIMIT_REFRESH_S = 30.0
STATUS_TIMEOUT_S = 2.0


def body_limit(max_message_bytes: list[int], fallback: int) -> int:
    """The body size to promise: the smallest master's record limit less
    the headroom (`fallback` when no master told its limit)."""
    if not max_message_bytes:
        return fallback
    return max(1024, min(max_message_bytes) - HEADROOM_BYTES)


def groups_of(clusters: Any, cluster: str) -> list[GroupRoute]:
    """The broker groups of `cluster` (all of them if ""), from a
    ListClusters answer: the limit is the proxy's cluster's, not that of
    another cluster the same nameservers serve."""
    return [group_from_pb(g) for c in clusters.clusters if not cluster or c.name == cluster for g in c.groups]


class ClusterBackend:
    def __init__(
        self,
        namesrv: list[str],
        profile: Profile,
        fallback_body_bytes: int,
        fixed_body_bytes: int = 0,
        cluster: str = "",
        cold_reads: bool = True,
    ) -> None:
        """`fixed_body_bytes`: the limit to tell clients (0: from the masters
        of `cluster`, `fallback_body_bytes` until one answers). `cold_reads`
        (proxy.cold_reads): cold queues' bodies from slaves (the masters'
        redirect advice; docs/design.md, Cold pops), else all from masters."""
        self.producer = Producer(namesrv=namesrv, profile=profile)
        self.pops = PopClient(self.producer.routes, self.producer.pool, bodies_elsewhere=cold_reads)
        self._bodies_logged: dict[str, int] = {}
        self.transactions = TransactionClient(self.producer.routes, self.producer.pool)
        self._max_attempts = 0  # the masters' least pop_max_attempts (0: none told yet)
        self.fallback = fallback_body_bytes
        self.fixed = fixed_body_bytes
        self._limit = fixed_body_bytes or fallback_body_bytes
        self.cluster = cluster
        self._warned = False
        self._stop = threading.Event()

    def route(self, topic: str, timeout_s: float, refresh: bool = False) -> TopicRoute:
        return self.producer.routes.get(topic, refresh=refresh, timeout_s=timeout_s)

    def send(self, batch: list[Incoming], queue: MessageQueue | None, timeout_s: float) -> list[Stored]:
        """One native SendBatch: one queue, one RPC, all messages or none."""
        out = [
            OutgoingMessage(m.body, m.tags, m.keys, m.properties, m.born_ms, m.deliver_at_ms) for m in batch
        ]
        receipts = self.producer.send_batch(batch[0].topic, out, queue=queue, timeout_s=timeout_s)
        return [
            Stored(r.status, r.broker_name, r.queue_id, r.queue_offset, r.transaction_id) for r in receipts
        ]

    def end_transaction(
        self, topic: str, transaction_id: str, commit: bool, from_check: bool, timeout_s: float
    ) -> None:
        self.transactions.end(topic, transaction_id, commit, timeout_s, from_check=from_check)

    def poll_orphans(
        self,
        topics: frozenset[str],
        max_count: int,
        max_bytes: int,
        reports: dict[str, Report],
        timeout_s: float,
    ) -> list[Check]:
        """The orphan checks of `topics` every master of the cluster has due,
        each master told its report (a master that does not answer is
        skipped this round and keeps its report; its checks are handed out
        again after their lease)."""
        out: list[Check] = []
        for g in self._groups():
            m = g.master
            if m is None:
                continue
            report = reports.pop(m.address, Report())
            delivered, returned = report.delivered[:MAX_REPORTS], report.returned[:MAX_REPORTS]
            try:
                orphans = self.transactions.poll_orphans(
                    m.address, max_count, 0, timeout_s, sorted(topics), max_bytes, delivered, returned
                )
            except TailraceError as exc:
                reports[m.address] = report
                log.warning("no orphan checks from %s (%s): %s", g.broker_name, m.address, exc)
                continue
            rest = Report(report.delivered[MAX_REPORTS:], report.returned[MAX_REPORTS:])
            if rest.delivered or rest.returned:
                reports[m.address] = rest
            for o in orphans:
                rec = Record(
                    o.topic, o.queue_id, 0, 0, o.message.flags, o.message.born_ms, o.store_ms,
                    o.message.tags, o.message.keys, dict(o.message.properties), o.message.body,
                )  # fmt: skip
                out.append(Check(o.transaction_id, rec, m.address))
        return out

    def _groups(self) -> list[GroupRoute]:
        clusters = getattr(self.producer.routes, "clusters", None)
        if clusters is None:
            return []
        try:
            return groups_of(clusters(STATUS_TIMEOUT_S), self.cluster)
        except TailraceError as exc:
            log.warning("cannot list the brokers: %s", exc)
            return []

    def pop(
        self,
        broker_name: str,
        group: str,
        topic: str,
        invisible_ms: int,
        wait_ms: int,
        max_messages: int,
        tag_expression: str,
        timeout_s: float,
    ) -> Popped:
        batch = self.pops.pop(
            broker_name, group, topic, invisible_ms, timeout_s, max_messages=max_messages, wait_ms=wait_ms,
            tag_expression=tag_expression,
        )  # fmt: skip
        return Popped(batch.messages, batch.address, batch.held)

    def ack(
        self, broker_name: str, group: str, topic: str, handles: Sequence[str], timeout_s: float
    ) -> list[TailraceError | None]:
        return [o.error for o in self.pops.ack(broker_name, group, topic, handles, timeout_s)]

    def change_invisible(
        self, broker_name: str, group: str, topic: str, handle: str, invisible_ms: int, timeout_s: float
    ) -> str:
        return self.pops.change_invisible(broker_name, group, topic, handle, invisible_ms, timeout_s)[0]

    def dead_letter(self, broker_name: str, group: str, topic: str, handle: str, timeout_s: float) -> None:
        self.pops.dead_letter(broker_name, group, topic, handle, timeout_s)

    def renew(
        self, broker_name: str, group: str, topic: str, handle: str, invisible_ms: int, timeout_s: float
    ) -> int:
        return self.pops.renew(broker_name, group, topic, handle, invisible_ms, timeout_s)

    def max_attempts(self, fallback: int) -> int:
        """The deliveries before a dead letter consumers are told: the
        masters' least `pop_max_attempts` (`fallback` until one told it)."""
        return self._max_attempts or fallback

    def max_body_bytes(self) -> int:
        """The body limit clients are told (no I/O: `refresh_limit` updates it)."""
        return self.fixed or self._limit

    def refresh_limit(self) -> int:
        """Ask the masters for their record limit (the last answer stays when
        none answers); the proxy does it at start and then every 30 s on its
        own thread, so no client call waits for it."""
        told = self._masters_limits()
        limits = [t["max_message_bytes"] for t in told if t.get("max_message_bytes", 0) > 0]
        attempts = [t["pop_max_attempts"] for t in told if t.get("pop_max_attempts", 0) > 0]
        if attempts:
            self._max_attempts = min(attempts)
        if limits:
            self._limit = body_limit(limits, self.fallback)
            if self.fixed > self._limit and not self._warned:  # once: every 30 s would be noise
                self._warned = True
                log.warning(
                    "proxy.max_body_bytes %d is past what the brokers store (%d): larger bodies will be "
                    "refused by them after the client was told they fit",
                    self.fixed,
                    self._limit,
                )
        return self.max_body_bytes()

    def start(self) -> None:
        threading.Thread(target=self._refresh_loop, name="limits", daemon=True).start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(LIMIT_REFRESH_S):
            try:
                self.log_bodies()
                self.refresh_limit()
            except Exception:  # a failed round is logged, the next one tries again
                log.exception("refreshing the brokers' limits failed")

    def log_bodies(self) -> None:
        """Where popped messages' bodies came from, so far (a line when it
        changed: every 30 s and at close; the proxy has no metrics port)."""
        now = self.pops.counts()
        if now == self._bodies_logged:
            return
        self._bodies_logged = now
        log.info(
            "cold reads: bodies of popped messages so far: %d in masters' pops, %d from slaves, %d from "
            "masters' pulls; %d acked for another tag, %d given back without a body",
            now.get("pop", 0), now.get("slave", 0), now.get("master_pull", 0), now.get("tag_mismatch", 0),
            now.get("given_back", 0),
        )  # fmt: skip

    def _masters_limits(self) -> list[dict[str, int]]:
        """Each answering master's integer `details.limits`."""
        out = []
        for g in self._groups():
            m = g.master
            if m is None:
                continue
            try:
                conn = self.producer.pool.get(m.address)
                status = conn.call(conn.stub.Status, bpb.StatusRequest(), STATUS_TIMEOUT_S)
                limits = json.loads(status.details_json or "{}").get("limits", {})
            except (TailraceError, ValueError) as exc:
                log.warning("no limits from %s (%s): %s", g.broker_name, m.address, exc)
                continue
            if isinstance(limits, dict):
                out.append({k: v for k, v in limits.items() if type(v) is int})
        return out

    def close(self) -> None:
        self._stop.set()
        self.log_bodies()
        self.producer.close()
