"""The pop revive pass's commits (master/popper.py): a group's committed
offset follows each queue's commit point, through the log like any commit.

The commit point is read and its `offset` record appended in one step under
the pop lock (the replication wait comes after, outside it). An operator's
reset of a pop queue (core/admin/reset.py) writes its `rst` and `offset`
records under the same lock (`LeaderRole.write_system`), so a commit point
read before a reset is never appended after it: the reset's offset is not
written over by the old position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import InvalidOffsetError, TailraceError
from core.pop.state import Key

if TYPE_CHECKING:
    from master.popper import Popper


def _ahead(p: Popper, key: Key) -> tuple[int | None, int | None]:
    """(the commit point, the committed offset) when the point is ahead of it; else (None, None)."""
    point = p.table.commit_point(key)
    committed = p.leader.core.offsets.query(*key)
    if point is None or (committed is not None and point <= committed):
        return None, None  # a commit that moves nothing is never written
    return point, committed


def commit(p: Popper, key: Key, now: int) -> None:
    """Commit the group's offset at the queue's commit point if that moves
    it, at most every `commit_interval_ms` per queue (the first time that
    long after the point is first seen ahead); a failure is retried next pass."""
    if _ahead(p, key)[0] is None:
        return
    due = p._commit_due.setdefault(key, now + p.commit_interval_ms)
    if now < due <= now + p.commit_interval_ms:  # (a clock stepped back: due now)
        return
    leader = p.leader
    core = leader.core
    try:
        with leader._writing(), p._lock:
            point, committed = _ahead(p, key)  # again, under the lock: a reset may have come between
            if point is None:
                return
            end = core.store.queue_offsets(key[1], key[2])[1]  # (a deleted topic: UnknownTopicError)
            if point > end:
                raise InvalidOffsetError(f"commit point {point} is past the queue's end {end}")
            payload = {"group": key[0], "topic": key[1], "queue": key[2], "offset": point}
            core.store.append_system("offset", payload | {"prev": -1 if committed is None else committed})
        p._confirm("committed")
    except TailraceError as exc:
        p._warn("pop: committing %s/%s queue %d failed: %s", *key, exc)
        return
    p._commit_due[key] = now + p.commit_interval_ms
