"""Deleting a topic in the store (core/store/deletion.py): the definition and
ConsumeQueues go through a log record, the messages stay in the log, and no
path that builds ConsumeQueues (append, replication, recovery) brings the
deleted queues back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from core.errors import InvalidTopicError, UnknownTopicError
from core.record import SYSTEM_TOPIC, Message, decode_record, iter_records
from core.store import MessageStore, ReadStatus
from tests.conftest import SMALL
from tests.helpers.store_tools import abandon, log_records

pytestmark = pytest.mark.component
# small segments (a default one is 1 GiB, written out); no checkpoint but the one at open
CONFIG = replace(SMALL, checkpoint_interval_ms=3_600_000)


def put(s: MessageStore, topic: str, n: int, body: bytes = b"x") -> None:
    for i in range(n):
        s.append([Message(topic, i % 2, body + bytes([i % 251]))])


def bodies(s: MessageStore, topic: str, q: int) -> list[bytes]:
    lo, hi = s.queue_offsets(topic, q)
    if hi == lo:
        return []
    r = s.read(topic, q, lo, 10_000, 1 << 24)
    return [rec.body for rec in iter_records(r.data)]


def queue_dirs(s: MessageStore, topic: str) -> list[str]:
    path = s.data_dir / "consumequeue" / topic
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def messages_in_log(s: MessageStore, topic: str) -> int:
    return sum(1 for _p, raw in log_records(s) if decode_record(raw).topic == topic)


def test_delete_drops_definition_and_queues_but_not_the_messages(tmp_path: Path) -> None:
    with MessageStore(tmp_path, CONFIG) as s:
        s.create_topic("t", 2)
        s.create_topic("keep", 1)
        put(s, "t", 6)
        put(s, "keep", 1)
        assert queue_dirs(s, "t") == ["0", "1"]
        assert s.delete_topic("t") is True
        assert s.topics.queue_count("t") is None
        assert s.topics.names() == ["keep"]
        assert queue_dirs(s, "t") == []
        assert s.cqs.keys() == [("keep", 0)]
        with pytest.raises(UnknownTopicError):
            s.queue_offsets("t", 0)
        with pytest.raises(UnknownTopicError):
            s.append([Message("t", 0, b"late")])
        assert messages_in_log(s, "t") == 6  # left to retention
        # re-created, it starts again at queue offset 0
        s.create_topic("t", 1)
        assert s.append([Message("t", 0, b"new")]) == [(s.commitlog.max_offset - _size(s), 0)]
        assert bodies(s, "t", 0) == [b"new"]
        assert bodies(s, "keep", 0) == [b"x\x00"]
    with MessageStore(tmp_path, CONFIG) as s:  # a clean restart keeps it so
        assert s.topics.queue_count("t") == 1
        assert bodies(s, "t", 0) == [b"new"]


def _size(s: MessageStore) -> int:
    return len(log_records(s)[-1][1])


def test_bad_deletes_change_nothing(tmp_path: Path) -> None:
    with MessageStore(tmp_path, CONFIG) as s:
        s.create_topic("t", 1)
        end = s.commitlog.max_offset
        assert s.delete_topic("nope") is False
        with pytest.raises(InvalidTopicError):
            s.delete_topic("../t")
        with pytest.raises(InvalidTopicError):
            s.delete_topic("__sys")
        assert s.commitlog.max_offset == end
        assert s.topics.names() == ["t"]


def test_an_append_validated_before_a_delete_is_refused_after_it(tmp_path: Path) -> None:
    with MessageStore(tmp_path, CONFIG) as s:
        s.create_topic("t", 1)
        before = s._encoder.deletions
        batch = s._encoder.prepare([Message("t", 0, b"raced")])
        s.delete_topic("t")
        end = s.commitlog.max_offset
        with pytest.raises(UnknownTopicError, match="was deleted"):
            s._append_prepared(batch, deletions=before)
        assert s.commitlog.max_offset == end
        assert s.cqs.keys() == []


@pytest.mark.parametrize("recreate", [False, True])
def test_kill_after_delete_never_brings_the_queues_back(tmp_path: Path, recreate: bool) -> None:
    s = MessageStore(tmp_path, CONFIG)
    s.create_topic("t", 2)
    put(s, "t", 8)  # after the checkpoint at open: recovery re-dispatches them
    s.delete_topic("t")
    if recreate:
        s.create_topic("t", 2)
        put(s, "t", 3, b"again")
    abandon(s)
    with MessageStore(tmp_path, CONFIG) as s2:
        assert not s2.recovery.clean and s2.recovery.records_redispatched >= 8
        if not recreate:
            assert s2.topics.queue_count("t") is None
            assert queue_dirs(s2, "t") == [] and s2.cqs.keys() == []
        else:
            assert s2.topics.queue_count("t") == 2
            assert s2.queue_offsets("t", 0) == (0, 2) and s2.queue_offsets("t", 1) == (0, 1)
            assert bodies(s2, "t", 0) == [b"again\x00", b"again\x02"]
        assert messages_in_log(s2, "t") == (11 if recreate else 8)


def test_kill_with_the_delete_below_the_checkpoint(tmp_path: Path) -> None:
    s = MessageStore(tmp_path, CONFIG)
    s.create_topic("t", 2)
    put(s, "t", 4)
    s.delete_topic("t")
    s._checkpoint()  # the delete is applied and checkpointed: recovery scans only after it
    s.create_topic("t", 2)
    put(s, "t", 1, b"after")
    abandon(s)
    with MessageStore(tmp_path, CONFIG) as s2:
        assert s2.queue_offsets("t", 0) == (0, 1)
        assert bodies(s2, "t", 0) == [b"after\x00"]


def test_a_slave_applies_a_delete_in_the_middle_of_a_chunk(tmp_path: Path) -> None:
    with MessageStore(tmp_path / "m", CONFIG) as m, MessageStore(tmp_path / "s", CONFIG) as sl:
        m.create_topic("t", 2)
        put(m, "t", 5)
        m.delete_topic("t")
        m.create_topic("t", 2)
        put(m, "t", 3, b"again")
        data, nxt = m.read_log(0, 1 << 24)
        assert nxt == m.commitlog.max_offset  # one chunk: old records, the delete, new ones
        assert sl.append_replicated(0, data) == nxt
        for q in (0, 1):
            assert sl.queue_offsets("t", q) == m.queue_offsets("t", q)
            assert bodies(sl, "t", q) == bodies(m, "t", q)
        assert bodies(sl, "t", 0) == [b"again\x00", b"again\x02"]
        abandon(sl)
    with MessageStore(tmp_path / "s", CONFIG) as sl:  # and its recovery agrees
        assert sl.queue_offsets("t", 0) == (0, 2)
        assert bodies(sl, "t", 1) == [b"again\x01"]


def test_a_slave_deletes_the_topic_it_replicated(tmp_path: Path) -> None:
    with MessageStore(tmp_path / "m", CONFIG) as m, MessageStore(tmp_path / "s", CONFIG) as sl:
        m.create_topic("t", 2)
        put(m, "t", 2)
        data, nxt = m.read_log(0, 1 << 24)
        sl.append_replicated(0, data)
        assert queue_dirs(sl, "t") == ["0", "1"]
        seen: list[str] = []
        sl.add_topic_listener(seen.append)  # brokers re-register their topics on it
        m.delete_topic("t")
        data, _end = m.read_log(nxt, 1 << 24)
        sl.append_replicated(nxt, data)
        assert sl.topics.queue_count("t") is None and queue_dirs(sl, "t") == [] and seen == ["t"]
        assert [decode_record(r).topic for _p, r in log_records(sl)][-1] == SYSTEM_TOPIC


def test_a_lost_topics_file_is_rebuilt_without_the_deleted_topic(tmp_path: Path) -> None:
    with MessageStore(tmp_path, CONFIG) as s:
        s.create_topic("t", 1)
        s.create_topic("u", 1)
        s.delete_topic("t")
    (tmp_path / "topics.json").unlink()
    with MessageStore(tmp_path, CONFIG) as s:
        assert s.topics.names() == ["u"]
        assert s.read("u", 0, 0, 1, 1024).status is ReadStatus.NO_NEW_MSG
