"""The replication paths of a store: read its log out (master), append a
master's bytes at the same offsets (slave), cut the log, or start over.

A part of `MessageStore` by composition, not a mixin: it is handed exactly
what these paths use (the CommitLog and ConsumeQueues, the write side with
its lock and publish step, the checkpoint lock and a checkpoint function,
and a way to grow a topic's queue count) and nothing else of the store, so
its dependencies are its constructor's arguments, checked like any others,
instead of fields of a host class re-declared for the type checker. The
store's public methods (`read_log`, `append_replicated`, `truncate_to`,
`reset_log`, `system_payloads`) delegate here; the append and read paths stay
in store.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from core.errors import CorruptRecordError, InvalidArgumentError, InvalidOffsetError
from core.record import (
    BLANK_MAGIC,
    BLANK_MIN,
    HEADER_SIZE,
    PREFIX,
    RECORD_MAGIC,
    SYSTEM_TOPIC,
    decode_record,
)
from core.store.commitlog import CommitLog
from core.store.cqset import ConsumeQueueSet
from core.store.deletion import split_point
from core.store.publish import Publisher, QueueKey
from core.store.replicated import validate_chunk
from core.store.system import decode_system, log_payloads

log = logging.getLogger("core.store.store")


class ReplicaOps:
    def __init__(
        self,
        commitlog: CommitLog,
        cqs: ConsumeQueueSet,
        writer: Publisher,
        ckpt_lock: threading.RLock,
        checkpoint_locked: Callable[[], None],
        ensure_queues: Callable[[Mapping[str, int]], None],
        skip_system: Callable[[str], None],
    ) -> None:
        self._clog = commitlog
        self._cqs = cqs
        self._writer = writer
        self._ckpt_lock = ckpt_lock
        self._checkpoint_locked = checkpoint_locked  # called holding both locks
        self._ensure_queues = ensure_queues
        self._skip_system = skip_system  # counts a system record that cannot be applied

    def read_log(self, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """Published CommitLog bytes from `offset` (whole records, one segment):
        what a master streams to its slaves. Returns (bytes, next offset)."""
        return read_chunk(self._clog, offset, max_bytes)

    def append_replicated(self, offset: int, data: bytes) -> int:
        """Append bytes copied from the master at the same physical offset.

        Every record is validated first (nothing is written if one fails);
        queue offsets must continue this store's queues. System records
        (topics, offsets) are applied, not indexed; one whose body is not a
        JSON object is stored and skipped, as its master skipped it
        (core/store/system.py). If indexing or applying fails, the bytes are
        undone (the publish step). Returns the new end of the log.
        """
        chunk = validate_chunk(offset, data, self._clog.segment_bytes)
        system: list[tuple[str, dict[str, Any]]] = []
        skipped: list[str] = []  # CRC-valid but not JSON: stored as the master has it, not applied
        entries = chunk.entries
        if any(e[0] == SYSTEM_TOPIC for e in entries):
            for e in entries:
                if e[0] == SYSTEM_TOPIC:
                    try:
                        kind, payload = decode_system(decode_record(data, e[3] - offset))
                    except CorruptRecordError as exc:
                        skipped.append(exc.message)
                        continue
                    system.append((kind, payload))
                    cut = split_point(kind, payload, e[3] + e[4], chunk.new_end)
                    if cut is not None:  # a topic deleted mid-chunk: before it, then after it
                        self.append_replicated(offset, data[: cut - offset])
                        return self.append_replicated(cut, data[cut - offset :])
            entries = [e for e in entries if e[0] != SYSTEM_TOPIC]
        cqs = self._cqs
        writer = self._writer
        with writer.lock:
            writer.check_open()
            firsts: dict[QueueKey, int] = {}
            nexts: dict[QueueKey, int] = {}
            for topic, qid, qoff, *_ in entries:
                key = (topic, qid)
                expected = nexts.get(key)
                if expected is None:
                    # A queue this store has never seen starts where the chunk
                    # has it (the log began at the master's oldest retained segment).
                    expected = firsts[key] = qoff if cqs.get(topic, qid) is None else cqs.next_offset(*key)
                if qoff != expected:
                    raise CorruptRecordError(
                        f"replicated record for {topic}/{qid} has queue offset {qoff}, expected {expected}"
                    )
                nexts[key] = qoff + 1
            if offset != self._clog.write_pos:  # before anything changes (topics below)
                raise CorruptRecordError(f"chunk at {offset}, the log ends at {self._clog.write_pos}")
            # topics come from system records; a slave that started at its master's
            # oldest retained segment may have missed one: cover what the records use
            wanted: dict[str, int] = {}
            for topic, qid in nexts:
                wanted[topic] = max(wanted.get(topic, 0), qid + 1)
            try:
                self._ensure_queues(wanted)
            except InvalidArgumentError as exc:  # a name or queue id no topic can have
                raise CorruptRecordError(
                    f"a replicated record does not fit this store: {exc.message}"
                ) from exc
            self._clog.append_raw(offset, data, chunk.new_end)
            writer.publish(offset, chunk.new_end, entries, firsts, nexts, system)
        for why in skipped:
            self._skip_system(f"replicated: {why}")
        writer.notify(nexts.keys())
        return chunk.new_end

    def truncate_to(self, offset: int) -> int:
        """Remove the log from `offset` on (a slave ahead of its master), and
        checkpoint the new end at once. Returns the bytes removed.

        Known limit: topics and offsets applied from the removed system records
        stay applied (promotion, issue 8, rebuilds applied state)."""
        clog = self._clog
        with self._ckpt_lock, self._writer.lock:
            if offset >= clog.max_offset:
                return 0
            if offset < clog.min_offset:
                raise InvalidOffsetError(f"cannot truncate below the log's minimum {clog.min_offset}")
            removed, _ = clog.truncate(offset)
            clog.allocator.reset()  # a segment made ahead would leave a gap
            clog.start_writing_at(offset, flushed=min(offset, clog.flushed))
            self._cqs.cap_unloaded(offset)  # queues not loaded yet are trimmed when they load
            for cq in list(self._cqs.queues.values()):
                cq.trim(offset)
            self._cqs.remove_empty()
            self._checkpoint_locked()
            log.warning("truncated the log to %d (%d bytes removed)", offset, removed)
            return removed

    def reset_log(self, offset: int) -> None:
        """Drop the whole log and every ConsumeQueue and start empty at `offset`
        (a slave so far behind that its master no longer has what it needs)."""
        clog = self._clog
        if offset < 0 or offset % clog.segment_bytes:
            # recovery scans from a segment's start: a log starting mid-segment
            # would read as zeroes there and be cut away at the next unclean start
            raise InvalidOffsetError(f"a log can only start at a segment boundary, not at {offset}")
        with self._ckpt_lock, self._writer.lock:
            if clog.max_offset > clog.min_offset:
                clog.truncate(clog.min_offset)
                clog.write_pos = clog.flushed = clog.min_offset
            clog.restart_empty_at(offset)
            self._cqs.remove_all()
            self._checkpoint_locked()
            log.warning("log reset to start at %d", offset)

    def system_payloads(self, kind: str, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """The system records of `kind` in [start, stop) of the log, in log
        order (core.store.system.log_payloads)."""
        return log_payloads(self._clog, kind, start, stop)


def read_chunk(clog: CommitLog, offset: int, max_bytes: int) -> tuple[bytes, int]:
    """Published log bytes from `offset`, whole records only, within one
    segment: (bytes, offset after them). At least one record when there is
    one; an end-of-segment marker is sent as its 8 header bytes and ends
    the chunk (the offset after it is the next segment's start).

    It only finds record boundaries (magic and size, 8 bytes a record):
    this is the master's side of every replication stream, and the slave
    checks every record (core.record.frames) before writing any."""
    end = clog.write_pos
    if offset >= end:
        return b"", offset
    at = clog.locate(offset)
    if at is None:
        raise CorruptRecordError(f"offset {offset} is below the log's minimum {clog.min_offset}")
    seg, seg_start, rel = at
    seg_bytes = clog.segment_bytes
    stop_rel = min(seg_bytes, end - seg_start)
    view = seg.view
    pos = rel
    next_offset = offset
    while pos < stop_rel:
        total, magic = PREFIX.unpack_from(view, pos)
        if magic == BLANK_MAGIC:
            if pos == rel:  # a marker is sent alone
                return bytes(view[pos : pos + BLANK_MIN]), seg_start + seg_bytes
            break
        if magic != RECORD_MAGIC or total < HEADER_SIZE or pos + total > stop_rel:
            raise CorruptRecordError(f"no record at {seg_start + pos} while reading for replication")
        if pos > rel and pos + total - rel > max_bytes:
            break
        pos += total
        next_offset = seg_start + pos
    return bytes(view[rel:pos]), next_offset
