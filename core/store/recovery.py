"""Bringing a store back to a consistent state when it opens.

Clean stop (the marker is there): trust the end offset it recorded.

Unclean stop: walk the CommitLog from the start of the segment that holds the
checkpoint (the older of the flushed and dispatched offsets), validating
every record (magic, bounds, CRC, and that it sits at the offset it claims).
The first record that fails ends the log: the bytes from there to the end of
that segment, and every later segment, are physically removed, so no later
restart can revive them. Records from the dispatched checkpoint on are
re-dispatched into their ConsumeQueues (idempotent), and every ConsumeQueue
is trimmed of entries that point past the new end.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from core.record import SYSTEM_TOPIC, tag_hash
from core.store.checkpoint import Checkpoint
from core.store.commitlog import CommitLog
from core.store.cqset import ConsumeQueueSet

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RecoveryReport:
    clean: bool
    fresh: bool = False
    end_offset: int = 0
    scanned_from: int | None = None
    records_scanned: int = 0
    records_redispatched: int = 0
    cut_at: int | None = None
    cut_reason: str | None = None
    bytes_cut: int = 0
    segments_removed: list[str] = field(default_factory=list)
    cq_entries_dropped: int = 0
    system_records: list[int] = field(default_factory=list)  # offsets of those scanned
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recover(
    clog: CommitLog,
    cqs: ConsumeQueueSet,
    clean_end: int | None,
    ckpt: Checkpoint | None,
) -> RecoveryReport:
    t0 = time.monotonic()
    if clean_end is None and ckpt is None and not clog.segments():
        clog.start_writing_at(0)
        log.info("new store: log starts at 0")
        return RecoveryReport(clean=True, fresh=True)
    if clean_end is not None and _clean_end_plausible(clog, clean_end):
        report = RecoveryReport(clean=True, end_offset=clean_end)
        clog.truncate_unused_after(clean_end)
        clog.start_writing_at(clean_end)
        for cq in cqs.queues.values():
            cq.correct_min(clog.min_offset)
        report.duration_ms = (time.monotonic() - t0) * 1000
        log.info("store opened after a clean stop: log ends at %d", clean_end)
        return report

    report = RecoveryReport(clean=False)
    lo = clog.min_offset
    if ckpt is not None:
        anchor = max(lo, min(ckpt.commitlog_flushed, ckpt.dispatched))
        dispatch_from = max(lo, ckpt.dispatched)
    else:
        anchor = dispatch_from = lo
    start = max(lo, anchor - anchor % clog.segment_bytes)
    report.scanned_from = start
    scan = clog.scan(start)
    for hdr in scan:
        report.records_scanned += 1
        if hdr.topic == SYSTEM_TOPIC:
            report.system_records.append(hdr.physical_offset)
            continue
        if hdr.physical_offset >= dispatch_from:
            cqs.dispatch(
                [
                    (
                        hdr.topic,
                        hdr.queue_id,
                        hdr.queue_offset,
                        hdr.physical_offset,
                        hdr.size,
                        tag_hash(hdr.tags),
                    )
                ]
            )
            report.records_redispatched += 1
    end = scan.end
    report.system_records = [p for p in report.system_records if p < end]
    bytes_cut, removed = clog.truncate(end)
    report.end_offset = end
    report.bytes_cut = bytes_cut
    report.segments_removed = removed
    if scan.error is not None or bytes_cut:
        report.cut_at = end
        report.cut_reason = scan.error or "partial record after the last valid one"
    # Nothing scanned is known durable (pages may be dirty since the kill, and
    # the cut was just written): the checkpoint at open syncs it all again.
    clog.start_writing_at(end, flushed=start)
    cqs.cap_unloaded(end)  # queues not loaded yet are trimmed when they load
    for cq in list(cqs.queues.values()):
        report.cq_entries_dropped += cq.trim(end)
        cq.correct_min(clog.min_offset)
        cq.mark_unflushed()
    cqs.remove_empty()
    report.duration_ms = (time.monotonic() - t0) * 1000
    if report.cut_at is not None:
        log.warning(
            "recovery cut the log at %d: %s; removed %d bytes and segments %s; "
            "dropped %d consume-queue entries",
            end,
            report.cut_reason,
            bytes_cut,
            removed or "none",
            report.cq_entries_dropped,
        )
    log.info(
        "recovered after an unclean stop in %.1f ms: scanned %d records from %d, "
        "re-dispatched %d, log ends at %d",
        report.duration_ms,
        report.records_scanned,
        start,
        report.records_redispatched,
        end,
    )
    return report


def _clean_end_plausible(clog: CommitLog, end: int) -> bool:
    """A clean marker is believed only if its end lies within the files on disk."""
    if end < clog.min_offset:
        return False
    segs = clog.segments()
    return end <= clog.min_offset + len(segs) * clog.segment_bytes
