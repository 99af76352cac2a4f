"""Helpers for store tests: simulated crashes and whole-store consistency checks."""

from __future__ import annotations

import zlib
from pathlib import Path

from core.record import SYSTEM_TOPIC, decode_record, tag_hash
from core.store import MessageStore
from core.store.checkpoint import CLEAN_MARKER


def abandon(store: MessageStore) -> None:
    """Stop a store the way kill -9 would, as far as the files are concerned:
    threads stop, nothing more is flushed, no clean-shutdown marker is written,
    the directory lock is released. The page cache keeps every byte written,
    as it does after a real SIGKILL."""
    store._closed = True
    store._service.close()
    if store._group is not None:
        store._group.close()
    store.commitlog.close()
    store.cqs.close()
    store._dirlock.release()
    assert not (store.data_dir / CLEAN_MARKER).exists()


def segment_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "commitlog").iterdir() if p.name.isdigit())


def log_records(store: MessageStore) -> list[tuple[int, bytes]]:
    """Every record in the log as (physical offset, bytes), validated."""
    out = []
    clog = store.commitlog
    scan = clog.scan(clog.min_offset)
    for hdr in scan:
        out.append((hdr.physical_offset, bytes(clog.record_at(hdr.physical_offset))))
    assert scan.error is None, scan.error
    assert scan.end == clog.max_offset, (scan.end, clog.max_offset)
    return out


def check_consistency(store: MessageStore) -> int:
    """ConsumeQueues and CommitLog agree: every record has its entry, every
    entry points at its record, queue counts match. Returns the count of
    message records (system records are not indexed)."""
    records = log_records(store)
    per_queue: dict[tuple[str, int], list[int]] = {}
    messages = 0
    for phys, raw in records:
        rec = decode_record(raw)
        if rec.topic == SYSTEM_TOPIC:
            continue
        messages += 1
        assert rec.physical_offset == phys
        cq = store.cqs.get(rec.topic, rec.queue_id)
        assert cq is not None, f"no consume queue for {rec.topic}/{rec.queue_id}"
        assert cq.entry(rec.queue_offset) == (phys, len(raw), tag_hash(rec.tags))
        per_queue.setdefault((rec.topic, rec.queue_id), []).append(rec.queue_offset)
    for key, cq in store.cqs.queues.items():
        offsets = per_queue.get(key, [])
        assert offsets == list(range(cq.min_offset, cq.max_offset)), key
    return messages


def crc_of(raw: bytes) -> int:
    return zlib.crc32(raw)
