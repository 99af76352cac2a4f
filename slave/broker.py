"""The slave role: serves reads of what it replicated, refuses writes.

It shares the master's read side (pulls, topics, queue offsets, status,
registration) by extending `MasterBroker`, and overrides every write to
answer `NOT_MASTER` with the master's address. Reads are capped at the
offset the master has confirmed, so in sync mode a consumer never sees a
record that a failover could take back. (The shared read side belongs in
core/; it lives in the master class until promotion, issue 8, needs the
split anyway.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.broker_config import BrokerConfig
from core.errors import NotMasterError
from core.offsets import ConsumerOffsets
from core.record import Message
from core.replication import SlaveSession
from core.store import MessageStore
from master.broker import MasterBroker, SendOutcome
from master.replication_service import cluster_secret
from slave.replicator import Replicator

NOT_MASTER = "NOT_MASTER"


class SlaveBroker(MasterBroker):
    role = "slave"

    def __init__(self, config: BrokerConfig, store: MessageStore, offsets: ConsumerOffsets) -> None:
        super().__init__(config, store, offsets)
        b = config.broker
        self.master_address = b.master
        self.session = SlaveSession(
            store, b.cluster, b.broker_name, b.broker_id, cluster_secret(config.replication.secret)
        )
        self.replicator = Replicator(
            self.session,
            b.master,
            config.server.max_message_bytes,
            self.notifier.notify_all,
            silence_s=max(2.0, 10 * config.replication.heartbeat_ms / 1000),
        )

    def start(self) -> None:
        self.replicator.start()

    def send(self, topic: str, queue_id: int, messages: Sequence[Message]) -> SendOutcome:
        return SendOutcome(
            NOT_MASTER, topic, queue_id, [], f"writes go to the master at {self.master_address}",
            self.master_address,
        )  # fmt: skip

    def create_topic(self, topic: str, queues: int) -> tuple[bool, int]:
        raise NotMasterError(f"topics are created on the master at {self.master_address}")

    def commit_offset(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        raise NotMasterError(f"offsets are committed on the master at {self.master_address}")

    def confirmed(self) -> int:
        return min(self.session.confirmed, self.store.commitlog.max_offset)

    def _visible_end(self) -> int | None:
        return self.confirmed()

    def close(self) -> None:
        self.replicator.close()
        super().close()

    def status(self) -> dict[str, Any]:
        s = super().status()
        details = s["details"]
        assert isinstance(details, dict)
        details["replication"] = {
            "master": self.master_address,
            "connected": self.replicator.connected.is_set(),
            "confirmed": self.confirmed(),
            "master_max": self.replicator.master_max,
            "lag_bytes": max(0, self.replicator.master_max - self.store.commitlog.max_offset),
            "last_error": self.replicator.last_error,
        }
        return s
