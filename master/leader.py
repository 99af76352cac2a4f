"""The leader role: the write path, the replication source and its in-sync
set, the lease, redirect advice, the retry scheduler, the timer and queue locks.

One object per mastership: promotion makes a new one, demotion retires it
(`retire`: lease revoked, writes gated off, its replication streams end;
`close`: its scheduler thread stopped; the timer's stops first, in `retire`,
with every other write refused meanwhile). Every write enters the role's
`WriteGate` and checks the lease inside it, so once `retire` returns no write
of this mastership is under way and none can start: nothing it does lands in
the log of the follower the broker has become.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, cast

from core.broker.core import BrokerCore
from core.broker.role import RoleStatus, SendOutcome
from core.clock import now_ms
from core.errors import (
    DiskFullError,
    FlushTimeoutError,
    InvalidArgumentError,
    InvalidOffsetError,
    InvalidQueueError,
    InvalidTopicError,
    PermissionDeniedError,
    QuotaExceededError,
    RequestTimeoutError,
    UnknownTopicError,
    brief,
)
from core.expiring import ExpiringKeys
from core.pull import PullArgs, PullReply
from core.queue_locks import QueueLocks
from core.record import Message, validate_topic
from core.redirect import NO_ADVICE, Advice, SlaveView, advise_master, batch_limits, route_key
from core.replicas import AckLag, ReplicaSet
from core.retry import check_client_group, check_creatable, is_reserved, parse_delays
from core.roles import Directive, ReplicationMode, Role, SendStatus
from core.timer import TIMER_TOPIC
from core.transactions import TXN_TOPIC, check_client_properties, is_transactional
from master.fencing import enter, writing
from master.lease import Lease
from master.popper import Popper
from master.scheduler import Scheduler
from master.send_back import send_back
from master.timer import TIMER_QUEUES, Timer
from master.transactions import Transactions
from master.write_gate import WriteGate

log = logging.getLogger(__name__)
MAX_PULLED_QUEUES = 100_000  # (group, topic, queue)s with redirect state and a backlog series
MAX_BATCH = 65_536
RETIRE_WAIT_S = 10.0  # for writes under way to finish their append (a sync flush at worst)


class LeaderRole:
    def __init__(self, core: BrokerCore, epoch: int) -> None:
        self.core = core
        self.epoch = epoch
        self.retired = False
        cfg = core.config
        rep = cfg.replication
        self.replicas = ReplicaSet(rep.max_lag_bytes, rep.max_ack_age_ms, on_ack=self._on_replica_ack)
        self.ack_lag = AckLag()
        # with a controller, writes need a lease it renews; and a sync write
        # waits for every slave that may be elected (the required set)
        self.lease: Lease | None = Lease() if core.failover else None
        if core.failover:  # made before the epoch record is appended: it starts below it
            self.replicas.reset_required(core.store.commitlog.max_offset)
        self._gate = WriteGate()
        self.queue_locks = QueueLocks(cfg.quotas.max_queue_locks)
        self.retry_delays = parse_delays(cfg.broker.retry_delays)
        self.scheduler = Scheduler(self)
        self.popper = Popper(self)  # pop consumption and its revive pass (issue 18)
        self.timer = Timer(self)
        self.transactions = Transactions(self)  # half messages, EndTransaction, orphan checks
        self._rr = itertools.count()
        self._topic_lock = threading.Lock()
        # pulled (group, topic, queue)s: which were sent to a slave, and which
        # have a backlog series; forgotten when not pulled for quotas.idle_ttl_ms
        self._sent_away: set[tuple[str, str, int]] = set()
        self._pulled = ExpiringKeys(cfg.quotas.idle_ttl_ms, MAX_PULLED_QUEUES)
        self._pulled_lock = threading.Lock()

    # ---- the role ---------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return not self.retired

    @property
    def name(self) -> Role:
        return Role.SLAVE if self.retired else Role.MASTER

    @property
    def master_address(self) -> str:
        return "" if self.retired else self.core.address

    @property
    def master_member_address(self) -> str:
        return ""

    @property
    def master_node(self) -> int | None:
        return None

    def start(self) -> None:
        self.scheduler.start()
        self.popper.start()
        self.timer.start()
        self.transactions.start()

    def retire(self) -> None:
        self._gate.only(self.timer.thread)  # every other write refused (NOT_MASTER) from here
        self.timer.stop(RETIRE_WAIT_S)  # its pass ends with its progress written, before writes stop
        self.retired = True
        if self.lease is not None:
            self.lease.revoke()
        if not self._gate.close(RETIRE_WAIT_S):
            log.error("writes still under way %.0f s after this master retired", RETIRE_WAIT_S)
        self.core.notifier.notify_all()  # streams served from here end

    def close(self) -> None:
        if not self.retired:
            self.retire()
        self.scheduler.close()
        self.popper.close()
        self.transactions.close()

    def fenced(self) -> bool:
        return self.retired or (self.lease is not None and not self.lease.valid())

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        return writing(self._gate, self.lease, lambda: self.retired)

    def ensure_topic(self, topic: str, queues: int) -> None:
        """Create one of the broker's own topics (retry, schedule, dead letter)
        if missing, or grow it to `queues` (the schedule, after levels were added)."""
        store = self.core.store
        if (store.topics.queue_count(topic) or 0) < queues:
            with self._writing(), self._topic_lock:
                self._check_topic_quota(topic)
                store.create_topic(topic, queues)

    def _check_topic_quota(self, topic: str) -> None:
        """A new topic must fit under quotas.max_topics."""
        store, limit = self.core.store, self.core.config.quotas.max_topics
        if store.topics.queue_count(topic) is None and len(store.topics.names()) >= limit:
            raise QuotaExceededError(f"{limit} topics exist on this broker (quotas.max_topics)")

    # ---- the controller ---------------------------------------------------------------

    def propose(self) -> tuple[int, frozenset[int]]:
        return self.replicas.propose(self.core.store.commitlog.max_offset, now_ms())

    def renewed(self, sent_at: float, directive: Directive, gen: int) -> None:
        if self.lease is not None and not self.retired:
            self.lease.grant(sent_at, directive.lease_ms)
        self.replicas.confirm(gen, directive.in_sync)

    # ---- topics -----------------------------------------------------------------------

    def _queues_for_send(self, topic: str, queue_id: int, messages: Sequence[Message]) -> int:
        """The topic's queue count; an unknown topic is auto-created (when on),
        but only for a batch that will be accepted: bad input stores nothing."""
        store, b = self.core.store, self.core.config.broker
        validate_topic(topic)
        count = store.topics.queue_count(topic)
        if count is None:
            if not b.auto_create_topics:
                raise UnknownTopicError(f"topic {topic!r} does not exist (auto-create is off)")
            if not self.core.may_create_topic(topic):
                raise PermissionDeniedError(
                    f"topic {topic!r} does not exist and this account may not create it (ACL `create`)"
                )
            default = b.default_queues
            if not -1 <= queue_id < default:
                raise InvalidQueueError(f"queue id {queue_id} out of range for {topic!r} (0..{default - 1})")
            for m in messages:
                m.topic, m.queue_id = topic, max(queue_id, 0)
            store.validate(messages, default)
            with self._topic_lock:
                self._check_topic_quota(topic)
                store.create_topic(topic, default)
            count = store.topics.queue_count(topic)
            assert count is not None
        return count

    def create_topic(self, topic: str, queues: int) -> tuple[bool, int]:
        check_creatable(topic)
        store = self.core.store
        with self._writing(), self._topic_lock:
            self._check_topic_quota(topic)
            created = store.create_topic(topic, queues)
        count = store.topics.queue_count(topic)
        assert count is not None
        return created, count

    # ---- writes -----------------------------------------------------------------------

    def send(
        self,
        topic: str,
        queue_id: int,
        messages: Sequence[Message],
        internal: bool = False,
        wait_slaves: bool = True,
    ) -> SendOutcome:
        """Store messages for one (topic, queue); queue_id -1 lets the broker pick.
        `%` topics (retry, dead-letter, schedule) take only the broker's own writes.
        A send due later is stored whole in the timer's wait queue (master/timer.py),
        a transactional one (TRAN_MSG=true) as half messages (master/transactions.py).
        `wait_slaves` False: answered once appended, the caller waits for sync slaves."""
        if is_reserved(topic) and not internal:
            raise InvalidTopicError(f"topic {brief(topic)}: names starting with '%' take no sends")
        if not messages:
            raise InvalidArgumentError("a send needs at least one message")
        if len(messages) > MAX_BATCH:
            raise InvalidArgumentError(f"a batch holds at most {MAX_BATCH} messages")
        if not internal:  # a client's: none of the broker's transaction properties (docs: Transactions)
            check_client_properties(messages)
        txn = not internal and is_transactional(messages)
        delayed = not internal and not txn and self.timer.delayed(messages)
        if delayed:
            self.ensure_topic(TIMER_TOPIC, TIMER_QUEUES)
        if txn:
            self.ensure_topic(TXN_TOPIC, 1)
        refused = enter(self._gate, self.lease, lambda: self.retired)
        if refused is not None:
            master = self.core.role.master_address if self.retired else ""
            return SendOutcome(refused.status, topic, queue_id, [], f"{refused.why}; nothing stored", master)
        rep = self.core.config.replication
        sync = rep.sync
        try:
            if sync and not self._sync_ready():  # checked first: not even an auto-created topic is stored
                return SendOutcome(
                    SendStatus.SLAVE_NOT_AVAILABLE, topic, queue_id, [],
                    f"{rep.min_insync_replicas} in-sync slave(s) needed; nothing stored",
                )  # fmt: skip
            if self.core.store.disk_full():  # refused, never made room for by deleting data
                limit = self.core.config.store.disk_max_used_ratio
                raise DiskFullError(
                    f"the data disk is over {limit:.0%} full: sends resume when space returns"
                )
            count = self._queues_for_send(topic, queue_id, messages)
            if queue_id == -1:
                queue_id = next(self._rr) % count
            elif not 0 <= queue_id < count:
                raise InvalidQueueError(f"queue id {queue_id} out of range for {topic!r} (0..{count - 1})")
            for m in messages:
                m.topic = topic
                m.queue_id = queue_id
            if delayed:
                messages = self.timer.park(topic, queue_id, list(messages))
            elif txn:
                messages = self.transactions.park(topic, queue_id, messages)
            metrics = self.core.metrics
            t0 = time.perf_counter()
            try:
                stored = self.core.store.append(messages)
                status, detail = SendStatus.SEND_OK, "in the timer until due" if delayed else ""
                metrics.append_latency.observe(time.perf_counter() - t0)
                metrics.messages_in.labels(messages[0].topic).inc(len(messages))
                metrics.bytes_in.labels(messages[0].topic).inc(sum(len(m.body) for m in messages))
            except FlushTimeoutError as exc:
                stored = exc.offsets
                status, detail = SendStatus.FLUSH_DISK_TIMEOUT, exc.message
        finally:
            self._gate.leave()
        if sync and wait_slaves and status is SendStatus.SEND_OK and not self._wait_replicated():
            status = SendStatus.SLAVE_TIMEOUT
            detail = "stored on the master, not acknowledged by enough slaves in time"
        if status is SendStatus.SEND_OK and self.fenced():
            # the lease lapsed while the write was under way: another master may
            # be elected now, so it is not acknowledged (stored, outcome open)
            status = SendStatus.SLAVE_TIMEOUT
            detail = "stored, but this master's lease lapsed before it was acknowledged"
        ids = self.transactions.ids(messages, stored) if txn and len(stored) == len(messages) else []
        epoch = self.core.epoch
        return SendOutcome(status, topic, queue_id, stored, detail, epoch=epoch, transaction_ids=ids)

    def send_back(self, group: str, topic: str, message: Message, max_reconsume: int) -> tuple[str, int, int]:
        """A message a consumer of `group` failed: master/send_back.py."""
        return send_back(self, group, topic, message, max_reconsume)

    def commit_offset(
        self, group: str, topic: str, queue_id: int, offset: int, internal: bool = False
    ) -> None:
        """Commit through the log, so slaves learn it; applied as it is appended.
        In sync mode the commit is acknowledged once replicated like a send, so
        a failover never takes an acknowledged commit back. `%` groups take only
        the broker's own (`internal`) commits; past the queue's end a commit is
        refused, not clamped (docs/design.md, Retries)."""
        core = self.core
        core.store.queue_offsets(topic, queue_id)  # validates topic and queue
        core.offsets.check(group, offset)
        if not internal:
            check_client_group(group)
        with self._writing():  # (a retired master says so first: its log's end is no answer)
            end = core.store.queue_offsets(topic, queue_id)[1]
            if offset > end:
                raise InvalidOffsetError(
                    f"offset {offset} is past the end of {topic!r} queue {queue_id} ({end}): "
                    "a commit names the next offset to read"
                )
            prev = core.offsets.query(group, topic, queue_id)
            if prev != offset:  # `prev` lets a truncation undo it without reading the log
                payload = {"group": group, "topic": topic, "queue": queue_id, "offset": offset}
                core.store.append_system("offset", payload | {"prev": -1 if prev is None else prev})
        self._acknowledge("offset")  # (an unchanged one too: an earlier commit of it may have timed out)

    def write_system(self, plan: Callable[[], list[tuple[str, dict[str, Any]]]]) -> None:
        """Append the system records `plan()` makes, as one batch, through the
        write gate and with topic changes held off (an operator's write: a
        topic deletion, a pop cursor's reset); pops wait meanwhile (the pop lock,
        taken before the topic lock, as a pop's dead letter does), so no pop
        plans from a state the batch changes; acknowledged like a commit."""
        with self._writing(), self.popper._lock, self._topic_lock:
            records = plan()
            if records:
                self.core.store.append_systems(records)
        self._acknowledge("change")

    def _acknowledge(self, what: str) -> None:
        if self.core.config.replication.sync and not self._wait_replicated():
            raise RequestTimeoutError(f"{what} stored on the master, not on enough slaves in time")
        if self.fenced():  # as for a send: stored, but another master may lead by now
            raise RequestTimeoutError(f"{what} stored, but this master was fenced before it was acknowledged")

    def lock_queues(
        self, group: str, topic: str, client_id: str, queue_ids: list[int], lease_ms: int
    ) -> list[int]:
        check_client_group(group)
        count = self.core.store.topics.queue_count(validate_topic(topic).decode())
        if count is None:
            raise UnknownTopicError(f"topic {topic!r} does not exist")
        if any(not 0 <= q < count for q in queue_ids) or not client_id:
            raise InvalidQueueError(f"queue ids must be in 0..{count - 1}, with a client id")
        if not 1000 <= lease_ms <= 600_000:
            raise InvalidArgumentError("lease_ms must be in 1000..600000")
        with self._writing():
            return self.queue_locks.lock(group, topic, client_id, queue_ids, lease_ms, now_ms())

    def unlock_queues(self, group: str, topic: str, client_id: str, queue_ids: list[int]) -> None:
        check_client_group(group)
        self.queue_locks.unlock(group, topic, client_id, queue_ids)

    # ---- replication ------------------------------------------------------------------

    def _sync_ready(self) -> bool:
        rep = self.core.config.replication
        end, now = self.core.store.commitlog.max_offset, now_ms()
        if self.replicas.failover:  # every required slave must be there
            return self.replicas.required_ready(rep.min_insync_replicas, end, now)
        return len(self.replicas.in_sync(end, now)) >= rep.min_insync_replicas

    def _wait_replicated(self) -> bool:
        """Wait until the log's current end (at or past the caller's write) is
        on enough slaves: with failover, on every slave that may be elected."""
        rep = self.core.config.replication
        end = self.core.store.commitlog.max_offset
        timeout = rep.sync_timeout_ms / 1000
        if self.replicas.failover:
            return self.replicas.wait_required(end, rep.min_insync_replicas, timeout)
        return self.replicas.wait_acked(end, rep.min_insync_replicas, timeout)

    def confirmed(self) -> int:
        """The offset below which records are safe from a failover: everything,
        in async mode; what enough in-sync slaves acked, in sync mode."""
        rep = self.core.config.replication
        end = self.core.store.commitlog.max_offset
        if rep.mode is not ReplicationMode.SYNC:
            return end
        if self.replicas.failover:
            return self.replicas.safe_offset(end, rep.min_insync_replicas)
        return self.replicas.confirmed(end, rep.min_insync_replicas, now_ms())

    def visible_end(self) -> int | None:
        return self.confirmed() if self.core.config.replication.mode is ReplicationMode.SYNC else None

    def on_append(self) -> None:
        if self.replicas.attached:  # lag samples need a slave; skip the work otherwise
            self.ack_lag.appended(self.core.store.commitlog.max_offset, now_ms())

    def _on_replica_ack(self) -> None:
        best = max((r.acked for r in self.replicas.snapshot() if r.connected), default=0)
        self.ack_lag.acked(best, now_ms())
        if self.core.config.replication.mode is ReplicationMode.SYNC:
            self.core.notifier.notify_all()  # pulls held below the confirmed offset may go

    # ---- reads ------------------------------------------------------------------------

    def pull(self, args: PullArgs, alive: Callable[[], bool]) -> PullReply:
        """Serve a pull with its redirect advice (core/redirect.py): a backlog
        over the page-cache budget is served with the cold batch limits and
        pointed at an eligible slave. In sync mode only confirmed records are
        served."""
        advice = self._advise(args)
        p = self.core.config.pull
        count, nbytes = batch_limits(
            advice.cold,
            args.max_messages,
            args.max_bytes,
            (p.hot_max_messages, p.hot_max_bytes),
            (p.cold_max_messages, p.cold_max_bytes),
        )
        served = self.core.serve(replace(args, max_messages=count, max_bytes=nbytes), alive)
        return PullReply(served.result, advice, served.held)

    def _advise(self, args: PullArgs) -> Advice:
        core = self.core
        p = core.config.pull
        clog = core.store.commitlog
        nxt = core.store.physical_offset_of(args.topic, args.queue_id, args.queue_offset)
        if nxt is None or not p.redirect:
            return NO_ADVICE
        backlog = clog.max_offset - nxt
        key = (args.group, args.topic, args.queue_id)
        tracked = self._track(key)
        if tracked:
            core.metrics.backlog.labels(args.group, args.topic, str(args.queue_id)).set(backlog)
        in_sync = {r.broker_id for r in self.replicas.in_sync(clog.max_offset, now_ms())}
        slaves = [
            SlaveView(r.broker_id, r.connected, r.broker_id in in_sync, r.acked)
            for r in self.replicas.snapshot()
        ]
        advice, away = advise_master(
            backlog,
            core.budget.bytes(),
            key in self._sent_away,
            nxt,
            slaves,
            route_key(*key),
            p.return_ratio,
        )
        if away and tracked:  # an untracked key would never be forgotten
            self._sent_away.add(key)
        else:
            self._sent_away.discard(key)
        core.count_advice(advice.reason)
        return advice

    def is_sent_away(self, key: tuple[str, str, int]) -> bool:
        return key in self._sent_away

    def _track(self, key: tuple[str, str, int]) -> bool:
        """Note a pull of `key`; forget the queues idle past their TTL (their
        redirect state and backlog series). False when too many are tracked:
        no new series for this one (its advice still works)."""
        now = now_ms()
        with self._pulled_lock:
            for gone in self._pulled.expire(now):
                g, t, q = cast(tuple[str, str, int], gone)
                self._sent_away.discard((g, t, q))
                with contextlib.suppress(KeyError):
                    self.core.metrics.backlog.remove(g, t, str(q))
            return self._pulled.touch(key, now)

    # ---- status -------------------------------------------------------------------------

    def replication_gauges(self) -> tuple[dict[int, int], int]:
        end = self.core.store.commitlog.max_offset
        lag = {r.broker_id: end - r.acked for r in self.replicas.snapshot() if r.connected}
        return lag, len(self.replicas.in_sync(end, now_ms()))

    def status_details(self) -> RoleStatus:
        end = self.core.store.commitlog.max_offset
        return RoleStatus(
            queues_sent_away=len(self._sent_away),
            lease_left_ms=self.lease.left_ms() if self.lease is not None else 0,
            required=sorted(self.replicas.required()),
            replication={
                "mode": str(self.core.config.replication.mode),
                "confirmed": self.confirmed(),
                "slaves": [
                    {
                        "broker_id": r.broker_id,
                        "acked": r.acked,
                        "lag_bytes": end - r.acked,
                        "connected": r.connected,
                    }
                    for r in self.replicas.snapshot()
                ],
                "in_sync": [r.broker_id for r in self.replicas.in_sync(end, now_ms())],
                "ack_lag": self.ack_lag.percentiles(),
            },
        )
