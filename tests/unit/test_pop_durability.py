"""The pop state comes back from the log (master/popper.py, core/pop/):
after a restart (snapshot or recovery), on a copy of the log
(replication), after a divergent tail is cut, after retention, and
whatever pop.json a crash left."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core.errors import (
    InvalidReceiptError,
)
from core.pop import snapshot as pop_snapshot
from core.pop.snapshot import POP_FILE
from core.pop.state import PopTable
from core.store import MessageStore, StoreConfig
from core.store.checkpoint import CLEAN_MARKER
from tests.helpers.leader_core import close_core
from tests.helpers.pop_broker import (
    Broker,
    G,
    T,
    assert_a_copy_has_the_same_pops,
    broker_fixture,  # noqa: F401  (the `broker` fixture)
    snapshot,
    start,
)
from tests.helpers.store_tools import abandon, log_records

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("how", ["clean", "no snapshot", "old snapshot", "damaged snapshot", "unclean"])
def test_a_restart_keeps_the_pop_state(tmp_path: Path, small_config: StoreConfig, how: str) -> None:
    """From the snapshot a clean close writes, from the log alone (a crash
    before any snapshot), or from an older snapshot and the log after it."""
    clock = [int(time.time() * 1000)]
    b = start(tmp_path, small_config, clock)
    b.leader.create_topic(T, 1)
    b.send(b"a", b"b", b"c")
    got = b.pop(inv=60_000).messages
    old = b""
    if how == "old snapshot":
        pop_snapshot.save(b.core.pops, b.core.store, tmp_path)
        old = (tmp_path / POP_FILE).read_bytes()
    b.popper.ack(G, T, got[1].handle)
    b.popper.change_invisible(G, T, got[2].handle, 1000)
    before = snapshot(b.core.pops)
    close_core(b.core)
    if how in ("no snapshot", "unclean"):
        (tmp_path / POP_FILE).unlink()
    if how == "unclean":  # recovery scans the tail and hands its records to the handlers too
        (tmp_path / "store" / CLEAN_MARKER).unlink()
    elif how == "old snapshot":
        (tmp_path / POP_FILE).write_bytes(old)
    elif how == "damaged snapshot":
        (tmp_path / POP_FILE).write_bytes(b"{not json")

    b = start(tmp_path, small_config, clock)
    try:
        assert snapshot(b.core.pops) == before
        with pytest.raises(InvalidReceiptError):
            b.popper.ack(G, T, got[1].handle)  # acked before the restart
        with pytest.raises(InvalidReceiptError):
            b.popper.ack(G, T, got[2].handle)  # changed before the restart
        b.popper.ack(G, T, got[0].handle)  # a handle from before the restart works
        clock[0] += 1000
        (back,) = b.pop().messages
        assert (back.record.body, back.attempt) == (b"c", 2)
        b.popper.ack(G, T, back.handle)
        assert b.core.pops.commit_point((G, T, 0)) == 3
    finally:
        close_core(b.core)


def test_a_copy_of_the_log_has_the_same_state(
    broker: Broker, tmp_path: Path, small_config: StoreConfig
) -> None:
    """Replication applies `pop` records as the master's append does."""
    broker.send(b"a", b"b")
    got = broker.pop().messages
    broker.popper.ack(G, T, got[0].handle)
    broker.popper.change_invisible(G, T, got[1].handle, 5)
    assert_a_copy_has_the_same_pops(broker, MessageStore(tmp_path / "copy", small_config))


def test_a_cut_tail_rolls_the_pop_state_back(broker: Broker) -> None:
    broker.send(b"a", b"b", b"c")
    (m,) = broker.pop(1).messages
    before = snapshot(broker.core.pops)
    cut = broker.core.store.commitlog.max_offset
    broker.popper.ack(G, T, m.handle)
    broker.pop(2)
    broker.core.truncating(cut)
    broker.core.store.truncate_to(cut)
    assert snapshot(broker.core.pops) == before
    assert broker.core.pops.inflight(G) == 1
    broker.popper.ack(G, T, m.handle)  # the handle of the kept record works again


