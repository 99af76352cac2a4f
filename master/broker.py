"""The master role's logic: the write path, pulls, offsets, topics, status.

Plain Python over the store; `master/service.py` adapts it to gRPC.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from core.broker_config import BrokerConfig
from core.consumer_groups import ConsumerGroups
from core.epochs import History
from core.errors import (
    BrokerBusyError,
    FlushTimeoutError,
    InvalidArgumentError,
    InvalidQueueError,
    InvalidTopicError,
    NotMasterError,
    RequestTimeoutError,
    UnknownTopicError,
)
from core.longpoll import ArrivalNotifier
from core.metrics import BrokerMetrics
from core.offsets import ConsumerOffsets, validate_group
from core.pagecache import MemoryBudget
from core.pb.tailrace.v1 import nameserver_pb2 as ns_pb
from core.pull import PullArgs, PullLimits, serve_pull
from core.queue_locks import QueueLocks
from core.record import Message, validate_topic
from core.redirect import NO_ADVICE, Advice, SlaveView, advise_master, batch_limits, route_key
from core.replication import AckLag, ReplicaSet
from core.retry import DELIVER_AT, SCHEDULE_TOPIC, check_creatable, is_reserved, parse_delays, plan_send_back
from core.store import MessageStore, ReadResult
from master.lease import Lease

SEND_OK = "SEND_OK"
FLUSH_DISK_TIMEOUT = "FLUSH_DISK_TIMEOUT"
SLAVE_TIMEOUT = "SLAVE_TIMEOUT"
SLAVE_NOT_AVAILABLE = "SLAVE_NOT_AVAILABLE"
NOT_MASTER = "NOT_MASTER"
LOG_KEY = ("", -1)  # notifier key: "the log grew" (replication streams wait on it)
MAX_BATCH = 65_536


@dataclass(slots=True)
class SendOutcome:
    status: str
    topic: str
    queue_id: int
    results: list[tuple[int, int]]  # (physical offset, queue offset) per stored message
    detail: str = ""
    master_address: str = ""
    epoch: int = 0


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class MasterBroker:
    def __init__(self, config: BrokerConfig, store: MessageStore, offsets: ConsumerOffsets) -> None:
        self.role = "master"
        self.lease: Lease | None = None  # with a controller: writes need a valid lease
        self.config = config
        self.store = store
        self.offsets = offsets
        self.notifier = ArrivalNotifier()
        store.add_system_handler("offset", offsets.apply)
        store.add_append_listener(self.notifier.notify)
        store.add_append_listener(lambda _keys: self.notifier.notify([LOG_KEY]))
        rep = config.replication
        self.replicas = ReplicaSet(rep.max_lag_bytes, rep.max_ack_age_ms, on_ack=self._on_replica_ack)
        self.ack_lag = AckLag()
        store.add_append_listener(self._note_append)
        self.address = ""
        self.epoch = 0  # the master epoch this broker leads in (0: no controller)
        self.closing = False
        self.metrics = BrokerMetrics(self.metrics_snapshot)
        self.groups = ConsumerGroups()
        self.started = time.monotonic()
        self._rr = itertools.count()
        self._topic_lock = threading.Lock()
        self.budget = MemoryBudget(
            config.pull.hot_ratio, config.pull.budget_bytes, config.pull.budget_refresh_ms
        )
        self._sent_away: set[tuple[str, str, int]] = set()
        self.redirect_counts: Counter[str] = Counter()
        held = config.pull.max_held_pulls or config.server.max_workers // 2
        self._hold_slots = threading.BoundedSemaphore(held)
        self.pulls_not_held = 0
        self.limits = PullLimits(config.pull.max_wait_ms, config.pull.max_messages, config.pull.max_bytes)
        self.retry_delays = parse_delays(config.broker.retry_delays)
        self.queue_locks = QueueLocks()

    @property
    def broker_id(self) -> int:
        return self.config.broker.broker_id

    @property
    def broker_name(self) -> str:
        return self.config.broker.broker_name

    def epoch_history(self) -> History:
        """(epoch, start offset) of every master epoch in this log (none without a controller)."""
        return ()

    # ---- topics ---------------------------------------------------------------

    def _queues_for_send(self, topic: str, queue_id: int, messages: Sequence[Message]) -> int:
        """The topic's queue count; an unknown topic is auto-created (when on),
        but only for a batch that will be accepted: bad input stores nothing."""
        validate_topic(topic)
        count = self.store.topics.queue_count(topic)
        if count is None:
            if not self.config.broker.auto_create_topics:
                raise UnknownTopicError(f"topic {topic!r} does not exist (auto-create is off)")
            default = self.config.broker.default_queues
            if not -1 <= queue_id < default:
                raise InvalidQueueError(f"queue id {queue_id} out of range for {topic!r} (0..{default - 1})")
            for m in messages:
                m.topic, m.queue_id = topic, max(queue_id, 0)
            self.store.validate(messages, default)
            with self._topic_lock:
                self.store.create_topic(topic, default)
            count = self.store.topics.queue_count(topic)
            assert count is not None
        return count

    def create_topic(self, topic: str, queues: int) -> tuple[bool, int]:
        check_creatable(topic)
        self._check_lease()
        created = self.store.create_topic(topic, queues)
        count = self.store.topics.queue_count(topic)
        assert count is not None
        return created, count

    def list_topics(self) -> list[tuple[str, int]]:
        topics = self.store.topics
        return [(n, topics.queue_count(n) or 0) for n in topics.names()]

    # ---- writes -----------------------------------------------------------------

    def send(
        self, topic: str, queue_id: int, messages: Sequence[Message], internal: bool = False
    ) -> SendOutcome:
        """Store messages for one (topic, queue); queue_id -1 lets the broker pick.
        `%` topics (retry, dead-letter, schedule) take only the broker's own writes."""
        if is_reserved(topic) and not internal:
            raise InvalidTopicError(f"topic {topic!r}: names starting with '%' take no sends")
        if not messages:
            raise InvalidArgumentError("a send needs at least one message")
        if len(messages) > MAX_BATCH:
            raise InvalidArgumentError(f"a batch holds at most {MAX_BATCH} messages")
        if self.lease is not None and not self.lease.valid():
            return SendOutcome(
                NOT_MASTER, topic, queue_id, [], "this master's lease lapsed (fenced); nothing stored"
            )
        rep = self.config.replication
        sync = rep.mode == "sync" and rep.min_insync_replicas > 0
        if sync and not self._sync_ready():  # checked first: not even an auto-created topic may be stored
            return SendOutcome(
                SLAVE_NOT_AVAILABLE, topic, queue_id, [],
                f"{rep.min_insync_replicas} in-sync slave(s) needed; nothing stored",
            )  # fmt: skip
        count = self._queues_for_send(topic, queue_id, messages)
        if queue_id == -1:
            queue_id = next(self._rr) % count
        elif not 0 <= queue_id < count:
            raise InvalidQueueError(f"queue id {queue_id} out of range for {topic!r} (0..{count - 1})")
        for m in messages:
            m.topic = topic
            m.queue_id = queue_id
        t0 = time.perf_counter()
        try:
            stored = self.store.append(messages)
            status, detail = SEND_OK, ""
            self.metrics.append_latency.observe(time.perf_counter() - t0)
            self.metrics.messages_in.labels(topic).inc(len(messages))
            self.metrics.bytes_in.labels(topic).inc(sum(len(m.body) for m in messages))
        except FlushTimeoutError as exc:
            stored = exc.offsets
            status, detail = FLUSH_DISK_TIMEOUT, exc.message
        if sync and status == SEND_OK and not self._wait_replicated():
            status = SLAVE_TIMEOUT
            detail = "stored on the master, not acknowledged by enough slaves in time"
        if status == SEND_OK and self.lease is not None and not self.lease.valid():
            # the lease lapsed while the write was under way: another master may
            # be elected now, so it is not acknowledged (stored, outcome open)
            status, detail = (
                SLAVE_TIMEOUT,
                "stored, but this master's lease lapsed before it was acknowledged",
            )
        return SendOutcome(status, topic, queue_id, stored, detail, epoch=self.epoch)

    def send_back(self, group: str, topic: str, message: Message, max_reconsume: int) -> tuple[str, int, int]:
        """A message a consumer of `group` failed: park it in the schedule (queue
        = delay level) for the group's retry topic, or dead-letter it after
        `max_reconsume` attempts. Returns (destination, attempts, deliver_at_ms)."""
        validate_group(group)
        validate_topic(topic)
        if not 0 <= max_reconsume <= 1000:
            raise InvalidArgumentError("max_reconsume must be in 0..1000")
        dest, queue, props, attempts = plan_send_back(
            message.properties or {}, topic, group, max_reconsume, self.retry_delays, int(time.time() * 1000)
        )
        if self.store.topics.queue_count(dest) is None:
            with self._topic_lock:
                self.store.create_topic(dest, len(self.retry_delays) if dest == SCHEDULE_TOPIC else 1)
        stored = Message(dest, queue, message.body, tags=message.tags, keys=message.keys, properties=props)
        out = self.send(dest, queue, [stored], internal=True)
        if out.status != SEND_OK:
            raise BrokerBusyError(f"the message was not stored for a retry ({out.status}): {out.detail}")
        return dest, attempts, int(props.get(DELIVER_AT, "0"))

    def lock_queues(
        self, group: str, topic: str, client_id: str, queue_ids: list[int], lease_ms: int
    ) -> list[int]:
        validate_group(group)
        count = self.store.topics.queue_count(validate_topic(topic).decode())
        if count is None:
            raise UnknownTopicError(f"topic {topic!r} does not exist")
        if any(not 0 <= q < count for q in queue_ids) or not client_id:
            raise InvalidQueueError(f"queue ids must be in 0..{count - 1}, with a client id")
        if not 1000 <= lease_ms <= 600_000:
            raise InvalidArgumentError("lease_ms must be in 1000..600000")
        self._check_lease()
        return self.queue_locks.lock(group, topic, client_id, queue_ids, lease_ms, _now_ms())

    def unlock_queues(self, group: str, topic: str, client_id: str, queue_ids: list[int]) -> None:
        validate_group(group)
        self.queue_locks.unlock(group, topic, client_id, queue_ids)

    def _check_lease(self) -> None:
        if self.lease is not None and not self.lease.valid():
            raise NotMasterError("this master's lease lapsed (fenced): it takes no writes")

    def _sync_ready(self) -> bool:
        rep = self.config.replication
        end, now = self.store.commitlog.max_offset, _now_ms()
        if self.replicas.failover:  # every required slave must be there
            return self.replicas.required_ready(rep.min_insync_replicas, end, now)
        return len(self.replicas.in_sync(end, now)) >= rep.min_insync_replicas

    def _wait_replicated(self) -> bool:
        """Wait until the log's current end (at or past the caller's write) is
        on enough slaves: with failover, on every slave that may be elected."""
        rep = self.config.replication
        end = self.store.commitlog.max_offset
        timeout = rep.sync_timeout_ms / 1000
        if self.replicas.failover:
            return self.replicas.wait_required(end, rep.min_insync_replicas, timeout)
        return self.replicas.wait_acked(end, rep.min_insync_replicas, timeout)

    # ---- reads ------------------------------------------------------------------------

    def confirmed(self) -> int:
        """The offset below which records are safe from a failover: everything,
        in async mode; what enough in-sync slaves acked, in sync mode."""
        rep = self.config.replication
        end = self.store.commitlog.max_offset
        if rep.mode != "sync":
            return end
        if self.replicas.failover:
            return self.replicas.safe_offset(end, rep.min_insync_replicas)
        return self.replicas.confirmed(end, rep.min_insync_replicas, _now_ms())

    def _visible_end(self) -> int | None:
        return self.confirmed() if self.config.replication.mode == "sync" else None

    def _note_append(self, _keys: object) -> None:
        if self.replicas.attached:  # lag samples need a slave; skip the work otherwise
            self.ack_lag.appended(self.store.commitlog.max_offset, _now_ms())

    def _on_replica_ack(self) -> None:
        best = max((r.acked for r in self.replicas.snapshot() if r.connected), default=0)
        self.ack_lag.acked(best, _now_ms())
        if self.config.replication.mode == "sync":
            self.notifier.notify_all()  # pulls held below the confirmed offset may go

    def pull(self, args: PullArgs, alive: Callable[[], bool] = lambda: True) -> tuple[ReadResult, Advice]:
        """Serve a pull with its redirect advice (core/redirect.py): a backlog
        over the page-cache budget is served with the cold batch limits and
        pointed at an eligible slave."""
        advice = self._advise(args)
        p = self.config.pull
        count, nbytes = batch_limits(
            advice.cold,
            args.max_messages,
            args.max_bytes,
            (p.hot_max_messages, p.hot_max_bytes),
            (p.cold_max_messages, p.cold_max_bytes),
        )
        result = self._serve(replace(args, max_messages=count, max_bytes=nbytes), alive)
        return result, advice

    def _advise(self, args: PullArgs) -> Advice:
        p = self.config.pull
        clog = self.store.commitlog
        nxt = self.store.physical_offset_of(args.topic, args.queue_id, args.queue_offset)
        if nxt is None or not p.redirect:
            return NO_ADVICE
        backlog = clog.max_offset - nxt
        key = (args.group, args.topic, args.queue_id)
        self.metrics.backlog.labels(args.group, args.topic, str(args.queue_id)).set(backlog)
        now = _now_ms()
        in_sync = {r.broker_id for r in self.replicas.in_sync(clog.max_offset, now)}
        slaves = [
            SlaveView(r.broker_id, r.connected, r.broker_id in in_sync, r.acked)
            for r in self.replicas.snapshot()
        ]
        advice, away = advise_master(
            backlog,
            self.budget.bytes(),
            key in self._sent_away,
            nxt,
            slaves,
            route_key(*key),
            p.return_ratio,
        )
        if away:
            self._sent_away.add(key)
        else:
            self._sent_away.discard(key)
        if advice.reason:
            self.redirect_counts[advice.reason] += 1
        return advice

    def _serve(self, args: PullArgs, alive: Callable[[], bool]) -> ReadResult:
        """At most `max_held_pulls` pulls are held waiting at once, the rest are
        answered at once (the client backs off briefly). In sync mode only
        confirmed records are served."""
        vis = self._visible_end
        if args.max_wait_ms <= 0:
            return serve_pull(self.store, self.notifier, self.limits, args, alive, vis)
        if not self._hold_slots.acquire(blocking=False):
            self.pulls_not_held += 1
            return serve_pull(
                self.store, self.notifier, self.limits, replace(args, max_wait_ms=0), alive, vis
            )
        try:
            return serve_pull(self.store, self.notifier, self.limits, args, alive, vis)
        finally:
            self._hold_slots.release()

    def wake_pulls(self, topic: str, queue_id: int) -> None:
        """Re-check the held pulls of a queue (one of their callers went away)."""
        self.notifier.notify([(topic, queue_id)])

    def close(self) -> None:
        """Release every held pull and replication stream (shutdown)."""
        self.closing = True
        self.notifier.close()

    def queue_offsets(self, topic: str) -> list[tuple[int, int, int]]:
        count = self.store.topics.queue_count(validate_topic(topic).decode())
        if count is None:
            raise UnknownTopicError(f"topic {topic!r} does not exist")
        return [(q, *self.store.queue_offsets(topic, q)) for q in range(count)]

    # ---- consumer offsets --------------------------------------------------------------

    def _check_queue(self, topic: str, queue_id: int) -> None:
        self.store.queue_offsets(topic, queue_id)  # validates topic and queue

    def commit_offset(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        """Commit through the log, so slaves learn it; applied as it is appended.
        In sync mode the commit is acknowledged once replicated like a send, so
        a failover never takes an acknowledged commit back."""
        self._check_queue(topic, queue_id)
        self.offsets.check(group, offset)
        self._check_lease()
        prev = self.offsets.query(group, topic, queue_id)
        if prev != offset:  # `prev` lets a truncation undo it without reading the log
            self.store.append_system(
                "offset",
                {
                    "group": group,
                    "topic": topic,
                    "queue": queue_id,
                    "offset": offset,
                    "prev": -1 if prev is None else prev,
                },
            )
        # (an unchanged offset is waited for too: an earlier commit of it may have timed out)
        rep = self.config.replication
        if rep.mode == "sync" and rep.min_insync_replicas > 0 and not self._wait_replicated():
            raise RequestTimeoutError("offset stored on the master, not on enough slaves in time")

    def query_offset(self, group: str, topic: str, queue_id: int) -> int | None:
        self._check_queue(topic, queue_id)
        return self.offsets.query(group, topic, queue_id)

    # ---- consumer groups and registration ----------------------------------------------

    def heartbeat(self, group: str, topic: str, client_id: str, heartbeat_ms: int) -> list[str]:
        return self.groups.heartbeat(group, topic, client_id, heartbeat_ms, _now_ms())

    def unregister(self, group: str, topic: str, client_id: str) -> list[str]:
        return self.groups.unregister(group, topic, client_id, _now_ms())

    def registration(self) -> ns_pb.BrokerRegistration:
        """What this broker tells the nameservers about itself."""
        b = self.config.broker
        return ns_pb.BrokerRegistration(
            cluster=b.cluster,
            broker_name=b.broker_name,
            broker_id=self.broker_id,
            address=self.address,
            epoch=self.epoch,
            role=self.role,
            max_offset=self.store.commitlog.max_offset,
            heartbeat_ms=b.heartbeat_ms,
            topics=[
                ns_pb.TopicConfig(name=n, read_queues=q, write_queues=q, perm="rw")
                for n, q in self.list_topics()
            ],
        )

    def count_pull(self, topic: str, status: str, count: int, nbytes: int, reason: str) -> None:
        m = self.metrics
        m.pulls.labels(status).inc()
        if count:
            m.messages_out.labels(topic).inc(count)
            m.bytes_out.labels(topic).inc(nbytes)
        if reason:
            m.redirects.labels(reason).inc()

    def metrics_snapshot(self) -> dict[str, Any]:
        clog = self.store.commitlog
        end = clog.max_offset
        return {
            "min_offset": clog.min_offset,
            "max_offset": end,
            "flushed_offset": clog.flushed,
            "confirmed_offset": self.confirmed(),
            "budget_bytes": self.budget.bytes(),
            "consume_queues": len(self.store.cqs.queues),
            "queue_max": {key: cq.max_offset for key, cq in list(self.store.cqs.queues.items())},
            "held_pulls": self.notifier.waiting(),
            "replica_lag": {r.broker_id: end - r.acked for r in self.replicas.snapshot() if r.connected},
            "in_sync": len(self.replicas.in_sync(end, _now_ms())),
        }

    # ---- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        clog = self.store.commitlog
        return {
            "broker_name": self.broker_name,
            "broker_id": self.broker_id,
            "role": self.role,
            "address": self.address,
            "min_offset": clog.min_offset,
            "max_offset": clog.max_offset,
            "flushed_offset": clog.flushed,
            "uptime_ms": int((time.monotonic() - self.started) * 1000),
            "details": {
                "topics": len(self.store.topics.names()),
                "waiting_pulls": self.notifier.waiting(),
                "pulls_not_held": self.pulls_not_held,
                "redirect": {
                    "budget_bytes": self.budget.bytes(),
                    "queues_sent_away": len(self._sent_away),
                    "reasons": dict(self.redirect_counts),
                },
                "replication": {
                    "mode": self.config.replication.mode,
                    "confirmed": self.confirmed(),
                    "slaves": [
                        {
                            "broker_id": r.broker_id,
                            "acked": r.acked,
                            "lag_bytes": clog.max_offset - r.acked,
                            "connected": r.connected,
                        }
                        for r in self.replicas.snapshot()
                    ],
                    "in_sync": [r.broker_id for r in self.replicas.in_sync(clog.max_offset, _now_ms())],
                    "ack_lag": self.ack_lag.percentiles(),
                },
                "segments": len(clog.segments()),
                "preallocation_misses": clog.allocator.misses,
                "segments_warming": clog.allocator.warming(),
                "recovery": self.store.recovery.to_dict(),
            },
        }
