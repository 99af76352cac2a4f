"""Admin: topics, queue offsets and status, of one broker or a whole cluster."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from consumer.connection import BrokerConnection, ConnectionPool
from consumer.routing import NameserverRoutes
from core.errors import BrokerUnavailableError
from core.pb.tailrace.v1 import broker_pb2 as pb


class Admin:
    def __init__(
        self,
        broker: str | None = None,
        namesrv: Sequence[str] | str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if (broker is None) == (namesrv is None):
            raise ValueError("give either broker= or namesrv=")
        if isinstance(namesrv, str):
            namesrv = [a for a in namesrv.split(",") if a]
        self.pool = ConnectionPool(timeout_s)
        self.broker = broker
        self.routes = NameserverRoutes(list(namesrv)) if namesrv is not None else None

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

    def create_topic(self, topic: str, queues: int, cluster: str | None = None) -> bool:
        """Create the topic on the broker, or on every group's master of the
        cluster (all clusters when none is named); True if any created it."""
        targets = [self.conn.address] if self.routes is None else list(self.masters(cluster).values())
        if not targets:
            raise BrokerUnavailableError("no live master registered with the nameservers")
        created = False
        for address in targets:
            conn = self.pool.get(address)
            r = conn.call(conn.stub.CreateTopic, pb.CreateTopicRequest(topic=topic, queues=queues))
            created = created or bool(r.created)
        return created

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
