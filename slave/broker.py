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

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from core.broker_config import BrokerConfig
from core.errors import NotMasterError
from core.offsets import ConsumerOffsets
from core.pull import PullArgs
from core.record import Message
from core.redirect import REPLICA_BEHIND, Advice, advise_slave, batch_limits
from core.replication import SlaveSession
from core.route import MASTER_ID
from core.store import MessageStore, ReadResult, ReadStatus
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

    def pull(self, args: PullArgs, alive: Callable[[], bool] = lambda: True) -> tuple[ReadResult, Advice]:
        """Serve what this slave holds (never held: at its end the consumer
        goes back to the master); an offset it does not have yet gets
        RETRY_ELSEWHERE naming the master, never an error or a skip."""
        have = self.store.next_queue_offset(args.topic, args.queue_id)
        if args.queue_offset > have:
            self.redirect_counts["retry_elsewhere"] += 1
            lo, hi = self.store.queue_offsets(args.topic, args.queue_id)
            empty = ReadResult(ReadStatus.NO_NEW_MSG, b"", 0, args.queue_offset, lo, hi, 0)
            return empty, Advice(MASTER_ID, REPLICA_BEHIND, False, retry_elsewhere=True)
        p = self.config.pull
        self.store.physical_offset_of(args.topic, args.queue_id, args.queue_offset)
        master_max = max(self.replicator.master_max, self.store.commitlog.max_offset)
        # A slave serves cold reads with the hot (large) batch limits: absorbing
        # them is its job, and small cold batches made catch-up 4x slower here.
        count, nbytes = batch_limits(
            False,
            args.max_messages,
            args.max_bytes,
            (p.hot_max_messages, p.hot_max_bytes),
            (p.cold_max_messages, p.cold_max_bytes),
        )
        result = self._serve(replace(args, max_messages=count, max_bytes=nbytes, max_wait_ms=0), alive)
        after = self.store.physical_offset_of(args.topic, args.queue_id, result.next_queue_offset)
        at_end = result.status is ReadStatus.NO_NEW_MSG or after is None
        remaining = master_max - after if after is not None else 0
        advice = advise_slave(remaining, self.budget.bytes(), p.return_ratio, at_end)
        if advice.reason:
            self.redirect_counts[advice.reason] += 1
        return result, advice

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
