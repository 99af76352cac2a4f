"""Message lookup: by id (a native id locates its record, core/admin/ids.py)
and by key or RocketMQ message id (a bounded scan of a topic's newest
entries; docs/design.md, "Admin commands", says why no index)."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.errors import CorruptRecordError, InvalidArgumentError, MessageNotFoundError, UnknownTopicError
from core.record import SYSTEM_FLAG, Record, decode_record, validate_topic
from core.rocketmq.translate import KEY_SEPARATOR, MESSAGE_ID

if TYPE_CHECKING:
    from core.store import MessageStore

DEFAULT_SCAN = 10_000
MAX_SCAN = 1_000_000
DEFAULT_FOUND = 32
MAX_FOUND = 1024
MAX_KEY_CHARS = 1024
MAX_ANSWER_BYTES = 32 * 1024 * 1024  # records per answer: half the 64 MiB gRPC message limit
STOP_EVERY = 1024  # entries scanned between two looks at the caller's deadline


def matches(rec: Record, key: str) -> bool:
    """The record carries `key` among its keys, or as its RocketMQ message id."""
    return key in rec.keys.split(KEY_SEPARATOR) or rec.properties.get(MESSAGE_ID) == key


def get_message(store: MessageStore, physical_offset: int, visible_end: int | None) -> bytes:
    """The stored bytes of the message at `physical_offset`: a whole record
    starting there (framing, the offset it claims and its CRC checked), not a
    system record, and visible to reads (confirmed, in sync replication)."""
    clog = store.commitlog
    where = f"no message at offset {physical_offset} of this log"
    if not clog.min_offset <= physical_offset < clog.max_offset:
        why = "removed by retention" if physical_offset < clog.min_offset else "past its end"
        raise MessageNotFoundError(f"{where} ({why}: it holds {clog.min_offset}..{clog.max_offset})")
    try:
        data = bytes(clog.record_at(physical_offset))
        rec = decode_record(data)
    except CorruptRecordError:
        raise MessageNotFoundError(f"{where} (no record starts there)") from None
    if rec.flags & SYSTEM_FLAG:
        raise MessageNotFoundError(f"{where} (a system record)")
    if visible_end is not None and physical_offset + len(data) > visible_end:
        raise MessageNotFoundError(f"{where} (not confirmed by the slaves yet)")
    return data


def find_messages(
    store: MessageStore,
    topic: str,
    key: str,
    max_scan: int,
    max_found: int,
    visible_end: int | None,
    stop: Callable[[], bool] = lambda: False,
    max_bytes: int = MAX_ANSWER_BYTES,
) -> tuple[list[bytes], int, bool]:
    """(records, entries scanned, complete): the newest `max_found` messages
    of `topic` matching `key`, newest first, from the last `max_scan`
    entries of each queue; complete when every queue was scanned down to
    its oldest entry, no match was left out for `max_bytes` and `stop`
    (asked every STOP_EVERY entries: the call was cancelled or is near its
    deadline) did not end the scan. Memory is bounded by what is kept: at
    most `max_found` records and `max_bytes` bytes (a heap, the oldest
    match dropped first), whatever the scan finds."""
    count = store.topics.queue_count(validate_topic(topic).decode())
    if count is None:
        raise UnknownTopicError(f"topic {topic!r} does not exist")
    if not key or len(key) > MAX_KEY_CHARS:
        raise InvalidArgumentError(f"a key of 1..{MAX_KEY_CHARS} characters is needed")
    max_scan = max_scan or DEFAULT_SCAN
    max_found = max_found or DEFAULT_FOUND
    if not 1 <= max_scan <= MAX_SCAN or not 1 <= max_found <= MAX_FOUND:
        raise InvalidArgumentError(f"max_scan must be in 1..{MAX_SCAN}, max_messages in 1..{MAX_FOUND}")
    needle = key.encode()
    kept = Newest(max_found, max_bytes)
    scanned = 0
    complete = True
    clog = store.commitlog
    for q in range(count):
        lo, hi = store.queue_offsets(topic, q)
        start = max(lo, hi - max_scan)
        complete = complete and start == lo
        cq = store.cqs.get(topic, q)
        if cq is None:
            continue
        store.cqs.pin(cq)
        try:
            for _q, phys, size, _th in cq.entries(start, hi):
                scanned += 1
                if scanned % STOP_EVERY == 0 and stop():
                    return kept.newest_first(), scanned, False
                if visible_end is not None and phys + size > visible_end:
                    break
                view = clog.view(phys, size)
                if view is None or len(view) != size:
                    continue  # removed by retention under the scan
                raw = bytes(view)
                if needle not in raw:  # most records: no decode
                    continue
                try:
                    rec = decode_record(raw)
                except CorruptRecordError:
                    continue
                if matches(rec, key):
                    kept.add(rec.store_ms, phys, raw)
        finally:
            store.cqs.unpin(cq)
    return kept.newest_first(), scanned, complete and not kept.cut


class Newest:
    """The newest matches by store time, at most `count` of them and
    `max_bytes` bytes: a min-heap, so each match costs log(count) and the
    oldest kept is the first dropped. `cut`: a match was left out for bytes
    alone (it would have been kept by count)."""

    def __init__(self, count: int, max_bytes: int) -> None:
        self.count = count
        self.max_bytes = max_bytes
        self.bytes = 0
        self.cut = False
        self._heap: list[tuple[int, int, bytes]] = []  # (store ms, physical offset, record)

    def add(self, store_ms: int, phys: int, raw: bytes) -> None:
        item = (store_ms, phys, raw)
        if len(self._heap) >= self.count:
            if item[:2] <= self._heap[0][:2]:
                return  # older than everything kept
            self.bytes -= len(heapq.heapreplace(self._heap, item)[2])
        else:
            heapq.heappush(self._heap, item)
        self.bytes += len(raw)
        while self.bytes > self.max_bytes:
            self.cut = True
            self.bytes -= len(heapq.heappop(self._heap)[2])

    def newest_first(self) -> list[bytes]:
        return [raw for _t, _p, raw in sorted(self._heap, reverse=True)]
