"""Cold pops (issue 18): a pop whose caller reads bodies from a slave
(`bodies_elsewhere`) is planned from the ConsumeQueue alone when the
queue's redirect advice names a slave. One leader role on a temp store, a
slave attached to its replica set by hand, a pinned budget, a fake clock
for the pop deadlines."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import core.store.entries as entries_module
from core.clock import now_ms
from core.pop.handles import decode_handle
from core.pop.ops import PopResult
from core.record import Message, iter_records
from core.store import StoreConfig
from core.subscription import Subscription
from tests.helpers.leader_core import close_core
from tests.helpers.pop_broker import Broker, start

pytestmark = pytest.mark.unit
T, G = "orders", "g"


@pytest.fixture
def broker(tmp_path: Path, small_config: StoreConfig) -> Iterator[Broker]:
    b = start(
        tmp_path, small_config, [int(time.time() * 1000)], pull__budget_bytes=1
    )  # every backlog is cold
    try:
        b.leader.create_topic(T, 2)
        yield b
    finally:
        close_core(b.core)


class Reads:
    """Counts every CommitLog read of the store (record reads and views)."""

    def __init__(self, b: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        store = b.core.store
        for obj, name in ((store, "read"), (store.commitlog, "view")):
            real = getattr(obj, name)
            monkeypatch.setattr(obj, name, self._counting(real))

    def _counting(self, real: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        return wrapped


def slave(b: Broker, acked: int | None = None, broker_id: int = 1) -> None:
    """A connected, in-sync slave holding the log below `acked` (all of it)."""
    end = b.core.store.commitlog.max_offset
    b.leader.replicas.attach(broker_id, end if acked is None else acked, now_ms())


def cold_pop(b: Broker, n: int = 32, inv: int = 10_000, queue: int = 0, tags: str = "") -> PopResult:
    return b.popper.pop(G, T, queue, n, inv, tag_expression=tags, bodies_elsewhere=True)


def stored(b: Broker, queue: int = 0) -> list[tuple[int, int, str]]:
    """(queue offset, size, tags) of every record of the queue."""
    read = b.core.store.read(T, queue, 0, 1000, 1 << 20)
    return [(r.queue_offset, r.size, r.tags) for r in iter_records(read.data, verify=False)]


def test_a_cold_pop_hands_out_entries_and_reads_no_record(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.send(b"a", b"bb", b"ccc")
    slave(broker)
    reads = Reads(broker, monkeypatch)
    out = cold_pop(broker)
    assert reads.calls == 0  # not one CommitLog byte read for it
    assert out.messages == []
    assert [(e.queue_id, e.queue_offset, e.size, e.read_from, e.attempt) for e in out.elsewhere] == [
        (0, o, size, 1, 1) for o, size, _ in stored(broker)
    ]
    assert out.elsewhere[0].deadline_ms == broker.clock[0] + 10_000
    assert out.advice.suggested_broker_id == 1 and out.advice.reason == "backlog_over_budget"
    # the same pop state as a pop with bodies: in flight, then acked by their handles
    st = broker.popper.table.get((G, T, 0))
    assert st is not None and st.cursor == 3 and sorted(st.inflight) == [0, 1, 2]
    assert decode_handle(broker.popper.key, out.elsewhere[1].handle).offset == 1
    for e in out.elsewhere:
        broker.popper.ack(G, T, e.handle)
    assert broker.popper.table.commit_point((G, T, 0)) == 3
    assert broker.core.status()["details"]["popped"] == {"here": 0, "elsewhere": 3}


def test_without_the_flag_a_cold_queue_is_popped_with_its_bodies(broker: Broker) -> None:
    broker.send(b"a", b"b")
    slave(broker)
    out = broker.pop()
    assert [m.record.body for m in out.messages] == [b"a", b"b"] and out.elsewhere == []
    assert broker.core.status()["details"]["popped"] == {"here": 2, "elsewhere": 0}


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"pull__budget_bytes": 1 << 30}, id="a_hot_queue"),
        pytest.param({"pull__budget_bytes": 1, "pull__redirect": False}, id="redirect_off"),
    ],
)
def test_a_hot_queue_or_redirect_off_keeps_the_bodies_on_the_master(
    tmp_path: Path, small_config: StoreConfig, overrides: dict[str, Any]
) -> None:
    b = start(tmp_path, small_config, [int(time.time() * 1000)], **overrides)
    try:
        b.leader.create_topic(T, 1)
        b.send(b"a")
        slave(b)
        out = cold_pop(b)
        assert [m.record.body for m in out.messages] == [b"a"] and out.elsewhere == []
    finally:
        close_core(b.core)


def test_no_slave_or_a_lagging_one_keeps_the_bodies_on_the_master(broker: Broker) -> None:
    broker.send(b"a", b"b")
    out = cold_pop(broker, 1)
    assert [m.record.body for m in out.messages] == [b"a"]
    assert out.advice.reason == "no_slave_available"
    slave(broker, acked=0)  # holds nothing past the cursor's record
    out = cold_pop(broker, 1)
    assert [m.record.body for m in out.messages] == [b"b"]
    assert out.advice.reason == "replica_behind"


def test_a_cold_pop_hands_out_only_what_the_slave_holds(broker: Broker) -> None:
    broker.send(b"a", b"b")
    held = broker.core.store.commitlog.max_offset  # the slave holds these two
    broker.send(b"c")
    slave(broker, acked=held)
    out = cold_pop(broker)
    assert [e.queue_offset for e in out.elsewhere] == [0, 1]  # "c" waits for the slave
    broker.leader.replicas.attach(1, broker.core.store.commitlog.max_offset, now_ms())
    assert [e.queue_offset for e in cold_pop(broker).elsewhere] == [2]


def test_the_tag_filter_is_by_hash_and_passed_offsets_are_consumed(broker: Broker) -> None:
    msgs = [Message(T, 0, b"x", tags="x"), Message(T, 0, b"y", tags="y"), Message(T, 0, b"z", tags="x")]
    assert broker.leader.send(T, 0, msgs).status.name == "SEND_OK"
    slave(broker)
    out = cold_pop(broker, tags="y || w")
    assert [e.queue_offset for e in out.elsewhere] == [1]
    st = broker.popper.table.get((G, T, 0))
    assert st is not None and st.cursor == 3 and sorted(st.inflight) == [1]  # 0 and 2 consumed


def test_an_expired_cold_pop_comes_back_cold_with_its_attempt(broker: Broker) -> None:
    broker.send(b"a", b"b")
    slave(broker)
    (first,) = cold_pop(broker, 1, inv=1000).elsewhere
    broker.clock[0] += 1001
    (again,) = cold_pop(broker, 1).elsewhere  # the cursor (at 1) is still cold
    assert (again.queue_offset, again.attempt, again.size) == (0, 2, first.size)
    assert again.handle != first.handle


def test_at_the_queue_end_an_expired_one_comes_back_with_its_body(broker: Broker) -> None:
    """The advice is the cursor's: a queue popped to its end is not cold."""
    broker.send(b"a")
    slave(broker)
    assert len(cold_pop(broker, inv=1000).elsewhere) == 1
    broker.clock[0] += 1001
    out = cold_pop(broker)
    assert [(m.record.body, m.attempt) for m in out.messages] == [(b"a", 2)] and out.elsewhere == []


