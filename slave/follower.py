"""The follower role: replicate the master's log, serve reads from it, and
hand consumers back to the master.

Reads are capped at the offset the master has confirmed, so in sync mode a
consumer never sees a record that a failover could take back. Pulls are
never held: at its end a consumer should go back to the master, where new
records arrive first. Every leader-only request is refused before it gets
here (core/access.py); consumer offsets change only by replication.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from core.broker.core import BrokerCore
from core.broker.role import RoleStatus
from core.pull import PullArgs, PullReply
from core.redirect import Advice, RedirectReason, advise_slave, batch_limits
from core.replication import SlaveSession
from core.roles import Role
from core.route import MASTER_ID
from core.store import ReadResult, ReadStatus
from slave.replicator import Replicator

log = logging.getLogger(__name__)
RETRY_ELSEWHERE = "retry_elsewhere"  # the advice count of pulls this replica could not serve yet


class FollowerRole:
    def __init__(
        self, core: BrokerCore, master_address: str, member_address: str = "", master_node: int | None = None
    ) -> None:
        self.core = core
        self._master_address = master_address
        self._member_address = member_address  # the master's members' port: replication
        self._master_node = master_node  # the node the master must be (its certificate names it)
        b = core.config.broker
        self.session = SlaveSession(
            core.store,
            b.cluster,
            b.broker_name,
            core.node_id,
            core.config.replication.resolved_secret(),  # none is sent with TLS (start())
            core,
        )
        self.replicator: Replicator | None = None

    @property
    def is_leader(self) -> bool:
        return False

    @property
    def name(self) -> Role:
        return Role.SLAVE

    @property
    def master_address(self) -> str:
        return self._master_address

    @property
    def master_member_address(self) -> str:
        return self._member_address

    @property
    def master_node(self) -> int | None:
        return self._master_node

    def retention_floor(self) -> int | None:
        """What the master's retention keeps (from its heartbeats; until it
        says, everything): a slave deletes no more than its master would."""
        return self.session.master_floor

    def start(self) -> None:
        if not self._master_address:
            return  # told of no master yet (a controller will say)
        cfg = self.core.config
        if self.core.member_tls:  # the certificate proves this slave: no shared secret is sent
            self.session.secret = ""
        self.replicator = Replicator(
            self.session,
            self._member_address or self._master_address,
            cfg.server.max_message_bytes,
            self.core.notifier.notify_all,
            silence_s=max(2.0, 10 * cfg.replication.heartbeat_ms / 1000),
            channel_to=self.core.channel_to,
            master_node=self._master_node,
        )
        self.replicator.start()
        log.info(
            "%s/%d follows the master at %s", cfg.broker.broker_name, self.core.node_id, self._master_address
        )

    def retire(self) -> None:
        if self.replicator is not None:
            self.replicator.close()  # waits for the stream thread: no chunk lands after this

    def close(self) -> None:
        self.retire()

    def confirmed(self) -> int:
        return min(self.session.confirmed, self.core.store.commitlog.max_offset)

    def visible_end(self) -> int | None:
        return self.confirmed()

    def on_append(self) -> None:
        pass

    def pull(self, args: PullArgs, alive: Callable[[], bool]) -> PullReply:
        """Serve what this broker holds; an offset it does not have yet gets
        RETRY_ELSEWHERE naming the master, never an error or a skip."""
        core = self.core
        store = core.store
        lo, hi = store.queue_offsets(args.topic, args.queue_id)  # validates topic and queue first
        if args.queue_offset > store.next_queue_offset(args.topic, args.queue_id):
            core.count_advice(RETRY_ELSEWHERE)
            empty = ReadResult(ReadStatus.NO_NEW_MSG, b"", 0, args.queue_offset, lo, hi, 0)
            advice = Advice(MASTER_ID, RedirectReason.REPLICA_BEHIND, False, retry_elsewhere=True)
            return PullReply(empty, advice, False)
        p = core.config.pull
        master_max = max(self.session.master_max, store.commitlog.max_offset)
        # A slave serves cold reads with the hot (large) batch limits: absorbing
        # them is its job, and small cold batches made catch-up 4x slower here.
        count, nbytes = batch_limits(
            False,
            args.max_messages,
            args.max_bytes,
            (p.hot_max_messages, p.hot_max_bytes),
            (p.cold_max_messages, p.cold_max_bytes),
        )
        unheld = replace(args, max_messages=count, max_bytes=nbytes, max_wait_ms=0)
        result = core.serve(unheld, alive).result
        after = store.physical_offset_of(args.topic, args.queue_id, result.next_queue_offset)
        at_end = result.status is ReadStatus.NO_NEW_MSG or after is None
        remaining = master_max - after if after is not None else 0
        advice = advise_slave(remaining, core.budget.bytes(), p.return_ratio, at_end)
        core.count_advice(advice.reason)
        return PullReply(result, advice, False)

    def replication_gauges(self) -> tuple[dict[int, int], int]:
        return {}, 0

    def status_details(self) -> RoleStatus:
        r = self.replicator
        master_max = self.session.master_max
        return RoleStatus(
            replication={
                "master": self._master_address,
                "connected": r is not None and r.connected.is_set(),
                "confirmed": self.confirmed(),
                "master_max": master_max,
                "lag_bytes": max(0, master_max - self.core.store.commitlog.max_offset),
                "last_error": r.last_error if r is not None else "",
            }
        )
