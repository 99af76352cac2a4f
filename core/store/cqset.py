"""Every ConsumeQueue of a store, loaded lazily, and the dispatch function
that fills them.

At open only the directory names are read: a queue's files are opened (and
its offsets computed) when it is first read or written (`get`). Its offsets
then stay in memory for good (a small table: `GetQueueOffsets`, the pull
path and the redirect's backlog use them without the files), while its
files are mapped only when in use or recently used: at most `max_open`
queues, the least recently used idle one unmapped first (cqcache.OpenSet).

Whatever happened to the log while a queue was not loaded is applied when it
is: entries past a cut (`cap_unloaded`, from recovery or a truncation) are
dropped, and its minimum moves past deleted segments (`log_min`). A loaded
queue that missed a retention pass while unmapped is corrected at its next
`get`.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path

from core.fileutil import fsync_dir
from core.record import Entry
from core.store.consumequeue import ENTRY, ENTRY_SIZE, ConsumeQueue
from core.store.cqcache import OpenSet
from core.store.mapped import MappedFile

log = logging.getLogger(__name__)

QueueKey = tuple[str, int]


class ConsumeQueueSet:
    def __init__(
        self, directory: Path, entries_per_file: int, max_open: int = 1024, log_min: int = 0
    ) -> None:
        self.directory = directory
        self.per_file = entries_per_file
        self.queues: dict[QueueKey, ConsumeQueue] = {}  # loaded: offsets known, maybe unmapped
        self._on_disk: dict[QueueKey, Path] = {}  # found at open, not loaded yet
        self._open: OpenSet[ConsumeQueue] = OpenSet(max_open)
        self._load_lock = threading.Lock()
        self._cap: int | None = None  # entries of unloaded queues must end by here
        self.log_min = log_min
        self.dropped_on_load = 0  # entries `cap_unloaded` dropped when their queue loaded
        directory.mkdir(parents=True, exist_ok=True)
        with os.scandir(directory) as topics:  # names only: no queue file is opened here
            for tdir in topics:
                if not tdir.is_dir():
                    continue
                with os.scandir(tdir.path) as qdirs:
                    for qdir in qdirs:
                        if qdir.is_dir() and qdir.name.isdigit():
                            self._on_disk[(tdir.name, int(qdir.name))] = Path(qdir.path)

    # ---- lookup -------------------------------------------------------------------

    def get(self, topic: str, queue_id: int) -> ConsumeQueue | None:
        """The queue, loaded (its offsets known and current); None if it has none."""
        key = (topic, queue_id)
        cq = self.queues.get(key)
        if cq is None:
            if key not in self._on_disk:
                # a loader inserts into `queues` before it leaves `_on_disk`
                return self.queues.get(key)
            return self._load(key)
        if cq.log_min_seen < self.log_min:
            cq.correct_min(self.log_min)  # missed a retention pass while unmapped
        return cq

    def get_or_create(self, topic: str, queue_id: int) -> ConsumeQueue:
        cq = self.get(topic, queue_id)
        if cq is None:
            with self._load_lock:
                cq = self.queues.get((topic, queue_id))
                if cq is None:
                    path = self.directory / topic / str(queue_id)
                    cq = ConsumeQueue(path, topic, queue_id, self.per_file)
                    self._adopt(cq)
        return cq

    def next_offset(self, topic: str, queue_id: int) -> int:
        cq = self.get(topic, queue_id)
        return cq.max_offset if cq is not None else 0

    def count(self) -> int:
        """Queues held, loaded or not."""
        return len(self.queues) + len(self._on_disk)

    def keys(self) -> list[QueueKey]:
        """Every queue held, loaded or not (no file is opened)."""
        return [*self.queues, *self._on_disk]

    def mapped_count(self) -> int:
        return len(self._open)

    def open_keys(self) -> list[QueueKey]:
        """Mapped queues, least recently used first."""
        return self._open.keys()  # type: ignore[return-value]

    def pin(self, cq: ConsumeQueue) -> None:
        """Keep `cq` mapped until `unpin` (a read in progress)."""
        self._open.pin(cq)

    def unpin(self, cq: ConsumeQueue) -> None:
        self._open.unpin(cq)

    def _load(self, key: QueueKey) -> ConsumeQueue | None:
        with self._load_lock:
            cq = self.queues.get(key)
            if cq is not None or key not in self._on_disk:
                return cq
            path = self._on_disk[key]
            cq = ConsumeQueue(path, key[0], key[1], self.per_file)  # mapped, not shared yet
            try:
                if self._cap is not None:
                    dropped = cq.trim(self._cap)
                    if dropped:
                        self.dropped_on_load += dropped
                        log.info("%s/%d: dropped %d entries past the log's end %d", *key, dropped, self._cap)
                if self.log_min:
                    cq.correct_min(self.log_min)
            except BaseException:
                cq.close()
                raise
            if self._cap is not None and cq.min_offset == cq.max_offset == 0:  # nothing left
                cq.close()
                shutil.rmtree(path, ignore_errors=True)
                del self._on_disk[key]
                return None
            self._adopt(cq)
            del self._on_disk[key]
            return cq

    def _adopt(self, cq: ConsumeQueue) -> None:
        """Publish a freshly opened queue (under the load lock)."""
        cq.log_min_seen = max(cq.log_min_seen, self.log_min)
        cq.open_set = self._open
        self.queues[(cq.topic, cq.queue_id)] = cq
        self._open.admit(cq)

    # ---- writing ----------------------------------------------------------------

    def dispatch(self, entries: Iterable[Entry], publish: bool = True) -> None:
        """Build the ConsumeQueue entries of CommitLog records.

        The one path that fills ConsumeQueues: the append path passes what it
        just wrote, recovery what it parsed from the log. With `publish`
        false, `max_offset` is left alone: the append path raises it only
        after the CommitLog bytes are published, so readers never see an
        entry whose record could still be discarded. Each queue written is
        pinned until the end (never unmapped half-written) and marked dirty
        after its last write (so a flush that ran before syncs again).
        """
        per_file = self.per_file
        pack = ENTRY.pack_into
        pinned: dict[QueueKey, ConsumeQueue] = {}
        last_key: QueueKey | None = None
        cq: ConsumeQueue | None = None
        base = 0
        files: tuple[MappedFile, ...] = ()
        try:
            for topic, qid, qoff, phys, size, th in entries:
                key = (topic, qid)
                if key != last_key:
                    cq = pinned.get(key)
                    if cq is None:
                        cq = self.get_or_create(topic, qid)
                        self._open.pin(cq)
                        pinned[key] = cq
                    base, files = cq._view
                    last_key = key
                assert cq is not None
                idx, slot = divmod(qoff - base, per_file)
                if 0 <= idx < len(files):
                    f = files[idx]
                    pos = slot * ENTRY_SIZE
                    if pos < f.reserved_lo or pos + ENTRY_SIZE > f.reserved_hi:
                        cq._reserve(f, pos)
                    pack(f.mm, pos, phys, size, th)
                    if publish and qoff >= cq.max_offset:
                        cq.max_offset = qoff + 1
                else:
                    cq.put(qoff, phys, size, th, publish)
                    base, files = cq._view
        finally:
            for cq in pinned.values():
                cq.dirty = True
                self._open.unpin(cq)

    def discard(self, key: QueueKey) -> None:
        """Forget a queue and delete its directory (one a failed append created)."""
        cq = self.queues.pop(key, None)
        if cq is not None:
            self._open.forget(cq)
            cq.close()
            shutil.rmtree(cq.directory, ignore_errors=True)

    def drop_topic(self, topic: str) -> int:
        """Forget every queue of `topic`, loaded or not: unmap and close its
        files, remove its directory and sync the removal (a deletion,
        core/store/deletion.py). Returns the queues dropped."""
        with self._load_lock:
            keys = [k for k in self.queues if k[0] == topic]
            for key in keys:
                self.discard(key)
            unloaded = [k for k in self._on_disk if k[0] == topic]
            for key in unloaded:
                del self._on_disk[key]
            path = self.directory / topic
            if path.exists():
                shutil.rmtree(path)
                fsync_dir(self.directory)
        return len(keys) + len(unloaded)

    # ---- durability, recovery, retention, replication ---------------------------

    def flush(self) -> None:
        for cq in list(self.queues.values()):
            cq.flush()

    def set_log_min(self, log_min: int) -> None:
        """The log's minimum moved (retention deleted segments): correct the
        mapped queues now; the others at their next `get` or load."""
        if log_min <= self.log_min:
            return
        self.log_min = log_min
        for cq in self._open.snapshot():
            cq.correct_min(log_min)

    def cap_unloaded(self, log_end: int) -> None:
        """The log was cut at `log_end` (recovery, a truncation): queues not
        loaded yet drop their entries past it when they load. (Loaded ones are
        trimmed by the caller.)"""
        self._cap = log_end if self._cap is None else min(self._cap, log_end)

    def remove_empty(self) -> None:
        """Forget (and delete the directories of) loaded queues left with no entries."""
        for key, cq in list(self.queues.items()):
            if cq.max_offset == 0 and cq.min_offset == 0:
                self.discard(key)

    def remove_all(self) -> None:
        """Forget every queue, loaded or not, and delete its directory."""
        with self._load_lock:
            for key in list(self.queues):
                self.discard(key)
            self._on_disk.clear()
            with os.scandir(self.directory) as topics:  # with the queues not loaded yet
                for entry in topics:
                    shutil.rmtree(entry.path, ignore_errors=True)
            self._cap = None
            self.log_min = 0  # the log starts over

    def close(self) -> None:
        self._open.clear()
        for cq in list(self.queues.values()):
            cq.close()
