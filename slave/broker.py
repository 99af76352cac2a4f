"""A broker of a replicated group: follows a master (slave), or leads.

Without a controller the role is fixed by the config. With one
(`broker.controller`), the controller decides, and the role changes in place:

- **promotion**: stop replicating, append an `epoch` system record at the end
  of the log (the log holds whole records only: replicated chunks are
  validated before they are written, recovery cuts a torn tail), and lead;
  writes need the lease the controller renews with every heartbeat.
- **demotion**: a broker that learns of a newer epoch led by another stops
  taking writes and follows it; the replication handshake cuts its divergent
  tail (core/epochs.py), undoing consumer-offset commits in that tail first.

While following, every write answers `NOT_MASTER` with the master's address,
and reads are capped at the offset the master has confirmed, so in sync mode
a consumer never sees a record that a failover could take back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from core.broker_config import BrokerConfig
from core.epochs import EpochFile, History
from core.errors import NotMasterError
from core.offsets import ConsumerOffsets
from core.pb.tailrace.v1 import nameserver_pb2 as ns_pb
from core.pull import PullArgs
from core.record import Message
from core.redirect import REPLICA_BEHIND, Advice, advise_slave, batch_limits
from core.replication import SlaveSession
from core.route import MASTER_ID
from core.store import MessageStore, ReadResult, ReadStatus
from master.broker import LOG_KEY, NOT_MASTER, MasterBroker, SendOutcome, _now_ms
from master.lease import Lease
from master.replication_service import cluster_secret
from nameserver.controller import INITIAL_MASTER, MASTER, NO_MASTER, Directive
from slave.replicator import Replicator

log = logging.getLogger(__name__)


class ReplicaBroker(MasterBroker):
    def __init__(
        self, config: BrokerConfig, store: MessageStore, offsets: ConsumerOffsets, epochs: EpochFile
    ) -> None:
        super().__init__(config, store, offsets)
        b = config.broker
        self.epochs = epochs
        self.epoch = epochs.last_epoch
        store.add_system_handler("epoch", self._apply_epoch)
        self.failover = bool(b.controller)
        self.node_id = b.broker_id
        self.leading = not self.failover and b.role == "master"
        self.role = "master" if self.leading else "slave"
        self.directed = False  # heard from the controller at least once
        self.master_address = b.master
        self.lease = Lease() if self.failover else None
        self.promotions = 0
        self.on_role_change: Callable[[], None] = lambda: None
        self._role_lock = threading.RLock()
        self._tail_keys: set[tuple[str, str, int]] = set()
        self.session = SlaveSession(
            store, b.cluster, b.broker_name, b.broker_id, cluster_secret(config.replication.secret), self
        )
        self.replicator: Replicator | None = None

    @property
    def broker_id(self) -> int:
        """The id routes show: 0 while leading, the node id otherwise."""
        if not self.failover:
            return self.config.broker.broker_id
        return MASTER_ID if self.leading else self.node_id

    def start(self) -> None:
        if not self.leading and self.master_address:
            self._follow(self.master_address)

    # ---- epochs (the slave session's EpochSource) ----------------------------------------

    def _apply_epoch(self, payload: dict[str, Any]) -> None:
        self.epochs.apply(payload)
        self.epoch = max(self.epoch, self.epochs.last_epoch)

    def epoch_history(self) -> History:
        return self.epochs.history

    def truncating(self, offset: int) -> None:
        tail = self.store.system_payloads("offset", offset)  # only the tail is walked
        changed = self.offsets.roll_back(tail, lambda: self.store.system_payloads("offset", 0, offset))
        if changed:
            log.warning("cutting the log at %d undoes the commits of %d queue(s)", offset, changed)
        self.epochs.truncate_from(offset)
        self.epoch = self.epochs.last_epoch

    def adopt(self, history: list[tuple[int, int]]) -> None:
        self.epochs.replace(history)
        self.epoch = self.epochs.last_epoch

    # ---- the controller -------------------------------------------------------------------

    def controller_heartbeat(self) -> tuple[ns_pb.ControllerHeartbeatRequest, int]:
        """What this broker tells the controller, and the in-sync proposal's generation."""
        b = self.config.broker
        with self._role_lock:
            gen, proposal = 0, frozenset[int]()
            if self.leading:
                role = MASTER
                gen, proposal = self.replicas.propose(self.store.commitlog.max_offset, _now_ms())
            elif b.role == "master" and not self.directed and not self.epochs.history:
                role = INITIAL_MASTER
            else:
                role = "slave"
            req = ns_pb.ControllerHeartbeatRequest(
                cluster=b.cluster,
                group=b.broker_name,
                node_id=self.node_id,
                address=self.address,
                epoch=self.epoch,
                role=role,
                max_offset=self.store.commitlog.max_offset,
                in_sync=sorted(proposal),
                priority=b.election_priority,
            )
        return req, gen

    def on_directive(
        self, d: Directive, sent_at: float, request: ns_pb.ControllerHeartbeatRequest, gen: int
    ) -> None:
        if d.master_id == NO_MASTER:
            return
        changed = False
        with self._role_lock:
            self.directed = True
            self.session.min_epoch = max(self.session.min_epoch, d.epoch)
            if d.master_id == self.node_id:
                if self.epoch < d.epoch:
                    self._promote(d.epoch)
                    changed = True
                if (
                    self.leading
                    and self.epoch == d.epoch
                    and request.role == MASTER
                    and request.epoch == d.epoch
                ):
                    assert self.lease is not None
                    self.lease.grant(sent_at, d.lease_ms)
                    self.replicas.confirm(gen, d.in_sync)
            else:
                if self.leading:
                    self._demote(d.epoch)
                    changed = True
                if d.master_address and (
                    self.replicator is None or self.replicator.master != d.master_address
                ):
                    self.master_address = d.master_address
                    self._follow(d.master_address)
        if changed:
            self.on_role_change()

    def _promote(self, epoch: int) -> None:
        if self.replicator is not None:
            self.replicator.close()
            self.replicator = None
        end = self.store.commitlog.max_offset
        self.store.append_system("epoch", {"epoch": epoch, "start": end})
        self.store.flush()
        self.epoch = epoch
        self.replicas.reset_required(end)
        self.leading, self.role = True, "master"
        self.master_address = self.address
        self.promotions += 1
        log.warning("promoted to master of %s in epoch %d at offset %d", self.broker_name, epoch, end)

    def _demote(self, epoch: int) -> None:
        self.leading, self.role = False, "slave"
        if self.lease is not None:
            self.lease.revoke()
        self.session.confirmed = 0  # nothing is confirmed until the new master says so
        self.notifier.notify([LOG_KEY])  # replication streams served from here end
        log.warning("epoch %d is led by another broker: now a slave", epoch)

    def _follow(self, address: str) -> None:
        if self.replicator is not None:
            self.replicator.close()
        b = self.config.broker
        self.replicator = Replicator(
            self.session,
            address,
            self.config.server.max_message_bytes,
            self.notifier.notify_all,
            silence_s=max(2.0, 10 * self.config.replication.heartbeat_ms / 1000),
        )
        self.replicator.start()
        log.info("%s/%d follows the master at %s", b.broker_name, self.node_id, address)

    # ---- writes ---------------------------------------------------------------------------

    def send(
        self, topic: str, queue_id: int, messages: Sequence[Message], internal: bool = False
    ) -> SendOutcome:
        if self.leading:
            return super().send(topic, queue_id, messages, internal)
        return SendOutcome(
            NOT_MASTER, topic, queue_id, [], f"writes go to the master at {self.master_address}",
            self.master_address,
        )  # fmt: skip

    def create_topic(self, topic: str, queues: int) -> tuple[bool, int]:
        if self.leading:
            return super().create_topic(topic, queues)
        raise NotMasterError(f"topics are created on the master at {self.master_address}")

    def send_back(self, group: str, topic: str, message: Message, max_reconsume: int) -> tuple[str, int, int]:
        if self.leading:
            return super().send_back(group, topic, message, max_reconsume)
        raise NotMasterError(f"failed messages go back to the master at {self.master_address}")

    def lock_queues(
        self, group: str, topic: str, client_id: str, queue_ids: list[int], lease_ms: int
    ) -> list[int]:
        if self.leading:
            return super().lock_queues(group, topic, client_id, queue_ids, lease_ms)
        raise NotMasterError(f"queue locks are held on the master at {self.master_address}")

    def commit_offset(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        if self.leading:
            return super().commit_offset(group, topic, queue_id, offset)
        raise NotMasterError(f"offsets are committed on the master at {self.master_address}")

    # ---- reads ----------------------------------------------------------------------------

    def pull(self, args: PullArgs, alive: Callable[[], bool] = lambda: True) -> tuple[ReadResult, Advice]:
        """As a slave: serve what this broker holds (never held: at its end the
        consumer goes back to the master); an offset it does not have yet gets
        RETRY_ELSEWHERE naming the master, never an error or a skip."""
        if self.leading:
            return super().pull(args, alive)
        have = self.store.next_queue_offset(args.topic, args.queue_id)
        if args.queue_offset > have:
            self.redirect_counts["retry_elsewhere"] += 1
            lo, hi = self.store.queue_offsets(args.topic, args.queue_id)
            empty = ReadResult(ReadStatus.NO_NEW_MSG, b"", 0, args.queue_offset, lo, hi, 0)
            return empty, Advice(MASTER_ID, REPLICA_BEHIND, False, retry_elsewhere=True)
        p = self.config.pull
        self.store.physical_offset_of(args.topic, args.queue_id, args.queue_offset)
        master_max = max(self.master_max(), self.store.commitlog.max_offset)
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

    def master_max(self) -> int:
        return self.replicator.master_max if self.replicator is not None else 0

    def confirmed(self) -> int:
        if self.leading:
            return super().confirmed()
        return min(self.session.confirmed, self.store.commitlog.max_offset)

    def _visible_end(self) -> int | None:
        if self.leading:
            return super()._visible_end()
        return self.confirmed()

    def registration(self) -> ns_pb.BrokerRegistration:
        reg = super().registration()
        reg.node_id = self.node_id
        return reg

    def close(self) -> None:
        if self.replicator is not None:
            self.replicator.close()
        super().close()

    def status(self) -> dict[str, Any]:
        s = super().status()
        details = s["details"]
        assert isinstance(details, dict)
        if self.failover:
            details["failover"] = {
                "node_id": self.node_id,
                "epoch": self.epoch,
                "leading": self.leading,
                "lease_left_ms": self.lease.left_ms() if self.lease is not None else 0,
                "required": sorted(self.replicas.required()),
                "history": [list(x) for x in self.epochs.history],
                "promotions": self.promotions,
            }
        if not self.leading:
            r = self.replicator
            details["replication"] = {
                "master": self.master_address,
                "connected": r is not None and r.connected.is_set(),
                "confirmed": self.confirmed(),
                "master_max": self.master_max(),
                "lag_bytes": max(0, self.master_max() - self.store.commitlog.max_offset),
                "last_error": r.last_error if r is not None else "",
            }
        return s
