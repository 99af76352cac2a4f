"""Transactional messages end to end, in-process brokers over gRPC with our
client library: a half is acknowledged on the sync slave and invisible in
its topic; a commit stores it there once (fields kept), a rollback never;
ids of other groups or forged ones store nothing; open halves survive a
restart and a promotion; an orphan is offered after the check time, and
rolled back after the last check."""

from __future__ import annotations

import threading

import pytest

from consumer.admin import Admin
from consumer.producer import Producer
from consumer.transactions import TransactionClient
from core.errors import InvalidArgumentError, InvalidTransactionError, RequestTimeoutError
from core.record import Message, Record, iter_records
from core.transactions import CHECKS, HALF, OP, TXN_TOPIC, Outcome, TxnId, encode_id, txn_key
from deploy.broker_node import BrokerNode
from deploy.waits import holds_for, poll_until
from tests.helpers.nodes import SECRET, Nodes, nodes

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture
FAST = {
    "broker.transaction_check_after_ms": 400,
    "broker.transaction_check_interval_ms": 300,
    "broker.transaction_max_checks": 2,
}


def records(node: BrokerNode, topic: str = "orders") -> list[Record]:
    store = node.core.store
    if store.topics.queue_count(topic) is None:
        return []
    out = []
    for q in range(store.topics.queue_count(topic) or 0):
        out += list(iter_records(store.read(topic, q, 0, 1000, 1 << 20).data, verify=True))
    return out


def bodies(node: BrokerNode, topic: str = "orders") -> list[bytes]:
    return sorted(r.body for r in records(node, topic))


def open_count(node: BrokerNode) -> int:
    t = node.core.leader().transactions
    with t._lock:
        t._ready()
        return len(t.table.open)


def test_a_commit_stores_the_half_once_in_its_topic_and_a_rollback_never(nodes: Nodes) -> None:
    sync = {"replication.mode": "sync", "replication.sync_timeout_ms": 5000}
    master = nodes.master(sync)
    slave = nodes.slave(master, overrides=sync)
    with Admin(master.address) as admin:
        admin.create_topic("orders", 2)
    with Producer(master.address) as prod:
        r1 = prod.send_transactional("orders", b"yes", tags="t", keys="k1 k2", properties={"p": "1"})
        r2 = prod.send_transactional("orders", b"no", producer_group="pg")
        assert r1.transaction_id and r2.transaction_id and r1.transaction_id != r2.transaction_id
        assert (r1.topic, r1.broker_name) == ("orders", "g")
        assert sorted(r.body for r in records(slave, TXN_TOPIC)) == [
            b"no",
            b"yes",
        ]  # acknowledged on the slave
        assert bodies(master) == []  # invisible in its topic
        assert prod.end_transaction("orders", r1.transaction_id, commit=True).outcome == "commit"
        again = prod.end_transaction("orders", r1.transaction_id, commit=True)
        assert again.repeated and again.outcome == "commit"
        assert not prod.end_transaction("orders", r2.transaction_id, commit=False).repeated
        with pytest.raises(InvalidTransactionError, match="ended already: rollback"):
            prod.end_transaction("orders", r2.transaction_id, commit=True)
    assert bodies(master) == [b"yes"]
    (rec,) = records(master)
    assert (rec.queue_id, rec.tags, rec.keys) == (r1.queue_id, "t", "k1 k2")
    assert rec.properties == {"p": "1"}  # TRAN_MSG cleared, as RocketMQ does (review B7)
    poll_until(lambda: bodies(slave) == [b"yes"], 10, "the slave has the committed message")
    assert open_count(master) == 0


def test_a_foreign_forged_or_misdirected_id_stores_nothing(nodes: Nodes) -> None:
    master = nodes.master()
    with Admin(master.address) as admin:
        admin.create_topic("orders", 1)
        admin.create_topic("other", 1)
    with Producer(master.address) as prod:
        r = prod.send_transactional("orders", b"half")
        end = master.core.store.commitlog.max_offset
        key = txn_key(SECRET, "g")
        unknown = encode_id(key, TxnId("g", 99, "00"))
        nonce_wrong = encode_id(key, TxnId("g", r.queue_offset, "ffff"))
        foreign = encode_id(txn_key(SECRET, "h"), TxnId("g", r.queue_offset, "00"))
        for bad in (unknown, nonce_wrong, foreign, "t1.bad.id", "nonsense"):
            with pytest.raises(InvalidTransactionError):
                prod.end_transaction("orders", bad, commit=True)
        with pytest.raises(InvalidTransactionError, match="another topic"):
            prod.end_transaction("other", r.transaction_id, commit=True)
        assert master.core.store.commitlog.max_offset == end  # nothing stored
        prod.end_transaction("orders", r.transaction_id, commit=True)
    assert bodies(master) == [b"half"]


