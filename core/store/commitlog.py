"""The CommitLog: one log for all topics, in fixed-size mmap'd segment files.

Segment files are named by their 20-digit start offset and are all
`segment_bytes` long. A record never spans two segments: when one does not fit
(with room left for an 8-byte marker), the rest of the segment is declared
blank by an end-of-segment marker and the record starts the next file.

Invariant the recovery relies on: every byte past the end of the log is zero
(pre-allocated files are zero, and recovery zeroes what it cuts), so a cut
record can never be revived by a later scan.

Concurrency: one writer at a time (the store's write lock); readers never
lock. `write_pos` advances only after a whole batch is in place, and
`(base, segments)` is swapped as one tuple, so a reader sees a consistent view.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from core.errors import ConfigError, CorruptRecordError
from core.record import (
    BLANK_MAGIC,
    BLANK_MIN,
    CRC,
    FIXED,
    PREFIX,
    RECORD_MAGIC,
    Entry,
    RecordHeader,
    check_marker,
    frames,
    record_headers,
)
from core.store.allocator import SegmentAllocator, segment_name
from core.store.mapped import MappedFile

ZERO_CHUNK = bytes(1 << 20)


# A validated message, encoded except for offsets and timestamps (a plain
# tuple: the append loop unpacks it, which is cheaper than attribute access):
# (topic, meta block (record bytes 56.. before the body), body, queue id,
#  flags, born ms, record size, tag hash)
Prepared = tuple[str, bytes, bytes, int, int, int, int, int]


def last_nonzero(view: memoryview, start: int, end: int) -> int:
    """Offset just past the last non-zero byte in view[start:end] (start if none)."""
    hi = end
    while hi > start:
        lo = max(start, hi - len(ZERO_CHUNK))
        chunk = view[lo:hi]
        if chunk != ZERO_CHUNK[: hi - lo]:
            data = bytes(chunk).rstrip(b"\0")
            return lo + len(data)
        hi = lo
    return start


class LogScan:
    """Walks records from an offset, validating each; stops at the first bad one.

    Records are checked with core.record.frames (the checks every
    decoder shares), including the offset each claims and the room for its
    segment's end marker; markers with core.record.check_marker.

    After iteration, `end` is the offset just past the last valid record (or
    marker), `failure` the CorruptRecordError that stopped the walk early and
    `error` its message (both None at a clean end).
    """

    def __init__(self, log: CommitLog, start: int, limit: int | None = None) -> None:
        self._log = log
        self.start = start
        self.end = start
        self.limit = limit
        self.failure: CorruptRecordError | None = None

    @property
    def error(self) -> str | None:
        return None if self.failure is None else str(self.failure)

    def __iter__(self) -> Iterator[RecordHeader]:
        clog = self._log
        seg_bytes = clog.segment_bytes
        room = seg_bytes - BLANK_MIN
        pos = self.start
        limit = self.limit
        try:
            while limit is None or pos < limit:
                seg = clog.segment_for(pos)
                if seg is None:
                    break
                seg_start = pos - pos % seg_bytes
                view = seg.view
                walk = record_headers(
                    view, pos - seg_start, seg_bytes, base=seg_start, room=room, until_blank=True
                )
                for hdr in walk:
                    pos += hdr.size
                    self.end = pos
                    yield hdr
                    if limit is not None and pos >= limit:
                        return
                rel = pos - seg_start  # the walk stopped at a blank: the log's end or a marker
                if rel + BLANK_MIN > seg_bytes:
                    raise CorruptRecordError(f"offset {pos} leaves no room for a record in its segment")
                total, magic = PREFIX.unpack_from(view, rel)
                if total == 0 and magic == 0:
                    break  # the zeroed tail: end of log
                pos = self.end = check_marker(total, pos, seg_bytes)
        except CorruptRecordError as exc:
            self.failure = exc


class CommitLog:
    def __init__(self, directory: Path, segment_bytes: int, warm: bool, sync_warmed: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.segment_bytes = segment_bytes
        for tmp in directory.glob("*.tmp"):
            tmp.unlink()
        self._check_files()
        self.allocator = SegmentAllocator(directory, segment_bytes, warm, sync_warmed)
        self._view: tuple[int, tuple[MappedFile, ...]] = (0, ())
        self.write_pos = 0
        self.cuts = 0  # truncations so far (a read racing one is not corruption)
        self.flushed = 0
        self._flush_lock = threading.Lock()
        self._flush_listeners: list[Callable[[], None]] = []
        self._load_segments()

    # ---- opening -------------------------------------------------------------

    def _check_files(self) -> None:
        for path in self.directory.iterdir():
            if not (path.name.isdigit() and len(path.name) == 20):
                continue
            size = path.stat().st_size
            if size != self.segment_bytes:
                raise ConfigError(
                    "store.segment_bytes",
                    f"existing segment {path.name} is {size} bytes but segment_bytes is "
                    f"{self.segment_bytes}; a log's segment size cannot change",
                )
            if int(path.name) % self.segment_bytes:
                raise ConfigError(
                    "store.segment_bytes", f"segment {path.name} is not aligned to segment_bytes"
                )

    def _segment_paths(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.name.isdigit() and len(p.name) == 20)

    def _load_segments(self) -> None:
        paths = self._segment_paths()
        segs: list[MappedFile] = []
        expected: int | None = None
        for p in paths:
            start = int(p.name)
            if expected is not None and start != expected:
                raise CorruptRecordError(f"segment gap: expected {segment_name(expected)}, found {p.name}")
            segs.append(MappedFile(p, self.segment_bytes))
            expected = start + self.segment_bytes
        base = int(paths[0].name) if paths else 0
        self._view = (base, tuple(segs))

    # ---- positions -----------------------------------------------------------

    @property
    def min_offset(self) -> int:
        return self._view[0]

    @property
    def max_offset(self) -> int:
        return self.write_pos

    def segments(self) -> tuple[MappedFile, ...]:
        return self._view[1]

    def segment_for(self, offset: int) -> MappedFile | None:
        base, segs = self._view
        if offset < base:
            return None
        idx = (offset - base) // self.segment_bytes
        return segs[idx] if idx < len(segs) else None

    def start_writing_at(self, offset: int, flushed: int | None = None) -> None:
        """Set the append position after recovery; make sure its segment exists.

        `flushed` is what is known durable (default: everything below
        `offset`); the next flush syncs from there.
        """
        self.write_pos = offset
        self.flushed = offset if flushed is None else min(flushed, offset)
        if self.segment_for(offset) is None:
            start = offset - offset % self.segment_bytes
            base, segs = self._view
            if not segs:
                base = start
            self._view = (base, (*segs, self.allocator.take(start, expected=False)))
        self.allocator.request(self._next_start(offset))

    def _next_start(self, offset: int) -> int:
        return offset - offset % self.segment_bytes + self.segment_bytes

    # ---- reading -------------------------------------------------------------

    def locate(self, offset: int) -> tuple[MappedFile, int, int] | None:
        """(segment, its start offset, `offset` within it), or None if gone."""
        seg = self.segment_for(offset)
        if seg is None:
            return None
        rel = offset % self.segment_bytes
        return seg, offset - rel, rel

    def view(self, offset: int, size: int) -> memoryview | None:
        """The stored bytes [offset, offset+size), or None if that segment is
        gone (written out, not through `locate`: the read path calls it per record)."""
        seg = self.segment_for(offset)
        if seg is None:
            return None
        rel = offset % self.segment_bytes
        return seg.view[rel : rel + size]

    def record_at(self, offset: int) -> memoryview:
        """The whole record starting at `offset`: its framing checked as
        core.record.frames does (the offset it claims included), not its CRC."""
        if offset < self.min_offset or offset >= self.write_pos:
            raise CorruptRecordError(f"no record at {offset}")
        at = self.locate(offset)
        if at is None:
            raise CorruptRecordError(f"no segment for {offset}")
        seg, seg_start, rel = at
        seg_bytes = self.segment_bytes
        walk = frames(seg.view, rel, seg_bytes, base=seg_start, room=seg_bytes - BLANK_MIN, verify=False)
        for _topic, head in walk:
            return seg.view[rel : rel + head[0]]
        raise CorruptRecordError(f"no record at {offset}")

    def scan(self, start: int, limit: int | None = None) -> LogScan:
        return LogScan(self, start, limit)

    # ---- writing -------------------------------------------------------------

    def append(
        self, batch: Sequence[Prepared], queue_offsets: Sequence[int], store_ms: int
    ) -> tuple[list[Entry], int]:
        """Write records after `write_pos`; return their dispatch entries and the new end.

        The caller holds the store's write lock, dispatches the entries, then
        calls `publish(end)`: until then readers and flushers do not see them.
        All or nothing: if a rollover fails part-way, the bytes written are
        zeroed.
        """
        seg_bytes = self.segment_bytes
        start = self.write_pos
        seg_start = start - start % seg_bytes
        rel = start - seg_start
        seg = self.segment_for(start)
        if seg is None:
            raise CorruptRecordError(f"no segment for write position {start}")
        mm, view = seg.mm, seg.view
        pack_fixed = FIXED.pack_into
        pack_crc = CRC.pack_into
        crc32 = zlib.crc32
        meta_at = FIXED.size
        out: list[Entry] = []
        add = out.append
        try:
            for (topic, meta, body, qid, flags, born, size, th), qoff in zip(
                batch, queue_offsets, strict=True
            ):
                if rel + size + BLANK_MIN > seg_bytes:
                    PREFIX.pack_into(mm, rel, seg_bytes - rel, BLANK_MAGIC)
                    seg_start += seg_bytes
                    seg = self._roll(seg_start)
                    mm, view = seg.mm, seg.view
                    rel = 0
                phys = seg_start + rel
                end = rel + size
                body_at = end - len(body)
                pack_fixed(
                    mm, rel, size, RECORD_MAGIC, 0, qid, flags, qoff, phys,
                    born, store_ms, end - body_at,
                )  # fmt: skip
                mm[rel + meta_at : body_at] = meta
                mm[body_at:end] = body
                pack_crc(mm, rel + 8, crc32(view[rel + 12 : end]))
                add((topic, qid, qoff, phys, size, th))
                rel = end
        except BaseException:
            self.discard(start, seg_start + rel)
            raise
        return out, seg_start + rel

    def publish(self, end: int) -> None:
        """Make everything below `end` visible to readers and flushers."""
        self.write_pos = end

    def discard(self, start: int, end: int) -> None:
        """Undo a failed, unpublished append of [start, end): zero its bytes and
        drop the segments it rolled into (they hold nothing else)."""
        self._zero_range(start, end)
        base, segs = self._view
        first_new = start - start % self.segment_bytes + self.segment_bytes
        keep = tuple(s for s in segs if int(s.path.name) < first_new)
        for s in segs[len(keep) :]:
            self.allocator.forget(s)
            s.close()
            os.unlink(s.path)
        self._view = (base, keep)
        self.allocator.request(first_new)

    def append_raw(self, offset: int, data: bytes | memoryview, new_end: int) -> None:
        """Place already-validated log bytes (records, or one end marker) at
        `offset`, the current end; the caller publishes `new_end` after
        dispatching (for a marker, the next segment's start)."""
        if offset != self.write_pos:
            raise CorruptRecordError(f"raw append at {offset}, log ends at {self.write_pos}")
        rel = offset % self.segment_bytes
        if rel + len(data) > self.segment_bytes:
            raise CorruptRecordError("raw append crosses a segment boundary")
        seg = self.segment_for(offset)
        if seg is None:
            seg = self._roll(offset - rel)
        seg.mm[rel : rel + len(data)] = data
        if new_end % self.segment_bytes == 0 and new_end > offset:
            try:
                self._roll(new_end)
            except BaseException:  # e.g. no space for the next segment: leave no byte past the end
                seg.mm[rel : rel + len(data)] = bytes(len(data))
                raise

    def _roll(self, start: int) -> MappedFile:
        existing = self.segment_for(start)
        if existing is not None:
            return existing
        prev = self.segment_for(start - self.segment_bytes)
        if prev is not None and prev.fd >= 0:
            os.utime(prev.fd)  # a sealed segment's mtime is its age for retention
        seg = self.allocator.take(start)
        base, segs = self._view
        self._view = (base if segs else start, (*segs, seg))
        self.allocator.request(start + self.segment_bytes)
        return seg

    def _zero_range(self, start: int, end: int) -> None:
        pos = start
        while pos < end:
            seg = self.segment_for(pos)
            if seg is None:
                return
            rel = pos % self.segment_bytes
            stop = min(self.segment_bytes, rel + (end - pos))
            seg.mm[rel:stop] = bytes(stop - rel)
            pos += stop - rel

    # ---- cutting ---------------------------------------------------------------

    def truncate(self, offset: int) -> tuple[int, list[str]]:
        """Physically remove everything at and after `offset`.

        Zeroes the rest of the segment holding `offset` (up to its last non-zero
        byte) and deletes every later segment file. Returns (bytes of data
        removed, names of segment files deleted); the segment is synced.
        """
        self.cuts += 1  # before any byte goes: a read that sees a change knows the log moved
        base, segs = self._view
        keep = [s for s in segs if int(s.path.name) <= offset - offset % self.segment_bytes]
        removed: list[str] = []
        zeroed = 0
        for s in segs[len(keep) :]:
            self.allocator.forget(s)
            removed.append(s.path.name)
            if PREFIX.unpack_from(s.view, 0) != (0, 0):  # not an unused pre-allocated file
                zeroed += last_nonzero(s.view, 0, self.segment_bytes)
            s.close()
            os.unlink(s.path)
        self._view = (base if keep else offset - offset % self.segment_bytes, tuple(keep))
        seg = self.segment_for(offset)
        if seg is not None:
            rel = offset % self.segment_bytes
            last = last_nonzero(seg.view, rel, self.segment_bytes)
            if last > rel:
                seg.mm[rel:last] = bytes(last - rel)
                seg.sync()
                zeroed += last - rel
        return zeroed, removed

    def restart_empty_at(self, offset: int) -> None:
        """Make an empty log start at `offset` (a new slave of a master whose
        oldest segments are gone): its segment files are replaced."""
        if self.write_pos != self.min_offset and self.write_pos != 0:
            raise CorruptRecordError("only an empty log can move its start")
        _base, segs = self._view
        self.allocator.reset()
        for s in segs:
            self.allocator.forget(s)
            s.close()
        for path in self._segment_paths():  # also any file made ahead
            path.unlink()
        start = offset - offset % self.segment_bytes
        self._view = (start, ())
        self.write_pos = self.flushed = start
        self.start_writing_at(offset)

    def truncate_unused_after(self, offset: int) -> None:
        """After a clean stop: delete pre-allocated segment files past the one
        holding `offset` (they hold only zeros)."""
        base, segs = self._view
        cut = offset - offset % self.segment_bytes
        keep = tuple(s for s in segs if int(s.path.name) <= cut)
        for s in segs[len(keep) :]:
            self.allocator.forget(s)
            s.close()
            os.unlink(s.path)
        self._view = (base, keep)

    def delete_oldest(self) -> MappedFile | None:
        """Drop the first segment if it is not the one being written."""
        base, segs = self._view
        if len(segs) < 2 or self.write_pos < base + self.segment_bytes:
            return None
        first = segs[0]
        if self.segment_for(self.write_pos) is first:
            return None
        self._view = (base + self.segment_bytes, segs[1:])
        self.allocator.forget(first)
        os.unlink(first.path)
        first.close()  # a reader still holding a slice keeps the mapping until it lets go
        return first

    # ---- flushing ----------------------------------------------------------------

    def add_flush_listener(self, fn: Callable[[], None]) -> None:
        """Call `fn()` after every flush that moved `flushed` (group-commit waiters)."""
        self._flush_listeners.append(fn)

    def flush(self) -> int:
        """Make every byte below `write_pos` durable; returns the flushed offset.

        Only the range written since the last flush is synced (msync of that
        range), not whole files.
        """
        with self._flush_lock:
            target = self.write_pos
            done = self.flushed
            if target <= done:
                return done
            seg_bytes = self.segment_bytes
            pos = done
            while pos < target:
                seg_start = pos - pos % seg_bytes
                stop = min(target, seg_start + seg_bytes)
                seg = self.segment_for(pos)
                if seg is not None and seg.fd >= 0:
                    seg.sync_range(pos - seg_start, stop - seg_start)
                pos = stop
            self.flushed = target
        for fn in self._flush_listeners:
            fn()
        return target

    def close(self) -> None:
        self.allocator.close()
        for s in self._view[1]:
            if s.fd >= 0:
                s.close()
        self._view = (self._view[0], ())
