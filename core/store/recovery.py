"""Bringing a store back to a consistent state when it opens.

Clean stop (the marker is there): trust the end offset it recorded.

Unclean stop: walk the CommitLog from the start of the segment that holds the
checkpoint (the older of the flushed and dispatched offsets), validating
every record (magic, bounds, CRC, and that it sits at the offset it claims).
The first record that fails ends the log: the bytes from there to the end of
that segment, and every later segment, are physically removed from the log,
so no later restart can revive them. They are not deleted: first they are
kept in `<data>/quarantine/<cut offset>-<ms>/` (`quarantine_tail`), which
nothing reads back; if that cannot be written, the store does not open
(StorageFullError) rather than lose them. Records from the dispatched
checkpoint on are re-dispatched into their ConsumeQueues (idempotent), in
log order with the topic deletions among them (core/store/deletion.py), and
every ConsumeQueue is trimmed of entries that point past the new end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import StorageFullError
from core.fileutil import fsync_dir
from core.record import PREFIX, SYSTEM_TOPIC, tag_hash
from core.store.checkpoint import Checkpoint
from core.store.commitlog import CommitLog, last_nonzero
from core.store.cqset import ConsumeQueueSet
from core.store.deletion import deleted_topic

log = logging.getLogger(__name__)
QUARANTINE = "quarantine"  # beside commitlog/ in the data dir


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
    quarantined: str | None = None  # the folder that keeps what was cut
    bytes_quarantined: int = 0
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
    quarantine: Path | None = None,
) -> RecoveryReport:
    """Bring the log and its ConsumeQueues back to a consistent end (see the
    module); what an unclean recovery cuts is kept under `quarantine`."""
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
            if hdr.physical_offset >= dispatch_from and (gone := deleted_topic(clog, hdr)) is not None:
                cqs.drop_topic(gone)  # what was re-dispatched before it goes again (deletion.py)
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
    reason = scan.error or "partial record after the last valid one"
    if quarantine is not None:
        kept, folder = quarantine_tail(clog, end, quarantine, reason)
        if folder is not None:
            report.quarantined, report.bytes_quarantined = str(folder), kept
    bytes_cut, removed = clog.truncate(end)
    report.end_offset = end
    report.bytes_cut = bytes_cut
    report.segments_removed = removed
    if scan.error is not None or bytes_cut:
        report.cut_at = end
        report.cut_reason = reason
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
            "recovery cut the log at %d: %s; removed %d bytes and segments %s (kept in %s); "
            "dropped %d consume-queue entries",
            end,
            report.cut_reason,
            bytes_cut,
            removed or "none",
            report.quarantined or "no quarantine",
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


def quarantine_tail(clog: CommitLog, offset: int, root: Path, reason: str) -> tuple[int, Path | None]:
    """Keep what cutting the log at `offset` will remove, before it is cut:
    the rest of the segment holding `offset` (up to its last non-zero byte)
    as `<offset>` (the file's first byte is the log's byte `offset`), every
    later segment that holds data as `<its name>.segment` (a hard link, so
    nothing is copied), and `cut.json` (where, why, how much). Returns (bytes
    kept, folder), or (0, None) when the cut removes no data. Raises
    StorageFullError if they cannot be kept: the caller must not cut then."""
    seg_bytes = clog.segment_bytes
    first_base = offset - offset % seg_bytes
    head = clog.segment_for(offset)
    rel = offset - first_base
    head_end = last_nonzero(head.view, rel, seg_bytes) if head is not None else rel
    later = [
        s
        for s in clog.segments()
        if int(s.path.name) > first_base and PREFIX.unpack_from(s.view, 0) != (0, 0)
    ]  # a pre-allocated, unused file holds nothing
    if head_end == rel and not later:
        return 0, None
    folder = root / f"{offset:020d}-{int(time.time() * 1000)}"
    kept = 0
    try:
        folder.mkdir(parents=True, mode=0o700)
        files: list[str] = []
        if head is not None and head_end > rel:
            with open(folder / f"{offset:020d}", "xb") as f:
                f.write(head.view[rel:head_end])
                f.flush()
                os.fsync(f.fileno())
            files.append(f"{offset:020d}")
            kept += head_end - rel
        for seg in later:
            name = f"{seg.path.name}.segment"
            try:
                os.link(seg.path, folder / name)
            except OSError:  # no hard links here: copy
                shutil.copyfile(seg.path, folder / name)
            files.append(name)
            kept += last_nonzero(seg.view, 0, seg_bytes)
        note = {
            "cut_at": offset,
            "reason": reason,
            "bytes": kept,
            "files": files,
            "at_ms": int(time.time() * 1000),
        }
        with open(folder / "cut.json", "x") as f:
            json.dump(note, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(folder)
        fsync_dir(root)
    except OSError as exc:
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)
        raise StorageFullError(
            f"recovery must cut the log at {offset} ({reason}) but cannot keep the cut part in "
            f"{root}: {exc.strerror or exc}; nothing was cut: free space there and start again"
        ) from exc
    log.error("recovery keeps %d bytes cut from the log at %d in %s (%s)", kept, offset, folder, reason)
    return kept, folder


def quarantine_usage(root: Path) -> tuple[int, int]:
    """(cut tails kept, their bytes) under `root` (shown in metrics)."""
    tails = size = 0
    with contextlib.suppress(FileNotFoundError):
        for folder in root.iterdir():
            with contextlib.suppress(OSError):
                note = json.loads((folder / "cut.json").read_text())
                tails += 1
                size += int(note.get("bytes", 0))
    return tails, size