def test_entries_retention_removed_are_acked(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    broker.send(b"a", b"b", b"c")
    got = broker.pop(2).messages
    store = broker.core.store
    real = store.queue_offsets
    monkeypatch.setattr(store, "queue_offsets", lambda t, q: (1, real(t, q)[1]) if t == T else real(t, q))
    broker.popper.revive_once()  # offset 0 is gone: acked; offset 1 is still in flight
    q = broker.core.pops.get((G, T, 0))
    assert q is not None and sorted(q.inflight) == [1]
    with pytest.raises(InvalidReceiptError):
        broker.popper.ack(G, T, got[0].handle)
    broker.popper.ack(G, T, got[1].handle)


def _walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The log offsets the pop state's loads walk from."""
    starts: list[int] = []
    real = MessageStore.system_payloads

    def spy(self: MessageStore, kind: str, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        if kind == "pop" and stop is None:
            starts.append(start)
        return real(self, kind, start, stop)

    monkeypatch.setattr(MessageStore, "system_payloads", spy)
    return starts


def test_a_broker_that_never_pops_walks_only_the_tail_after_a_crash(
    tmp_path: Path, small_config: StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The (empty) snapshot is written on every checkpoint: a start after a
    kill -9 walks the log since the last one, not the whole log."""
    config = replace(small_config, checkpoint_interval_ms=3_600_000)  # checkpoints by hand
    clock = [int(time.time() * 1000)]
    b = start(tmp_path, config, clock)
    b.leader.create_topic(T, 1)
    for i in range(50):
        b.send(*(b"m%d" % (i * 10 + j) for j in range(10)))
    b.core.store._checkpoint()
    at = b.core.store.commitlog.max_offset
    b.send(b"tail-1", b"tail-2")
    abandon(b.core.store)
    starts = _walks(monkeypatch)
    b = start(tmp_path, config, clock)
    try:
        assert starts == [at]
        scan = b.core.store.commitlog.scan(at)
        assert sum(1 for _ in scan) == 2  # the records walked: the tail only
        assert b.core.pop_load.errors == 0
    finally:
        close_core(b.core)


@pytest.mark.parametrize("how", ["mid-record", "another log", "past the end", "no fingerprint"])
def test_a_stale_snapshot_does_not_stop_a_start(tmp_path: Path, small_config: StoreConfig, how: str) -> None:
    """A pop.json that does not fit the log (a crash, a cut, an old format)
    is deleted or its walk's error counted; the broker starts and pops."""
    clock = [int(time.time() * 1000)]
    b = start(tmp_path, small_config, clock)
    b.leader.create_topic(T, 1)
    b.send(b"a", b"b", b"c")
    clog = b.core.store.commitlog
    mid = log_records(b.core.store)[-2][0] + 4  # inside a record
    end = clog.max_offset
    snap: dict[str, Any] = {"at": mid, "fp": pop_snapshot.fingerprint(clog, mid), "queues": []}
    close_core(b.core)
    if how == "another log":
        snap["fp"] ^= 1
    elif how == "past the end":
        snap["at"] = end + 100
    elif how == "no fingerprint":
        del snap["fp"]
    (tmp_path / POP_FILE).write_text(json.dumps(snap))
    b = start(tmp_path, small_config, clock)
    try:
        assert b.core.pop_load.errors == (1 if how == "mid-record" else 0)
        if how != "mid-record":
            assert b.core.pop_load.start == clog.min_offset  # rejected: rebuilt from the whole log
        assert [m.record.body for m in b.pop().messages] == [b"a", b"b", b"c"]
    finally:
        close_core(b.core)


def test_snapshots_written_at_once_stay_whole(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The checkpoint's snapshot, a close's and any other never share the
    file being written (one writer at a time), and each is exact: the
    table copied under the store's write lock while pops go on."""
    broker.send(*(b"m%d" % i for i in range(40)))
    stop = threading.Event()

    def popping() -> None:
        while not stop.is_set():
            for m in broker.pop(n=2).messages:
                broker.popper.ack(G, T, m.handle)

    def saving() -> None:
        for _ in range(15):
            pop_snapshot.save(broker.core.pops, broker.core.store, tmp_path)

    threads = [threading.Thread(target=popping), *(threading.Thread(target=saving) for _ in range(4))]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    assert not [r for r in caplog.records if "snapshot was not written" in r.getMessage()]
    pop_snapshot.save(broker.core.pops, broker.core.store, tmp_path)
    table = PopTable()
    pop_snapshot.load(table, broker.core.store, tmp_path)
    assert snapshot(table) == snapshot(broker.core.pops)
