"""Issue 16, "idle queues are cheap": a broker process restarts (after a stop
and after kill -9) on a data dir of 10,000 one-message queues, holding few
descriptors, and serves cold queues right."""

from __future__ import annotations

import grpc
import pytest

from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from core.record import iter_records
from core.store import MessageStore, StoreConfig
from deploy.harness import ProcessGroup, TailraceProcess
from tests.helpers.idle_queues import (
    QUEUES_PER_TOPIC,
    TOPICS,
    body_of,
    build,
    open_fds,
    sample_keys,
    topic_name,
)

pytestmark = pytest.mark.integration

SEGMENT = 64 * 1024 * 1024  # the harness's broker segment size
BROKER_FDS = 64  # a broker holds ~15 with no queue mapped (gRPC, its log, the lock, a segment)


def serves_cold_queues(b: TailraceProcess) -> None:
    channel = grpc.insecure_channel(b.address)
    try:
        stub = broker_pb2_grpc.BrokerStub(channel)
        for topic, q in sample_keys():
            r = stub.Pull(pb.PullRequest(group="g", topic=topic, queue_id=q, max_messages=8), timeout=10)
            assert r.status == pb.FOUND, (topic, q, pb.PullStatus.Name(r.status))
            recs = list(iter_records(r.records))
            assert [(x.topic, x.queue_id, x.queue_offset, x.body) for x in recs] == [
                (topic, q, 0, body_of(topic, q))
            ]
        last = topic_name(TOPICS - 1)
        offs = stub.GetQueueOffsets(pb.GetQueueOffsetsRequest(topic=last), timeout=10)
        assert [(o.queue_id, o.min_offset, o.max_offset) for o in offs.queues] == [
            (q, 0, 1) for q in range(QUEUES_PER_TOPIC)
        ]
    finally:
        channel.close()


@pytest.mark.slow  # CI time (README: the slow set)
def test_broker_restarts_on_ten_thousand_idle_queues(procs: ProcessGroup) -> None:
    data = procs.workdir / "b" / "data"
    s = MessageStore(data, StoreConfig(segment_bytes=SEGMENT, warm_segments=False))
    build(s, open_fds())
    s.close()

    b = procs.broker("b")
    assert open_fds(b.pid) <= BROKER_FDS
    serves_cold_queues(b)
    assert open_fds(b.pid) <= BROKER_FDS + len(sample_keys())

    b.kill()  # an unclean stop: recovery must not open every queue either
    b.restart()
    assert open_fds(b.pid) <= BROKER_FDS
    serves_cold_queues(b)
    b.stop()
    b.restart()
    serves_cold_queues(b)
