"""Flush modes: group commit in sync mode, periodic flush and checkpoints in async."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import FlushTimeoutError
from core.record import Message
from core.store import MessageStore
from core.store.checkpoint import read_checkpoint
from deploy.waits import poll_until

pytestmark = pytest.mark.component
Open = Callable[..., MessageStore]


def test_sync_append_returns_only_when_durable_and_shares_syncs(open_store: Open) -> None:
    s = open_store(flush="sync")
    s.create_topic("t", 4)
    not_durable: list[int] = []
    appends = 0
    lock = threading.Lock()

    def worker(q: int) -> None:
        nonlocal appends
        for _ in range(60):
            ((phys, _),) = s.append([Message("t", q, b"x" * 200)])
            end = phys + len(s.commitlog.record_at(phys))
            with lock:
                appends += 1
                if s.commitlog.flushed < end:
                    not_durable.append(phys)

    threads = [threading.Thread(target=worker, args=(q,)) for q in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not_durable == []
    assert appends == 240
    assert s._group is not None
    assert 0 < s._group.syncs < appends  # concurrent appenders shared fdatasyncs


def test_sync_flush_timeout_reports_stored_offsets(open_store: Open) -> None:
    s = open_store(flush="sync", sync_flush_timeout_ms=50)
    s.create_topic("t", 1)
    release = threading.Event()
    real_flush = s.commitlog.flush

    def stuck_flush() -> int:
        release.wait(5)
        return real_flush()

    s.commitlog.flush = stuck_flush  # type: ignore[method-assign]
    try:
        with pytest.raises(FlushTimeoutError) as exc:
            s.append([Message("t", 0, b"slow disk")])
        assert exc.value.retriable and exc.value.offsets[0][1] == 0
        assert s.read("t", 0, 0, 1, 1024).count == 1  # stored, just not confirmed durable
    finally:
        release.set()


def test_async_flush_catches_up_and_checkpoints(open_store: Open, tmp_path: Path) -> None:
    s = open_store(tmp_path / "d", flush="async", flush_interval_ms=20, checkpoint_interval_ms=30)
    s.create_topic("t", 1)
    s.append([Message("t", 0, b"y" * 500)] * 50)
    end = s.commitlog.max_offset
    assert s.commitlog.flushed < end
    poll_until(lambda: s.commitlog.flushed == end, 5, "the periodic flush reaching the end")

    def checkpointed() -> bool:
        ck = read_checkpoint(tmp_path / "d")
        return ck is not None and ck.dispatched == end

    poll_until(checkpointed, 5, "a checkpoint at the end")
    s.close()
    ck = read_checkpoint(tmp_path / "d")
    assert ck is not None and ck.commitlog_flushed == ck.dispatched == end


def test_damaged_checkpoint_is_ignored(open_store: Open, tmp_path: Path) -> None:
    s = open_store(tmp_path / "d")
    s.create_topic("t", 1)
    s.append([Message("t", 0, b"z")] * 10)
    s.close()
    (tmp_path / "d" / "checkpoint").write_bytes(b"garbage")
    assert read_checkpoint(tmp_path / "d") is None
    s2 = open_store(tmp_path / "d")
    assert s2.queue_offsets("t", 0) == (0, 10)
