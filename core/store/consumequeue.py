"""ConsumeQueues: per (topic, queue) index of CommitLog positions.

Files of fixed 20-byte entries (CommitLog offset u64, record size u32, tag
hash u64; big-endian), `entries_per_file` to a file, named by the 20-digit
queue offset of their first entry, under `consumequeue/<topic>/<queue>/`.
An entry with size 0 is empty. Entries are written in queue-offset order, so
the filled slots of a queue form one run from `min_offset` to `max_offset`
(exclusive).

`ConsumeQueueSet.dispatch` is the one function that builds entries; the
append path calls it with the values in hand, recovery (and later
replication) call it with what they parse out of the log. Writing an entry is
idempotent, which is what makes re-dispatch after a crash safe.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from core.errors import CorruptRecordError
from core.record import Entry
from core.store.commitlog import ZERO_CHUNK, last_nonzero
from core.store.mapped import MappedFile

ENTRY = struct.Struct(">QIQ")
ENTRY_SIZE = ENTRY.size  # 20


class ConsumeQueue:
    def __init__(self, directory: Path, topic: str, queue_id: int, entries_per_file: int) -> None:
        self.directory = directory
        self.topic = topic
        self.queue_id = queue_id
        self.per_file = entries_per_file
        self.file_bytes = entries_per_file * ENTRY_SIZE
        self.min_offset = 0
        self.max_offset = 0
        self._flushed_max = 0
        # (queue offset of files[0], files) swapped as one tuple for lock-free readers
        self._view: tuple[int, tuple[MappedFile, ...]] = (0, ())
        self._load()

    def _load(self) -> None:
        if not self.directory.exists():
            return
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink()
        paths = sorted(p for p in self.directory.iterdir() if p.name.isdigit())
        files: list[MappedFile] = []
        expected: int | None = None
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
            files.append(MappedFile(p, self.file_bytes))
            expected = first + self.per_file
        if files:
            base = int(paths[0].name)
            self._view = (base, tuple(files))
            first = self._first_filled(files[0])
            self.min_offset = base + (first if first < self.per_file else 0)
            self.max_offset = self._find_max()
            self._flushed_max = self.max_offset

    def _first_filled(self, f: MappedFile) -> int:
        """Slot of the first entry in `f` (a queue a slave joined part-way starts
        mid-file: the slots before it are zero); per_file if none."""
        view = f.view
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
            lo, hi = (self.min_offset - base if i == 0 else 0), self.per_file
            while lo < hi:
                mid = (lo + hi) // 2
                if ENTRY.unpack_from(view, mid * ENTRY_SIZE)[1]:
                    lo = mid + 1
                else:
                    hi = mid
            if lo and (i > 0 or lo > self.min_offset - base):
                return base + i * self.per_file + lo
        return self.min_offset

    # ---- access ----------------------------------------------------------------

    def entry(self, queue_offset: int) -> tuple[int, int, int]:
        base, files = self._view
        idx, slot = divmod(queue_offset - base, self.per_file)
        return ENTRY.unpack_from(files[idx].view, slot * ENTRY_SIZE)

    def entries(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(queue offset, commitlog offset, size, tag hash) for start <= offset < end."""
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
        base, files = self._view
        idx, slot = divmod(queue_offset - base, self.per_file)
        if idx >= len(files) or idx < 0:
            files = self._file_for(queue_offset)
            base = self._view[0]
            idx, slot = divmod(queue_offset - base, self.per_file)
        ENTRY.pack_into(files[idx].mm, slot * ENTRY_SIZE, phys, size, taghash)
        if publish and queue_offset >= self.max_offset:
            self.max_offset = queue_offset + 1

    def _file_for(self, queue_offset: int) -> tuple[MappedFile, ...]:
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
            new.append(MappedFile.create(self.directory / f"{start:020d}", self.file_bytes))
        self._view = (base, tuple(new))
        return self._view[1]

    # ---- recovery and retention -----------------------------------------------------

    def trim(self, log_end: int) -> int:
        """Drop trailing entries that point past `log_end`; zero every slot after
        the last kept one. Returns how many entries were dropped."""
        dropped = 0
        while self.max_offset > self.min_offset:
            phys, size, _ = self.entry(self.max_offset - 1)
            if phys + size <= log_end:
                break
            self.max_offset -= 1
            dropped += 1
        self._zero_after(self.max_offset)
        self._flushed_max = min(self._flushed_max, self.max_offset)
        return dropped

    def rollback(self, queue_offset: int) -> None:
        """Forget entries from `queue_offset` on (a failed append's), zeroing them."""
        self.max_offset = min(self.max_offset, queue_offset)
        self._zero_after(queue_offset)
        self._flushed_max = min(self._flushed_max, queue_offset)

    def mark_unflushed(self) -> None:
        """Make the next flush sync every file (after recovery rewrote entries)."""
        self._flushed_max = self._view[0]

    def _zero_after(self, queue_offset: int) -> None:
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
            last = last_nonzero(f.view, rel, self.file_bytes)
            if last > rel:
                f.mm[rel:last] = bytes(last - rel)

    def correct_min(self, log_min: int) -> None:
        """After CommitLog segments are deleted: move `min_offset` to the first
        entry still in the log, then delete files wholly below it."""
        lo, hi = self.min_offset, self.max_offset
        while lo < hi:
            mid = (lo + hi) // 2
            if self.entry(mid)[0] < log_min:
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
            os.unlink(f.path)
            f.close()

    def flush(self) -> None:
        base, files = self._view
        hi = self.max_offset
        if hi <= self._flushed_max:
            return
        first = max(0, (self._flushed_max - base) // self.per_file)
        last = (hi - 1 - base) // self.per_file
        for f in files[first : last + 1]:
            if f.fd >= 0:
                f.sync()
        self._flushed_max = hi

    def close(self) -> None:
        for f in self._view[1]:
            if f.fd >= 0:
                f.close()
        self._view = (self._view[0], ())


class ConsumeQueueSet:
    """Every ConsumeQueue of a store, and the dispatch function that fills them."""

    def __init__(self, directory: Path, entries_per_file: int) -> None:
        self.directory = directory
        self.per_file = entries_per_file
        self.queues: dict[tuple[str, int], ConsumeQueue] = {}
        directory.mkdir(parents=True, exist_ok=True)
        for tdir in sorted(directory.iterdir()):
            if not tdir.is_dir():
                continue
            for qdir in sorted(tdir.iterdir()):
                if qdir.is_dir() and qdir.name.isdigit():
                    qid = int(qdir.name)
                    self.queues[(tdir.name, qid)] = ConsumeQueue(qdir, tdir.name, qid, entries_per_file)

    def get(self, topic: str, queue_id: int) -> ConsumeQueue | None:
        return self.queues.get((topic, queue_id))

    def get_or_create(self, topic: str, queue_id: int) -> ConsumeQueue:
        cq = self.queues.get((topic, queue_id))
        if cq is None:
            cq = ConsumeQueue(self.directory / topic / str(queue_id), topic, queue_id, self.per_file)
            self.queues[(topic, queue_id)] = cq
        return cq

    def next_offset(self, topic: str, queue_id: int) -> int:
        cq = self.queues.get((topic, queue_id))
        return cq.max_offset if cq is not None else 0

    def dispatch(self, entries: Iterable[Entry], publish: bool = True) -> None:
        """Build the ConsumeQueue entries of CommitLog records.

        The one path that fills ConsumeQueues: the append path passes what it
        just wrote, recovery what it parsed from the log. With `publish`
        false, `max_offset` is left alone: the append path raises it only
        after the CommitLog bytes are published, so readers never see an
        entry whose record could still be discarded.
        """
        queues = self.queues
        per_file = self.per_file
        pack = ENTRY.pack_into
        last_key: tuple[str, int] | None = None
        cq: ConsumeQueue | None = None
        base = 0
        files: tuple[MappedFile, ...] = ()
        for topic, qid, qoff, phys, size, th in entries:
            key = (topic, qid)
            if key != last_key:
                cq = queues.get(key)
                if cq is None:
                    cq = self.get_or_create(topic, qid)
                base, files = cq._view
                last_key = key
            assert cq is not None
            idx, slot = divmod(qoff - base, per_file)
            if 0 <= idx < len(files):
                pack(files[idx].mm, slot * ENTRY_SIZE, phys, size, th)
                if publish and qoff >= cq.max_offset:
                    cq.max_offset = qoff + 1
            else:
                cq.put(qoff, phys, size, th, publish)
                base, files = cq._view

    def flush(self) -> None:
        for cq in list(self.queues.values()):
            cq.flush()

    def remove_empty(self) -> None:
        """Forget (and delete the directories of) queues left with no entries."""
        for key, cq in list(self.queues.items()):
            if cq.max_offset == 0 and cq.min_offset == 0:
                cq.close()
                del self.queues[key]
                shutil.rmtree(cq.directory, ignore_errors=True)

    def close(self) -> None:
        for cq in self.queues.values():
            cq.close()
