"""Admin: topics, queue offsets and status, of one broker or a whole cluster.

Through nameservers, `create_topic` creates the topic on every group's
master and returns once the nameservers route it (`wait_routed`): a producer
or consumer started right after finds it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from consumer.connection import BrokerConnection, ConnectionPool
from consumer.profile import Profile, client_setup
from consumer.routing import NameserverRoutes
from core.errors import BrokerUnavailableError, RequestTimeoutError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import GroupRoute, TopicRoute

ROUTE_TIMEOUT_S = 30.0  # a created topic not routed by then: an error naming what is missing


def _serves(g: GroupRoute | None, queues: int) -> bool:
    return g is not None and g.master is not None and g.writable and g.write_queues >= queues


def route_gaps(answers: Mapping[str, TopicRoute | None], groups: Sequence[str], queues: int) -> list[str]:
    """What keeps a topic from being routed to each of `groups` (a live master
    and at least `queues` writable queues) by every nameserver that answered
    (`answers`: nameserver -> its route, None for none); [] when nothing does."""
    if not answers:
        return ["no nameserver answered"]
    gaps = []
    for address, route in sorted(answers.items()):
        if route is None:
            gaps.append(f"nameserver {address} has no route to it")
            continue
        missing = [g for g in groups if not _serves(route.group(g), queues)]
        if missing:
            gaps.append(f"nameserver {address} does not route it to {', '.join(missing)}")
    return gaps


class Admin:
    def __init__(
        self,
        broker: str | None = None,
        namesrv: Sequence[str] | str | None = None,
        timeout_s: float = 10.0,
        profile: str | Path | Profile | None = None,
    ) -> None:
        """`profile`: the client profile (consumer/profile.py; None:
        `$TAILRACE_PROFILE`, else plaintext); its nameservers are used when
        neither `broker` nor `namesrv` is given."""
        security, broker, namesrv = client_setup(profile, broker, namesrv)
        if (broker is None) == (namesrv is None):
            raise ValueError("give either broker= or namesrv=")
        if isinstance(namesrv, str):
            namesrv = [a for a in namesrv.split(",") if a]
        self.security = security
        self.pool = ConnectionPool(timeout_s, security)
        self.broker = broker
        self.routes = NameserverRoutes(list(namesrv), security=security) if namesrv is not None else None

    @property
    def conn(self) -> BrokerConnection:
        if self.broker is None:
            raise ValueError("this Admin talks to a cluster; pass broker= for one broker")
        return self.pool.get(self.broker)

    def masters(self, cluster: str | None = None) -> dict[str, str]:
        """broker name -> master address, for every group (of `cluster`)."""
        if self.routes is None:
            return {self.status()["broker_name"]: self.conn.address}
        out: dict[str, str] = {}
        for c in self.routes.clusters().clusters:
            if cluster is not None and c.name != cluster:
                continue
            for g in c.groups:
                masters = [b for b in g.brokers if b.broker_id == 0 and b.alive]
                if masters:
                    out[g.broker_name] = max(masters, key=lambda b: b.epoch).address
        return out

    def create_topic(
        self, topic: str, queues: int, cluster: str | None = None, route_timeout_s: float = ROUTE_TIMEOUT_S
    ) -> bool:
        """Create the topic on the broker, or on every group's master of the
        cluster (all clusters when none is named) and then wait until the
        nameservers route it to every one of those groups (see `wait_routed`);
        True if any created it."""
        masters = {"": self.conn.address} if self.routes is None else self.masters(cluster)
        if not masters:
            raise BrokerUnavailableError("no live master registered with the nameservers")
        created = False
        for address in masters.values():
            conn = self.pool.get(address)
            r = conn.call(conn.stub.CreateTopic, pb.CreateTopicRequest(topic=topic, queues=queues))
            created = created or bool(r.created)
        if self.routes is not None:
            self.wait_routed(topic, sorted(masters), queues, route_timeout_s)
        return created

    def wait_routed(
        self, topic: str, groups: Sequence[str], queues: int = 1, timeout_s: float = ROUTE_TIMEOUT_S
    ) -> None:
        """Return once every nameserver that answers routes `topic` to each of
        `groups` with a live master and at least `queues` writable queues (a
        broker registers as soon as its topics change); after `timeout_s`,
        raise `RequestTimeoutError` saying which nameserver lacks what."""
        if self.routes is None:
            raise ValueError("waiting for a route needs namesrv=")
        deadline = time.monotonic() + timeout_s
        pause = 0.01
        while gaps := route_gaps(self.routes.routes_by_nameserver(topic), groups, queues):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestTimeoutError(
                    f"topic {topic!r} is on the masters of {', '.join(groups)} but not routed after "
                    f"{timeout_s:g} s: {'; '.join(gaps)}"
                )
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.2)

    def list_topics(self) -> dict[str, int]:
        """Topic -> queue count (summed over groups for a cluster)."""
        targets = [self.conn.address] if self.routes is None else list(self.masters().values())
        out: dict[str, int] = {}
        for address in targets:
            conn = self.pool.get(address)
            for t in conn.call(conn.stub.ListTopics, pb.ListTopicsRequest()).topics:
                out[t.name] = out.get(t.name, 0) + t.queues
        return out

    def queue_offsets(self, topic: str) -> dict[int, tuple[int, int]]:
        r = self.conn.call(self.conn.stub.GetQueueOffsets, pb.GetQueueOffsetsRequest(topic=topic))
        return {q.queue_id: (q.min_offset, q.max_offset) for q in r.queues}

    def query_offset(self, group: str, topic: str, queue_id: int) -> int | None:
        """The group's committed offset of a queue (on the broker given), or None."""
        r = self.conn.call(
            self.conn.stub.QueryOffset, pb.QueryOffsetRequest(group=group, topic=topic, queue_id=queue_id)
        )
        return int(r.offset) if r.found else None

    def status(self) -> dict[str, Any]:
        r = self.conn.call(self.conn.stub.Status, pb.StatusRequest())
        return {
            "broker_name": r.broker_name,
            "broker_id": r.broker_id,
            "role": r.role,
            "address": r.address,
            "min_offset": r.min_offset,
            "max_offset": r.max_offset,
            "flushed_offset": r.flushed_offset,
            "uptime_ms": r.uptime_ms,
            "details": json.loads(r.details_json or "{}"),
        }

    def close(self) -> None:
        self.pool.close()
        if self.routes is not None:
            self.routes.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