def test_the_answer_budget_counts_cold_records_as_it_counts_bodies(
    tmp_path: Path, small_config: StoreConfig
) -> None:
    """pull.max_bytes bounds a cold answer as a hot one (the caller will
    carry the bodies): both hand out the same messages."""
    got = []
    for cold in (False, True):
        b = start(tmp_path / str(cold), small_config, [0], pull__budget_bytes=1, pull__max_bytes=4096)
        try:
            b.leader.create_topic(T, 1)
            b.send(*[b"x" * 1000] * 8)
            slave(b)
            out = b.popper.pop(G, T, 0, 32, 1000, bodies_elsewhere=cold)
            got.append(
                [m.record.queue_offset for m in out.messages] + [e.queue_offset for e in out.elsewhere]
            )
        finally:
            close_core(b.core)
    assert got[0] == got[1] and 1 <= len(got[0]) < 8


def test_any_queue_pops_each_queue_by_its_own_advice(broker: Broker) -> None:
    """Queue 0 has a backlog on the slave; queue 1's record is past what
    the slave holds: one answer, 0 by entry, 1 with its body."""
    broker.send(b"a", queue=0)
    held = broker.core.store.commitlog.max_offset
    broker.send(b"b", queue=1)
    slave(broker, acked=held)
    out = broker.popper.pop(G, T, -1, 32, 1000, bodies_elsewhere=True)
    assert [e.queue_id for e in out.elsewhere] == [0]
    assert [m.record.body for m in out.messages] == [b"b"]


