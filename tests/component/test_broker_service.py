"""The Broker servicer's answers to bad input, through real gRPC to a broker
in this process: a clear error with its status and code, nothing stored, and
the broker still serving."""

from __future__ import annotations

import grpc
import pytest

from consumer import Admin, Producer
from core.errors import (
    InvalidArgumentError,
    InvalidQueueError,
    InvalidTopicError,
    MessageTooLargeError,
    UnknownTopicError,
)
from core.grpc_status import ERROR_CODE_KEY, grpc_status_for
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from tests.helpers.nodes import Nodes, nodes

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture


def _raw_call(address: str, method: str, payload: bytes) -> grpc.RpcError:
    channel = grpc.insecure_channel(address)
    try:
        call = channel.unary_unary(
            f"/tailrace.v1.Broker/{method}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as exc:
            call(payload, timeout=10)
        return exc.value  # type: ignore[return-value]
    finally:
        channel.close()


def test_bad_input_over_grpc_stores_nothing(nodes: Nodes) -> None:
    b = nodes.master({"broker.auto_create_topics": False, "store.max_message_bytes": 65536})
    with Admin(b.address) as admin:
        admin.create_topic("ok", 2)
        before = admin.status()["max_offset"]
        # (a short retry budget: a producer retries an unknown topic, which a route may learn of)
        with Producer(b.address, retry_timeout_s=1) as prod:
            cases = [
                (lambda: prod.send("ok", b"x" * 100_000), MessageTooLargeError, "RESOURCE_EXHAUSTED"),
                (lambda: prod.send("bad/topic", b"x"), InvalidTopicError, "INVALID_ARGUMENT"),
                (lambda: prod.send("missing", b"x"), UnknownTopicError, "NOT_FOUND"),
                (lambda: prod.send("ok", b"x", queue_id=7), InvalidQueueError, "INVALID_ARGUMENT"),
                (lambda: prod.send("ok", b"x", queue_id=-3), InvalidQueueError, "INVALID_ARGUMENT"),
                (lambda: prod.send_batch("ok", []), InvalidArgumentError, "INVALID_ARGUMENT"),
            ]
            for fn, error, status in cases:
                with pytest.raises(error) as exc:
                    fn()
                assert exc.value.message  # a clear message came back
                assert grpc_status_for(exc.value).name == status  # and the gRPC status it travels as
        # the raw gRPC view: status code and the Tailrace code in trailing metadata
        channel = grpc.insecure_channel(b.address)
        stub = broker_pb2_grpc.BrokerStub(channel)
        with pytest.raises(grpc.RpcError) as rpc:
            stub.Send(pb.SendRequest(topic="missing", queue_id=0, message=pb.Message(body=b"x")))
        assert rpc.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        md = dict(rpc.value.trailing_metadata())  # type: ignore[attr-defined]
        assert md[ERROR_CODE_KEY] == "UNKNOWN_TOPIC" and "missing" in rpc.value.details()  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as rpc:
            stub.Pull(pb.PullRequest(group="bad group!", topic="ok", queue_id=0), timeout=5)
        assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as rpc:
            stub.Pull(pb.PullRequest(group="g", topic="ok", queue_id=0, subscription="A||"), timeout=5)
        assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        absurd = stub.Pull(pb.PullRequest(group="g", topic="ok", queue_id=0, queue_offset=2**63), timeout=5)
        assert absurd.status == pb.OFFSET_OVERFLOW and absurd.next_queue_offset == 0
        channel.close()
        # garbage bytes: not protobuf at all, and invalid UTF-8 in the topic field
        for payload in (b"\xff\xff\xff\xff", b"\x0a\x02\xff\xfe\x10\x00"):
            err = _raw_call(b.address, "Send", payload)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err  # type: ignore[attr-defined]
            assert "does not decode" in (err.details() or "")  # type: ignore[attr-defined]
        status = admin.status()
        assert status["max_offset"] == before  # nothing stored
        assert admin.list_topics() == {"ok": 2}
        with Producer(b.address) as prod:  # and the broker still serves
            assert prod.send("ok", b"fine").status == "SEND_OK"


def test_a_refused_pull_leaves_no_metrics_series(nodes: Nodes) -> None:
    """Client strings become metric labels only for pulls that are served: a
    refused group name (here 64 KiB of it) adds no series."""
    from prometheus_client import generate_latest

    b = nodes.master()
    b.core.leader().create_topic("T", 1)
    with grpc.insecure_channel(b.address) as ch:
        stub = broker_pb2_grpc.BrokerStub(ch)
        stub.Send(pb.SendRequest(topic="T", queue_id=0, message=pb.Message(body=b"x")), timeout=5)
        for group in ("bad group!", "g" * 65_536):
            with pytest.raises(grpc.RpcError) as rpc:
                stub.Pull(pb.PullRequest(group=group, topic="T", queue_id=0), timeout=5)
            assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        stub.Pull(pb.PullRequest(group="fine", topic="T", queue_id=0), timeout=5)
    text = generate_latest(b.core.metrics.registry)
    assert b'group="fine"' in text  # the served pull is counted
    assert b"bad group" not in text and b"ggggg" not in text


def test_a_refused_send_back_or_follower_pull_changes_nothing(nodes: Nodes) -> None:
    master = nodes.master()
    master.core.leader().create_topic("T", 1)
    slave = nodes.slave(master)
    big = pb.Message(body=b"x" * (300 * 1024))  # past store.max_message_bytes (256 KiB here)
    with grpc.insecure_channel(master.address) as m, grpc.insecure_channel(slave.address) as s:
        for max_reconsume in (3, 0):  # to the schedule, and straight to the dead letters
            req = pb.SendBackRequest(group="G", topic="T", message=big, max_reconsume=max_reconsume)
            with pytest.raises(grpc.RpcError) as rpc:
                broker_pb2_grpc.BrokerStub(m).SendBack(req, timeout=5)
            assert rpc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]  # too large
        assert master.core.list_topics() == [("T", 1)]  # no %SCHEDULE% or %DLQ%G left behind
        before = dict(slave.core.advice_counts)
        with pytest.raises(grpc.RpcError) as rpc:
            broker_pb2_grpc.BrokerStub(s).Pull(
                pb.PullRequest(group="G", topic="nope", queue_id=0, queue_offset=5), timeout=5
            )
        assert rpc.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        assert dict(slave.core.advice_counts) == before
