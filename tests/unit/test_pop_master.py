"""Pop consumption on a master (master/popper.py): pop, ack, change of
invisibility, renewals, dead letters, filters, long polls, refusals and
bounds, on one leader role under a fake clock (tests/helpers/pop_broker.py).
That the state comes back from the log is test_pop_durability.py's job."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from core.errors import (
    BrokerBusyError,
    InvalidArgumentError,
    InvalidReceiptError,
    QuotaExceededError,
    UnknownTopicError,
)
from core.pop.handles import Receipt, decode_handle, encode_handle, handle_key
from core.record import Message, iter_records
from core.retry import RECONSUME_TIMES, dlq_topic
from core.roles import SendStatus
from core.store import MessageStore, StoreConfig
from tests.helpers.leader_core import close_core
from tests.helpers.pop_broker import (
    Broker,
    G,
    T,
    assert_a_copy_has_the_same_pops,
    broker_fixture,  # noqa: F401  (the `broker` fixture)
    start,
)

pytestmark = pytest.mark.unit


def test_pop_ack_and_the_committed_offset_follows(broker: Broker) -> None:
    broker.send(b"a", b"b", b"c")
    got = broker.pop(2).messages
    assert [(m.record.body, m.attempt, m.record.queue_offset) for m in got] == [(b"a", 1, 0), (b"b", 1, 1)]
    assert got[0].deadline_ms == broker.clock[0] + 10_000
    assert got[0].data.startswith(got[0].data[:4]) and len(got[0].data) == got[0].record.size
    assert [m.record.body for m in broker.pop().messages] == [b"c"]
    assert broker.pop().messages == []  # all in flight
    broker.popper.ack(G, T, got[1].handle)
    broker.popper.revive_once()
    broker.clock[0] += broker.popper.commit_interval_ms  # (a commit waits that long: see below)
    broker.popper.revive_once()
    assert broker.core.offsets.query(G, T, 0) == 0  # offset 0 is not acked: the commit point waits
    broker.popper.ack(G, T, got[0].handle)
    broker.clock[0] += broker.popper.commit_interval_ms
    broker.popper.revive_once()
    assert broker.core.offsets.query(G, T, 0) == 2
    with pytest.raises(InvalidReceiptError):
        broker.popper.ack(G, T, got[0].handle)  # acked already


def test_revive_commits_a_queue_at_most_once_per_interval(broker: Broker) -> None:
    """Each commit rewrites offsets.json under the store's write lock: the
    revive pass writes a queue's at most every pop_commit_interval_ms (the
    first that long after it first sees the point ahead), and never one
    that moves nothing (review risk 8)."""
    popper = broker.popper
    popper.close()  # the revive pass by hand only
    interval = popper.commit_interval_ms
    assert interval == 5000  # the default
    broker.send(b"a", b"b", b"c")
    got = broker.pop(3).messages
    log_end = broker.core.store.commitlog.max_offset
    popper.revive_once()
    assert broker.core.offsets.query(G, T, 0) is None  # first seen now: due in `interval`
    broker.clock[0] += interval - 1
    popper.revive_once()
    assert broker.core.offsets.query(G, T, 0) is None
    assert broker.core.store.commitlog.max_offset == log_end  # nothing written
    broker.clock[0] += 1
    popper.revive_once()
    assert broker.core.offsets.query(G, T, 0) == 0
    popper.ack(G, T, got[0].handle)
    popper.revive_once()
    broker.clock[0] += interval - 1
    popper.revive_once()
    assert broker.core.offsets.query(G, T, 0) == 0  # moved, but committed a moment ago
    broker.clock[0] += 1
    popper.revive_once()
    assert broker.core.offsets.query(G, T, 0) == 1
    log_end = broker.core.store.commitlog.max_offset
    broker.clock[0] += 10 * interval
    popper.revive_once()
    assert broker.core.store.commitlog.max_offset == log_end  # it moves nothing: not written
    popper.ack(G, T, got[1].handle)
    popper.revive_once()  # idle a long while: due at once
    assert broker.core.offsets.query(G, T, 0) == 2
    broker.clock[0] -= 60 * interval  # the wall clock stepped back: not stuck for an hour
    popper.ack(G, T, got[2].handle)
    popper.revive_once()
    assert broker.core.offsets.query(G, T, 0) == 3


def test_redelivery_after_the_invisible_time_counts_the_attempt(broker: Broker) -> None:
    broker.send(b"a")
    (first,) = broker.pop(inv=1000).messages
    broker.clock[0] += 999
    assert broker.pop().messages == []
    broker.clock[0] += 1
    (again,) = broker.pop(inv=1000).messages
    assert (again.record.body, again.attempt) == (b"a", 2)
    with pytest.raises(InvalidReceiptError):  # the first delivery's handle is stale
        broker.popper.ack(G, T, first.handle)
    broker.popper.ack(G, T, again.handle)


def test_change_invisible(broker: Broker) -> None:
    broker.send(b"a")
    (m,) = broker.pop(inv=1000).messages
    handle, deadline = broker.popper.change_invisible(G, T, m.handle, 60_000)
    assert handle != m.handle and deadline == broker.clock[0] + 60_000
    broker.clock[0] += 5000
    assert broker.pop().messages == []  # not visible: the deadline moved
    with pytest.raises(InvalidReceiptError):
        broker.popper.change_invisible(G, T, m.handle, 1)
    handle, _ = broker.popper.change_invisible(G, T, handle, 0)  # visible at once
    (back,) = broker.pop().messages
    assert back.attempt == 2
    with pytest.raises(InvalidReceiptError):
        broker.popper.ack(G, T, handle)
    broker.popper.ack(G, T, back.handle)


def test_a_renewal_keeps_the_handle_and_a_slaves_copy_has_it(
    broker: Broker, tmp_path: Path, small_config: StoreConfig
) -> None:
    broker.send(b"a")
    (m,) = broker.pop(inv=1000).messages
    broker.clock[0] += 900
    handle, deadline = broker.popper.change_invisible(G, T, m.handle, 1000, keep_handle=True)
    assert handle == m.handle and deadline == broker.clock[0] + 1000
    broker.clock[0] += 900  # past the first deadline: still invisible
    assert broker.pop().messages == []
    with pytest.raises(InvalidArgumentError):  # a renewal extends: 0 is not one
        broker.popper.change_invisible(G, T, m.handle, 0, keep_handle=True)
    # a slave's copy has the renewed deadline
    assert_a_copy_has_the_same_pops(broker, MessageStore(tmp_path / "copy", small_config))
    broker.popper.ack(G, T, m.handle)  # the handed-out handle acks it
    with pytest.raises(InvalidReceiptError):  # and a settled one is not renewed
        broker.popper.change_invisible(G, T, m.handle, 1000, keep_handle=True)


def test_dead_letter_after_max_attempts(broker: Broker) -> None:
    broker.send(b"poison", b"fine")
    for attempt in (1, 2, 3):
        got = broker.pop(inv=100).messages
        assert [(m.record.body, m.attempt) for m in got] == [(b"poison", attempt), (b"fine", attempt)][
            : len(got)
        ]
        if attempt == 1:
            broker.popper.ack(G, T, got[1].handle)
        broker.clock[0] += 100
    assert broker.pop().messages == []  # delivered 3 times: not again
    assert broker.popper.revive_once() == 1
    dlq = broker.core.store.read(dlq_topic(G), 0, 0, 10, 1 << 20)
    (rec,) = iter_records(dlq.data, verify=False)
    assert (rec.body, rec.properties[RECONSUME_TIMES]) == (b"poison", "3")
    assert broker.core.pops.inflight(G) == 0
    broker.clock[0] += broker.popper.commit_interval_ms
    broker.popper.revive_once()
    assert broker.core.offsets.query(G, T, 0) == 2
    assert broker.popper.revive_once() == 0


def test_a_client_dead_letters_a_popped_message(broker: Broker) -> None:
    """PopDeadLetter: the message a live handle names goes to %DLQ%<group>
    with its attempts, and its entry is settled; a stale handle stores nothing."""
    broker.send(b"fifo", b"next")
    first = broker.pop(1, inv=100).messages[0]
    broker.clock[0] += 100
    (again,) = broker.pop(1, inv=100).messages
    at = broker.core.store.commitlog.max_offset
    with pytest.raises(InvalidReceiptError):  # stale: handed out again since
        broker.popper.dead_letter(G, T, first.handle)
    with pytest.raises(InvalidReceiptError):
        broker.popper.dead_letter("other", T, again.handle)
    assert broker.core.store.commitlog.max_offset == at
    assert broker.core.store.topics.queue_count(dlq_topic(G)) is None  # not even the topic
    broker.popper.dead_letter(G, T, again.handle)
    (rec,) = iter_records(broker.core.store.read(dlq_topic(G), 0, 0, 10, 1 << 20).data, verify=False)
    assert (rec.body, rec.properties[RECONSUME_TIMES]) == (b"fifo", "2")
    assert broker.core.pops.commit_point((G, T, 0)) == 1  # settled
    with pytest.raises(InvalidReceiptError):  # settled: acked already
        broker.popper.ack(G, T, again.handle)
    with pytest.raises(InvalidReceiptError):  # and not twice in the DLQ
        broker.popper.dead_letter(G, T, again.handle)
    assert len(broker.bodies(dlq_topic(G))) == 1
    assert [m.record.body for m in broker.pop().messages] == [b"next"]


def test_status_tells_the_pop_attempts(broker: Broker) -> None:
    """The proxy tells clients the real maximum deliveries (Status details.limits)."""
    limits = broker.core.status()["details"]["limits"]
    assert limits["pop_max_attempts"] == 3 and limits["max_message_bytes"] > 0


def test_refusals(broker: Broker) -> None:
    broker.send(b"a")
    (m,) = broker.pop().messages
    with pytest.raises(InvalidReceiptError):  # another group's name on the handle
        broker.popper.ack("other", T, m.handle)
    r = decode_handle(broker.popper.key, m.handle)
    forged = encode_handle(handle_key("guess", broker.core.broker_name), r)
    with pytest.raises(InvalidReceiptError):
        broker.popper.ack(G, T, forged)
    other_broker = encode_handle(broker.popper.key, Receipt("elsewhere", G, T, 0, 0, r.gen))
    with pytest.raises(InvalidReceiptError):
        broker.popper.ack(G, T, other_broker)
    with pytest.raises(UnknownTopicError):
        broker.popper.pop(G, "nope", 0, 1, 1000)
    for bad in ({"invisible_ms": 0}, {"max_messages": 5000}, {"queue_id": 2}):
        args: dict[str, Any] = {
            "group": G,
            "topic": T,
            "queue_id": 0,
            "max_messages": 1,
            "invisible_ms": 1000,
        }
        with pytest.raises((InvalidArgumentError, Exception)):
            broker.popper.pop(**{**args, **bad})
    with pytest.raises(InvalidArgumentError):  # the broker's own groups
        broker.popper.pop("%SCHEDULER%", T, 0, 1, 1000)
    broker.popper.ack(G, T, m.handle)


def test_acks_of_a_call_are_one_record_per_queue_and_one_wait(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AckPop's handles (review risk 13): one `ack` record per queue per
    call, not per handle, one wait for the slaves, and per handle, in the
    request's order, acked or why not; a stale one does not stop the others."""
    broker.send(b"a", b"b", b"c")
    broker.send(b"x", b"y", queue=1)
    q0 = broker.pop(inv=1000).messages
    q1 = broker.pop(queue=1).messages
    broker.popper.ack(G, T, q0[2].handle)
    broker.clock[0] += 1000
    again = broker.pop(1, inv=1000).messages  # offset 0 again: its first handle is stale
    waits: list[str] = []
    monkeypatch.setattr(broker.popper, "_confirm", waits.append)
    at = broker.core.store.commitlog.max_offset
    handles = [
        q1[1].handle, q0[0].handle, q0[1].handle, "forged", q0[2].handle, again[0].handle, q1[0].handle
    ]  # fmt: skip
    errors = broker.popper.ack_all(G, T, handles)
    assert [None if e is None else e.code for e in errors] == [
        None, "INVALID_RECEIPT_HANDLE", None, "INVALID_RECEIPT_HANDLE", "INVALID_RECEIPT_HANDLE", None, None
    ]  # fmt: skip
    assert "handed out again" in str(errors[1]) and "acked?" in str(errors[4])
    records = [(p["op"], p["queue"], p["o"]) for p in broker.core.store.system_payloads("pop", at)]
    assert records == [("ack", 1, [1, 0]), ("ack", 0, [1, 0])]
    assert waits == ["acked"]
    assert broker.core.pops.inflight(G) == 0
    end = broker.core.store.commitlog.max_offset
    (stale,) = broker.popper.ack_all(G, T, [again[0].handle])  # acked already
    assert stale is not None and stale.code == "INVALID_RECEIPT_HANDLE"
    assert waits == ["acked"] and broker.core.store.commitlog.max_offset == end  # nothing written: no wait


