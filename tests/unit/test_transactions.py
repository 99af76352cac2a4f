"""The transaction table and ids as plain logic (core/transactions.py): the
queue read in order is the state; time is passed in."""

from __future__ import annotations

import pytest

from core.errors import BrokerBusyError, InvalidArgumentError, InvalidTransactionError
from core.record import Message, Record
from core.transactions import (
    CHECKS,
    HALF,
    MISSES,
    NONCE,
    OP,
    Outcome,
    TxnId,
    TxnTable,
    Verdict,
    Wanted,
    broker_of,
    check_client_properties,
    decode_id,
    encode_id,
    from_half,
    is_transactional,
    to_half,
    txn_key,
)

pytestmark = pytest.mark.unit
KEY = txn_key("secret", "g")


def half_props(topic: str = "orders", queue: int = 1, nonce: str = "n0") -> dict[str, str]:
    m = to_half(Message(topic, queue, b"x", properties={"p": "v"}), topic, queue, nonce)
    assert m.properties is not None
    return dict(m.properties)


def op(kind: str, half: int, checks: int = 0) -> dict[str, str]:
    props = {OP: kind, HALF: str(half)}
    if checks:
        props[CHECKS] = str(checks)
    return props


def table(after: int = 1000, interval: int = 500, max_checks: int = 2, max_open: int = 10) -> TxnTable:
    return TxnTable(after, interval, max_checks, max_open)


def test_an_id_names_its_half_and_a_forged_altered_or_foreign_one_is_refused() -> None:
    t = TxnId("g", 42, "abcd")
    text = encode_id(KEY, t)
    assert decode_id(KEY, text) == t and broker_of(text) == "g"
    with pytest.raises(InvalidTransactionError, match="not issued"):
        decode_id(txn_key("secret", "other"), text)  # another broker group's key
    with pytest.raises(InvalidTransactionError, match="not issued"):
        decode_id(txn_key("other-secret", "g"), text)
    prefix, body, mac = text.split(".")
    forged = encode_id(KEY, TxnId("g", 43, "abcd")).split(".")[1]
    with pytest.raises(InvalidTransactionError, match="not issued"):
        decode_id(KEY, f"{prefix}.{forged}.{mac}")  # another offset under the old MAC
    for junk in ("", "t1", "t1.!!.??", "x" * 600, f"v1.{body}.{mac}"):
        with pytest.raises(InvalidTransactionError):
            decode_id(KEY, junk)
        with pytest.raises(InvalidTransactionError):
            broker_of(junk)


def test_a_send_is_transactional_in_all_its_messages_or_none() -> None:
    yes = Message("t", 0, b"x", properties={"TRAN_MSG": "true"})
    no = Message("t", 0, b"x")
    assert is_transactional([yes, yes]) and not is_transactional([no])
    with pytest.raises(InvalidArgumentError, match="all its messages or in none"):
        is_transactional([yes, no])


def test_a_committed_half_keeps_the_producers_fields_and_drops_the_bookkeeping() -> None:
    props = half_props()
    rec = Record("%TRANS%", 0, 5, 100, 0, 1234, 999, "tag", "k1 k2", props, b"body")
    m = from_half(rec)
    assert (m.topic, m.queue_id, m.body, m.tags, m.keys, m.born_ms) == (
        "orders",
        1,
        b"body",
        "tag",
        "k1 k2",
        1234,
    )
    assert m.properties == {"p": "v"}  # no TRAN_MSG (review B7): re-published, it is no half
    assert not is_transactional([m])


def test_a_half_is_an_orphan_after_check_after_then_every_interval_then_discarded() -> None:
    t = table()
    t.apply(0, half_props(), store_ms=10_000)
    assert t.ready(10_999) == [] and t.due(10_999, 10) == []
    (h,) = t.ready(11_000)
    assert h.topic == "orders" and h.queue_id == 1
    t.handed_out(h, 41_000)  # leased to a poller: no other takes it meanwhile
    assert t.ready(11_000) == []
    assert t.reported(h, delivered=True) and not t.reported(h, delivered=True)  # counted once
    t.checked(h, 11_100)
    assert t.ready(11_599) == [] and t.ready(11_600) == [h]
    t.handed_out(h, 41_600)
    t.reported(h, delivered=True)
    t.checked(h, 11_600)
    assert t.ready(12_100) == []  # checked max_checks (2) times: never handed out again
    (d,) = t.due(12_100, 10)
    assert d.discard  # its last interval passed with no end: rolled back now
    t.close(0, Outcome.DISCARD)
    assert t.due(99_999, 10) == [] and not t.open


