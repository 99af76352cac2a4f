"""Offset resets: the plan (a plain function of the queues' offsets), the
search of a queue offset by store time, and carrying a plan out.

A reset is one batch of system records (`LeaderRole.write_system`): an
`offset` record per queue whose committed offset moves and, for a queue the
group pops from, a pop `rst` record moving its cursor there and dropping
its messages in flight (core/pop/state.py). In the log, so it replicates,
survives a failover and is undone with a cut tail like any commit; written
under the pop lock, so no pop or revive commit is planned from the state
before it and appended after it.

It is refused unless forced while the group has live members on the topic
(their next commit would write over it) or popped from it on this master
within `broker.pop_live_ms` (core/pop/recent.py: a pop consumer's in-flight
messages would go stale under it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from core.errors import (
    CorruptRecordError,
    GroupActiveError,
    InvalidArgumentError,
    UnknownTopicError,
)
from core.offsets import U64, validate_group
from core.record import check_record, validate_topic
from core.retry import check_client_group

if TYPE_CHECKING:
    from core.broker.core import BrokerCore
    from core.store import MessageStore


class Target(StrEnum):
    EARLIEST = "earliest"
    LATEST = "latest"
    OFFSET = "offset"
    TIME = "time"


@dataclass(frozen=True, slots=True)
class QueueSpan:
    queue_id: int
    min_offset: int
    max_offset: int
    committed: int | None
    pop_cursor: int | None = None  # the group pops from the queue
    pop_inflight: int = 0


def plan_reset(
    queues: Sequence[QueueSpan], target: Target, offset: int = 0, at_time: Mapping[int, int] | None = None
) -> list[dict[str, Any]]:
    """Where each queue's committed offset goes: its min (earliest), its end
    (latest), `offset` held to [min, end], or `at_time[queue]` (time)."""
    if target is Target.TIME and at_time is None:
        raise InvalidArgumentError("a reset to a time needs the queue offsets at that time")
    if target is Target.OFFSET and not 0 <= offset <= U64:
        raise InvalidArgumentError(f"offset must be in 0..2^64-1, got {offset}")
    rows = []
    for s in queues:
        if target is Target.EARLIEST:
            new = s.min_offset
        elif target is Target.LATEST:
            new = s.max_offset
        elif target is Target.OFFSET:
            new = min(max(offset, s.min_offset), s.max_offset)
        else:
            assert at_time is not None
            new = at_time[s.queue_id]
        rows.append(
            {
                "queue_id": s.queue_id,
                "committed": s.committed is not None,
                "old_offset": s.committed if s.committed is not None else 0,
                "new_offset": new,
                "min_offset": s.min_offset,
                "max_offset": s.max_offset,
                "popped": s.pop_cursor is not None,
                "pop_cursor": s.pop_cursor or 0,
                "pop_inflight": s.pop_inflight,
            }
        )
    return rows


def first_at_or_after(lo: int, hi: int, stored_ms: Any, at_ms: int) -> int:
    """The first queue offset in [lo, hi) whose record was stored at or after
    `at_ms` (`stored_ms(offset)`, None: gone, counted as older), else `hi`.
    Store times rise along a queue (one writer stamps them in order)."""
    while lo < hi:
        mid = (lo + hi) // 2
        t = stored_ms(mid)
        if t is None or t < at_ms:
            lo = mid + 1
        else:
            hi = mid
    return lo


def offset_at_time(store: MessageStore, topic: str, queue_id: int, at_ms: int) -> int:
    lo, hi = store.queue_offsets(topic, queue_id)
    cq = store.cqs.get(topic, queue_id)
    if cq is None:
        return hi

    def stored_ms(q: int) -> int | None:
        phys, size, _th = cq.entry(q)
        view = store.commitlog.view(phys, size)
        if view is None or len(view) != size:
            return None
        try:
            return check_record(view, 0, size).store_ms
        except CorruptRecordError:
            return None

    return first_at_or_after(lo, hi, stored_ms, at_ms)


@dataclass(frozen=True, slots=True)
class ResetResult:
    plan: list[dict[str, Any]]
    applied: bool
    members: list[str]  # live members on the topic
    last_pop_ms: int  # the group's last pop of the topic here, within broker.pop_live_ms (0: none)


def reset_offsets(
    core: BrokerCore,
    group: str,
    topic: str,
    target: Target,
    offset: int,
    at_ms: int,
    dry_run: bool,
    force: bool,
    now_ms: int,
) -> ResetResult:
    """Plan the reset and, unless `dry_run`, carry it out. Everything is
    checked before the batch is written: a refusal changes nothing."""
    validate_group(group)
    check_client_group(group)
    count = core.store.topics.queue_count(validate_topic(topic).decode())
    if count is None:
        raise UnknownTopicError(f"topic {topic!r} does not exist")
    store = core.store
    pops = [core.pops.get((group, topic, q)) for q in range(count)]
    spans = [
        QueueSpan(
            q,
            *store.queue_offsets(topic, q),
            core.offsets.query(group, topic, q),
            None if st is None else st.cursor,
            0 if st is None else len(st.inflight),
        )
        for q, st in enumerate(pops)
    ]
    at_time = (
        {q: offset_at_time(store, topic, q, at_ms) for q in range(count)} if target is Target.TIME else None
    )
    plan = plan_reset(spans, target, offset, at_time)
    members = core.groups.members(group, topic, now_ms)
    leader = core.leader()
    popper = leader.popper
    last_pop = popper.recent.last(group, topic, popper.clock()) or 0
    if dry_run:
        return ResetResult(plan, False, members, last_pop)
    if (members or last_pop) and not force:
        live = [f"{len(members)} live member(s) on {topic!r} ({', '.join(members)})"] if members else []
        if last_pop:
            live.append(f"popped from {topic!r} {max(0, popper.clock() - last_pop) / 1000:.1f} s ago")
        raise GroupActiveError(
            f"group {group!r} has {' and '.join(live)}: stop them first, or force it "
            "(members may commit over the reset; pop consumers' messages in flight go stale)"
        )
    leader.write_system(lambda: reset_records(core, group, topic, plan, leader.epoch << 32))
    return ResetResult(plan, True, members, last_pop)


Records = list[tuple[str, dict[str, Any]]]


def reset_records(
    core: BrokerCore, group: str, topic: str, plan: list[dict[str, Any]], gen_floor: int
) -> Records:
    """The batch carrying `plan` out, made under the write gate and the pop
    lock (from the state then): per queue, a pop `rst` if the group pops
    from it and its cursor moves or messages are in flight, and an `offset`
    record if the committed offset moves."""
    records: Records = []
    for row in plan:
        q, new = row["queue_id"], row["new_offset"]
        key = (group, topic, q)
        end = core.store.queue_offsets(topic, q)[1]  # (a topic deleted since the plan: UnknownTopicError)
        if new > end:  # deleted and created again since the plan
            raise InvalidArgumentError(f"{topic!r} queue {q} ends at {end} now, before {new}: plan again")
        st = core.pops.get(key)
        if st is not None and (st.cursor != new or st.inflight):
            records.append(("pop", core.pops.plan_reset(key, new, gen_floor)))
        prev = core.offsets.query(*key)
        if prev != new:  # `prev` lets a truncation undo it without reading the log
            records.append(("offset", {"group": group, "topic": topic, "queue": q, "offset": new,
                                       "prev": -1 if prev is None else prev}))  # fmt: skip
    return records
