"""A slave cuts its log only back to what the epoch histories prove (core/replication.py
`SlaveSession.on_handshake_reply`), and the replicator retries a refused reply."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ReplicationError
from core.replication import (
    HandshakeReply,
    SlaveSession,
)
from core.store import MessageStore
from tests.helpers.replication_pair import SECRET, FakeEpochs, Open, Pair, fill, log_hash

pytestmark = pytest.mark.unit

pytestmark = pytest.mark.unit


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