def test_each_cold_pop_counts_its_advice_once(broker: Broker) -> None:
    broker.send(b"a", b"b")
    slave(broker)
    counts = broker.core.advice_counts
    before = counts["backlog_over_budget"]
    cold_pop(broker, 1)
    assert counts["backlog_over_budget"] == before + 1


def test_an_expired_collision_never_acked_is_consumed_once_the_queue_is_hot(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold pop hands out a tag hash collision; its proxy fails to ack
    it. Once it expires the queue is hot (the cursor at its end): the pop
    reads its body, sees the exact tag is another and acks it, rather than
    leave it in flight for good (its attempt never rising, the group's
    offset held)."""
    msgs = [Message(T, 0, b"x", tags="x"), Message(T, 0, b"y", tags="y")]
    assert broker.leader.send(T, 0, msgs).status.name == "SEND_OK"
    slave(broker)
    monkeypatch.setattr(Subscription, "hash_filter", lambda self: lambda h: True)  # every hash collides
    out = cold_pop(broker, tags="y", inv=1000)
    assert [e.queue_offset for e in out.elsewhere] == [0, 1]  # 0: a collision
    broker.popper.ack(G, T, out.elsewhere[1].handle)  # the proxy's ack of 0 failed
    broker.clock[0] += 1001
    again = cold_pop(broker, tags="y")
    assert again.messages == [] and again.elsewhere == []
    st = broker.popper.table.get((G, T, 0))
    assert st is not None and st.inflight == {} and broker.popper.table.commit_point((G, T, 0)) == 2
    assert broker.popper.pop(G, T, 0, 32, 1000, tag_expression="x").messages == []  # consumed


def test_a_held_cold_pop_asks_the_advice_once_and_outside_the_pop_lock(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A selective tag over a cold backlog: each held pass scans a slice and
    hands out nothing. The advice (a CQ read at the cursor, a count) is
    asked once for the call, without the broker-wide pop lock held."""
    monkeypatch.setattr(entries_module, "FILTER_SCAN_LIMIT", 2)
    broker.send(*[b"m"] * 10)  # untagged: an expression "y" passes them all
    slave(broker)
    popper = broker.popper
    real, locked = broker.leader._advise, []

    def advise(args: Any) -> Any:
        locked.append(popper._lock.locked())
        return real(args)

    monkeypatch.setattr(broker.leader, "_advise", advise)
    out = popper.pop(G, T, 0, 32, 1000, wait_ms=350, tag_expression="y", bodies_elsewhere=True)
    assert out.messages == [] and out.elsewhere == [] and out.held
    st = popper.table.get((G, T, 0))
    assert st is not None and st.cursor > 2  # more than one pass
    assert locked == [False]


def test_the_popped_counters_change_under_a_lock(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    popper = broker.popper

    class Checked(Counter[str]):
        def __setitem__(self, key: str, value: int) -> None:
            assert popper._count_lock.locked()
            super().__setitem__(key, value)

    monkeypatch.setattr(popper, "popped", Checked())
    broker.send(b"a", b"b")
    slave(broker)
    cold_pop(broker, 1)
    broker.pop(1)
    assert popper.counts() == {"here": 1, "elsewhere": 1}
