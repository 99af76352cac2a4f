"""Issue 16's bounds against a real broker process: what a client sends is
refused before it costs the broker memory, and nothing is stored."""

from __future__ import annotations

import grpc
import psutil
import pytest

from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from deploy.harness import ProcessGroup

pytestmark = pytest.mark.integration


def test_a_send_too_large_is_refused_before_it_is_decoded(procs: ProcessGroup) -> None:
    """The issue's 9.8 MB send of 900,000 tiny properties: refused as
    MESSAGE_TOO_LARGE without the broker decoding it (it took 590 MB more
    memory first); a message with too many properties is refused too."""
    b = procs.broker("b")
    ch = grpc.insecure_channel(b.address, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = broker_pb2_grpc.BrokerStub(ch)  # type: ignore[no-untyped-call]
    stub.CreateTopic(pb.CreateTopicRequest(topic="t", queues=1), timeout=10)
    broker = psutil.Process(b.pid)
    before = broker.memory_info().rss
    huge = pb.SendRequest(
        topic="t", message=pb.Message(body=b"x", properties={str(i): "" for i in range(900_000)})
    )
    assert huge.ByteSize() > 9_000_000
    with pytest.raises(grpc.RpcError) as info:
        stub.Send(huge, timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "exceeds" in str(info.value.details())
    grown = broker.memory_info().rss - before
    assert grown < 200 * 2**20, f"the broker grew by {grown / 2**20:.0f} MiB"  # decoding it took +590 MB
    many = pb.SendRequest(
        topic="t", message=pb.Message(body=b"x", properties={str(i): "v" for i in range(200)})
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.Send(many, timeout=10)
    assert "max_properties" in str(info.value.details())
    offsets = stub.GetQueueOffsets(pb.GetQueueOffsetsRequest(topic="t"), timeout=10)
    assert [q.max_offset for q in offsets.queues] == [0]  # nothing stored
    ch.close()
