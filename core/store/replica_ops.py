"""What a slave's store does with its master's log: read it out (master),
append it at the same offsets (slave), cut it, or start over.

A mixin of `MessageStore` (its state and locks live there): the store's
append and read paths stay in store.py, the replication paths here.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from core.errors import CorruptRecordError, InvalidOffsetError, StoreClosedError
from core.record import HEADER, RECORD_MAGIC, SYSTEM_FLAG, SYSTEM_TOPIC, decode_record
from core.store.replicated import validate_chunk

if TYPE_CHECKING:
    from core.store.commitlog import CommitLog
    from core.store.config import StoreConfig
    from core.store.consumequeue import ConsumeQueueSet
    from core.store.encoder import BatchEncoder

log = logging.getLogger("core.store.store")


class ReplicaOps:
    """Replication paths of MessageStore."""

    if TYPE_CHECKING:  # provided by MessageStore
        config: StoreConfig
        commitlog: CommitLog
        cqs: ConsumeQueueSet
        _encoder: BatchEncoder
        _lock: threading.Lock
        _ckpt_lock: threading.RLock
        _closed: bool
        _listeners: list[Callable[[Iterable[tuple[str, int]]], None]]

        def _apply_system(self, kind: str, payload: dict[str, Any]) -> None: ...
        def _system_record_at(self, phys: int) -> tuple[str, dict[str, Any]]: ...
        def _checkpoint_locked(self) -> None: ...

    def read_log(self, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """Published CommitLog bytes from `offset` (whole records, one segment):
        what a master streams to its slaves. Returns (bytes, next offset)."""
        return self.commitlog.read_chunk(offset, max_bytes)

    def append_replicated(self, offset: int, data: bytes) -> int:
        """Append bytes copied from the master at the same physical offset.

        Every record is validated first (nothing is written if one fails);
        queue offsets must continue this store's queues. System records
        (topics, offsets) are applied, not indexed. Returns the new end of the log.
        """
        chunk = validate_chunk(offset, data, self.config.segment_bytes)
        cqs = self.cqs
        with self._lock:
            if self._closed:
                raise StoreClosedError("store is closed")
            nexts: dict[tuple[str, int], int] = {}
            system = [e[3] for e in chunk.entries if e[0] == SYSTEM_TOPIC]
            entries = [e for e in chunk.entries if e[0] != SYSTEM_TOPIC] if system else chunk.entries
            starts: dict[tuple[str, int], int] = {}
            for topic, qid, qoff, *_ in entries:
                key = (topic, qid)
                if key not in nexts and cqs.get(topic, qid) is None:
                    # a queue this store has never seen: when the log began at
                    # the master's oldest retained segment it starts mid-way
                    nexts[key] = starts[key] = qoff
                expected = nexts.get(key, cqs.next_offset(topic, qid))
                if qoff != expected:
                    raise CorruptRecordError(
                        f"replicated record for {topic}/{qid} has queue offset {qoff}, expected {expected}"
                    )
                nexts[key] = qoff + 1
            # topics come from system records; a slave that started at its master's
            # oldest retained segment may have missed one: cover what the records use
            for topic, qid in nexts:
                self._encoder.ensure_queues(topic, qid + 1)
            self.commitlog.append_raw(offset, data, chunk.new_end)
            cqs.dispatch(entries, publish=False)
            self.commitlog.publish(chunk.new_end)
            for key, q in nexts.items():
                cqs.queues[key].max_offset = q
            for key, first in starts.items():
                cqs.queues[key].min_offset = first
            for phys in system:
                self._apply_system(*self._system_record_at(phys))
        for listener in self._listeners:
            try:
                listener(nexts.keys())
            except Exception:
                log.exception("append listener failed")
        return chunk.new_end

    def truncate_to(self, offset: int) -> int:
        """Remove the log from `offset` on (a slave ahead of its master), and
        checkpoint the new end at once. Returns the bytes removed.

        Known limit: topics and offsets applied from the removed system records
        stay applied (promotion, issue 8, rebuilds applied state)."""
        with self._ckpt_lock, self._lock:
            if offset >= self.commitlog.max_offset:
                return 0
            if offset < self.commitlog.min_offset:
                raise InvalidOffsetError(
                    f"cannot truncate below the log's minimum {self.commitlog.min_offset}"
                )
            removed, _ = self.commitlog.truncate(offset)
            self.commitlog.allocator.reset()  # a segment made ahead would leave a gap
            self.commitlog.start_writing_at(offset, flushed=min(offset, self.commitlog.flushed))
            for cq in list(self.cqs.queues.values()):
                cq.trim(offset)
            self.cqs.remove_empty()
            self._checkpoint_locked()
            log.warning("truncated the log to %d (%d bytes removed)", offset, removed)
            return removed

    def reset_log(self, offset: int) -> None:
        """Drop the whole log and every ConsumeQueue and start empty at `offset`
        (a slave so far behind that its master no longer has what it needs)."""
        with self._ckpt_lock, self._lock:
            clog = self.commitlog
            if clog.max_offset > clog.min_offset:
                clog.truncate(clog.min_offset)
                clog.write_pos = clog.flushed = clog.min_offset
            clog.restart_empty_at(offset)
            for key, cq in list(self.cqs.queues.items()):
                cq.close()
                shutil.rmtree(cq.directory, ignore_errors=True)
                del self.cqs.queues[key]
            self._checkpoint_locked()
            log.warning("log reset to start at %d", offset)

    def system_payloads(self, kind: str, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """The system records of `kind` in [start, stop) of the log, in log order.

        A header walk over the segments (only system records are decoded):
        used to roll back applied state around a truncation, which is rare."""
        out: list[dict[str, Any]] = []
        clog = self.commitlog
        end = clog.max_offset if stop is None else min(stop, clog.max_offset)
        start = max(start, clog.min_offset)
        seg_bytes = clog.segment_bytes
        for seg in clog.segments():
            base = int(seg.path.name)
            if base + seg_bytes <= start or base >= end:
                continue
            pos = max(0, start - base)  # record-aligned: callers pass record offsets
            limit = min(seg_bytes, end - base)
            view = seg.view
            while pos + HEADER.size <= limit:
                head = HEADER.unpack_from(view, pos)
                total, magic, flags = head[0], head[1], head[4]
                if magic != RECORD_MAGIC or total <= 0:
                    break  # end-of-segment marker
                if flags & SYSTEM_FLAG:
                    rec = decode_record(view[pos : pos + total], verify=False)
                    if rec.topic == SYSTEM_TOPIC and rec.tags == kind:
                        out.append(json.loads(rec.body))
                pos += total
        return out
