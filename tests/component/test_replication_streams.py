"""Replication streams cannot pin a leader's threads: a stream that never
says who it is is closed at the handshake deadline, and streams are capped."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from core.pb.tailrace.v1 import broker_pb2, broker_pb2_grpc, replication_pb2_grpc
from deploy.waits import poll_until
from tests.helpers.nodes import Nodes, nodes

pytestmark = pytest.mark.component
__all__ = ["nodes"]  # the fixture


def test_silent_replication_streams_are_closed_at_the_handshake_deadline(nodes: Nodes) -> None:
    master = nodes.master({"server.max_workers": 4, "replication.handshake_timeout_ms": 500})
    channel = grpc.insecure_channel(master.address)
    stop = threading.Event()

    def silence() -> Iterator[object]:
        stop.wait(30)  # never sends a handshake
        return
        yield

    streams = [replication_pb2_grpc.ReplicationStub(channel).Replicate(silence()) for _ in range(4)]  # type: ignore[no-untyped-call]
    try:
        # the four streams hold the four server threads (each waits for its handshake for 500 ms)
        poll_until(lambda: master.replication.open_streams == 4, 5, "four silent streams being served")
        t0 = time.monotonic()
        status = broker_pb2_grpc.BrokerStub(channel).Status(broker_pb2.StatusRequest(), timeout=10)  # type: ignore[no-untyped-call]
        assert (
            status.role == "master" and time.monotonic() - t0 < 5
        )  # served once the silent ones were closed
        for s in streams:
            with pytest.raises(grpc.RpcError) as info:
                next(s)
            assert info.value.code() == grpc.StatusCode.CANCELLED
    finally:
        stop.set()
        channel.close()
