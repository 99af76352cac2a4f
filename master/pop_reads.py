"""What one queue's pop hands out, read before it is planned (master/popper.py).

A pop reads first and plans only what it read, within one byte budget for
the whole answer, so its record never hands out what the answer cannot
carry. Two ways to read:

- `bodies`: the records themselves (a hot queue, or a caller that needs the
  bytes from this broker). The exact tag is checked.
- `entries`: a cold queue whose caller reads the bodies from a slave
  (`PopRequest.bodies_elsewhere`): the ConsumeQueue entries alone (offset,
  size, tag hash), no CommitLog byte is read here. The tag filter is by
  hash: a collision is handed out and the caller, which sees the tag, acks
  it. The budget counts each record's size as `bodies` does, so both hand
  out the same messages.

An expired entry handed out again whose exact tag the expression does not
match is left to a pop it matches (another expression's hand-out), except
when its tag hash does match: then it can only be a collision a cold pop
handed out and its caller failed to ack (it would be left in flight for
good once the queue is hot), so it is returned in `passed`, for the pop to
ack: consumed, as a fresh collision is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.pop.state import QueueState
from core.record import Record, iter_records, tag_hash
from core.redirect import Advice
from core.route import MASTER_ID
from core.store import MessageStore
from core.store.entries import Entry, read_entries
from core.subscription import Subscription

POP_READ_BYTES = 4 << 20
HANDLE_BYTES = 256  # a receipt handle and a message's framing in the answer, counted in its budget

Got = tuple[Record, bytes] | Entry  # a record read, or known by its entry only


def offset_of(got: Got) -> int:
    return got.queue_offset if isinstance(got, Entry) else got[0].queue_offset


def size_of(got: Got) -> int:
    return got.size if isinstance(got, Entry) else len(got[1])


@dataclass
class Reading:
    """One queue's read: what to hand out again (None: removed by retention,
    nothing to deliver) and new, where the cursor stops, the budget left."""

    again: dict[int, Got | None] = field(default_factory=dict)
    fresh: list[Got] = field(default_factory=list)
    passed: list[int] = field(default_factory=list)  # expired collisions: to ack, not hand out
    end: int = 0
    budget: int = 0


def split(data: bytes) -> list[tuple[Record, bytes]]:
    """The records of a read, each with its bytes."""
    out, pos = [], 0
    for rec in iter_records(data, verify=False):
        out.append((rec, data[pos : pos + rec.size]))
        pos += rec.size
    return out


def read_one(store: MessageStore, topic: str, queue_id: int, offset: int) -> tuple[Record, bytes] | None:
    read = store.read(topic, queue_id, offset, 1, POP_READ_BYTES)
    for rec, raw in split(read.data):
        return (rec, raw) if rec.queue_offset == offset else None
    return None


def _entry_one(store: MessageStore, topic: str, queue_id: int, offset: int) -> Entry | None:
    got = read_entries(store, topic, queue_id, offset, 1, POP_READ_BYTES).entries
    return got[0] if got and got[0].queue_offset == offset else None


def _tag_check(sub: Subscription, cold: bool) -> Callable[[Got], bool]:
    """Whether a message matches: by the exact tag, or (cold) by its hash."""
    if cold:
        hashes = sub.hash_filter()
        return lambda g: hashes is None or (isinstance(g, Entry) and hashes(g.tag_hash))
    return lambda g: isinstance(g, tuple) and sub.matches(g[0].tags)


def read_queue(
    store: MessageStore,
    topic: str,
    queue_id: int,
    again: list[int],
    cursor: int,
    want: int,
    budget: int,
    first: bool,
    sub: Subscription,
    visible_end: int | None,
    cold: bool,
) -> Reading:
    """Up to `want` messages of one queue: the expired offsets `again`
    first, then new ones from `cursor`, within `budget` bytes (`first`: the
    answer's first message goes whatever its size). `cold`: entries only."""
    out = Reading(end=cursor, budget=budget)
    tag_ok = _tag_check(sub, cold)
    hashes = sub.hash_filter()
    stopped = False  # by the budget
    for o in again[:want]:
        got = _entry_one(store, topic, queue_id, o) if cold else read_one(store, topic, queue_id, o)
        if got is not None and not tag_ok(got):
            if isinstance(got, tuple) and hashes is not None and hashes(tag_hash(got[0].tags)):
                out.passed.append(o)  # a collision a cold pop handed out, never acked: consumed
            continue  # else another expression's hand-out: left to a pop it matches
        if not _take(out, o, got, first):
            stopped = True
            break
    if stopped or len(out.again) >= want or out.budget <= 0:
        return out
    room = min(out.budget, POP_READ_BYTES)
    n = want - len(out.again)
    fresh: list[Got]
    if cold:
        er = read_entries(store, topic, queue_id, cursor, n, room, sub.hash_filter(), visible_end)
        fresh, out.end = list(er.entries), max(cursor, er.next_queue_offset)
    else:
        read = store.read(topic, queue_id, cursor, n, room, sub.hash_filter(), visible_end)
        fresh, out.end = list(split(read.data)), max(cursor, read.next_queue_offset)
    for got in fresh:
        if not tag_ok(got):
            continue  # (a tag hash collision): passed, consumed
        size = size_of(got) + HANDLE_BYTES
        if size > out.budget and not (first and not out.again and not out.fresh):
            out.end = offset_of(got)
            break
        out.fresh.append(got)
        out.budget -= size
    return out


def cold_slave(
    advice: Advice, connected: Sequence[tuple[int, int]], visible: int | None
) -> tuple[int, int | None]:
    """(the slave a queue's bodies are read from, -1: none; the end of what
    the pop may hand out): a slave the advice names among the `connected`
    (broker id, acked offset), and only what it holds, so the caller rarely
    has to fall back to the master."""
    acked = dict(connected).get(advice.suggested_broker_id)
    if advice.suggested_broker_id <= MASTER_ID or acked is None:  # (None: gone since the advice)
        return -1, visible
    return advice.suggested_broker_id, acked if visible is None else min(visible, acked)


def pop_cursor(st: QueueState | None, store: MessageStore, committed: int | None, topic: str, q: int) -> int:
    """Where a pop of the queue would start now (read without the pop lock:
    for the advice, which needs no exact cursor)."""
    if st is not None:
        return st.cursor
    lo, _ = store.queue_offsets(topic, q)
    return max(committed or lo, lo)


def _take(out: Reading, offset: int, got: Got | None, first: bool) -> bool:
    """Add an expired entry to hand out again if the budget has room."""
    size = 0 if got is None else size_of(got) + HANDLE_BYTES
    if size > out.budget and not (first and not out.again):
        return False
    out.again[offset] = got
    out.budget -= size
    return True
