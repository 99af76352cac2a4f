"""Per (group, topic, queue), what this broker knows of a consumer group:
offsets, lag in messages and bytes, live members, the queue lock's holder,
pop messages in flight, and how the group's last pull of the queue was
answered here (core/admin/reads.py). The rows are plain dicts, the keys
of `GroupQueue` in broker.proto."""

from __future__ import annotations

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


def committed_lags(core: BrokerCore) -> dict[Key, int]:
    """(group, topic, queue) -> messages after the group's committed offset
    (from the queue's oldest message when the commit is below it): the
    consumer-lag gauge, read at scrape time from the offsets table and the
    queues held in memory (as `tailrace_queue_max_offset`: nothing loaded)."""
    held, out, committed_keys = core.store.cqs.queues, {}, core.offsets.keys()
    for group, topic, q in committed_keys:
        cq = held.get((topic, q))
        if cq is None or group.startswith("%"):  # the broker's own positions (timer, scheduler)
            continue
        committed = core.offsets.query(group, topic, q) or 0
        out[(group, topic, q)] = max(0, cq.max_offset - max(committed, cq.min_offset))
    return out


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
