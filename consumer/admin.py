"""Admin: topics, queue offsets and status of a broker."""

from __future__ import annotations

import json
from typing import Any

from consumer.connection import BrokerConnection
from core.pb.tailrace.v1 import broker_pb2 as pb


class Admin:
    def __init__(self, broker: str, timeout_s: float = 10.0) -> None:
        self.conn = BrokerConnection(broker, timeout_s)

    def create_topic(self, topic: str, queues: int) -> bool:
        r = self.conn.call(
            self.conn.stub.CreateTopic, pb.CreateTopicRequest(topic=topic, queues=queues)
        )
        return bool(r.created)

    def list_topics(self) -> dict[str, int]:
        r = self.conn.call(self.conn.stub.ListTopics, pb.ListTopicsRequest())
        return {t.name: t.queues for t in r.topics}

    def queue_offsets(self, topic: str) -> dict[int, tuple[int, int]]:
        r = self.conn.call(self.conn.stub.GetQueueOffsets, pb.GetQueueOffsetsRequest(topic=topic))
        return {q.queue_id: (q.min_offset, q.max_offset) for q in r.queues}

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
        self.conn.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
