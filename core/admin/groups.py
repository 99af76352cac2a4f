"""Per (group, topic, queue), what this broker knows of a consumer group:
offsets, lag in messages and bytes, live members, the queue lock's holder,
pop messages in flight, and how the group's last pull of the queue was
answered here (core/admin/reads.py). The rows are plain dicts, the keys
of `GroupQueue` in broker.proto."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from core.offsets import validate_group
from core.record import SYSTEM_TOPIC, validate_topic

if TYPE_CHECKING:
    from core.broker.core import BrokerCore
    from core.store import MessageStore

LAG_SCAN = 10_000  # ConsumeQueue entries summed per queue for lag_bytes; past it, extrapolated

Key = tuple[str, str, int]


def span_bytes(sizes: list[int], span: int) -> tuple[int, bool]:
    """Bytes of `span` records of which `sizes` are the first ones read:
    (their sum, exact) when all were read, else (extrapolated, estimated)."""
    total = sum(sizes)
    if span <= len(sizes):
        return total, False
    if not sizes:
        return 0, True
    return total * span // len(sizes), True


def queue_bytes(store: MessageStore, topic: str, queue_id: int, start: int, end: int) -> tuple[int, bool]:
    """The queue's record bytes in [start, end): (bytes, estimated)."""
    cq = store.cqs.get(topic, queue_id)
    if cq is None or start >= end:
        return 0, False
    store.cqs.pin(cq)
    try:
        sizes = [size for _q, _phys, size, _th in cq.entries(start, min(end, start + LAG_SCAN))]
    finally:
        store.cqs.unpin(cq)
    return span_bytes(sizes, end - start)


MAX_LAG_SERIES = 10_000  # (group, topic, queue) series of the consumer-lag gauge, at most
LAG_IDLE_MS = 24 * 3600 * 1000  # a group whose commits have not moved for this long: no series


class LagSeries:
    """Which (group, topic, queue)s the consumer-lag gauge exports: the
    offsets table never shrinks and any account allowed `groups = ["*"]`
    adds to it by committing under new names, so the series are bounded
    like the backlog gauge's: those whose committed offset moved in the
    last `idle_ms` (seen at scrapes: no clock on the commit path), the most
    recently moved first, at most `max_series`. Plain logic, time passed in."""

    def __init__(self, max_series: int = MAX_LAG_SERIES, idle_ms: int = LAG_IDLE_MS) -> None:
        self.max_series = max_series
        self.idle_ms = idle_ms
        self._moved: dict[Key, tuple[int, int]] = {}  # key -> (committed offset, when it last changed)
        self._lock = threading.Lock()  # scrapes run in threads

    def pick(self, committed: dict[Key, int], now_ms: int) -> tuple[list[Key], int]:
        """(the keys to export, how many were left out for the cap: idle
        ones are not counted, they are simply gone)."""
        with self._lock:
            moved = {}
            for key, offset in committed.items():
                prev = self._moved.get(key)
                moved[key] = prev if prev is not None and prev[0] == offset else (offset, now_ms)
            self._moved = moved  # keys no longer committed are forgotten
        recent = [k for k, (_o, at) in moved.items() if now_ms - at <= self.idle_ms]
        if len(recent) <= self.max_series:
            return recent, 0
        recent.sort(key=lambda k: moved[k][1], reverse=True)
        return recent[: self.max_series], len(recent) - self.max_series


def committed_lags(core: BrokerCore, now_ms: int) -> tuple[dict[Key, int], int]:
    """((group, topic, queue) -> messages after the group's committed offset
    (from the queue's oldest message when the commit is below it), series
    left out for the cap): the consumer-lag gauge, read at scrape time from
    the offsets table and the queues held in memory (as
    `tailrace_queue_max_offset`: nothing loaded), bounded by `core.lag_series`."""
    held, out, table = core.store.cqs.queues, {}, core.offsets.keys()
    committed = {
        (g, t, q): core.offsets.query(g, t, q) or 0
        for g, t, q in table
        if not g.startswith("%") and (t, q) in held  # not the broker's own positions (timer, scheduler)
    }
    keys, dropped = core.lag_series.pick(committed, now_ms)
    for key in keys:
        cq = held.get(key[1:])
        if cq is not None:
            out[key] = max(0, cq.max_offset - max(committed[key], cq.min_offset))
    return out, dropped


def known_keys(core: BrokerCore, now_ms: int) -> set[Key]:
    """Every (group, topic, queue) with a committed offset, live members, pop
    state or a pull remembered on this broker (topics that exist only)."""
    topics = core.store.topics
    keys: set[Key] = set(core.offsets.keys()) | set(core.pops.queues()) | set(core.reads.keys())
    for group, topic in core.groups.live(now_ms):
        keys.update((group, topic, q) for q in range(topics.queue_count(topic) or 0))
    return {k for k in keys if k[1] != SYSTEM_TOPIC and 0 <= k[2] < (topics.queue_count(k[1]) or 0)}


def describe_groups(core: BrokerCore, group: str, topic: str, now_ms: int) -> list[dict[str, Any]]:
    """One row per queue of each group this broker knows (only `group` and
    `topic` when given), sorted by group, topic and queue."""
    if group:
        validate_group(group)
    if topic:
        validate_topic(topic)
    store = core.store
    role = core.role
    locks = getattr(role, "queue_locks", None)
    sent_away = getattr(role, "is_sent_away", lambda key: False)
    members: dict[tuple[str, str], list[str]] = {}
    rows = []
    for key in sorted(known_keys(core, now_ms)):
        g, t, q = key
        if (group and g != group) or (topic and t != topic):
            continue
        lo, hi = store.queue_offsets(t, q)
        committed = core.offsets.query(g, t, q)
        start = min(max(lo, committed if committed is not None else lo), hi)
        lag_bytes, estimated = queue_bytes(store, t, q, start, hi)
        nxt = store.physical_offset_of(t, q, start)
        if (g, t) not in members:
            members[(g, t)] = core.groups.members(g, t, now_ms)
        last = core.reads.get(key)
        pop = core.pops.get(key)
        rows.append(
            {
                "group": g,
                "topic": t,
                "queue_id": q,
                "min_offset": lo,
                "max_offset": hi,
                "committed": committed is not None,
                "committed_offset": committed or 0,
                "lag_bytes": lag_bytes,
                "lag_bytes_estimated": estimated,
                "backlog_bytes": 0 if nxt is None else max(0, store.commitlog.max_offset - nxt),
                "members": members[(g, t)],
                "lock_holder": (locks.holder(g, t, q, now_ms) if locks is not None else None) or "",
                "last_pull_ms": last.at_ms if last else 0,
                "suggested_broker_id": last.suggested_broker_id if last else -1,
                "suggestion_reason": last.reason if last else "",
                "pop_inflight": len(pop.inflight) if pop is not None else 0,
                "sent_away": bool(sent_away(key)),
            }
        )
    return rows