def test_a_tag_filter_hands_out_what_matches_and_consumes_the_rest(broker: Broker) -> None:
    tagged = [(b"a", "x"), (b"b", "y"), (b"c", "z"), (b"d", "y"), (b"e", "")]
    out = broker.leader.send(T, 0, [Message(T, 0, body, tags=tag) for body, tag in tagged])
    assert out.status is SendStatus.SEND_OK
    at = broker.core.store.commitlog.max_offset
    for bad in ("y ||", "||", "y | z", "* || y", "y ||  || z"):
        with pytest.raises(InvalidArgumentError):
            broker.popper.pop(G, T, 0, 32, 1000, tag_expression=bad)
    assert broker.core.store.commitlog.max_offset == at and broker.core.pops.get((G, T, 0)) is None
    got = broker.popper.pop(G, T, 0, 32, 1000, tag_expression=" y||z ").messages
    assert [m.record.body for m in got] == [b"b", b"c", b"d"]
    (record,) = broker.core.store.system_payloads("pop", at)
    assert (record["from"], record["n"], record["t"]) == (0, 5, [1, 2, 3])  # one record: a and e passed
    assert broker.core.pops.commit_point((G, T, 0)) == 1  # a is consumed for the group
    broker.popper.ack_all(G, T, [got[1].handle, got[2].handle])
    assert broker.core.pops.commit_point((G, T, 0)) == 1
    broker.clock[0] += 1000  # b comes back, to a pop its expression matches only
    assert broker.popper.pop(G, T, 0, 32, 1000, tag_expression="x || z").messages == []
    (again,) = broker.popper.pop(G, T, 0, 32, 1000, tag_expression="y").messages
    assert (again.record.body, again.attempt) == (b"b", 2)
    broker.popper.ack(G, T, again.handle)
    assert broker.core.pops.commit_point((G, T, 0)) == 5  # e, untagged, was passed too
    broker.send(b"f")
    assert broker.pop().messages[0].record.body == b"f"  # "": every message


