"""ConsumeQueues: per (topic, queue) index of CommitLog positions.

Files of fixed 20-byte entries (CommitLog offset u64, record size u32, tag
hash u64; big-endian), `entries_per_file` to a file, named by the 20-digit
queue offset of their first entry, under `consumequeue/<topic>/<queue>/`.
An entry with size 0 is empty. Entries are written in queue-offset order, so
the filled slots of a queue form one run from `min_offset` to `max_offset`
(exclusive).

Files are created sparse (full length, no blocks) and get blocks ahead of
the writer in growing runs (`_reserve`): an idle queue costs one 4 KiB block,
not 6 MB, and the format is unchanged (old, fully allocated files open as
they are). A queue's files are mapped only while it is in use or recently
used (cqcache.OpenSet, owned by ConsumeQueueSet in cqset.py); its offsets
stay in memory when they are unmapped. Every method that touches the files
pins the queue first (`_pin`), except the `_`-prefixed ones, which callers
call pinned.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import CorruptRecordError
from core.store.commitlog import ZERO_CHUNK, last_nonzero
from core.store.cqcache import Mappable
from core.store.mapped import PAGE, MappedFile, data_end

if TYPE_CHECKING:
    from core.store.cqcache import OpenSet

ENTRY = struct.Struct(">QIQ")
ENTRY_SIZE = ENTRY.size  # 20
RESERVE_MAX = 1 << 20  # blocks are reserved in runs doubling up to this
READ_AROUND_FROM = 1 << 20  # bytes of entries from which a file gets the kernel's read-around


def _map_file(path: Path, size: int, create: bool = False) -> MappedFile:
    """Map a ConsumeQueue file: sparse when new, one descriptor, and no
    read-around until it holds READ_AROUND_FROM bytes of entries (`_advise`)."""
    f = (
        MappedFile.create(path, size, sparse=True, keep_fd=False)
        if create
        else MappedFile(path, size, keep_fd=False)
    )
    f.mm.madvise(mmap.MADV_RANDOM)
    return f


def _advise(f: MappedFile) -> None:
    """Read-around by how much of the file holds entries.

    The kernel's read-around on a page fault (read_ahead_kb: 8 MiB on this
    VM) fills the page cache with the whole 6 MB file, holes read as zero
    pages included: at the first touch of a one-entry queue that is ~2 ms and
    6 MB of cache for 20 bytes, so a small file is mapped MADV_RANDOM (one
    4 KiB fault brings 204 entries). A file with much data gets read-around
    back: a consumer reading a cold backlog then takes one fault per 8 MiB,
    not one per 4 KiB (cold reads were 0.7x without it).
    """
    if f.reserved_hi - f.reserved_lo >= READ_AROUND_FROM:
        f.mm.madvise(mmap.MADV_NORMAL)


class ConsumeQueue(Mappable):
    def __init__(
        self,
        directory: Path,
        topic: str,
        queue_id: int,
        entries_per_file: int,
        open_set: OpenSet[ConsumeQueue] | None = None,
    ) -> None:
        super().__init__((topic, queue_id))
        self.directory = directory
        self.topic = topic
        self.queue_id = queue_id
        self.per_file = entries_per_file
        self.file_bytes = entries_per_file * ENTRY_SIZE
        self.min_offset = 0
        self.max_offset = 0
        self.log_min_seen = 0  # the log minimum `correct_min` last ran against
        self.dirty = False  # written since the last sync
        self._flushed_max = 0
        # (queue offset of files[0], files) swapped as one tuple for lock-free readers
        self._view: tuple[int, tuple[MappedFile, ...]] = (0, ())
        self._unmapped_files = 0  # how many files there are while unmapped
        self.open_set = open_set  # None: always mapped (a queue used on its own)
        self._load()
        self.mapped = True

    def _load(self) -> None:
        if not self.directory.exists():
            return
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink()
        paths = sorted(p for p in self.directory.iterdir() if p.name.isdigit())
        files: list[MappedFile] = []
        expected: int | None = None
        try:
            for p in paths:
                first = int(p.name)
                if first % self.per_file:
                    raise CorruptRecordError(f"consume queue file {p} not aligned to entries_per_file")
                if expected is not None and first != expected:
                    raise CorruptRecordError(f"consume queue gap before {p}")
                if p.stat().st_size != self.file_bytes:
                    raise CorruptRecordError(
                        f"consume queue file {p} is {p.stat().st_size} bytes, expected {self.file_bytes}"
                    )
                files.append(_map_file(p, self.file_bytes))
                expected = first + self.per_file
        except BaseException:
            for f in files:
                f.close()
            raise
        if files:
            base = int(paths[0].name)
            self._view = (base, tuple(files))
            first = self._first_filled(files[0])
            self.min_offset = base + (first if first < self.per_file else 0)
            self.max_offset = self._find_max()
            self._flushed_max = self.max_offset
            self._set_reserved()

    def _first_filled(self, f: MappedFile) -> int:
        """Slot of the first entry in `f` (a queue a slave joined part-way starts
        mid-file: the slots before it are zero); per_file if none."""
        view = f.view
        if ENTRY.unpack_from(view, 0)[1]:  # the common case, without touching holes
            return 0
        pos, end = 0, self.file_bytes
        while pos < end:
            stop = min(end, pos + len(ZERO_CHUNK))
            if view[pos:stop] != ZERO_CHUNK[: stop - pos]:
                chunk = bytes(view[pos:stop])
                first = pos + (len(chunk) - len(chunk.lstrip(b"\0")))
                return first // ENTRY_SIZE
            pos = stop
        return self.per_file

    def _find_max(self) -> int:
        """The first empty slot after the filled run (binary search per file;
        the run may start mid-way through the first file)."""
        base, files = self._view
        for i in range(len(files) - 1, -1, -1):
            view = files[i].view
            lo = self.min_offset - base if i == 0 else 0
            # past the file's last data extent all is zero: no need to fault holes in
            hi = min(
                self.per_file, -(-data_end(files[i].path, lo * ENTRY_SIZE, self.file_bytes) // ENTRY_SIZE)
            )
            while lo < hi:
                mid = (lo + hi) // 2
                if ENTRY.unpack_from(view, mid * ENTRY_SIZE)[1]:
                    lo = mid + 1
                else:
                    hi = mid
            if lo and (i > 0 or lo > self.min_offset - base):
                return base + i * self.per_file + lo
        return self.min_offset

    def _set_reserved(self) -> None:
        """After mapping existing files: the pages holding the filled run have
        blocks (data was written there); anything else is reserved before use."""
        base, files = self._view
        for i, f in enumerate(files):
            start = base + i * self.per_file
            lo = max(self.min_offset - start, 0) * ENTRY_SIZE
            hi = min(self.max_offset - start, self.per_file) * ENTRY_SIZE
            if hi > lo:
                f.reserved_lo = lo - lo % PAGE
                f.reserved_hi = min(self.file_bytes, -(-hi // PAGE) * PAGE)
                _advise(f)
            else:
                f.reserved_lo = f.reserved_hi = 0

    def _reserve(self, f: MappedFile, pos: int) -> None:
        """Give the entry at byte `pos` of `f` blocks before it is written,
        with room ahead: runs double (4 KiB, 8 KiB, ...) up to RESERVE_MAX."""
        lo, hi = f.reserved_lo, f.reserved_hi
        end = -(-(pos + ENTRY_SIZE) // PAGE) * PAGE
        if hi > lo and end > hi:
            end = max(end, hi + min(max(hi - lo, PAGE), RESERVE_MAX))
        before = hi - lo
        f.reserve(pos - pos % PAGE, min(end, self.file_bytes))
        if before < READ_AROUND_FROM:
            _advise(f)

    # ---- mapping (cqcache.OpenSet) ------------------------------------------------

    def _pin(self) -> None:
        if self.open_set is not None:
            self.open_set.pin(self)

    def _unpin(self) -> None:
        if self.open_set is not None:
            self.open_set.unpin(self)

    def _map(self) -> None:
        base = self._view[0]
        files: list[MappedFile] = []
        try:
            for i in range(self._unmapped_files):
                path = self.directory / f"{base + i * self.per_file:020d}"
                files.append(_map_file(path, self.file_bytes))
        except BaseException:
            for f in files:
                f.close()
            raise
        self._view = (base, tuple(files))
        self._set_reserved()
        self.mapped = True

    def _unmap(self) -> None:
        """Unmap without syncing: the written pages stay in the page cache,
        and the next flush syncs them through the paths (`flush`), off the
        thread that needed a map."""
        self._unmapped_files = len(self._view[1])
        self.close()

    # ---- access ----------------------------------------------------------------

    def entry(self, queue_offset: int) -> tuple[int, int, int]:
        self._pin()
        try:
            return self._entry(queue_offset)
        finally:
            self._unpin()

    def _entry(self, queue_offset: int) -> tuple[int, int, int]:
        base, files = self._view
        idx, slot = divmod(queue_offset - base, self.per_file)
        return ENTRY.unpack_from(files[idx].view, slot * ENTRY_SIZE)

    def entries(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(queue offset, commitlog offset, size, tag hash) for start <= offset < end.
        The caller pins the queue while it iterates."""
        base, files = self._view
        per_file = self.per_file
        unpack = ENTRY.unpack_from
        q = max(start, base)  # entries below the first file were removed by retention
        while q < end:
            idx, slot = divmod(q - base, per_file)
            if idx >= len(files):
                return
            view = files[idx].view
            stop = min(end - q, per_file - slot)
            pos = slot * ENTRY_SIZE
            for _ in range(stop):
                phys, size, th = unpack(view, pos)
                yield q, phys, size, th
                q += 1
                pos += ENTRY_SIZE

    def put(self, queue_offset: int, phys: int, size: int, taghash: int, publish: bool = True) -> None:
        """Write one entry (the caller pins the queue and marks it dirty after)."""
        base, files = self._view
        idx, slot = divmod(queue_offset - base, self.per_file)
        if idx >= len(files) or idx < 0:
            files = self._file_for(queue_offset)
            base = self._view[0]
            idx, slot = divmod(queue_offset - base, self.per_file)
        f = files[idx]
        pos = slot * ENTRY_SIZE
        if pos < f.reserved_lo or pos + ENTRY_SIZE > f.reserved_hi:
            self._reserve(f, pos)
        ENTRY.pack_into(f.mm, pos, phys, size, taghash)
        if publish and queue_offset >= self.max_offset:
            self.max_offset = queue_offset + 1

    def _file_for(self, queue_offset: int) -> tuple[MappedFile, ...]:
        with self.io_lock:
            base, files = self._view
            first_needed = queue_offset - queue_offset % self.per_file
            if not files:
                base = first_needed
                if self.max_offset < first_needed:  # only recovery puts past a gap
                    self.min_offset = self.max_offset = first_needed
            elif first_needed < base:
                raise CorruptRecordError(
                    f"{self.topic}/{self.queue_id}: entry {queue_offset} below the first file"
                )
            self.directory.mkdir(parents=True, exist_ok=True)
            new = list(files)
            while base + len(new) * self.per_file <= queue_offset:
                start = base + len(new) * self.per_file
                path = self.directory / f"{start:020d}"
                new.append(_map_file(path, self.file_bytes, create=True))
            self._view = (base, tuple(new))
            return self._view[1]

    # ---- recovery and retention -----------------------------------------------------

    def trim(self, log_end: int) -> int:
        """Drop trailing entries that point past `log_end`; zero every slot after
        the last kept one. Returns how many entries were dropped."""
        self._pin()
        try:
            dropped = 0
            while self.max_offset > self.min_offset:
                phys, size, _ = self._entry(self.max_offset - 1)
                if phys + size <= log_end:
                    break
                self.max_offset -= 1
                dropped += 1
            self._zero_after(self.max_offset)
            self._flushed_max = min(self._flushed_max, self.max_offset)
            return dropped
        finally:
            self._unpin()

    def rollback(self, queue_offset: int) -> None:
        """Forget entries from `queue_offset` on (a failed append's), zeroing them."""
        self._pin()
        try:
            self.max_offset = min(self.max_offset, queue_offset)
            self._zero_after(queue_offset)
            self._flushed_max = min(self._flushed_max, queue_offset)
        finally:
            self._unpin()

    def mark_unflushed(self) -> None:
        """Make the next flush sync every file (after recovery rewrote entries)."""
        self._flushed_max = self._view[0]
        self.dirty = True

    def _zero_after(self, queue_offset: int) -> None:
        with self.io_lock:
            base, files = self._view
            if not files:
                return
            idx = max(0, (queue_offset - base) // self.per_file)
            keep = files[: idx + 1]
            for f in files[idx + 1 :]:
                f.close()
                os.unlink(f.path)
            self._view = (base, keep)
            if idx < len(keep):
                f = keep[idx]
                rel = (queue_offset - base - idx * self.per_file) * ENTRY_SIZE
                # holes read as zeroes: look for non-zero bytes only where data is
                last = last_nonzero(f.view, rel, data_end(f.path, rel, self.file_bytes))
                if last > rel:
                    f.mm[rel:last] = bytes(last - rel)
                    self.dirty = True

    def correct_min(self, log_min: int) -> None:
        """After CommitLog segments are deleted: move `min_offset` to the first
        entry still in the log, then delete files wholly below it."""
        self._pin()
        try:
            with self.io_lock:
                self._correct_min(log_min)
        finally:
            self._unpin()

    def _correct_min(self, log_min: int) -> None:
        lo, hi = self.min_offset, self.max_offset
        while lo < hi:
            mid = (lo + hi) // 2
            if self._entry(mid)[0] < log_min:
                lo = mid + 1
            else:
                hi = mid
        self.min_offset = lo  # readers check this before touching files
        base, files = self._view
        while len(files) > 1 and base + self.per_file <= lo:
            f = files[0]
            files = files[1:]
            base += self.per_file
            self._view = (base, files)
            # not closed: a pinned reader may still be in it; the mapping
            # goes with the last reference (it holds no descriptor of ours)
            os.unlink(f.path)
        self.log_min_seen = max(self.log_min_seen, log_min)

    def flush(self) -> None:
        """Sync the files written since the last flush, mapped or not (an
        unmapped queue's written pages are synced through their paths)."""
        if self.max_offset <= self._flushed_max and not self.dirty:
            return
        with self.io_lock:  # no map or unmap meanwhile
            hi = self.max_offset
            dirty = self.dirty
            self.dirty = False  # before syncing: a write after this marks it again
            base, files = self._view
            first = max(0, (min(self._flushed_max, hi) - base) // self.per_file)
            if self.mapped:
                for f in files[first:]:
                    f.sync()
            elif dirty:  # written, then unmapped before this flush
                for i in range(first, self._unmapped_files):
                    fd = os.open(self.directory / f"{base + i * self.per_file:020d}", os.O_RDONLY)
                    try:
                        os.fdatasync(fd)
                    finally:
                        os.close(fd)
            self._flushed_max = hi

    def close(self) -> None:
        """Unmap every file (the offsets stay known)."""
        with self.io_lock:
            for f in self._view[1]:
                f.close()
            self._view = (self._view[0], ())
            self.mapped = False