def test_open_halves_survive_a_restart(nodes: Nodes) -> None:
    master = nodes.master()
    with Admin(master.address) as admin:
        admin.create_topic("orders", 1)
    with Producer(master.address) as prod:
        done = prod.send_transactional("orders", b"done")
        prod.end_transaction("orders", done.transaction_id, commit=True)
        pending = prod.send_transactional("orders", b"pending")
    master.stop()
    nodes.started.remove(master)
    again = nodes.master()
    assert open_count(again) == 1
    with Producer(again.address) as prod:
        assert prod.end_transaction("orders", done.transaction_id, commit=True).repeated
        assert not prod.end_transaction("orders", pending.transaction_id, commit=True).repeated
    assert bodies(again) == [b"done", b"pending"]


def test_a_promoted_slave_carries_the_open_halves_on(nodes: Nodes) -> None:
    master = nodes.master()
    slave = nodes.slave(master)
    with Admin(master.address) as admin:
        admin.create_topic("orders", 1)
    with Producer(master.address) as prod:
        a = prod.send_transactional("orders", b"a")
        b = prod.send_transactional("orders", b"b")
        prod.end_transaction("orders", a.transaction_id, commit=True)
    end = master.core.store.commitlog.max_offset
    poll_until(lambda: slave.core.store.commitlog.max_offset >= end, 10, "the slave caught up")
    master.stop()
    nodes.started.remove(master)
    slave.core.promote(1)
    assert open_count(slave) == 1
    with Producer(slave.address) as prod:
        assert prod.end_transaction("orders", a.transaction_id, commit=True).repeated
        prod.end_transaction("orders", b.transaction_id, commit=True)
    assert bodies(slave) == [b"a", b"b"]


def test_an_orphan_is_offered_after_the_check_time_then_rolled_back_after_its_last_check(
    nodes: Nodes,
) -> None:
    master = nodes.master(FAST)
    with Admin(master.address) as admin:
        admin.create_topic("orders", 1)
    with Producer(master.address) as prod:
        r = prod.send_transactional("orders", b"orphan", keys="k", producer_group="pg")
        client = TransactionClient(prod.routes, prod.pool)
        first = client.poll_orphans(master.address, 10, 5000, 10)
        (o,) = first
        assert (o.transaction_id, o.topic, o.producer_group, o.checks) == (
            r.transaction_id,
            "orders",
            "pg",
            1,
        )
        assert (o.message.body, o.message.keys) == (b"orphan", "k")
        (o2,) = client.poll_orphans(master.address, 10, 5000, 10, delivered=[o.transaction_id])
        assert o2.checks == 2  # delivered, counted; asked again an interval later
        assert client.poll_orphans(master.address, 10, 0, 10, delivered=[o2.transaction_id]) == []
        poll_until(lambda: open_count(master) == 0, 10, "rolled back after its last check")
        registry = master.core.metrics.registry
        assert registry.get_sample_value("tailrace_transactions_ended_total", {"outcome": "discard"}) == 1
        assert prod.end_transaction("orders", r.transaction_id, commit=False).outcome == "discard"
        with pytest.raises(InvalidTransactionError, match="discard"):
            prod.end_transaction("orders", r.transaction_id, commit=True)
    holds_for(lambda: bodies(master) == [], 0.3, "never stored in its topic")


def test_an_orphan_answered_by_its_check_is_committed(nodes: Nodes) -> None:
    master = nodes.master(FAST)
    with Admin(master.address) as admin:
        admin.create_topic("orders", 1)
    with Producer(master.address) as prod:
        prod.send_transactional("orders", b"checked")
        client = TransactionClient(prod.routes, prod.pool)
        (o,) = client.poll_orphans(master.address, 10, 5000, 10)
        client.end(o.topic, o.transaction_id, commit=True, timeout_s=5, from_check=True)
    assert bodies(master) == [b"checked"] and open_count(master) == 0


def test_a_send_carrying_op_properties_is_refused_and_ends_no_other_transaction(nodes: Nodes) -> None:
    """Review B1: a publisher of another topic naming the victim's half in
    TXN_OP/TXN_HALF (as a plain or a transactional send) ends nothing, and
    the victim's commit stores its message."""
    master = nodes.master()
    with Admin(master.address) as admin:
        admin.create_topic("orders", 1)
        admin.create_topic("audit", 1)
    with Producer(master.address) as prod:
        victim = prod.send_transactional("orders", b"pay")
        end = master.core.store.commitlog.max_offset
        for kind in ("commit", "rollback", "check"):
            forged = {OP: kind, HALF: str(victim.queue_offset), CHECKS: "1000"}
            with pytest.raises(InvalidArgumentError, match="broker's"):
                prod.send_transactional("audit", b"x", properties=forged)
            with pytest.raises(InvalidArgumentError, match="broker's"):
                prod.send("audit", b"x", properties=forged)
        assert master.core.store.commitlog.max_offset == end  # nothing stored
        assert open_count(master) == 1
        assert not prod.end_transaction("orders", victim.transaction_id, commit=True).repeated
    assert bodies(master) == [b"pay"]


