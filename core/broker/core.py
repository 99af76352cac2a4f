"""The broker core both roles share: store, topics, consumer offsets and
groups, pull serving, metrics, status, registration, and the role object.

Plain Python; the gRPC adapters (`core/broker/service.py`,
`master/replication_service.py`) call it. Which requests a follower refuses
is decided in one place, `core/access.py`; `leader()` hands out the leader's
operations and refuses the same way when this broker follows.

Role changes (`promote`, `demote`, `follow`) swap the role object under one
lock; `core/broker/failover.py` decides when, from the controller's
directives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from core.admin.groups import LagSeries, committed_lags
from core.admin.reads import ReadLog
from core.admin.topics import forget_deleted
from core.broker.role import BrokerRole, LeaderOps, RoleFactory
from core.broker_config import BrokerConfig
from core.clock import now_ms
from core.consumer_groups import ConsumerGroups
from core.epochs import EpochFile, History
from core.errors import NotMasterError, UnknownTopicError
from core.longpoll import ArrivalNotifier
from core.metrics import BrokerMetrics
from core.offsets import ConsumerOffsets
from core.pagecache import MemoryBudget
from core.pb.tailrace.v1 import nameserver_pb2 as ns_pb
from core.pop import snapshot as pop_snapshot
from core.pop.state import PopTable
from core.pull import PullArgs, PullLimits, PullReply, Served, check_pull, serve_pull
from core.record import validate_topic
from core.redirect import RedirectReason
from core.roles import Role
from core.route import MASTER_ID
from core.security.serving import ChannelFactory, plaintext_channel
from core.store import MessageStore
from core.store.retention import disk_used_ratio
from core.timer import TIMER_GROUP, TIMER_TOPIC
from core.transactions import TXN_GROUP, TXN_TOPIC

log = logging.getLogger(__name__)
LOG_KEY = ("", -1)  # notifier key: "the log grew" (replication streams wait on it)


class BrokerCore:
    def __init__(
        self,
        config: BrokerConfig,
        store: MessageStore,
        offsets: ConsumerOffsets,
        epochs: EpochFile,
        roles: RoleFactory,
    ) -> None:
        b = config.broker
        self.config = config
        self.store = store
        self.offsets = offsets
        self.epochs = epochs
        self.epoch = epochs.last_epoch  # the newest epoch in this log (0: no controller)
        self.elected_epoch = self.epoch  # the newest epoch the controller announced
        self.failover = bool(b.controller)
        self.node_id = b.broker_id
        self.address = ""  # where clients reach it
        self.member_address = ""  # where members reach it (replication); "": `address`
        self.channel_to: ChannelFactory = plaintext_channel  # to other members (TLS: BrokerNode sets it)
        self.member_tls = False  # members prove themselves by certificate (no shared secret is sent)
        # whether the caller of a send may create its unknown topic (accounts: BrokerNode sets it)
        self.may_create_topic: Callable[[str], bool] = lambda topic: True
        self.closing = False
        self.started = time.monotonic()
        self.notifier = ArrivalNotifier()
        self.groups = ConsumerGroups(config.quotas.max_groups, config.quotas.max_members_per_group)
        store.retention_floor = self.retention_floor
        self.metrics = BrokerMetrics(self.metrics_snapshot)
        self.budget = MemoryBudget(
            config.pull.hot_ratio, config.pull.budget_bytes, config.pull.budget_refresh_ms
        )
        self.advice_counts: Counter[str] = Counter()  # pull advice given, by reason
        self.reads = ReadLog()  # each queue's last pull and its advice, for the admin commands
        self.lag_series = LagSeries()  # which groups' lag the metrics export (bounded)
        self.limits = PullLimits(config.pull.max_wait_ms, config.pull.max_messages, config.pull.max_bytes)
        self._hold_slots = threading.BoundedSemaphore(
            config.pull.max_held_pulls or config.server.max_workers // 2
        )
        self.pulls_not_held = 0
        self.promotions = 0
        self.on_role_change: Callable[[], None] = lambda: None
        # the controller link's view for Status (the controller followed, its last error)
        self.controller_view: Callable[[], dict[str, str]] = dict
        # told of every topic defined or grown, however (created, auto-created,
        # replicated, made for sent-back messages); runs under the store's
        # write lock, so it only wakes something (deploy/broker_node.py)
        self.on_topics_change: Callable[[], None] = lambda: None
        self._roles = roles
        self._role_lock = threading.RLock()
        q = config.quotas
        # pop state (issue 18): applied from `pop` records wherever they are appended;
        # at open, the snapshot and the log after it (core/pop/snapshot.py), not
        # only what recovery scanned
        self.pops = PopTable(q.max_pop_inflight_per_queue, q.max_pop_inflight_per_group)
        self._pops_loaded = False
        store.add_system_handler("offset", offsets.apply)
        store.add_system_handler("pop", self._apply_pop)
        self.pop_load = pop_snapshot.load(self.pops, store, b.data_dir)  # where it walked from, errors
        self._pops_loaded = True
        # written on every checkpoint, popped or not: a start after a crash walks
        # only the log since the last one (core/pop/snapshot.py)
        store.checkpoint_listeners.append(lambda: pop_snapshot.save(self.pops, store, b.data_dir))
        store.add_system_handler("epoch", self._apply_epoch)
        store.add_system_handler("topic", lambda p: forget_deleted(self, p))  # (core/admin/topics.py)
        store.add_append_listener(self._appended)
        store.add_topic_listener(lambda _topic: self.on_topics_change())
        # without a controller the config fixes the role; with one, every
        # broker starts following (a master it was told of, or nobody) until
        # the controller says otherwise
        self.role: BrokerRole
        if not self.failover and b.role is Role.MASTER:
            self.role = roles.leader(self, self.epoch)
        else:
            # without a controller the master is node 0; with one, the directive says
            self.role = roles.follower(self, b.master, b.master_member, None if self.failover else 0)

    # ---- identity ------------------------------------------------------------------

    @property
    def broker_name(self) -> str:
        return self.config.broker.broker_name

    @property
    def broker_id(self) -> int:
        """The id routes show: the configured id; with a controller, 0 while
        leading and the node id otherwise."""
        if not self.failover:
            return self.config.broker.broker_id
        return MASTER_ID if self.role.is_leader else self.node_id

    def start(self) -> None:
        self.role.start()

    def close(self) -> None:
        """Release every held pull and replication stream, and retire the role (shutdown)."""
        with self._role_lock:
            first = not self.closing
            self.closing = True  # no role change after this
            role = self.role
            role.retire()
        role.close()
        self.notifier.close()
        if first:  # the role's appends are over: the state is the log's to its end
            pop_snapshot.save(self.pops, self.store, self.config.broker.data_dir)

    # ---- the role ------------------------------------------------------------------

    def not_master(self, what: str = "writes") -> NotMasterError:
        """The refusal a follower gives every leader-only request (core/access.py)."""
        addr = self.role.master_address
        where = f"the master at {addr}" if addr else "the master (not known yet)"
        return NotMasterError(f"{what} go to {where}; this broker is a {self.role.name}", addr)

    def leader(self) -> LeaderOps:
        """The leader role, or NotMasterError naming the master when following."""
        role = self.role
        if not role.is_leader:
            raise self.not_master()
        return cast(LeaderOps, role)

    def promote(self, epoch: int) -> None:
        """Lead `epoch`: stop following, mark the epoch's start in the log (an
        `epoch` system record at its end: the log holds whole records only),
        then take writes."""
        with self._role_lock:
            if self.closing:
                return
            old = self.role
            old.retire()  # a follower's stream has stopped: nothing more arrives
            end = self.store.commitlog.max_offset
            leader = self._roles.leader(self, epoch)  # made first: its required set starts below the record
            self.store.append_system("epoch", {"epoch": epoch, "start": end})
            self.store.flush()
            self.epoch = max(self.epoch, epoch)
            self.role = leader
            leader.start()
            self.promotions += 1
        old.close()
        log.warning("promoted to master of %s in epoch %d at offset %d", self.broker_name, epoch, end)

    def follow(self, master_address: str, member_address: str = "", master_node: int | None = None) -> None:
        """Follow the master at `master_address`, replicating from its members'
        port `member_address` ("": the same address) (a demotion, when leading)."""
        with self._role_lock:
            if self.closing:
                return
            old = self.role
            was_leader = old.is_leader
            old.retire()  # a leader is fenced, its writes under way done, before anything else
            self.notifier.notify([LOG_KEY])
            self.role = self._roles.follower(self, master_address, member_address, master_node)
            self.role.start()
        old.close()  # its remaining threads, outside the lock
        if was_leader:
            log.warning("epoch %d is led by another broker: now a slave", self.elected_epoch)

    # ---- epochs (the follower session's EpochSource) ---------------------------------

    def _apply_epoch(self, payload: dict[str, Any]) -> None:
        self.epochs.apply(payload)
        self.epoch = max(self.epoch, self.epochs.last_epoch)

    def epoch_history(self) -> History:
        """(epoch, start offset) of every master epoch in this log (none without a controller)."""
        return self.epochs.history

    def newest_epoch(self) -> int:
        return max(self.elected_epoch, self.epoch)

    def truncating(self, offset: int) -> None:
        tail = self.store.system_payloads("offset", offset)  # only the tail is walked
        changed = self.offsets.roll_back(tail, lambda: self.store.system_payloads("offset", 0, offset))
        if changed:
            log.warning("cutting the log at %d undoes the commits of %d queue(s)", offset, changed)
        self._rebuild_pops(offset)
        self.epochs.truncate_from(offset)
        self.epoch = self.epochs.last_epoch

    def _rebuild_pops(self, offset: int) -> None:
        """Pop records carry no `prev`: the queues the cut tail touched are
        rebuilt from the retained log before the cut (rare: a divergent tail)."""
        keys = set()
        for p in self.store.system_payloads("pop", offset):
            try:
                keys.add((str(p["group"]), str(p["topic"]), int(p["queue"])))
            except (KeyError, TypeError, ValueError):
                continue
        pop_snapshot.discard(self.config.broker.data_dir)  # it may describe the tail
        if keys:
            self.pops.rebuild(keys, self.store.system_payloads("pop", 0, offset))
            log.warning("cutting the log at %d rebuilds the pop state of %d queue(s)", offset, len(keys))

    def _apply_pop(self, payload: dict[str, Any]) -> None:
        if self._pops_loaded:  # (recovered records are in the replay `load` does)
            self.pops.on_record(payload)

    def adopt(self, history: list[tuple[int, int]]) -> None:
        self.epochs.replace(history)
        self.epoch = self.epochs.last_epoch

    # ---- pulls --------------------------------------------------------------------

    def pull(self, args: PullArgs, alive: Callable[[], bool] = lambda: True) -> PullReply:
        check_pull(args)
        reply = self.role.pull(args, alive)
        self.reads.note((args.group, args.topic, args.queue_id), reply.advice, int(time.time() * 1000))
        return reply

    def visible_end(self) -> int | None:
        """What pulls may read up to, as the role *now* says: a pull held
        across a demotion is capped by the follower's confirmed offset."""
        return self.role.visible_end()

    def serve(self, args: PullArgs, alive: Callable[[], bool]) -> Served:
        """At most `max_held_pulls` pulls are held waiting at once; the rest are
        answered at once (not held: the client backs off briefly)."""
        visible_end = self.visible_end
        if args.max_wait_ms <= 0:
            return serve_pull(self.store, self.notifier, self.limits, args, alive, visible_end)
        if not self._hold_slots.acquire(blocking=False):
            self.pulls_not_held += 1
            unheld = replace(args, max_wait_ms=0)
            return serve_pull(self.store, self.notifier, self.limits, unheld, alive, visible_end)
        try:
            return serve_pull(self.store, self.notifier, self.limits, args, alive, visible_end)
        finally:
            self._hold_slots.release()

    def try_hold(self) -> bool:
        """Take one of the `max_held_pulls` slots for a held pop (release it
        with `release_hold`); False: answer at once instead."""
        return self._hold_slots.acquire(blocking=False)

    def release_hold(self) -> None:
        self._hold_slots.release()

    def held_pulls(self) -> int:
        """Pulls waiting now (replication streams also wait on the notifier: not counted)."""
        return self.notifier.waiting() - self.notifier.waiting(LOG_KEY)

    def wake_pulls(self, topic: str, queue_id: int) -> None:
        """Re-check the held pulls of a queue (one of their callers went away)."""
        self.notifier.notify([(topic, queue_id)])

    def count_advice(self, reason: str) -> None:
        if reason:
            self.advice_counts[reason] += 1

    def count_pull(self, topic: str, status: str, count: int, nbytes: int, reason: RedirectReason) -> None:
        m = self.metrics
        m.pulls.labels(status).inc()
        if count:
            m.messages_out.labels(topic).inc(count)
            m.bytes_out.labels(topic).inc(nbytes)
        if reason:
            m.redirects.labels(reason.value).inc()

    def _appended(self, keys: Any) -> None:
        self.notifier.notify(keys)
        self.notifier.notify([LOG_KEY])
        self.role.on_append()

    # ---- topics, offsets, groups (the reads; writes go through leader()) -------------

    def list_topics(self) -> list[tuple[str, int]]:
        topics = self.store.topics
        return [(n, topics.queue_count(n) or 0) for n in topics.names()]

    def queue_offsets(self, topic: str) -> list[tuple[int, int, int]]:
        count = self.store.topics.queue_count(validate_topic(topic).decode())
        if count is None:
            raise UnknownTopicError(f"topic {topic!r} does not exist")
        return [(q, *self.store.queue_offsets(topic, q)) for q in range(count)]

    def query_offset(self, group: str, topic: str, queue_id: int) -> int | None:
        self.store.queue_offsets(topic, queue_id)  # validates topic and queue
        return self.offsets.query(group, topic, queue_id)

    def heartbeat(self, group: str, topic: str, client_id: str, heartbeat_ms: int) -> list[str]:
        return self.groups.heartbeat(group, topic, client_id, heartbeat_ms, now_ms())

    def unregister(self, group: str, topic: str, client_id: str) -> list[str]:
        return self.groups.unregister(group, topic, client_id, now_ms())

    # ---- registration, metrics, status ------------------------------------------------

    def registration(self) -> ns_pb.BrokerRegistration:
        """What this broker tells the nameservers about itself."""
        b = self.config.broker
        return ns_pb.BrokerRegistration(
            cluster=b.cluster,
            broker_name=b.broker_name,
            broker_id=self.broker_id,
            node_id=self.node_id,
            address=self.address,
            member_address=self.member_address,
            epoch=self.epoch,
            role=str(Role.MASTER if self.role.is_leader else Role.SLAVE),
            max_offset=self.store.commitlog.max_offset,
            heartbeat_ms=b.heartbeat_ms,
            auto_create_topics=b.auto_create_topics,
            topics=[
                ns_pb.TopicConfig(name=n, read_queues=q, write_queues=q, perm="rw")
                for n, q in self.list_topics()
            ],
        )

    def metrics_snapshot(self) -> dict[str, Any]:
        clog = self.store.commitlog
        lag, in_sync = self.role.replication_gauges()
        tails, kept = self.store.quarantined()
        return {
            "min_offset": clog.min_offset,
            "max_offset": clog.max_offset,
            "flushed_offset": clog.flushed,
            "confirmed_offset": self.role.confirmed(),
            "budget_bytes": self.budget.bytes(),
            "consume_queues": self.store.cqs.count(),
            "consume_queues_mapped": self.store.cqs.mapped_count(),
            "queue_max": {key: cq.max_offset for key, cq in list(self.store.cqs.queues.items())},
            "held_pulls": self.held_pulls(),
            "replica_lag": lag,
            "in_sync": in_sync,
            "system_records_skipped": self.store.system_records_skipped,
            "quarantined_tails": tails,
            "quarantined_bytes": kept,
            "quotas": self.quota_usage(),
            "info": (self.broker_name, str(self.broker_id), str(self.role.name)),
            "disk_used_ratio": disk_used_ratio(self.store.data_dir),
            "disk_max_used_ratio": self.config.store.disk_max_used_ratio,
            # a slave's offsets are its master's, replicated: the master alone reports lag
            "group_lag": committed_lags(self, now_ms()) if self.role.is_leader else ({}, 0),
        }

    def retention_floor(self) -> int | None:
        """The lowest CommitLog offset a consumer group with live members has
        not read yet: from its committed offsets, on every queue of its topic
        (a queue it never committed holds nothing back; a commit below the
        queue's oldest message counts from that message); and the timer's.
        Retention keeps the segment holding it (core/store/store.py)."""
        role = self.role
        if not role.is_leader:  # a slave keeps what its master keeps (consumers heartbeat to masters)
            return getattr(role, "retention_floor", lambda: 0)()
        floor: int | None = None
        store = self.store
        # the timer's own progress (core/timer.py) holds it too: pending messages and the last
        # snapshot; and the oldest open transaction (core/transactions.py)
        for group, topic in [*self.groups.live(now_ms()), (TIMER_GROUP, TIMER_TOPIC), (TXN_GROUP, TXN_TOPIC)]:
            for q in range(store.topics.queue_count(topic) or 0):
                committed = self.offsets.query(group, topic, q)
                if committed is None:  # never committed: it holds nothing back (it may never commit)
                    continue
                phys = store.physical_offset_of(topic, q, max(committed, store.queue_offsets(topic, q)[0]))
                if phys is not None and (floor is None or phys < floor):
                    floor = phys
        return floor

    def quota_usage(self) -> dict[str, tuple[int | None, int]]:
        """quota name -> (used, limit) for metrics and status; used is None
        for a per-request limit (sizes)."""
        q, st = self.config.quotas, self.config.store
        locks = getattr(self.role, "queue_locks", None)  # the leader's
        return {
            "topics": (len(self.store.topics.names()), q.max_topics),
            "groups": (len(self.groups), q.max_groups),
            "queue_locks": (len(locks) if locks is not None else 0, q.max_queue_locks),
            "members_per_group": (None, q.max_members_per_group),
            "pop_inflight_per_group": (self.pops.busiest_group(), q.max_pop_inflight_per_group),
            "pop_inflight_per_queue": (None, q.max_pop_inflight_per_queue),
            "queues_per_topic": (None, st.max_queues_per_topic),
            "message_bytes": (None, st.max_message_bytes),
            "batch_bytes": (None, st.max_batch_bytes),
            "properties": (None, st.max_properties),
            "properties_bytes": (None, st.max_properties_bytes),
        }

    def status(self) -> dict[str, Any]:
        clog = self.store.commitlog
        role = self.role
        mine = role.status_details()
        details: dict[str, Any] = {
            "topics": len(self.store.topics.names()),
            "waiting_pulls": self.held_pulls(),
            "pulls_not_held": self.pulls_not_held,
            "redirect": {
                "budget_bytes": self.budget.bytes(),
                "queues_sent_away": mine.queues_sent_away,
                "reasons": dict(self.advice_counts),
            },
            "segments": len(clog.segments()),
            "preallocation_misses": clog.allocator.misses,
            "segments_warming": clog.allocator.warming(),
            "recovery": self.store.recovery.to_dict(),
            # what a message may be, and how often a popped one is delivered before it
            # goes to %DLQ%<group>: `tailrace proxy` tells RocketMQ clients the real maximums
            "limits": {
                "max_message_bytes": self.config.store.max_message_bytes,
                "max_properties": self.config.store.max_properties,
                "max_properties_bytes": self.config.store.max_properties_bytes,
                "pop_max_attempts": self.config.broker.pop_max_attempts,
            },
        }
        details["replication"] = mine.replication
        popper = getattr(
            role, "popper", None
        )  # the leader's: messages popped, by where their bytes were read
        if popper is not None:
            details["popped"] = popper.counts()
        txn = getattr(role, "transactions", None)  # the leader's (master/transactions.py)
        if txn is not None:
            details["transactions"] = txn.status()
        if self.failover:
            details["failover"] = {
                "node_id": self.node_id,
                "epoch": self.epoch,
                "leading": role.is_leader,
                "lease_left_ms": mine.lease_left_ms,
                "required": mine.required,
                "history": [list(x) for x in self.epochs.history],
                "promotions": self.promotions,
                **self.controller_view(),
            }
        return {
            "broker_name": self.broker_name,
            "broker_id": self.broker_id,
            "role": str(role.name),
            "address": self.address,
            "min_offset": clog.min_offset,
            "max_offset": clog.max_offset,
            "flushed_offset": clog.flushed,
            "uptime_ms": int((time.monotonic() - self.started) * 1000),
            "details": details,
        }
