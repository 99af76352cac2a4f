"""Quotas on a real broker (in-process, real gRPC): topics beyond the limit
are refused as RESOURCE_EXHAUSTED naming it, explicitly or by auto-create,
nothing is stored, and the quotas show in the metrics."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import generate_latest

from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from core.record import Message
from deploy.waits import poll_until
from tests.helpers.nodes import Nodes, nodes

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture


def test_topics_beyond_the_quota_are_refused_and_counted(nodes: Nodes) -> None:
    master = nodes.master()
    have = len(master.core.store.topics.names())  # the broker's own (schedule) topics count too
    master.stop()
    nodes.started.remove(master)
    master = nodes.start("master2", {"quotas.max_topics": have + 2})
    stub = broker_pb2_grpc.BrokerStub(grpc.insecure_channel(master.address))  # type: ignore[no-untyped-call]
    stub.CreateTopic(pb.CreateTopicRequest(topic="a", queues=1), timeout=5)
    stub.Send(pb.SendRequest(topic="b", message=pb.Message(body=b"x")), timeout=5)  # auto-created
    for call in (
        lambda: stub.CreateTopic(pb.CreateTopicRequest(topic="c", queues=1), timeout=5),
        lambda: stub.Send(pb.SendRequest(topic="d", message=pb.Message(body=b"x")), timeout=5),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "quotas.max_topics" in str(info.value.details())
    assert {"a", "b"} <= set(master.core.store.topics.names())
    assert not {"c", "d"} & set(master.core.store.topics.names())  # nothing stored
    text = generate_latest(master.core.metrics.registry).decode()
    assert f'tailrace_quota_used{{quota="topics"}} {float(have + 2)}' in text
    assert f'tailrace_quota_limit{{quota="topics"}} {float(have + 2)}' in text


def test_the_retention_floor_counts_only_live_groups_commits(nodes: Nodes) -> None:
    """Retention keeps what a live group has committed but not read; a queue
    it never committed holds nothing back (a client that never commits cannot
    hold the log forever), and a commit below the oldest message counts from it."""
    master = nodes.master()
    core, store = master.core, master.core.store
    core.leader().create_topic("t", 1)
    stored = core.leader().send("t", 0, [Message("t", 0, b"x") for _ in range(5)])
    assert stored.status == "SEND_OK"
    core.heartbeat("g", "t", "c1", 60_000)  # a live member, no commit yet
    assert core.retention_floor() is None
    core.leader().commit_offset("g", "t", 0, 2)
    assert core.retention_floor() == store.physical_offset_of("t", 0, 2)
    core.leader().commit_offset("g", "t", 0, 5)  # read everything: nothing held
    assert core.retention_floor() is None
    core.unregister("g", "t", "c1")
    core.leader().commit_offset("g", "t", 0, 0)
    assert core.retention_floor() is None  # no live member: its commit holds nothing


def test_a_slave_keeps_what_its_master_keeps(nodes: Nodes) -> None:
    """Consumers heartbeat to masters only: the master sends its retention
    floor in the replication heartbeat, and the slave holds the same."""
    master = nodes.master()
    core = master.core
    core.leader().create_topic("t", 1)
    core.leader().send("t", 0, [Message("t", 0, b"x") for _ in range(5)])
    slave = nodes.slave(master)
    assert slave.core.retention_floor() == 0  # nothing heard yet: keep everything
    core.heartbeat("g", "t", "c1", 60_000)
    core.leader().commit_offset("g", "t", 0, 2)
    want = core.retention_floor()
    assert want is not None
    poll_until(lambda: slave.core.retention_floor() == want, 10, "the slave to hear the master's floor")
    core.leader().commit_offset("g", "t", 0, 5)  # all read: nothing held back, on both
    poll_until(lambda: slave.core.retention_floor() is None, 10, "the slave to let go too")
