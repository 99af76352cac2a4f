"""MessageStore: the storage engine both broker roles share.

Layout of a data directory::

    lock                       flock held while open
    checkpoint                 flushed offsets (see checkpoint.py)
    clean_shutdown             present only while stopped cleanly
    topics.json                topic -> queue count
    quarantine/<cut offset>-<ms>/   what a recovery cut (never read back; recovery.py)
    commitlog/<20 digits>      CommitLog segments
    consumequeue/<topic>/<queue>/<20 digits>   ConsumeQueue files
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.errors import (
    CorruptRecordError,
    FlushTimeoutError,
    InvalidArgumentError,
    InvalidQueueError,
    StorageFullError,
    UnknownTopicError,
)
from core.record import Message, decode_record, validate_topic
from core.sidefiles import LogHistory
from core.store.checkpoint import (
    Checkpoint,
    DirLock,
    read_checkpoint,
    take_clean_marker,
    write_checkpoint,
    write_clean_marker,
)
from core.store.commitlog import CommitLog, Prepared
from core.store.config import StoreConfig
from core.store.cqset import ConsumeQueueSet
from core.store.deletion import deletion, is_deletion
from core.store.encoder import BatchEncoder
from core.store.flush import GroupCommit, PeriodicService
from core.store.publish import Listener, Publisher, QueueKey
from core.store.reads import ReadResult, read_queue
from core.store.recovery import QUARANTINE, RecoveryReport, quarantine_usage, recover
from core.store.replica_ops import ReplicaOps
from core.store.retention import Retention
from core.store.system import Handler, SystemRecords, decode_system, encode_system, log_payloads
from core.store.topics import TopicTable

log = logging.getLogger(__name__)


class MessageStore:
    """The storage engine's façade. Its parts, one job each: BatchEncoder
    (validating and encoding append batches), Publisher (the write lock and
    the publish step both append paths end with), ReplicaOps (the
    replication paths), SystemRecords (applying system records)."""

    def __init__(
        self,
        data_dir: Path | str,
        config: StoreConfig | None = None,
        disk_used_ratio: Callable[[], float] | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.config = config = config or StoreConfig()
        config.validate()
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._disk_used_ratio = disk_used_ratio
        self._ckpt_lock = threading.RLock()
        self.checkpoint_listeners: list[Callable[[], None]] = []  # after every checkpoint; never raise
        self._opened = False  # recovered records replayed: deletions drop queues from now on
        self._system = SystemRecords()
        self._system.add_handler("topic", self._apply_topic)
        self._dirlock = DirLock(self.data_dir)
        try:
            self.topics = TopicTable(self.data_dir, config.max_queues_per_topic)
            self._encoder = BatchEncoder(
                self.topics, config.max_message_bytes, config.max_properties, config.max_properties_bytes
            )
            clean_end = take_clean_marker(self.data_dir)
            ckpt = read_checkpoint(self.data_dir)
            self.commitlog = CommitLog(
                self.data_dir / "commitlog",
                config.segment_bytes,
                config.warm_segments,
                sync_warmed=config.flush == "sync",
            )
            self.cqs = ConsumeQueueSet(
                self.data_dir / "consumequeue",
                config.cq_entries_per_file,
                config.cq_max_open,
                self.commitlog.min_offset,
            )
            self.recovery: RecoveryReport = recover(
                self.commitlog, self.cqs, clean_end, ckpt, self.data_dir / QUARANTINE
            )
            self._quarantined = quarantine_usage(self.data_dir / QUARANTINE)  # only recovery adds
            self.topics.restore(self.log_history(), self.cqs.keys())  # a damaged or lost file
            for phys in self.recovery.system_records:  # replay what the scan found
                try:
                    kind, payload = self._system_record_at(phys)
                except CorruptRecordError as exc:  # CRC-valid, not JSON: never applied anywhere
                    self._system.skip(f"recovered: {exc.message}")
                    continue
                self._system.recovered(kind, payload)
            self._checkpoint()
            self._opened = True
        except BaseException:
            for part in (getattr(self, "commitlog", None), getattr(self, "cqs", None)):
                if part is not None:
                    part.close()
            self._dirlock.release()
            raise
        self._writer = Publisher(self.commitlog, self.cqs, self._system.apply)
        self.write_lock = self._writer.lock  # held by every append, replicated chunk and cut
        self._replica = ReplicaOps(
            self.commitlog,
            self.cqs,
            self._writer,
            self._ckpt_lock,
            self._checkpoint_locked,
            self._encoder.ensure_queues,
            self._system.skip,
        )
        self._retention = Retention(
            self.data_dir, self.commitlog, self.cqs, config, self._writer.lock, self._disk_used_ratio
        )
        self._group = GroupCommit(self.commitlog) if config.flush == "sync" else None
        self._service = PeriodicService(
            "store-service",
            [
                (config.flush_interval_ms / 1000, self._flush_tick),
                (config.checkpoint_interval_ms / 1000, self._checkpoint),
                (config.retention_interval_ms / 1000, self.enforce_retention),
            ],
        )

    @property
    def _closed(self) -> bool:
        """Set once by close() (and by tests/helpers/store_tools.abandon)."""
        return self._writer.closed

    @_closed.setter
    def _closed(self, value: bool) -> None:
        self._writer.closed = value

    # ---- topics -------------------------------------------------------------

    def create_topic(self, topic: str, queues: int) -> bool:
        """Define a topic or raise its queue count (never lowers it), through a
        system record in the log (so slaves and recovery learn it too)."""
        if not self.topics.would_change(topic, queues):  # validates
            return False
        self.append_system("topic", {"name": topic, "queues": queues})
        return True

    # ---- system records -------------------------------------------------------------

    def append_system(self, kind: str, payload: dict[str, Any]) -> int:
        """Append a system record and apply it; returns its physical offset."""
        prepared = encode_system(kind, payload, self._clock_ms())
        return self._append_prepared([prepared], [(kind, payload)])[0][0]

    def append_systems(self, records: list[tuple[str, dict[str, Any]]]) -> int:
        """Append system records as one batch (all or none) and apply them in
        order; returns the physical offset of the first."""
        now = self._clock_ms()
        prepared = [encode_system(kind, payload, now) for kind, payload in records]
        return self._append_prepared(prepared, records)[0][0]

    def add_system_handler(self, kind: str, fn: Handler) -> None:
        """Apply system records of `kind` with `fn`: those found by recovery
        now (in log order), every later one as it is appended or replicated."""
        self._system.add_handler(kind, fn)

    @property
    def system_records_skipped(self) -> int:
        """System records whose content could not be applied (logged; a metric)."""
        return self._system.skipped

    def quarantined(self) -> tuple[int, int]:
        """(cut tails kept in quarantine/, their bytes, as of the open):
        recovery never deletes what it cuts; an operator may, once inspected."""
        return self._quarantined

    def log_history(self) -> LogHistory:
        """What the log can tell a side file (core/sidefiles.py) about its past."""
        clog = self.commitlog
        return LogHistory(clog.min_offset, clog.max_offset, lambda kind: log_payloads(clog, kind))

    def delete_topic(self, topic: str) -> bool:
        """Delete a topic through a system record (core/store/deletion.py):
        its definition and ConsumeQueues go, its messages stay in the log
        until retention. False (nothing written) if it is not defined."""
        if self.topics.queue_count(validate_topic(topic).decode()) is None:
            return False
        self.append_system("topic", deletion(topic))
        return True

    def _apply_topic(self, payload: dict[str, Any]) -> None:
        if not is_deletion(payload):
            self._encoder.define_topic(str(payload["name"]), int(payload["queues"]))
            return
        name = str(payload["name"])
        validate_topic(name)  # (a bad name: the record is skipped everywhere alike)
        if self._opened:  # (while opening, recovery dropped the queues in log order)
            self.cqs.drop_topic(name)
        self._encoder.forget_topic(name)

    def _system_record_at(self, phys: int) -> tuple[str, dict[str, Any]]:
        return decode_system(decode_record(bytes(self.commitlog.record_at(phys))))

    # ---- writing ------------------------------------------------------------

    def validate(self, messages: Sequence[Message], new_topic_queues: int) -> None:
        """Check a batch as `append` would, treating unknown topics as having
        `new_topic_queues` queues; writes nothing (lets a broker auto-create a
        topic only for a batch that will be accepted)."""
        self._encoder.prepare(messages, new_topic_queues)

    def append(self, messages: Sequence[Message]) -> list[tuple[int, int]]:
        """Store a batch; return (physical offset, queue offset) per message.

        The whole batch is validated before a byte is written: one bad message
        rejects the batch and nothing is stored. With `flush = "sync"` this
        returns only after the batch is durable (group commit).
        """
        if not isinstance(messages, list | tuple):
            raise InvalidArgumentError(f"append takes a list of Message, got {type(messages).__name__}")
        if not messages:
            return []
        deletions = self._encoder.deletions
        return self._append_prepared(self._encoder.prepare(messages), deletions=deletions)

    def _append_prepared(
        self,
        batch: list[Prepared],
        system: list[tuple[str, dict[str, Any]]] | None = None,
        deletions: int | None = None,
    ) -> list[tuple[int, int]]:
        """Write encoded records; `system` holds the (kind, payload) of a batch of
        system records, which are applied instead of dispatched. `deletions`:
        the topic deletions counted when the batch was validated; if one came
        since, its topics are checked again (a deleted one is refused)."""
        cqs = self.cqs
        clog = self.commitlog
        writer = self._writer
        with writer.lock:
            writer.check_open()
            if deletions is not None and deletions != self._encoder.deletions:
                for topic in {p[0] for p in batch}:
                    if self.topics.queue_count(topic) is None:
                        raise UnknownTopicError(f"topic {topic!r} was deleted; nothing stored")
            nexts: dict[QueueKey, int] = {}
            firsts: dict[QueueKey, int] = {}
            qoffs: list[int] = []
            for p in batch:
                key = (p[0], p[3])
                q = nexts.get(key)
                if q is None:
                    q = firsts[key] = cqs.next_offset(p[0], p[3])
                qoffs.append(q)
                nexts[key] = q + 1
            start = clog.write_pos
            try:
                entries, end = clog.append(batch, qoffs, self._clock_ms())
                if system is None:
                    writer.publish(start, end, entries, firsts, nexts)
                else:  # applied, not indexed: no queue grows
                    nexts = {}
                    writer.publish(start, end, (), {}, nexts, system)
            except OSError as exc:  # the log and the queues undid it (append, publish): say why
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise StorageFullError(
                        f"no space left on the data disk: {exc.strerror}; nothing stored"
                    ) from exc
                raise
        writer.notify(nexts.keys())
        result = [(e[3], e[2]) for e in entries]
        if self._group is not None and not self._group.wait_durable(
            end, self.config.sync_flush_timeout_ms / 1000
        ):
            raise FlushTimeoutError(
                f"records stored but not flushed within {self.config.sync_flush_timeout_ms} ms",
                result,
            )
        return result

    def add_topic_listener(self, fn: Callable[[str], None]) -> None:
        """Call `fn(topic)` whenever a topic is defined or grows, however
        (`create_topic`, a replicated system record, a slave covering the
        queues its records use). It runs under the write lock: it must return
        at once (set a flag, wake a thread), never wait on anything."""
        self._encoder.topic_listeners.append(fn)

    def add_append_listener(self, fn: Listener) -> None:
        """Call `fn((topic, queue) keys)` after each append is visible (long polling)."""
        self._writer.add_listener(fn)

    # ---- replication (ReplicaOps) ---------------------------------------------

    def read_log(self, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """What a master streams to its slaves; see ReplicaOps.read_log."""
        return self._replica.read_log(offset, max_bytes)

    def append_replicated(self, offset: int, data: bytes) -> int:
        """Append a master's bytes at the same offsets; see ReplicaOps.append_replicated."""
        return self._replica.append_replicated(offset, data)

    def truncate_to(self, offset: int) -> int:
        """Cut the log from `offset` on; see ReplicaOps.truncate_to."""
        return self._replica.truncate_to(offset)

    def reset_log(self, offset: int) -> None:
        """Start over, empty, at `offset`; see ReplicaOps.reset_log."""
        self._replica.reset_log(offset)

    def system_payloads(self, kind: str, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """The system records of `kind` in [start, stop); see ReplicaOps.system_payloads."""
        return self._replica.system_payloads(kind, start, stop)

    # ---- reading ------------------------------------------------------------

    def physical_offset_of(self, topic: str, queue_id: int, queue_offset: int) -> int | None:
        """Where the record at `queue_offset` sits in the CommitLog (None if the
        queue holds no such record)."""
        cq = self.cqs.get(topic, queue_id)
        if cq is None or not cq.min_offset <= queue_offset < cq.max_offset:
            return None
        return int(cq.entry(queue_offset)[0])

    def next_queue_offset(self, topic: str, queue_id: int) -> int:
        """The queue offset the next message will get (no validation: hot path)."""
        return self.cqs.next_offset(topic, queue_id)

    def queue_offsets(self, topic: str, queue_id: int) -> tuple[int, int]:
        """(min, max) queue offsets; max is the offset the next message will get."""
        self._check_queue(topic, queue_id)
        cq = self.cqs.get(topic, queue_id)
        return (cq.min_offset, cq.max_offset) if cq is not None else (0, 0)

    def _check_queue(self, topic: str, queue_id: int) -> None:
        count = self._encoder.queue_count(topic)
        if isinstance(queue_id, bool) or not isinstance(queue_id, int) or not 0 <= queue_id < count:
            raise InvalidQueueError(f"queue id {queue_id!r} out of range for {topic!r} (0..{count - 1})")

    def read(
        self,
        topic: str,
        queue_id: int,
        queue_offset: int,
        max_count: int,
        max_bytes: int,
        tag_filter: Callable[[int], bool] | None = None,
        visible_end: int | None = None,
    ) -> ReadResult:
        """Stored record bytes from `queue_offset` on (core/store/reads.py)."""
        return read_queue(self, topic, queue_id, queue_offset, max_count, max_bytes, tag_filter, visible_end)

    # ---- durability and retention ---------------------------------------------

    def flush(self) -> None:
        """Make everything appended so far durable (CommitLog and ConsumeQueues)."""
        self.commitlog.flush()
        self.cqs.flush()

    def _flush_tick(self) -> None:
        if self.config.flush == "async":
            self.commitlog.flush()

    def _checkpoint(self) -> None:
        with self._ckpt_lock:  # never interleaved with a truncation or reset
            self._checkpoint_locked()
            for fn in self.checkpoint_listeners:  # no cut meanwhile; they may take write_lock
                fn()

    def _checkpoint_locked(self) -> None:
        dispatched = self.commitlog.write_pos  # every record below has its entries written
        self.commitlog.flush()
        self.cqs.flush()
        write_checkpoint(self.data_dir, Checkpoint(self.commitlog.flushed, dispatched))

    def disk_full(self) -> bool:
        """Is the data disk past its high watermark? (core/store/retention.py)"""
        return self._retention.disk_full()

    def enforce_retention(self, now_ms: int | None = None) -> list[str]:
        """Delete old segments as retention allows (core/store/retention.py)."""
        return self._retention.enforce(self._clock_ms() if now_ms is None else now_ms)

    @property
    def retention_floor(self) -> Callable[[], int | None]:
        return self._retention.floor

    @retention_floor.setter
    def retention_floor(self, fn: Callable[[], int | None]) -> None:
        self._retention.floor = fn

    # ---- lifecycle ----------------------------------------------------------------

    def close(self) -> None:
        """Flush, checkpoint, write the clean-shutdown marker, release the lock."""
        with self._writer.lock:
            if self._writer.closed:
                return
            self._writer.closed = True
        self._service.close()
        if self._group is not None:
            self._group.close()
        self._checkpoint()
        end = self.commitlog.write_pos
        self.commitlog.close()
        self.cqs.close()
        write_clean_marker(self.data_dir, end)
        self._dirlock.release()

    def __enter__(self) -> MessageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
