"""The replication protocol with master and slave joined in memory (no sockets)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import ReplicationError
from core.record import Message
from core.replicas import ReplicaSet
from core.replication import (
    Ack,
    Chunk,
    Handshake,
    HandshakeReply,
    MasterSession,
    SlaveSession,
)
from core.store import MessageStore
from tests.helpers.store_tools import abandon, check_consistency

pytestmark = pytest.mark.unit
Open = Callable[..., MessageStore]
SECRET = "s3cret"


class Pair:
    """A master session and a slave session joined in memory."""

    def __init__(
        self,
        master: MessageStore,
        slave: MessageStore,
        chunk_bytes: int = 4096,
        history: tuple[tuple[int, int], ...] = (),  # the master's epoch history
        epochs: FakeEpochs | None = None,  # the slave's
    ) -> None:
        self.master, self.slave = master, slave
        self.replicas = ReplicaSet(max_lag_bytes=1 << 20, max_ack_age_ms=10_000)
        epoch = history[-1][0] if history else 0
        self.m = MasterSession(master, self.replicas, "c", "g", SECRET, chunk_bytes, epoch, history)
        self.s = SlaveSession(slave, "c", "g", 1, SECRET, epochs)
        self.now = 0
        self.chunks: list[Chunk] = []
        self.s.on_handshake_reply(self.m.handshake(self.s.handshake(), self.now, confirmed=0))

    def pump(self) -> int:
        """Move chunks until the slave has everything; returns how many moved."""
        n = 0
        while (chunk := self.m.next_chunk(self.master.commitlog.max_offset)) is not None:
            self.chunks.append(chunk)
            self.now += 1
            self.m.on_ack(self.s.on_chunk(chunk), self.now)
            n += 1
        return n


def log_hash(store: MessageStore, upto: int | None = None) -> str:
    clog = store.commitlog
    end = clog.max_offset if upto is None else upto
    h = hashlib.sha256()
    pos = clog.min_offset
    while pos < end:
        seg_end = min(end, pos - pos % clog.segment_bytes + clog.segment_bytes)
        view = clog.view(pos, seg_end - pos)
        assert view is not None
        h.update(view)
        pos = seg_end
    return h.hexdigest()


def fill(store: MessageStore, n: int, topic: str = "t", size: int = 900) -> None:
    store.create_topic(topic, 3)
    for i in range(0, n, 10):
        store.append(
            [
                Message(topic, j % 3, f"{j}:".encode() * (size // 6), tags=f"g{j % 2}")
                for j in range(i, i + 10)
            ]
        )


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


class FakeEpochs:
    """An EpochSource over a tuple (the broker's own is BrokerCore): records
    the cuts it was told of."""

    def __init__(self, history: tuple[tuple[int, int], ...] = (), newest: int = 0) -> None:
        self.history = history
        self.newest = newest
        self.cuts: list[int] = []

    def epoch_history(self) -> tuple[tuple[int, int], ...]:
        return self.history

    def newest_epoch(self) -> int:
        return max(self.newest, self.history[-1][0] if self.history else 0)

    def truncating(self, offset: int) -> None:
        self.cuts.append(offset)
        self.history = tuple(x for x in self.history if x[1] < offset)

    def adopt(self, history: list[tuple[int, int]]) -> None:
        self.history = tuple(history)


def stored(store: MessageStore, epochs: FakeEpochs) -> tuple[object, ...]:
    """What a refused handshake must leave as it was."""
    clog = store.commitlog
    return clog.min_offset, clog.max_offset, log_hash(store), epochs.history, tuple(epochs.cuts)


def caught_up(
    open_store: Open, tmp_path: Path
) -> tuple[MessageStore, MessageStore, FakeEpochs, SlaveSession]:
    """A slave holding exactly the master's log, both in epoch 1."""
    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    fill(master, 30)
    Pair(master, slave).pump()
    epochs = FakeEpochs(((1, 0),))
    return master, slave, epochs, SlaveSession(slave, "c", "g", 1, SECRET, epochs)


def diverged(open_store: Open, tmp_path: Path) -> tuple[MessageStore, MessageStore, int]:
    """A slave that led epoch 1 and wrote a tail nobody replicated; the master
    led epoch 2 from `common` on. Returns (master, slave, common)."""
    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    fill(master, 30)
    Pair(master, slave).pump()
    common = master.commitlog.max_offset
    fill(slave, 20, topic="lost")  # epoch 1's unreplicated tail
    fill(master, 20, topic="new")  # epoch 2
    assert slave.commitlog.max_offset > common
    return master, slave, common


def test_a_cut_below_what_the_histories_prove_is_refused(open_store: Open, tmp_path: Path) -> None:
    """A master answering truncate_to=0 no longer erases a slave whose log
    agrees with its own."""
    master, slave, epochs, s = caught_up(open_store, tmp_path)
    end = slave.commitlog.max_offset
    before = stored(slave, epochs)
    with pytest.raises(ReplicationError, match=rf"cut this log to 0\b.*\b{end}\b"):
        s.on_handshake_reply(HandshakeReply(0, 0, master.commitlog.max_offset, 0, ((1, 0),)))
    assert stored(slave, epochs) == before
    master2, slave2, common = diverged(open_store, tmp_path / "d")
    epochs2 = FakeEpochs(((1, 0),))
    s2 = SlaveSession(slave2, "c", "g", 1, SECRET, epochs2)
    before = stored(slave2, epochs2)
    reply = HandshakeReply(common - 100, common - 100, master2.commitlog.max_offset, 0, ((1, 0), (2, common)))
    with pytest.raises(ReplicationError, match=rf"{common - 100}\b.*\b{common}\b"):
        s2.on_handshake_reply(reply)
    assert stored(slave2, epochs2) == before


def test_a_cut_above_what_the_histories_prove_is_refused(open_store: Open, tmp_path: Path) -> None:
    """Keeping bytes the histories do not prove would leave a log that differs
    from the master's in the middle: refused, not capped (see on_handshake_reply)."""
    master, slave, common = diverged(open_store, tmp_path)
    epochs = FakeEpochs(((1, 0),))
    s = SlaveSession(slave, "c", "g", 1, SECRET, epochs)
    mine, master_max, history = slave.commitlog.max_offset, master.commitlog.max_offset, ((1, 0), (2, common))
    before = stored(slave, epochs)
    with pytest.raises(ReplicationError, match=rf"keep this log to {mine}\b.*\b{common}\b"):
        s.on_handshake_reply(HandshakeReply(mine, -1, master_max, 0, history))  # "keep everything"
    with pytest.raises(ReplicationError, match=rf"keep this log to {common + 500}\b.*\b{common}\b"):
        s.on_handshake_reply(HandshakeReply(common + 500, common + 500, master_max, 0, history))
    assert stored(slave, epochs) == before


def test_a_reply_of_an_older_epoch_or_a_malformed_history_is_refused(
    open_store: Open, tmp_path: Path
) -> None:
    master, slave, epochs, s = caught_up(open_store, tmp_path)
    end, master_max = slave.commitlog.max_offset, master.commitlog.max_offset
    before = stored(slave, epochs)
    epochs.newest = 3  # the controller elected epoch 3: a master of epoch 2 is stale
    with pytest.raises(ReplicationError, match=r"epoch 2.*epoch 3"):
        s.on_handshake_reply(HandshakeReply(end, -1, master_max, 0, ((1, 0), (2, end))))
    with pytest.raises(ReplicationError, match=r"epoch 0.*epoch 3"):
        s.on_handshake_reply(HandshakeReply(end, -1, master_max, 0, ()))
    epochs.newest = 0
    for history in (
        ((2, 0), (1, 10)),  # epochs go back
        ((1, 0), (1, 10)),  # an epoch twice
        ((1, 50), (2, 10)),  # a start goes back
        ((1, -5),),  # before the log's first byte
        ((1, 0), (2, master_max + 1)),  # past the master's end
    ):
        with pytest.raises(ReplicationError, match="malformed"):
            s.on_handshake_reply(HandshakeReply(end, -1, master_max, 0, history))
    assert stored(slave, epochs) == before


def test_a_restart_only_for_a_slave_that_is_simply_behind(open_store: Open, tmp_path: Path) -> None:
    """reset_log wipes the log: only for a start past this log's end, at a
    segment boundary, within the master's own log."""
    master, slave, epochs, s = caught_up(open_store, tmp_path)
    seg, master_max = slave.commitlog.segment_bytes, master.commitlog.max_offset
    before = stored(slave, epochs)
    with pytest.raises(ReplicationError, match=rf"restart this log at {100 * seg}\b.*\b{master_max}\b"):
        s.on_handshake_reply(HandshakeReply(100 * seg, -1, master_max, 0, ((1, 0),)))
    assert stored(slave, epochs) == before
    # the cut is allowed, the restart is not: neither happens
    master2, slave2, common = diverged(open_store, tmp_path / "d")
    epochs2 = FakeEpochs(((1, 0),))
    s2 = SlaveSession(slave2, "c", "g", 1, SECRET, epochs2)
    before = stored(slave2, epochs2)
    reply = HandshakeReply(common + 1000, common, master2.commitlog.max_offset, 0, ((1, 0), (2, common)))
    with pytest.raises(ReplicationError, match="segment boundary"):
        s2.on_handshake_reply(reply)
    assert stored(slave2, epochs2) == before


def test_a_cut_below_the_logs_own_start_is_refused(open_store: Open, tmp_path: Path) -> None:
    slave = open_store(tmp_path / "s")
    seg = slave.commitlog.segment_bytes
    slave.reset_log(2 * seg)  # a slave that once started over behind retention
    fill(slave, 20)
    epochs = FakeEpochs(((1, 0),))
    s = SlaveSession(slave, "c", "g", 1, SECRET, epochs)
    before = stored(slave, epochs)
    with pytest.raises(ReplicationError, match=rf"{seg}\b.*start {2 * seg}\b"):
        s.on_handshake_reply(HandshakeReply(seg, seg, 10 * seg, 0, ((1, 0), (2, seg))))
    assert stored(slave, epochs) == before


def test_a_start_before_the_end_after_the_cut_stays_an_error(open_store: Open, tmp_path: Path) -> None:
    master, slave, epochs, s = caught_up(open_store, tmp_path)
    end = slave.commitlog.max_offset
    before = stored(slave, epochs)
    with pytest.raises(ReplicationError, match=rf"start at {end - 10}, this log ends at {end}"):
        s.on_handshake_reply(HandshakeReply(end - 10, -1, master.commitlog.max_offset, 0, ((1, 0),)))
    assert stored(slave, epochs) == before


def test_every_legitimate_path_still_works_with_epochs(open_store: Open, tmp_path: Path) -> None:
    import time as _time

    # a new, empty slave
    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    fill(master, 30)
    Pair(master, slave, 4096, ((1, 0), (2, 500)), FakeEpochs()).pump()
    assert log_hash(slave) == log_hash(master)
    # a slave behind, whose history lacks the epochs the master has
    end = slave.commitlog.max_offset
    fill(master, 20, topic="u")
    epochs = FakeEpochs(((1, 0), (2, 500)))
    Pair(master, slave, 4096, ((1, 0), (2, 500), (3, end), (5, end + 10)), epochs).pump()
    assert log_hash(slave) == log_hash(master) and epochs.cuts == []
    # a slave with an unreplicated tail of an old epoch: cut where epoch 2 began
    master, slave, common = diverged(open_store, tmp_path / "d")
    epochs = FakeEpochs(((1, 0),))
    pair = Pair(master, slave, 4096, ((1, 0), (2, common)), epochs)
    assert epochs.cuts == [common] and slave.commitlog.max_offset == common
    pair.pump()
    assert log_hash(slave) == log_hash(master)
    # the same, and behind the master's retention too: cut, then start over
    master = open_store(tmp_path / "r" / "m", retention_hours=1.0)
    slave = open_store(tmp_path / "r" / "s")
    fill(master, 40)
    Pair(master, slave).pump()
    common = master.commitlog.max_offset
    fill(slave, 20, topic="lost")
    fill(master, 400, topic="u")
    master.enforce_retention(now_ms=int(_time.time() * 1000) + 2 * 3_600_000)
    assert master.commitlog.min_offset > slave.commitlog.max_offset
    epochs = FakeEpochs(((1, 0),))
    Pair(master, slave, 4096, ((1, 0), (2, common)), epochs).pump()
    assert epochs.cuts == [common] and epochs.history == ((1, 0), (2, common))
    assert slave.commitlog.min_offset == master.commitlog.min_offset
    assert log_hash(slave) == log_hash(master)


def test_the_replicator_logs_a_refused_reply_and_retries_after_its_backoff(
    open_store: Open, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The stream ends with the slave's refusal; the replicator logs it once,
    shows it as last_error, and reconnects after 0.1 s, 0.2 s, 0.4 s...:
    never a crash loop, never a change to the log. (A fake stub: no sockets.)"""
    import itertools
    import threading
    import time as _time
    from types import SimpleNamespace

    import grpc

    from core.pb.tailrace.v1 import replication_pb2 as pb
    from slave import replicator as rmod

    master, slave, epochs, s = caught_up(open_store, tmp_path)
    before = stored(slave, epochs)
    forged = pb.ReplicateResponse(
        handshake_reply=pb.ReplicaHandshakeReply(
            start_offset=0,
            truncate_to=0,
            master_max=master.commitlog.max_offset,
            history=[pb.EpochEntry(epoch=1, start_offset=0)],
        )
    )
    attempts: list[float] = []
    four = threading.Event()

    class Call:
        def __init__(self) -> None:
            self._replies = iter([forged])

        def __iter__(self) -> Call:
            return self

        def __next__(self) -> pb.ReplicateResponse:
            return next(self._replies)

        def cancel(self) -> None: ...

    def replicate(requests: object) -> Call:
        attempts.append(_time.monotonic())
        if len(attempts) >= 4:
            four.set()
        return Call()

    stub = SimpleNamespace(ReplicationStub=lambda channel: SimpleNamespace(Replicate=replicate))
    monkeypatch.setattr(rmod, "replication_pb2_grpc", stub)
    monkeypatch.setattr(grpc, "insecure_channel", lambda *a, **k: SimpleNamespace(close=lambda: None))
    r = rmod.Replicator(s, "master:1", 1 << 20)
    r.start()
    try:
        assert four.wait(10)
    finally:
        r.close()
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(g >= 0.09 for g in gaps) and gaps[2] > gaps[0], gaps  # backing off
    assert not r.connected.is_set() and "cut this log to 0" in r.last_error
    refusals = [rec for rec in caplog.records if "cut this log to 0" in rec.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelname == "WARNING"  # once, not per attempt
    assert stored(slave, epochs) == before