def test_a_check_no_producer_takes_is_not_counted_but_a_miss_is_after_each_interval() -> None:
    """Review B5: only delivered checks count toward max_checks; a check
    handed out and returned, or never taken, is handed out again; each whole
    interval with none taken is a miss, and max_checks misses discard it
    (so a half with no producer anywhere ends as before)."""
    t = table()
    t.apply(0, half_props(), store_ms=10_000)
    (h,) = t.ready(11_000)
    t.handed_out(h, 41_000)
    assert not t.reported(h, delivered=False)  # returned: handed out again at once, not counted
    assert t.ready(11_000) == [h] and h.checks == 0
    t.handed_out(h, 11_200)  # a poller took it and never reported: its lease runs out
    assert t.ready(11_100) == [] and t.ready(11_200) == [h]
    assert t.due(11_499, 10) == []
    (d,) = t.due(11_500, 10)  # due a whole interval, none delivered
    assert not d.discard
    t.missed(h, 11_500)
    assert h.misses == 1 and t.ready(11_500) == [h]  # still asked for
    t.missed(h, 12_000)
    assert t.ready(12_000) == [] and t.due(12_000, 10)[0].discard


def test_check_and_miss_ops_read_back_restore_the_counts_and_the_next_check() -> None:
    t = table()
    t.apply(0, half_props(), 10_000)
    t.apply(1, op("check", 0, 1), 11_000)
    t.apply(2, {OP: "miss", HALF: "0", MISSES: "1"}, 12_000)
    t.apply(3, op("check", 0, 2), 12_300)
    h = t.open[0]
    assert (h.checks, h.misses, h.next_check_ms) == (2, 1, 12_800)
    assert t.due(12_799, 10) == [] and t.due(12_800, 10)[0].discard


def test_a_poller_is_handed_only_the_topics_and_groups_it_can_deliver() -> None:
    t = table()
    t.apply(0, half_props("orders"), 0)
    t.apply(1, half_props("audit"), 0)
    grouped = dict(half_props("orders"), PGROUP="pg")
    t.apply(2, grouped, 0)
    orders, audit, pg = (t.open[i] for i in range(3))
    assert [h for h in (orders, audit, pg) if Wanted(frozenset({"orders"})).takes(h)] == [orders, pg]
    other_group = Wanted(frozenset({"orders"}), frozenset({"other"}))
    assert [h for h in (orders, audit, pg) if other_group.takes(h)] == [orders]
    assert all(Wanted().takes(h) for h in (orders, audit, pg))


def test_end_verdicts_store_once_repeat_conflict_and_unknown() -> None:
    t = table()
    t.apply(0, half_props(nonce="n0"), 10_000)
    tid = TxnId("g", 0, "n0")
    assert t.verdict(tid, Outcome.COMMIT) == (Verdict.STORE, None)
    assert t.verdict(TxnId("g", 0, "other"), Outcome.COMMIT) == (Verdict.UNKNOWN, None)  # same offset, not it
    t.close(0, Outcome.COMMIT)
    assert t.verdict(tid, Outcome.COMMIT) == (Verdict.REPEAT, Outcome.COMMIT)
    assert t.verdict(tid, Outcome.ROLLBACK) == (Verdict.CONFLICT, Outcome.COMMIT)
    assert t.verdict(TxnId("g", 7, "n7"), Outcome.COMMIT) == (Verdict.UNKNOWN, None)
    t.apply(1, half_props(nonce="n1"), 10_000)
    t.close(1, Outcome.DISCARD)  # the broker rolled it back: a rollback afterwards is a repeat
    assert t.verdict(TxnId("g", 1, "n1"), Outcome.ROLLBACK) == (Verdict.REPEAT, Outcome.DISCARD)
    assert t.verdict(TxnId("g", 1, "n1"), Outcome.COMMIT)[0] is Verdict.CONFLICT


