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
