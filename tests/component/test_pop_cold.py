"""Cold pops through real gRPC (issue 18): a master and a slave in this
process, a 1-byte page-cache budget (every backlog is cold). A Pop with
`bodies_elsewhere` reads no CommitLog byte on the master and names the
slave; the bodies come from the slave's Pull (consumer/cold_reads.py);
without the flag the master answers the bodies as before."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from consumer import Admin, Producer
from consumer.cold_reads import fetch_bodies
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from core.pop.ops import PoppedElsewhere
from core.subscription import Subscription
from deploy.broker_node import BrokerNode
from tests.helpers.nodes import Nodes, nodes

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture
T, G = "orders", "g"
COLD = {"pull.budget_bytes": 1}


class CommitLogReads:
    """Counts the master's record reads and CommitLog views while on."""

    def __init__(self, node: BrokerNode, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        store = node.core.store
        for obj, name in ((store, "read"), (store.commitlog, "view")):
            monkeypatch.setattr(obj, name, self._counting(getattr(obj, name)))

    def _counting(self, real: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        return wrapped


def stub(node: BrokerNode) -> tuple[grpc.Channel, broker_pb2_grpc.BrokerStub]:
    channel = grpc.insecure_channel(node.address)
    return channel, broker_pb2_grpc.BrokerStub(channel)


@pytest.fixture
def pair(nodes: Nodes) -> Iterator[tuple[BrokerNode, BrokerNode]]:
    master = nodes.master(COLD)
    slave = nodes.slave(master, overrides=COLD)
    with Admin(master.address) as admin:
        admin.create_topic(T, 1)
    with Producer(master.address) as prod:
        prod.send_batch(T, [f"m{i}".encode() for i in range(10)], queue_id=0)
    wait_caught_up_nodes(master, slave)
    yield master, slave


def wait_caught_up_nodes(master: BrokerNode, slave: BrokerNode) -> None:
    deadline = time.monotonic() + 10
    while slave.core.store.commitlog.max_offset < master.core.store.commitlog.max_offset:
        assert time.monotonic() < deadline, "the slave did not catch up"
        time.sleep(0.02)


def test_a_cold_pop_reads_nothing_on_the_master_and_the_slave_serves_the_bodies(
    pair: tuple[BrokerNode, BrokerNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    master, slave = pair
    reads = CommitLogReads(master, monkeypatch)
    channel, m = stub(master)
    req = pb.PopRequest(
        group=G, topic=T, queue_id=0, max_messages=6, invisible_ms=60_000, bodies_elsewhere=True
    )
    reply = m.Pop(req, timeout=10)
    assert reads.calls == 0  # no CommitLog read on the master for the cold pop
    assert [(r.record, r.queue_id, r.queue_offset, r.read_from) for r in reply.messages] == [
        (b"", 0, o, 1) for o in range(6)
    ]
    assert (reply.suggested_broker_id, reply.suggestion_reason) == (1, "backlog_over_budget")
    refs = [
        PoppedElsewhere(
            r.queue_id,
            r.queue_offset,
            r.size,
            r.read_from,
            r.attempt,
            r.receipt_handle,
            r.deadline_ms,
            r.physical_offset,
        )
        for r in reply.messages
    ]
    s_channel, s = stub(slave)
    s_out = slave.core.metrics.messages_out.labels(T)
    before = s_out._value.get()

    def pull(broker: int, queue: int, offset: int, count: int, nbytes: int, timeout: float) -> bytes:
        target = s if broker == 1 else m
        req = pb.PullRequest(
            group=G, topic=T, queue_id=queue, queue_offset=offset, max_messages=count, max_bytes=nbytes
        )
        out = target.Pull(req, timeout=timeout)
        return bytes(out.records) if out.status == pb.FOUND else b""

    got = fetch_bodies(refs, pull, Subscription.parse("*"), time.monotonic() + 10, time.monotonic, T)
    assert [msg.record.body for msg in got.messages] == [f"m{i}".encode() for i in range(6)]
    assert got.served_by == {1: 6} and reads.calls == 0
    assert s_out._value.get() - before == 6  # the slave served them (one pull)
    acks = m.AckPop(pb.AckPopRequest(group=G, topic=T, receipt_handles=[r.handle for r in got.messages]))
    assert [r.error_code for r in acks.results] == [""] * 6
    assert master.core.status()["details"]["popped"] == {"here": 0, "elsewhere": 6}
    channel.close()
    s_channel.close()


def test_without_the_flag_the_master_answers_the_bodies(pair: tuple[BrokerNode, BrokerNode]) -> None:
    master, _ = pair
    channel, m = stub(master)
    reply = m.Pop(
        pb.PopRequest(group=G, topic=T, queue_id=0, max_messages=2, invisible_ms=60_000), timeout=10
    )
    assert [len(r.record) == r.size > 0 for r in reply.messages] == [True, True]
    assert [r.queue_offset for r in reply.messages] == [0, 1]
    channel.close()