def test_ops_in_the_queue_close_their_half_and_low_follows_the_oldest_open_one() -> None:
    t = table()
    for i in range(3):
        t.apply(i, half_props(nonce=f"n{i}"), 10_000)
    assert t.low() == 0 and t.loaded == 3
    t.apply(3, op("commit", 0), 10_100)
    t.apply(4, op("rollback", 2), 10_100)
    assert sorted(t.open) == [1] and t.low() == 1
    t.apply(5, op("commit", 1), 10_200)
    assert t.low() == 6  # nothing open: the read's end
    t.apply(6, op("bogus", 1), 10_300)  # unknown ops and ops of unknown halves change nothing
    t.apply(7, op("commit", 99), 10_300)
    t.apply(8, {OP: "commit", HALF: "x"}, 10_300)
    assert not t.open and t.loaded == 9


def test_a_rebuild_from_low_sees_only_what_is_still_open() -> None:
    ops = [
        (0, half_props(nonce="a")),
        (1, half_props(nonce="b")),
        (2, op("commit", 0)),
        (3, op("check", 1, 1)),
    ]
    full = table()
    for off, props in ops:
        full.apply(off, props, 10_000)
    low = full.low()
    assert low == 1
    again = table()
    again.start_at(low)
    for off, props in ops[low:]:
        again.apply(off, props, 10_000)
    assert again.open.keys() == full.open.keys() and again.open[1].checks == 1


def test_open_halves_are_capped() -> None:
    t = table(max_open=2)
    t.apply(0, half_props(), 0)
    t.room(1)
    with pytest.raises(BrokerBusyError, match="transaction_max_open"):
        t.room(2)


def test_the_repeat_memory_is_bounded() -> None:
    t = table(max_open=1)  # remembers 2 closed outcomes
    for i in range(3):
        t.apply(i, half_props(nonce=f"n{i}"), 0)
        t.close(i, Outcome.COMMIT)
    assert t.verdict(TxnId("g", 0, "n0"), Outcome.COMMIT)[0] is Verdict.UNKNOWN
    assert t.verdict(TxnId("g", 2, "n2"), Outcome.COMMIT)[0] is Verdict.REPEAT


def test_a_half_carrying_op_properties_is_a_half_and_closes_no_other() -> None:
    """Review B1: a tenant's half whose properties name an op (TXN_OP,
    TXN_HALF, TXN_CHECKS) must not end, or count checks of, another half;
    as an older log may hold such halves, the table reads them as halves."""
    t = table()
    t.apply(0, half_props(nonce="victim"), 10_000)
    forgeries = (op("commit", 0), op("rollback", 0), op("check", 0, 1000), op("discard", 0))
    for i, forged in enumerate(forgeries):
        evil = dict(half_props("audit", 0, f"e{i}"))
        t.apply(1 + i, {**evil, **forged}, 10_001)
        assert t.open[1 + i].topic == "audit"  # the attacker's own half, tracked
    assert t.open[0].checks == 0
    assert t.verdict(TxnId("g", 0, "victim"), Outcome.COMMIT) == (Verdict.STORE, None)
    half = to_half(Message("audit", 0, b"x", properties=forgeries[2]), "audit", 0, "n")
    assert half.properties is not None and half.properties[NONCE] == "n"
    assert not {OP, HALF, CHECKS} & half.properties.keys()  # never carried into a half


def test_client_properties_naming_the_brokers_bookkeeping_are_refused() -> None:
    for name in (OP, HALF, CHECKS, NONCE):
        with pytest.raises(InvalidArgumentError, match=name):
            check_client_properties([Message("t", 0, b"x", properties={"p": "v", name: "1"})])
    check_client_properties([Message("t", 0, b"x", properties={"TXN_ID": "mine"}), Message("t", 0, b"y")])