def test_any_queue(broker: Broker) -> None:
    broker.send(b"q0")
    broker.send(b"q1", queue=1)
    got = broker.pop(queue=-1).messages
    assert sorted(m.record.body for m in got) == [b"q0", b"q1"]
    for m in got:
        broker.popper.ack(G, T, m.handle)


def test_long_poll_wakes_on_arrival(broker: Broker) -> None:
    threading.Timer(0.2, lambda: broker.send(b"late")).start()
    t0 = time.monotonic()
    out = broker.popper.pop(G, T, 0, 1, 1000, wait_ms=5000)
    assert [m.record.body for m in out.messages] == [b"late"] and out.held
    assert time.monotonic() - t0 < 4


def test_a_sync_master_without_its_slaves_pops_nothing(tmp_path: Path, small_config: StoreConfig) -> None:
    """X1 of the receive review: as a send, a pop is refused before its
    record is written when too few slaves are in sync (its attempts would
    burn on a pop answered REQUEST_TIMEOUT)."""
    b = start(tmp_path, small_config, [int(time.time() * 1000)], replication__mode="sync")
    try:
        b.leader.create_topic(T, 1)
        b.core.store.append([Message(T, 0, b"a")])
        at = b.core.store.commitlog.max_offset
        with pytest.raises(BrokerBusyError, match="in-sync"):
            b.pop()
        assert list(b.core.store.system_payloads("pop", at)) == []  # nothing recorded, no attempt burnt
    finally:
        close_core(b.core)


