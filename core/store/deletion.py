"""Deleting a topic from a store, and keeping it deleted.

A deletion is a `topic` system record `{"name": T, "delete": true}` in the
log (`MessageStore.delete_topic`), applied in log order wherever the log is
applied: the topic leaves the topic table (topics.json) and its
ConsumeQueues are closed and their files removed. The messages stay in the
CommitLog until retention removes their segments; nothing indexes them any
more. A topic of the same name created later starts again at queue offset 0
(as RocketMQ does): its ConsumeQueues are new files.

What keeps it deleted is that the record is applied where it sits among the
messages, on every path that builds ConsumeQueues:

- the append path applies it under the write lock, after the records before
  it were dispatched; an append that was validated before the deletion and
  reaches the lock after it is refused (`UnknownTopicError`: the topic is
  gone), not written at queue offset 0 of a topic nobody defined;
- a slave's replicated chunk is split after each deletion record
  (`split_point`), so the records before it are dispatched, then the
  deletion applied, then the records after it (a re-created topic) start at
  queue offset 0, as on the master;
- recovery re-dispatches the records after the dispatched checkpoint in log
  order and drops the topic's queues where it meets a deletion record
  (`deleted_topic`), so messages still in the log never bring the deleted
  queues back; a deletion below the checkpoint was applied (and its
  directory removal synced) before the checkpoint was written;
- replaying recovered `topic` records into the table is in log order too, so
  a create, a delete and a re-create end as the log says.

Known limit (as for created topics, core/store/replica_ops.py): a deletion
in a tail a slave cuts away (a divergent tail) stays applied on that slave.
"""

from __future__ import annotations

from typing import Any

from core.errors import CorruptRecordError
from core.record import SYSTEM_TOPIC, RecordHeader, decode_record
from core.store.commitlog import CommitLog
from core.store.system import decode_system

DELETE = "delete"  # the field of a `topic` record that makes it a deletion


def is_deletion(payload: dict[str, Any]) -> bool:
    return payload.get(DELETE) is True


def deletion(topic: str) -> dict[str, Any]:
    """The payload of the `topic` record that deletes `topic`."""
    return {"name": topic, DELETE: True}


def deleted_topic(clog: CommitLog, hdr: RecordHeader) -> str | None:
    """The topic a scanned record deletes, or None (recovery's scan: the log's
    write position is not set yet, so the segment is read directly)."""
    if hdr.topic != SYSTEM_TOPIC or hdr.tags != "topic":
        return None
    at = clog.locate(hdr.physical_offset)
    if at is None:
        return None
    seg, _start, rel = at
    try:
        _kind, payload = decode_system(decode_record(seg.view[rel : rel + hdr.size], verify=False))
    except CorruptRecordError:
        return None  # skipped where it was applied, too
    return str(payload.get("name")) if is_deletion(payload) else None


def split_point(kind: str, payload: dict[str, Any], record_end: int, chunk_end: int) -> int | None:
    """Where a replicated chunk must be split for this system record: after
    it, when it deletes a topic and records follow it in the chunk."""
    if kind == "topic" and is_deletion(payload) and record_end < chunk_end:
        return record_end
    return None
