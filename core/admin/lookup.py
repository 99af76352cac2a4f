"""Message lookup: by id (a native id locates its record, core/admin/ids.py)
and by key or RocketMQ message id (a bounded scan of a topic's newest
entries; docs/design.md, "Admin commands", says why no index)."""

from __future__ import annotations

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
) -> tuple[list[bytes], int, bool]:
    """(records, entries scanned, complete): the newest `max_found` messages
    of `topic` matching `key`, newest first, from the last `max_scan`
    entries of each queue; complete when every queue was scanned down to
    its oldest entry."""
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
    found: list[tuple[int, bytes]] = []  # (store ms, record)
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
                    found.append((rec.store_ms, raw))
        finally:
            store.cqs.unpin(cq)
    found.sort(key=lambda f: f[0], reverse=True)
    return [raw for _t, raw in found[:max_found]], scanned, complete