def test_a_caller_gone_during_the_hold_is_handed_nothing_more(broker: Broker) -> None:
    """X2 of the receive review: the re-pop after a hold checks the caller
    first, so a message arriving as the caller leaves stays for the next."""
    asked = []

    def alive() -> bool:
        asked.append(1)
        if len(asked) == 1:  # still there after the first, empty pop; a message comes, the caller goes
            broker.send(b"late")
            return True
        return False

    out = broker.popper.pop(G, T, 0, 1, 1000, wait_ms=5000, alive=alive)
    assert out.messages == [] and out.held
    (m,) = broker.pop().messages
    assert (m.record.body, m.attempt) == (b"late", 1)  # not burnt on the caller that left


def test_bounds_over_queues(tmp_path: Path, small_config: StoreConfig) -> None:
    b = start(
        tmp_path, small_config, [int(time.time() * 1000)],
        quotas__max_pop_inflight_per_queue=2, quotas__max_pop_inflight_per_group=3,
    )  # fmt: skip
    try:
        b.leader.create_topic(T, 2)
        b.send(b"a", b"b", b"c")
        b.send(b"x", b"y", queue=1)
        assert len(b.pop().messages) == 2
        with pytest.raises(QuotaExceededError, match="max_pop_inflight_per_queue"):
            b.pop()
        # any queue: a full queue is passed over while another has room
        assert [m.record.body for m in b.pop(queue=-1).messages] == [b"x"]
        with pytest.raises(QuotaExceededError, match=r"max_pop_inflight_per_(group|queue)"):
            b.pop(queue=-1)  # (which queue's refusal depends on the rotation)
        assert b.core.quota_usage()["pop_inflight_per_group"] == (3, 3)
    finally:
        close_core(b.core)


