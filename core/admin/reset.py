"""Offset resets: the plan (a plain function of the queues' offsets), the
search of a queue offset by store time, and carrying a plan out.

A reset is a commit per queue (`LeaderRole.commit_offset`): an `offset`
record in the log, so it replicates, survives a failover and is undone with
a cut tail like any commit. It is refused while the group has live members
on the topic (their next commit would write over it) unless forced, and for
a group that pops from the topic (its position is its pop cursor, which a
commit does not move).
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
    TailraceError,
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
) -> tuple[list[dict[str, Any]], bool, list[str]]:
    """(plan, applied, live members). Everything is checked before the first
    commit: a refusal changes nothing."""
    validate_group(group)
    check_client_group(group)
    count = core.store.topics.queue_count(validate_topic(topic).decode())
    if count is None:
        raise UnknownTopicError(f"topic {topic!r} does not exist")
    store = core.store
    spans = [
        QueueSpan(q, *store.queue_offsets(topic, q), core.offsets.query(group, topic, q))
        for q in range(count)
    ]
    at_time = (
        {q: offset_at_time(store, topic, q, at_ms) for q in range(count)} if target is Target.TIME else None
    )
    plan = plan_reset(spans, target, offset, at_time)
    members = core.groups.members(group, topic, now_ms)
    if any(core.pops.get((group, topic, q)) is not None for q in range(count)):
        raise InvalidArgumentError(
            f"group {group!r} pops from {topic!r}: its position is its pop cursor, which a reset "
            "does not move (not supported)"
        )
    if dry_run:
        return plan, False, members
    if members and not force:
        raise GroupActiveError(
            f"group {group!r} has {len(members)} live member(s) on {topic!r} ({', '.join(members)}): "
            "stop them first, or force it (they may commit over the reset)"
        )
    leader = core.leader()
    done: list[int] = []
    for row in plan:
        if not row["committed"] or row["new_offset"] != row["old_offset"]:
            try:
                leader.commit_offset(group, topic, row["queue_id"], row["new_offset"])
            except TailraceError as exc:
                raise partly_done(exc, row["queue_id"], done) from exc
        done.append(row["queue_id"])
    return plan, True, members


def partly_done(exc: TailraceError, queue_id: int, done: list[int]) -> TailraceError:
    """`exc` (same class: the same status code and retry advice), saying
    which queues of this broker group were reset before queue `queue_id` failed."""
    before = f"queues {', '.join(map(str, done))} were reset before it" if done else "no queue was reset"
    out = type(exc).__new__(type(exc))  # its own fields kept (some take more than a message)
    out.__dict__.update(exc.__dict__)
    out.message = f"reset stopped at queue {queue_id} ({exc.message}); {before}, the rest were not"
    out.args = (out.message,)
    return out
