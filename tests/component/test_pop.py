"""Pop consumption through real gRPC to brokers in this process: Pop, AckPop,
ChangeInvisible on a master with a fake clock in its popper, redelivery with
the attempt counted, the DLQ after the maximum attempts, NOT_MASTER on a
slave that holds the same state, and a restart that keeps it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from consumer import Admin, Producer
from core.grpc_status import ERROR_CODE_KEY
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from core.pop.state import PopTable
from core.record import decode_record, iter_records
from core.retry import RECONSUME_TIMES
from deploy.broker_node import BrokerNode
from deploy.harness import poll_until
from master.leader import LeaderRole
from tests.helpers.nodes import Nodes, nodes

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture
T, G = "orders", "g"
# the revive pass commits a group's offset on every pass (its cadence is a unit test's)
SETTINGS = {"broker.pop_max_attempts": 2, "broker.pop_commit_interval_ms": 0}


class Client:
    def __init__(self, node: BrokerNode) -> None:
        self.channel = grpc.insecure_channel(node.address)
        self.stub = broker_pb2_grpc.BrokerStub(self.channel)

    def pop(self, n: int = 32, inv: int = 10_000, wait: int = 0) -> list[pb.PoppedRecord]:
        req = pb.PopRequest(group=G, topic=T, queue_id=0, max_messages=n, invisible_ms=inv, max_wait_ms=wait)
        return list(self.stub.Pop(req, timeout=10).messages)

    def ack(self, *handles: str) -> list[str]:
        reply = self.stub.AckPop(pb.AckPopRequest(group=G, topic=T, receipt_handles=handles), timeout=10)
        return [r.error_code for r in reply.results]

    def change(self, handle: str, inv: int, keep: bool = False) -> pb.ChangeInvisibleResponse:
        req = pb.ChangeInvisibleRequest(
            group=G, topic=T, receipt_handle=handle, invisible_ms=inv, keep_handle=keep
        )
        return self.stub.ChangeInvisible(req, timeout=10)

    def dead_letter(self, handle: str) -> pb.PopDeadLetterResponse:
        req = pb.PopDeadLetterRequest(group=G, topic=T, receipt_handle=handle)
        return self.stub.PopDeadLetter(req, timeout=10)


def body(m: pb.PoppedRecord) -> bytes:
    return decode_record(m.record).body


def fake_clock(node: BrokerNode) -> list[int]:
    clock = [int(time.time() * 1000)]
    role = node.core.role
    assert isinstance(role, LeaderRole)
    role.popper.clock = lambda: clock[0]
    return clock


def state(t: PopTable) -> dict[Any, Any]:
    return {k: (q.cursor, q.next_gen, dict(q.inflight)) for k in t.queues() if (q := t.get(k)) is not None}


@pytest.fixture
def master(nodes: Nodes) -> Iterator[BrokerNode]:
    node = nodes.master(SETTINGS)
    with Admin(node.address) as admin:
        admin.create_topic(T, 1)
    with Producer(node.address) as prod:
        for b in (b"a", b"b", b"c"):
            prod.send(T, b, queue_id=0)
    yield node


def test_pop_ack_change_and_redelivery(master: BrokerNode) -> None:
    clock = fake_clock(master)
    c = Client(master)
    got = c.pop(2, inv=1000)
    assert [(body(m), m.attempt) for m in got] == [(b"a", 1), (b"b", 1)]
    assert got[0].deadline_ms == clock[0] + 1000
    assert c.ack(got[0].receipt_handle) == [""]
    assert c.ack(got[0].receipt_handle, "forged") == ["INVALID_RECEIPT_HANDLE"] * 2
    changed = c.change(got[1].receipt_handle, 60_000)
    assert changed.receipt_handle != got[1].receipt_handle
    with pytest.raises(grpc.RpcError) as rpc:
        c.change(got[1].receipt_handle, 10)
    assert rpc.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert dict(rpc.value.trailing_metadata())[ERROR_CODE_KEY] == "INVALID_RECEIPT_HANDLE"  # type: ignore[attr-defined]
    (third,) = c.pop(inv=1000)
    assert body(third) == b"c"
    clock[0] += 500
    renewed = c.change(third.receipt_handle, 500, keep=True)  # a renewal: same handle, no earlier deadline
    assert (renewed.receipt_handle, renewed.deadline_ms) == (third.receipt_handle, third.deadline_ms)
    clock[0] += 500  # c is visible again, b is not (changed)
    (again,) = c.pop(inv=1000)
    assert (body(again), again.attempt) == (b"c", 2)
    assert c.ack(third.receipt_handle) == ["INVALID_RECEIPT_HANDLE"]
    at = master.core.store.commitlog.max_offset
    assert c.ack(again.receipt_handle, "forged", changed.receipt_handle) == ["", "INVALID_RECEIPT_HANDLE", ""]
    acks = [(p["op"], p["o"]) for p in master.core.store.system_payloads("pop", at)]
    assert acks == [("ack", [2, 1])]  # one record for the call (review risk 13)
    poll_until(lambda: master.core.offsets.query(G, T, 0) == 3, 10, "the group's offset followed the acks")
    c.channel.close()


def test_a_tag_filter_over_grpc(master: BrokerNode) -> None:
    with Producer(master.address) as prod:
        prod.send(T, b"tagged", queue_id=0, tags="t")
    c = Client(master)
    bad = pb.PopRequest(group=G, topic=T, queue_id=0, invisible_ms=1000, tag_expression="t ||")
    with pytest.raises(grpc.RpcError) as rpc:
        c.stub.Pop(bad, timeout=10)
    assert dict(rpc.value.trailing_metadata())[ERROR_CODE_KEY] == "INVALID_ARGUMENT"  # type: ignore[attr-defined]
    req = pb.PopRequest(group=G, topic=T, queue_id=0, invisible_ms=1000, tag_expression="u || t")
    assert [body(m) for m in c.stub.Pop(req, timeout=10).messages] == [b"tagged"]
    assert master.core.pops.commit_point((G, T, 0)) == 3  # a, b and c (no tag) consumed
    c.channel.close()


def test_long_poll(master: BrokerNode) -> None:
    c = Client(master)
    for m in c.pop():
        c.ack(m.receipt_handle)
    t0 = time.monotonic()
    assert c.pop(wait=300) == []
    assert time.monotonic() - t0 >= 0.25
    with Producer(master.address) as prod:
        threading.Timer(0.2, lambda: prod.send(T, b"late", queue_id=0)).start()
        got = c.pop(wait=5000)
    assert [body(m) for m in got] == [b"late"]
    c.channel.close()


def test_dead_letter_after_max_attempts(master: BrokerNode) -> None:
    clock = fake_clock(master)
    c = Client(master)
    for attempt in (1, 2):
        got = c.pop(1, inv=100)
        assert [(body(m), m.attempt) for m in got] == [(b"a", attempt)]
        clock[0] += 100
    poll_until(lambda: master.core.store.topics.queue_count("%DLQ%g") is not None, 10, "the DLQ made")

    def dead() -> list[Any]:
        read = master.core.store.read("%DLQ%g", 0, 0, 10, 1 << 20)
        return list(iter_records(read.data, verify=False))

    poll_until(lambda: len(dead()) == 1, 10, "the message in the DLQ")
    (rec,) = dead()
    assert (rec.body, rec.properties[RECONSUME_TIMES]) == (b"a", "2")
    assert [body(m) for m in c.pop()] == [b"b", b"c"]  # a is acked: never again
    c.channel.close()


def test_a_client_dead_letters_over_grpc(master: BrokerNode) -> None:
    c = Client(master)
    (m,) = c.pop(1)
    with pytest.raises(grpc.RpcError) as rpc:
        c.dead_letter("forged")
    assert dict(rpc.value.trailing_metadata())[ERROR_CODE_KEY] == "INVALID_RECEIPT_HANDLE"  # type: ignore[attr-defined]
    assert master.core.store.topics.queue_count("%DLQ%g") is None
    assert c.dead_letter(m.receipt_handle).served_by == master.core.broker_id
    (rec,) = iter_records(master.core.store.read("%DLQ%g", 0, 0, 10, 1 << 20).data, verify=False)
    assert (rec.body, rec.properties[RECONSUME_TIMES]) == (b"a", "1")
    assert c.ack(m.receipt_handle) == ["INVALID_RECEIPT_HANDLE"]  # settled
    c.channel.close()


def test_the_slave_has_the_state_and_refuses_pops(nodes: Nodes, master: BrokerNode) -> None:
    slave = nodes.slave(master)
    c = Client(master)
    got = c.pop(2)
    c.ack(got[0].receipt_handle)
    c.change(got[1].receipt_handle, 30_000)
    poll_until(lambda: state(slave.core.pops) == state(master.core.pops), 10, "the slave applied the records")
    s = Client(slave)
    for call in (lambda: s.pop(), lambda: s.ack("x"), lambda: s.change("x", 1), lambda: s.dead_letter("x")):
        with pytest.raises(grpc.RpcError) as rpc:
            call()
        assert dict(rpc.value.trailing_metadata())[ERROR_CODE_KEY] == "NOT_MASTER"  # type: ignore[attr-defined]
    c.channel.close()
    s.channel.close()


def test_a_restart_keeps_in_flight_state_and_acks(nodes: Nodes, master: BrokerNode) -> None:
    c = Client(master)
    got = c.pop(3, inv=60_000)
    assert c.ack(got[1].receipt_handle) == [""]
    before = state(master.core.pops)
    c.channel.close()
    master.stop()
    nodes.started.remove(master)  # (stopped: not again at the end, over the new one's files)
    again = nodes.start("master", SETTINGS)
    assert state(again.core.pops) == before
    c = Client(again)
    assert c.pop() == []  # a and c are still invisible
    assert c.ack(got[1].receipt_handle, got[0].receipt_handle, got[2].receipt_handle) == [
        "INVALID_RECEIPT_HANDLE", "", ""
    ]  # fmt: skip
    c.channel.close()


def test_a_promoted_slave_takes_the_old_masters_handles(nodes: Nodes, master: BrokerNode) -> None:
    """The slave applied the records and shares the handle key: promoted (by
    hand here; failover drills are the next slice's), it honours the
    handles the old master gave out, and its own generations start above
    its epoch's floor."""
    slave = nodes.slave(master)
    c = Client(master)
    got = c.pop(3, inv=60_000)
    c.ack(got[0].receipt_handle)
    poll_until(lambda: state(slave.core.pops) == state(master.core.pops), 10, "the slave applied the records")
    c.channel.close()
    master.stop()
    nodes.started.remove(master)
    slave.core.promote(7)
    s = Client(slave)
    changed = s.change(got[1].receipt_handle, 60_000)
    assert s.ack(got[0].receipt_handle, got[2].receipt_handle, changed.receipt_handle) == [
        "INVALID_RECEIPT_HANDLE", "", ""
    ]  # fmt: skip
    q = slave.core.pops.get((G, T, 0))
    assert q is not None and q.next_gen > 7 << 32 and not q.inflight
    s.channel.close()