SYNC = {"replication.mode": "sync", "replication.sync_timeout_ms": 5000}


def test_a_repeated_end_answers_success_only_once_the_slaves_have_it(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review B3: in sync mode an end whose slaves time out is retried by the
    client; the retry (a repeat) must not answer success before they ack."""
    master = nodes.master(SYNC)
    nodes.slave(master, overrides=SYNC)
    with Admin(master.address) as admin:
        admin.create_topic("orders", 1)
    with Producer(master.address) as prod:
        r = prod.send_transactional("orders", b"x")
        leader = master.core.leader()
        monkeypatch.setattr(leader, "_wait_replicated", lambda: False)  # the slaves do not ack in time
        with pytest.raises(RequestTimeoutError):
            prod.end_transaction("orders", r.transaction_id, commit=True)  # (the client tried 3 times)
        monkeypatch.undo()
        again = prod.end_transaction("orders", r.transaction_id, commit=True)
        assert again.repeated and again.outcome == "commit"
    assert bodies(master) == [b"x"]  # stored once


def test_no_transactional_send_waits_in_the_write_gate_for_an_end_waiting_on_slaves(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review B4: an end waiting for its slaves holds no lock a transactional
    send needs inside the write gate, so the gate closes (a retire) at once."""
    master = nodes.master(SYNC)
    nodes.slave(master, overrides=SYNC)
    with Admin(master.address) as admin:
        admin.create_topic("orders", 1)
    with Producer(master.address) as prod:
        r = prod.send_transactional("orders", b"a")
    leader = master.core.leader()
    txns = leader.transactions
    release = threading.Event()
    monkeypatch.setattr(leader, "_wait_replicated", lambda: release.wait(10))  # slow slaves
    ending = threading.Thread(target=txns.end, args=("orders", r.transaction_id, Outcome.COMMIT))
    half = Message("orders", 0, b"b", properties={"TRAN_MSG": "true"})
    sending = threading.Thread(target=leader.send, args=("orders", 0, [half]))
    end_before = master.core.store.queue_offsets(TXN_TOPIC, 0)[1]
    try:
        ending.start()
        poll_until(lambda: bodies(master) == [b"a"], 5, "the commit appended (its slaves awaited)")
        sending.start()
        poll_until(
            lambda: master.core.store.queue_offsets(TXN_TOPIC, 0)[1] == end_before + 2,
            5,
            "the second half appended while the end waits for its slaves",
        )
        assert leader._gate.close(1.0)  # nothing inside: a retire would cut cleanly
    finally:
        release.set()
        ending.join(10)
        sending.join(10)


def test_checks_go_to_pollers_that_can_deliver_them_within_a_byte_bound_and_count_once_delivered(
    nodes: Nodes,
) -> None:
    """Review B5: a poller without producers of the topic takes nothing (another
    proxy does); an answer keeps to its byte bound (one check at least), the
    rest handed out next; a check returned, or taken and not reported, is
    not counted and is handed out again."""
    master = nodes.master({**FAST, "broker.transaction_max_checks": 5})
    with Admin(master.address) as admin:
        admin.create_topic("orders", 1)
    with Producer(master.address) as prod:
        ids = {prod.send_transactional("orders", bytes([i]) * 1000).transaction_id for i in range(3)}
        client = TransactionClient(prod.routes, prod.pool)
        t = master.core.leader().transactions
        due = t.clock() + FAST["broker.transaction_check_after_ms"]
        poll_until(lambda: t.clock() > due, 5, "all three due")
        assert client.poll_orphans(master.address, 10, 300, 10, topics=["audit"]) == []  # (a pass ran)
        first = client.poll_orphans(master.address, 10, 0, 10, topics=["orders"], max_bytes=1500)
        second = client.poll_orphans(master.address, 10, 0, 10, topics=["orders"], max_bytes=3000)
        assert (len(first), len(second)) == (1, 2)  # by bytes: one at least, then two of ~1.3 KB
        assert {o.transaction_id for o in first + second} == ids and all(o.checks == 1 for o in first)
        assert client.poll_orphans(master.address, 10, 0, 10) == []  # all leased
        returned = [o.transaction_id for o in second]
        again = client.poll_orphans(master.address, 10, 0, 10, returned=returned)
        assert sorted(o.transaction_id for o in again) == sorted(returned)  # handed out again at once
        assert all(o.checks == 1 for o in again)  # not counted
        client.poll_orphans(master.address, 1, 0, 10, delivered=[o.transaction_id for o in first])
        poll_until(lambda: sorted(h.checks for h in t.table.open.values()) == [0, 0, 1], 5, "one counted")
