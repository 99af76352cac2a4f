"""Reads of a queue's ConsumeQueue entries alone, never its CommitLog bytes.

A master pops a cold queue for a caller that reads the bodies from a slave
(master/pop_reads.py): it needs where each record is and how big, and its
tag hash for a filter, which the 20-byte entries hold. The limits match
`MessageStore.read`'s, so a pop planned from entries hands out what a read
of the bodies would have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.errors import CorruptRecordError, InvalidArgumentError, InvalidOffsetError, StoreClosedError
from core.record import HEADER_SIZE
from core.store.reads import FILTER_SCAN_LIMIT
from core.store.store import MessageStore


@dataclass(frozen=True, slots=True)
class Entry:
    queue_offset: int
    size: int  # the stored record's bytes
    tag_hash: int
    physical_offset: int  # where the record is in the CommitLog


@dataclass(frozen=True, slots=True)
class EntryRead:
    entries: list[Entry]
    next_queue_offset: int  # the first offset this read did not pass


def read_entries(
    store: MessageStore,
    topic: str,
    queue_id: int,
    queue_offset: int,
    max_count: int,
    max_bytes: int,
    tag_filter: Callable[[int], bool] | None = None,
    visible_end: int | None = None,
) -> EntryRead:
    """The entries from `queue_offset` on that `store.read` would return
    records for, with the same limits: at most `max_count` entries and
    `max_bytes` of records (at least one when one is there), entries whose
    tag hash `tag_filter` refuses passed, entries of records that end past
    `visible_end` not there yet, entries whose record retention removed
    passed. An offset outside the queue reads nothing (the next offset
    stays where it was, or moves up to the queue's first)."""
    if store._closed:
        raise StoreClosedError("store is closed")
    lo, hi = store.queue_offsets(topic, queue_id)  # validates topic and queue
    if isinstance(queue_offset, bool) or not isinstance(queue_offset, int) or queue_offset < 0:
        raise InvalidOffsetError(f"queue offset must be a non-negative integer, got {queue_offset!r}")
    if max_count <= 0 or max_bytes <= 0:
        raise InvalidArgumentError("max_count and max_bytes must be positive")
    cq = store.cqs.get(topic, queue_id)
    if cq is None or queue_offset >= hi:
        return EntryRead([], queue_offset)
    start = max(queue_offset, lo)
    scan_end = min(hi, start + (FILTER_SCAN_LIMIT if tag_filter else max_count))
    log_min = store.commitlog.min_offset
    out: list[Entry] = []
    total = 0
    nxt = start
    store.cqs.pin(cq)  # its files stay mapped while this read uses them
    try:
        for q, phys, size, th in cq.entries(start, scan_end):
            if visible_end is not None and phys + size > visible_end:
                break
            if tag_filter is not None and not tag_filter(th):
                nxt = q + 1
                continue
            if out and total + size > max_bytes:
                break
            nxt = q + 1
            if size < HEADER_SIZE:
                raise CorruptRecordError(f"{topic}/{queue_id} entry {q} gives {size} bytes: not a record")
            if phys < log_min:
                continue  # its segment was deleted: passed, as `store.read` passes it
            out.append(Entry(q, size, th, phys))
            total += size
            if len(out) >= max_count:
                break
    finally:
        store.cqs.unpin(cq)
    return EntryRead(out, nxt)
