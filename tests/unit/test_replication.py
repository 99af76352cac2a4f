"""The replication protocol with master and slave joined in memory (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ReplicationError
from core.record import Message
from core.replicas import ReplicaSet
from core.replication import (
    Ack,
    Chunk,
    Handshake,
    MasterSession,
    SlaveSession,
)
from tests.helpers.replication_pair import SECRET, Open, Pair, fill, log_hash
from tests.helpers.store_tools import abandon, check_consistency

pytestmark = pytest.mark.unit


def test_slave_gets_an_identical_log_across_segment_boundaries(open_store: Open, tmp_path: Path) -> None:
    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    fill(master, 400)  # about 6 segments of 64 KiB
    pair = Pair(master, slave)
    assert pair.pump() > 0
    assert slave.commitlog.max_offset == master.commitlog.max_offset
    assert log_hash(slave) == log_hash(master)
    assert any(len(c.data) == 8 for c in pair.chunks)  # end markers travel as 8 bytes
    assert all(c.offset // 65536 == (c.offset + len(c.data) - 1) // 65536 for c in pair.chunks)
    assert check_consistency(slave) == 400
    for q in range(3):  # the slave's own ConsumeQueues serve the same messages
        a = master.read("t", q, 0, 1000, 1 << 30)
        b = slave.read("t", q, 0, 1000, 1 << 30)
        assert a.data == b.data and a.count == b.count > 0
    (st,) = pair.replicas.snapshot()
    assert st.acked == master.commitlog.max_offset
    assert pair.replicas.confirmed(master.commitlog.max_offset, 1, pair.now) == master.commitlog.max_offset


def test_resume_from_the_slaves_own_end_after_restarts(open_store: Open, tmp_path: Path) -> None:
    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    fill(master, 100)
    Pair(master, slave).pump()
    slave.close()
    fill(master, 100, topic="u")
    slave = open_store(tmp_path / "s")  # restarted slave: handshake from its own end
    pair = Pair(master, slave)
    assert pair.chunks == [] and pair.m.next_offset == slave.commitlog.max_offset
    pair.pump()
    assert log_hash(slave) == log_hash(master)
    assert slave.topics.queue_count("u") == 3


def test_slave_ahead_of_master_truncates(open_store: Open, tmp_path: Path) -> None:
    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    fill(master, 50)
    Pair(master, slave).pump()
    # the slave holds bytes the master no longer has (its own extra records)
    slave_extra = slave.commitlog.max_offset
    master.close()
    master = open_store(tmp_path / "m2")
    fill(master, 30)
    assert master.commitlog.max_offset < slave_extra
    pair = Pair(master, slave)
    assert slave.commitlog.max_offset <= master.commitlog.max_offset
    pair.pump()
    # the same first 30 messages are byte-identical only if both wrote them identically;
    # what matters here: the slave now mirrors this master exactly
    assert slave.commitlog.max_offset == master.commitlog.max_offset


def test_wrong_secret_foreign_group_and_bad_acks_are_refused(open_store: Open, tmp_path: Path) -> None:
    master, _slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    fill(master, 20)
    replicas = ReplicaSet(1 << 20, 10_000)
    m = MasterSession(master, replicas, "c", "g", SECRET, 4096)
    with pytest.raises(ReplicationError, match="secret"):
        m.handshake(Handshake("c", "g", 1, 0, "wrong"), 0, 0)
    with pytest.raises(ReplicationError, match="cannot replicate"):
        m.handshake(Handshake("c", "other", 1, 0, SECRET), 0, 0)
    with pytest.raises(ReplicationError):
        m.handshake(Handshake("c", "g", 0, 0, SECRET), 0, 0)
    assert replicas.snapshot() == []  # nothing attached
    with pytest.raises(ReplicationError, match="before handshake"):
        m.on_ack(Ack(0, 0), 0)
    m.handshake(Handshake("c", "g", 1, 0, SECRET), 0, 0)
    chunk = m.next_chunk(0)
    assert chunk is not None
    with pytest.raises(ReplicationError, match="beyond"):
        m.on_ack(Ack(master.commitlog.max_offset + 1, 0), 1)
    with pytest.raises(ReplicationError, match="never sent"):
        m.on_ack(Ack(chunk.offset + len(chunk.data) + 1, 0), 1)
    (st,) = replicas.snapshot()
    assert st.acked == 0  # bad acks changed nothing


def test_corrupt_or_misplaced_chunks_change_nothing(open_store: Open, tmp_path: Path) -> None:
    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    fill(master, 20)
    pair = Pair(master, slave, chunk_bytes=3000)
    chunk = pair.m.next_chunk(0)
    assert chunk is not None
    damaged = bytearray(chunk.data)
    damaged[100] ^= 1
    from core.errors import CorruptRecordError

    with pytest.raises(CorruptRecordError):
        pair.s.on_chunk(Chunk(chunk.offset, bytes(damaged), 0, 0))
    with pytest.raises(ReplicationError):
        pair.s.on_chunk(Chunk(chunk.offset + 10, chunk.data, 0, 0))
    assert slave.commitlog.max_offset == 0 and slave.cqs.queues == {}
    pair.m.on_ack(pair.s.on_chunk(chunk), 1)  # the good chunk still applies
    assert slave.commitlog.max_offset == chunk.offset + len(chunk.data)


def test_idle_streams_heartbeat_and_stay_in_sync(open_store: Open, tmp_path: Path) -> None:
    """Heartbeats are the sessions' business: the master's carries its end and
    confirmed offset, the slave acks it, so an idle slave stays in sync and
    learns how far it may serve."""
    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    fill(master, 20)
    pair = Pair(master, slave)
    pair.pump()
    end = master.commitlog.max_offset
    assert pair.s.confirmed == end and pair.s.master_max == end
    in_sync = pair.replicas.in_sync(end, 9_000)
    assert in_sync and in_sync[0].last_ack_ms < 9_000
    pair.m.on_ack(pair.s.on_heartbeat(pair.m.heartbeat(confirmed=end)), 9_000)
    (st,) = pair.replicas.in_sync(end, 15_000)  # the heartbeat's ack renewed it
    assert st.acked == end and st.last_ack_ms == 9_000
    # the master's end moved on (not sent yet): the slave learns it, serves no more
    fill(master, 10, topic="u")
    hb = pair.m.heartbeat(confirmed=end)
    ack = pair.s.on_heartbeat(hb)
    assert pair.s.master_max == master.commitlog.max_offset > end
    assert ack.max_offset == end and pair.s.confirmed == end
    # a confirmed offset past the slave's own end is capped at what it holds
    pair.s.on_heartbeat(pair.m.heartbeat(confirmed=master.commitlog.max_offset))
    assert pair.s.confirmed == end


def test_chunks_of_an_older_epoch_are_refused(open_store: Open, tmp_path: Path) -> None:
    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    fill(master, 10)

    class Epochs:
        newest = 0

        def epoch_history(self) -> tuple[tuple[int, int], ...]:
            return ()

        def newest_epoch(self) -> int:
            return self.newest

        def truncating(self, offset: int) -> None: ...

        def adopt(self, history: list[tuple[int, int]]) -> None: ...

    epochs = Epochs()
    replicas = ReplicaSet(max_lag_bytes=1 << 20, max_ack_age_ms=10_000)
    m = MasterSession(master, replicas, "c", "g", SECRET, 4096, epoch=3)
    s = SlaveSession(slave, "c", "g", 1, SECRET, epochs)
    s.on_handshake_reply(m.handshake(s.handshake(), 0, 0))
    chunk = m.next_chunk(0)
    assert chunk is not None and chunk.epoch == 3
    epochs.newest = 4  # the controller elected someone else meanwhile
    with pytest.raises(ReplicationError, match="epoch 4"):
        s.on_chunk(chunk)
    assert slave.commitlog.max_offset == 0
    epochs.newest = 3
    s.on_chunk(chunk)
    assert slave.commitlog.max_offset == chunk.offset + len(chunk.data)


def test_in_sync_set_and_confirmed_offset() -> None:
    rs = ReplicaSet(max_lag_bytes=1000, max_ack_age_ms=500)
    a = rs.attach(1, 0, now_ms=0)
    b = rs.attach(2, 0, now_ms=0)
    rs.ack(a, Ack(9000, 9000), now_ms=100)
    rs.ack(b, Ack(5000, 5000), now_ms=100)
    assert [r.broker_id for r in rs.in_sync(9500, now_ms=200)] == [1]  # b lags 4500 bytes
    assert rs.confirmed(9500, 1, 200) == 9000
    assert rs.confirmed(9500, 2, 200) == 0  # two in-sync slaves needed, one exists
    assert rs.in_sync(9500, now_ms=700) == []  # a's ack too old
    assert rs.confirmed(9500, 0, 700) == 9500  # async: nothing to wait for
    rs.detach(1, a)
    assert [r.broker_id for r in rs.in_sync(9000, now_ms=150)] == []


def test_topics_and_offsets_travel_as_system_records(open_store: Open, tmp_path: Path) -> None:
    from core.offsets import ConsumerOffsets

    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    m_offsets, s_offsets = ConsumerOffsets(tmp_path / "m"), ConsumerOffsets(tmp_path / "s")
    master.add_system_handler("offset", m_offsets.apply)
    slave.add_system_handler("offset", s_offsets.apply)
    master.create_topic("x", 6)
    master.append_system("offset", {"group": "g", "topic": "x", "queue": 2, "offset": 5})
    master.append_system("offset", {"group": "g", "topic": "x", "queue": 2, "offset": 9})
    assert m_offsets.query("g", "x", 2) == 9  # applied as appended
    Pair(master, slave).pump()
    assert slave.topics.queue_count("x") == 6
    assert s_offsets.query("g", "x", 2) == 9  # later commit wins: log order
    assert slave.cqs.queues == {}  # system records are not indexed


def test_recovery_replays_system_records_the_files_missed(open_store: Open, tmp_path: Path) -> None:
    from core.offsets import OFFSETS, ConsumerOffsets

    s = open_store(tmp_path / "d")
    offs = ConsumerOffsets(tmp_path / "d")
    s.add_system_handler("offset", offs.apply)
    s.create_topic("x", 2)
    s.append_system("offset", {"group": "g", "topic": "x", "queue": 1, "offset": 42})
    abandon(s)
    (tmp_path / "d" / OFFSETS).unlink()  # as if the crash came before the file was written
    (tmp_path / "d" / "topics.json").unlink()
    s2 = open_store(tmp_path / "d")
    assert s2.topics.queue_count("x") == 2  # replayed from the log
    offs2 = ConsumerOffsets(tmp_path / "d")
    s2.add_system_handler("offset", offs2.apply)  # replays what recovery found
    assert offs2.query("g", "x", 1) == 42


def test_user_topics_cannot_pose_as_system_records(open_store: Open) -> None:
    from core.errors import InvalidTopicError

    s = open_store()
    with pytest.raises(InvalidTopicError):
        s.create_topic("__sys", 1)
    with pytest.raises(InvalidTopicError):
        s.append([Message("__sys", 0, b"{}")])


def test_a_new_slave_starts_at_the_oldest_retained_segment(open_store: Open, tmp_path: Path) -> None:
    import time as _time

    master, slave = open_store(tmp_path / "m", retention_hours=1.0), open_store(tmp_path / "s")
    fill(master, 400)
    deleted = master.enforce_retention(now_ms=int(_time.time() * 1000) + 2 * 3_600_000)
    assert deleted and master.commitlog.min_offset > 0
    pair = Pair(master, slave)
    pair.pump()
    assert slave.commitlog.min_offset == master.commitlog.min_offset
    assert slave.commitlog.max_offset == master.commitlog.max_offset
    assert log_hash(slave) == log_hash(master)


def test_a_slave_behind_retention_starts_over_and_restarts_cleanly(open_store: Open, tmp_path: Path) -> None:
    import time as _time

    master = open_store(tmp_path / "m", retention_hours=1.0)
    slave = open_store(tmp_path / "s")
    fill(master, 40)
    Pair(master, slave).pump()  # the slave holds the first segment
    fill(master, 400, topic="u")
    master.enforce_retention(now_ms=int(_time.time() * 1000) + 2 * 3_600_000)
    assert master.commitlog.min_offset > slave.commitlog.max_offset  # what it needs is gone
    pair = Pair(master, slave)  # it starts over, empty, at the master's oldest offset
    pair.pump()
    assert log_hash(slave) == log_hash(master)
    slave.close()
    again = open_store(tmp_path / "s")  # and it reopens: no gap, queues that start mid-file
    assert again.commitlog.min_offset == master.commitlog.min_offset
    for q in range(3):
        assert again.queue_offsets("u", q) == master.queue_offsets("u", q)
        lo, _hi = master.queue_offsets("u", q)
        assert again.read("u", q, lo, 1000, 1 << 30).data == master.read("u", q, lo, 1000, 1 << 30).data
    Pair(master, again).pump()  # and continues
    fill(master, 30, topic="u")
    Pair(master, again).pump()
    assert log_hash(again) == log_hash(master)


def test_truncated_slave_reopens_at_the_cut(open_store: Open, tmp_path: Path) -> None:
    slave = open_store(tmp_path / "s")
    fill(slave, 300)
    cut = slave.cqs.get("t", 0).entry(20)[0]  # type: ignore[union-attr]
    slave.truncate_to(cut)
    assert slave.commitlog.max_offset == cut
    abandon(slave)  # even without a clean stop
    again = open_store(tmp_path / "s")
    assert again.commitlog.max_offset == cut
    assert check_consistency(again) == 60


def test_a_log_restarts_only_at_a_segment_boundary(open_store: Open, tmp_path: Path) -> None:
    from core.errors import InvalidOffsetError

    slave = open_store(tmp_path / "s")
    fill(slave, 10)
    end = slave.commitlog.max_offset
    with pytest.raises(InvalidOffsetError, match="segment boundary"):
        slave.reset_log(slave.commitlog.segment_bytes + 100)
    assert slave.commitlog.max_offset == end  # nothing changed
    slave.reset_log(2 * slave.commitlog.segment_bytes)
    assert slave.commitlog.min_offset == slave.commitlog.max_offset == 2 * slave.commitlog.segment_bytes


def test_topic_listeners_hear_of_every_definition_made_or_replicated(
    open_store: Open, tmp_path: Path
) -> None:
    """What a broker registers with its nameservers at once: topics created
    on the master and topics a slave learns by replication; a failing
    listener never fails the write."""
    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    heard: dict[str, list[str]] = {"m": [], "s": []}
    master.add_topic_listener(heard["m"].append)
    slave.add_topic_listener(heard["s"].append)

    def broken(topic: str) -> None:
        raise RuntimeError("listener bug")

    master.add_topic_listener(broken)
    assert master.create_topic("x", 2)
    assert not master.create_topic("x", 2)  # unchanged: nothing to tell
    assert master.create_topic("x", 4)  # grown
    master.create_topic("y", 1)
    assert heard["m"] == ["x", "x", "y"]
    Pair(master, slave).pump()
    assert heard["s"] == ["x", "x", "y"]


# ---- the slave cuts only what the epoch histories prove ------------------------------
