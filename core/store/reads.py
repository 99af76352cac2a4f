"""Reading a ConsumeQueue's records out of the CommitLog: the pull path's
read, moved out of store.py (`MessageStore.read` delegates here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from core.errors import CorruptRecordError, InvalidArgumentError, InvalidOffsetError, StoreClosedError
from core.record import FIXED, HEADER_SIZE, RECORD_MAGIC

if TYPE_CHECKING:
    from core.store.store import MessageStore

FILTER_SCAN_LIMIT = 16_384  # ConsumeQueue entries one filtered read may skip


class ReadStatus(Enum):
    FOUND = "FOUND"
    NO_NEW_MSG = "NO_NEW_MSG"
    NO_MATCHED_MSG = "NO_MATCHED_MSG"
    OFFSET_TOO_SMALL = "OFFSET_TOO_SMALL"
    OFFSET_OVERFLOW = "OFFSET_OVERFLOW"


@dataclass(slots=True)
class ReadResult:
    status: ReadStatus
    data: bytes
    count: int
    next_queue_offset: int
    min_offset: int
    max_offset: int
    next_physical_offset: int


def _is_record(v: memoryview, size: int, queue_id: int, queue_offset: int, phys: int) -> bool:
    """Does `v` hold the record a ConsumeQueue entry says is there?"""
    rsize, magic, _, rqid, _, rqoff, rphys = FIXED.unpack_from(v)[:7]
    return (rsize, magic, rqid, rqoff, rphys) == (size, RECORD_MAGIC, queue_id, queue_offset, phys)


def read_queue(
    store: MessageStore,
    topic: str,
    queue_id: int,
    queue_offset: int,
    max_count: int,
    max_bytes: int,
    tag_filter: Callable[[int], bool] | None = None,
    visible_end: int | None = None,
) -> ReadResult:
    """Stored record bytes from `queue_offset` on, laid end to end.

    At most `max_count` records and `max_bytes` bytes, but at least one
    record when one is there. `tag_filter(tag_hash)` skips entries on the
    ConsumeQueue without touching the CommitLog. Records that end past
    `visible_end` (the confirmed offset, in sync replication) are not
    there yet for this read.
    """
    if store._closed:
        raise StoreClosedError("store is closed")
    store._check_queue(topic, queue_id)
    if isinstance(queue_offset, bool) or not isinstance(queue_offset, int) or queue_offset < 0:
        raise InvalidOffsetError(f"queue offset must be a non-negative integer, got {queue_offset!r}")
    if not isinstance(max_count, int) or max_count <= 0:
        raise InvalidArgumentError(f"max_count must be positive, got {max_count!r}")
    if not isinstance(max_bytes, int) or max_bytes <= 0:
        raise InvalidArgumentError(f"max_bytes must be positive, got {max_bytes!r}")
    clog = store.commitlog
    cq = store.cqs.get(topic, queue_id)
    lo, hi = (cq.min_offset, cq.max_offset) if cq is not None else (0, 0)
    if cq is None or queue_offset >= hi or queue_offset < lo:
        if queue_offset < lo:
            status, nxt = ReadStatus.OFFSET_TOO_SMALL, lo
        elif queue_offset == hi:
            status, nxt = ReadStatus.NO_NEW_MSG, hi
        else:
            status, nxt = ReadStatus.OFFSET_OVERFLOW, hi
        return ReadResult(status, b"", 0, nxt, lo, hi, clog.max_offset)
    scan_end = min(hi, queue_offset + (FILTER_SCAN_LIMIT if tag_filter else max_count))
    chunks: list[memoryview] = []
    total = 0
    nxt = queue_offset
    view = clog.view
    hidden = False
    cuts = clog.cuts  # a cut (truncation, log reset) during the read is not corruption
    store.cqs.pin(cq)  # its files stay mapped while this read uses them
    try:
        for q, phys, size, th in cq.entries(queue_offset, scan_end):
            if visible_end is not None and phys + size > visible_end:
                hidden = True
                break
            if tag_filter is not None and not tag_filter(th):
                nxt = q + 1
                continue
            if chunks and total + size > max_bytes:
                break
            v = view(phys, size) if size >= HEADER_SIZE else None
            nxt = q + 1
            if v is None and size >= HEADER_SIZE and phys < clog.min_offset:
                continue  # its segment was deleted under us: skip like a filtered entry
            if v is None or len(v) != size or not _is_record(v, size, queue_id, q, phys):
                if clog.cuts != cuts:  # the log was cut under this read (a slave's): stop here
                    nxt = q
                    break
                raise CorruptRecordError(
                    f"{topic}/{queue_id} entry {q} points at {size} bytes at {phys}: not that record"
                )
            chunks.append(v)
            total += size
            if len(chunks) >= max_count:
                break
        next_phys = cq._entry(nxt)[0] if nxt < cq.max_offset else clog.max_offset
    finally:
        store.cqs.unpin(cq)
    try:
        data = b"".join(chunks)
    except ValueError as exc:  # a mapping released by close() under us
        raise StoreClosedError("store closed during the read") from exc
    count = len(chunks)
    del chunks
    if count:
        status = ReadStatus.FOUND
    elif hidden and nxt == queue_offset:
        status = ReadStatus.NO_NEW_MSG  # the next record is not confirmed yet
    else:
        status = ReadStatus.NO_MATCHED_MSG
    return ReadResult(status, data, count, nxt, lo, hi, next_phys)