def test_a_pop_answer_keeps_to_one_byte_budget(tmp_path: Path, small_config: StoreConfig) -> None:
    """pull.max_bytes bounds the whole answer, over every queue and the
    messages handed out again; what did not fit is not handed out (its
    attempts do not burn unseen) and comes with the next pop."""
    clock = [int(time.time() * 1000)]
    b = start(tmp_path, small_config, clock, pull__max_bytes=25 * 1024)
    try:
        b.leader.create_topic(T, 2)
        body = b"x" * (10 * 1024)
        for q in (0, 1):
            b.send(body, body, body, queue=q)
        first = b.pop(n=32, queue=-1, inv=1000).messages
        assert len(first) == 2  # 2 x (10 KiB + framing) fit in 25 KiB, a third does not
        assert b.core.pops.inflight(G) == 2  # the third was not handed out
        clock[0] += 2000  # both expire: what is handed out again counts in the budget too
        seen = list(first)
        while got := b.pop(n=32, queue=-1, inv=60_000).messages:
            assert 1 <= len(got) <= 2
            seen += got
        assert b.core.pops.inflight(G) == 6  # every message handed out, none skipped
        assert sorted(m.attempt for m in seen) == [1] * 6 + [2] * 2  # the first two came back once
    finally:
        close_core(b.core)
