"""The retry schedule of a real broker process (plaintext, no accounts) cannot
be jammed: after each of the three attacks issue 16 observed, a normal failed
message is still redelivered on time."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from consumer import Producer
from core.grpc_status import ERROR_CODE_KEY
from core.offsets import U64
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from core.record import iter_records
from deploy.harness import ProcessGroup
from deploy.waits import poll_until

pytestmark = pytest.mark.integration
DELAY_S = 0.5  # level 1, the first attempt's
SLACK_S = 5.0  # a loaded machine; a jam is two hours or for good


def refused(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    return err.code(), dict(err.trailing_metadata() or ()).get(ERROR_CODE_KEY, "")  # type: ignore[attr-defined]


def test_the_three_observed_jams_no_longer_jam(procs: ProcessGroup) -> None:
    b = procs.broker("b", extra=["--set", f'broker.retry_delays="{int(DELAY_S * 1000)}ms 30s"'])
    with Producer(b.address) as prod:
        prod.send("orders", b"first")
    channel = grpc.insecure_channel(b.address)
    stub = broker_pb2_grpc.BrokerStub(channel)

    def send_back(body: bytes, group: str = "g", props: dict[str, str] | None = None) -> pb.SendBackResponse:
        msg = pb.Message(body=body, properties=props or {})
        req = pb.SendBackRequest(group=group, topic="orders", message=msg, max_reconsume=16)
        return stub.SendBack(req, timeout=5)  # type: ignore[no-any-return]

    def retried() -> list[bytes]:
        req = pb.PullRequest(group="reader", topic="%RETRY%g", queue_id=0, max_messages=100)
        try:
            r = stub.Pull(req, timeout=5)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                return []  # the retry topic is made by the first move
            raise
        return [m.body for m in iter_records(r.records, verify=False)]

    def scheduler_settled() -> bool:
        """Every due message moved and the scheduler's progress committed
        (a commit is a record in the log: it would move max_offset)."""
        levels = stub.GetQueueOffsets(pb.GetQueueOffsetsRequest(topic="%SCHEDULE%"), timeout=5).queues
        for q in levels:
            req = pb.QueryOffsetRequest(group="%SCHEDULER%", topic="%SCHEDULE%", queue_id=q.queue_id)
            done = stub.QueryOffset(req, timeout=5)
            if q.max_offset > q.min_offset and (not done.found or done.offset < q.max_offset):
                return False
        return True

    def redelivered_on_time(body: bytes) -> None:
        t0 = time.monotonic()
        assert send_back(body).destination == "%SCHEDULE%"
        poll_until(lambda: body in retried(), DELAY_S + SLACK_S, f"{body!r} redelivered", every_s=0.02)
        assert time.monotonic() - t0 >= DELAY_S - 0.1  # not early either

    try:
        # 1. an attempt count the broker never wrote: one level, its own delay
        r = send_back(b"attack 1", props={"RECONSUME_TIMES": "-1"})
        assert r.destination == "%SCHEDULE%" and r.attempts == 1
        redelivered_on_time(b"normal 1")

        # 2. a group whose retry topic name would be too long: refused, nothing stored
        poll_until(scheduler_settled, 10, "the scheduler committing its progress")  # its own write
        before = stub.Status(pb.StatusRequest(), timeout=5).max_offset
        assert refused(lambda: send_back(b"attack 2", group="g" * 200)) == (
            grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
        )  # fmt: skip
        assert stub.Status(pb.StatusRequest(), timeout=5).max_offset == before
        redelivered_on_time(b"normal 2")

        # 3. the scheduler's own offset moved past the end: refused (no accounts on this broker)
        jam = pb.CommitOffsetRequest(group="%SCHEDULER%", topic="%SCHEDULE%", queue_id=0, offset=U64)
        assert refused(lambda: stub.CommitOffset(jam, timeout=5)) == (
            grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
        )  # fmt: skip
        past = pb.CommitOffsetRequest(group="g", topic="orders", queue_id=0, offset=U64)
        assert refused(lambda: stub.CommitOffset(past, timeout=5)) == (
            grpc.StatusCode.INVALID_ARGUMENT, "INVALID_OFFSET",
        )  # fmt: skip
        lock = pb.LockQueuesRequest(
            group="%SCHEDULER%", topic="orders", client_id="x", queue_ids=[0], lease_ms=60_000
        )
        assert refused(lambda: stub.LockQueues(lock, timeout=5))[0] == grpc.StatusCode.INVALID_ARGUMENT
        redelivered_on_time(b"normal 3")
        assert retried()[:2] == [b"attack 1", b"normal 1"]  # due order kept within the level
    finally:
        channel.close()
