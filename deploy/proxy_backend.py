"""The cluster as `tailrace proxy` reaches it: our own client library.

The proxy is a client of the cluster, with an account of its own (its
profile): routes come from the nameservers, messages go to masters through
`consumer.Producer` (its retries, failover handling and circuit breaker),
and the limit it tells RocketMQ producers is read from the masters' Status
(`details.limits`) at start and every 30 s.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from consumer.producer import Producer
from consumer.profile import Profile
from consumer.routing import group_from_pb
from consumer.send_logic import OutgoingMessage
from core.errors import TailraceError
from core.pb.tailrace.v1 import broker_pb2 as bpb
from core.rocketmq.service import Stored
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
    ) -> None:
        """`fixed_body_bytes`: the limit to tell clients (0: from the masters
        of `cluster`, `fallback_body_bytes` until one answers)."""
        self.producer = Producer(namesrv=namesrv, profile=profile)
        self.fallback = fallback_body_bytes
        self.fixed = fixed_body_bytes
        self._limit = fixed_body_bytes or fallback_body_bytes
        self.cluster = cluster
        self._warned = False
        self._stop = threading.Event()

    def route(self, topic: str, timeout_s: float) -> TopicRoute:
        return self.producer.routes.get(topic, timeout_s=timeout_s)

    def send(self, batch: list[Incoming], queue: MessageQueue | None, timeout_s: float) -> list[Stored]:
        """One native SendBatch: one queue, one RPC, all messages or none."""
        out = [
            OutgoingMessage(m.body, m.tags, m.keys, m.properties, m.born_ms, m.deliver_at_ms) for m in batch
        ]
        receipts = self.producer.send_batch(batch[0].topic, out, queue=queue, timeout_s=timeout_s)
        return [Stored(r.status, r.broker_name, r.queue_id, r.queue_offset) for r in receipts]

    def max_body_bytes(self) -> int:
        """The body limit clients are told (no I/O: `refresh_limit` updates it)."""
        return self.fixed or self._limit

    def refresh_limit(self) -> int:
        """Ask the masters for their record limit (the last answer stays when
        none answers); the proxy does it at start and then every 30 s on its
        own thread, so no client call waits for it."""
        limits = self._masters_limits()
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
                self.refresh_limit()
            except Exception:  # a failed round is logged, the next one tries again
                log.exception("refreshing the brokers' limits failed")

    def _masters_limits(self) -> list[int]:
        routes = self.producer.routes
        clusters = getattr(routes, "clusters", None)
        if clusters is None:
            return []
        out = []
        try:
            groups = groups_of(clusters(STATUS_TIMEOUT_S), self.cluster)
        except TailraceError as exc:
            log.warning("cannot list the brokers for their limits: %s", exc)
            return []
        for g in groups:
            m = g.master
            if m is None:
                continue
            try:
                conn = self.producer.pool.get(m.address)
                status = conn.call(conn.stub.Status, bpb.StatusRequest(), STATUS_TIMEOUT_S)
                limit = json.loads(status.details_json or "{}").get("limits", {}).get("max_message_bytes")
            except (TailraceError, ValueError) as exc:
                log.warning("no limits from %s (%s): %s", g.broker_name, m.address, exc)
                continue
            if isinstance(limit, int) and limit > 0:
                out.append(limit)
        return out

    def close(self) -> None:
        self._stop.set()
        self.producer.close()
