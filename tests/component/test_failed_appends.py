"""An append that fails part-way leaves no trace: not in the log, not in the
queues, not visible to readers, and the store keeps working (review findings)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import StorageFullError
from core.record import Message, decode_record
from core.store import MessageStore, ReadStatus, StoreConfig
from core.store.cqset import ConsumeQueueSet
from core.store.flush import GroupCommit
from deploy.waits import poll_until
from tests.helpers.store_tools import abandon, check_consistency

pytestmark = pytest.mark.component
Open = Callable[..., MessageStore]


def failing_dispatch(s: MessageStore) -> None:
    real = s.cqs.dispatch

    def boom(entries: object, publish: bool = True) -> None:
        real(entries, publish)  # type: ignore[arg-type]
        raise OSError(28, "No space left on device (simulated)")

    s.cqs.dispatch = boom  # type: ignore[method-assign]


def test_failed_append_across_a_rollover_leaves_no_trace(
    open_store: Open, tmp_path: Path, small_config: StoreConfig
) -> None:
    s = open_store(tmp_path / "d")
    s.create_topic("t", 2)
    for i in range(80):  # close to the end of the first segment
        s.append([Message("t", i % 2, b"a" * 700)])
    end = s.commitlog.max_offset
    offsets = (s.queue_offsets("t", 0), s.queue_offsets("t", 1))
    real = s.cqs.dispatch
    failing_dispatch(s)
    big = [Message("t", 1, b"b" * 5000) for _ in range(10)]  # rolls into segment 2
    with pytest.raises(StorageFullError):  # ENOSPC, said as such
        s.append(big)
    s.cqs.dispatch = real  # type: ignore[method-assign]
    assert s.commitlog.max_offset == end
    assert (s.queue_offsets("t", 0), s.queue_offsets("t", 1)) == offsets
    assert len(s.commitlog.segments()) == end // small_config.segment_bytes + 1
    acked = [s.append([Message("t", 1, f"ok-{i}".encode() * 300)])[0] for i in range(40)]
    s.close()
    s2 = open_store(tmp_path / "d")
    for i, (phys, q) in enumerate(acked):
        rec = decode_record(bytes(s2.commitlog.record_at(phys)))
        assert rec.body == f"ok-{i}".encode() * 300 and rec.queue_offset == q
    assert check_consistency(s2) == 120


def test_failed_dispatch_leaves_no_queue_entries(open_store: Open, tmp_path: Path) -> None:
    s = open_store(tmp_path / "d")
    s.create_topic("a", 1)
    s.create_topic("b", 1)
    s.append([Message("b", 0, b"b0"), Message("b", 0, b"b1")])
    failing_dispatch(s)
    with pytest.raises(StorageFullError):  # ENOSPC, said as such
        s.append([Message("a", 0, b"x"), Message("a", 0, b"y")])
    assert s.queue_offsets("a", 0) == (0, 0)
    abandon(s)
    s2 = open_store(tmp_path / "d")  # unclean restart must not resurrect the entries
    assert s2.queue_offsets("a", 0) == (0, 0)
    assert check_consistency(s2) == 2


def test_entries_are_invisible_until_the_log_is_published(open_store: Open) -> None:
    s = open_store()
    s.create_topic("t", 1)
    seen: list[ReadStatus] = []
    real = s.cqs.dispatch

    def dispatch_then_read(entries: object, publish: bool = True) -> None:
        real(entries, publish)  # type: ignore[arg-type]
        seen.append(s.read("t", 0, 0, 10, 1 << 20).status)

    s.cqs.dispatch = dispatch_then_read  # type: ignore[method-assign]
    s.append([Message("t", 0, b"x")])
    assert seen == [ReadStatus.NO_NEW_MSG]
    assert s.read("t", 0, 0, 10, 1 << 20).count == 1


class _StuckLog:
    """A CommitLog stand-in whose group-commit flushes never finish."""

    def __init__(self) -> None:
        self.flushed = 0
        self.write_pos = 100
        self.listeners: list[Callable[[], None]] = []
        self.release = threading.Event()

    def add_flush_listener(self, fn: Callable[[], None]) -> None:
        self.listeners.append(fn)

    def flush(self) -> int:  # the group-commit thread's flush hangs
        self.release.wait(30)
        return self.flushed

    def flush_elsewhere(self) -> None:  # e.g. the checkpoint thread
        self.flushed = self.write_pos
        for fn in self.listeners:
            fn()


def test_a_flush_by_another_thread_releases_group_commit_waiters() -> None:
    clog = _StuckLog()
    group = GroupCommit(clog)  # type: ignore[arg-type]
    try:
        result: list[bool] = []
        waiter = threading.Thread(target=lambda: result.append(group.wait_durable(100, 30.0)))
        waiter.start()
        poll_until(lambda: group._wanted, 5, "the waiter asking for a flush", every_s=0.001)
        clog.flush_elsewhere()
        waiter.join(10)  # far below the 30 s timeout: the listener woke it
        assert result == [True]
    finally:
        clog.release.set()
        group.close()


def test_consume_queue_set_dispatch_publish_flag(tmp_path: Path) -> None:
    cqs = ConsumeQueueSet(tmp_path, 16)
    cqs.dispatch([("t", 0, 0, 0, 100, 0), ("t", 0, 1, 100, 100, 0)], publish=False)
    assert cqs.next_offset("t", 0) == 0
    cqs.dispatch([("t", 0, 2, 200, 100, 0)])
    assert cqs.next_offset("t", 0) == 3
    cqs.close()


def test_a_slaves_failed_dispatch_leaves_no_trace_and_the_chunk_applies_again(
    open_store: Open, tmp_path: Path
) -> None:
    """The replicated append path shares the master's publish step, so a
    dispatch failure undoes the written bytes and queue slots there too."""
    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    master.create_topic("t", 2)
    for i in range(30):
        master.append([Message("t", i % 2, f"m-{i}".encode() * 100)])
    data, _ = master.read_log(0, 1 << 20)
    real = slave.cqs.dispatch
    failing_dispatch(slave)
    with pytest.raises(OSError):
        slave.append_replicated(0, data)
    slave.cqs.dispatch = real  # type: ignore[method-assign]
    assert slave.commitlog.max_offset == 0 and slave.read("t", 0, 0, 10, 1 << 20).count == 0
    assert bytes(slave.commitlog.view(0, len(data)) or b"").strip(b"\0") == b""  # bytes zeroed
    assert slave.append_replicated(0, data) == master.commitlog.max_offset
    assert check_consistency(slave) == 30


def test_a_failed_replicated_append_removes_a_queue_it_created_mid_file(
    open_store: Open, tmp_path: Path
) -> None:
    """A slave that joined part-way (its log starts at its master's later
    segment) creates queues that begin mid-file; a failed dispatch must take
    them away again, or every retry would expect the wrong queue offset."""
    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    master.create_topic("t", 1)
    for i in range(200):
        master.append([Message("t", 0, f"m-{i}".encode() * 100)])
    seg = master.commitlog.segment_bytes
    start = seg  # the second segment: queue offsets start mid-way there
    slave.reset_log(start)
    data, _ = master.read_log(start, 1 << 20)
    first = decode_record(data).queue_offset
    assert first % 64 != 0  # mid-file (64 entries per ConsumeQueue file here)
    real = slave.cqs.dispatch
    failing_dispatch(slave)
    with pytest.raises(OSError):
        slave.append_replicated(start, data)
    slave.cqs.dispatch = real  # type: ignore[method-assign]
    assert slave.cqs.get("t", 0) is None and slave.commitlog.max_offset == start
    assert not (slave.data_dir / "consumequeue" / "t" / "0").exists()
    slave.append_replicated(start, data)  # the retry applies
    lo, hi = slave.queue_offsets("t", 0)
    assert lo == first and hi > first
    assert slave.read("t", 0, first, 1, 1 << 20).count == 1


def test_a_failure_while_indexing_a_replicated_chunk_leaves_nothing_for_recovery(
    open_store: Open, tmp_path: Path
) -> None:
    """A failure injected in the slave's dispatch undoes the written bytes, so
    not even an unclean restart (which scans past the end) finds them."""
    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    master.create_topic("t", 3)
    for i in range(30):
        master.append([Message("t", i % 3, f"m-{i}".encode() * 50)])
    data, _ = master.read_log(0, 1 << 20)
    failing_dispatch(slave)
    with pytest.raises(OSError):
        slave.append_replicated(0, data)
    assert slave.commitlog.max_offset == 0 and slave.cqs.queues == {}
    abandon(slave)
    again = open_store(tmp_path / "s")
    assert again.recovery.records_scanned == 0 and again.commitlog.max_offset == 0
    assert again.recovery.quarantined is None  # nothing was there to cut
    assert again.append_replicated(0, data) == master.commitlog.max_offset
    assert check_consistency(again) == 30


def test_a_replicated_chunk_whose_offset_commit_cannot_be_stored_is_undone(
    open_store: Open, tmp_path: Path
) -> None:
    """System records are the other half of indexing a chunk: if the slave
    cannot write offsets.json, the chunk is undone (bytes, queue slots), the
    stream fails, and the same chunk applies once the file can be written."""
    from core.errors import StorageFullError
    from core.offsets import ConsumerOffsets

    master, slave = open_store(tmp_path / "m"), open_store(tmp_path / "s")
    master.create_topic("t", 2)
    for i in range(10):
        master.append([Message("t", i % 2, f"m-{i}".encode() * 50)])
    first, _ = master.read_log(0, 1 << 20)
    assert slave.append_replicated(0, first) == master.commitlog.max_offset
    start = master.commitlog.max_offset
    master.append([Message("t", 0, b"before")])
    master.append_system("offset", {"group": "g", "topic": "t", "queue": 0, "offset": 6, "prev": -1})
    master.append([Message("t", 1, b"after")])
    chunk, _ = master.read_log(start, 1 << 20)
    offsets = ConsumerOffsets(slave.data_dir)
    slave.add_system_handler("offset", offsets.apply)
    obstacle = slave.data_dir / "offsets.json.tmp"
    obstacle.mkdir()  # every write of offsets.json fails (EISDIR), even as root
    with pytest.raises(StorageFullError, match=r"offsets\.json"):
        slave.append_replicated(start, chunk)
    assert slave.commitlog.max_offset == start
    assert bytes(slave.commitlog.view(start, len(chunk)) or b"").strip(b"\0") == b""
    assert slave.queue_offsets("t", 0) == (0, 5) and slave.queue_offsets("t", 1) == (0, 5)
    assert offsets.query("g", "t", 0) is None and check_consistency(slave) == 10
    obstacle.rmdir()
    assert slave.append_replicated(start, chunk) == master.commitlog.max_offset
    assert offsets.query("g", "t", 0) == 6 and check_consistency(slave) == 12
