"""The proxy's Telemetry streams each hold a server thread: capped below
the workers (in all and per account), so open streams never starve
SendMessage, and a stream past the cap is refused at once. Also: requests
past their method's size limit are refused before they are decoded."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from core.grpc_server import build_server
from core.pb.rocketmq.v2 import definition_pb2 as d
from core.pb.rocketmq.v2 import service_pb2 as s
from core.pb.rocketmq.v2 import service_pb2_grpc
from core.rocketmq import translate
from core.rocketmq.service import MessagingService, Stored, add_to_server
from core.rocketmq.settings import ServerSettings
from core.rocketmq.streams import StreamGate
from core.roles import SendStatus
from core.route import BrokerEndpoint, GroupRoute, MessageQueue, TopicRoute
from core.security.acl import AclFile
from core.security.mqv2 import Mqv2Policy, date_of, header
from deploy.proxy_main import keepalive_options, request_limits
from deploy.waits import poll_until

pytestmark = pytest.mark.component
SECRETS = {"app": "app-secret-0123456789", "other": "other-secret-0123456789"}
WORKERS = 6
MAX_STREAMS = 4
PER_ACCOUNT = 3


class Backend:
    def route(self, topic: str, timeout_s: float, refresh: bool = False) -> TopicRoute:
        master = (BrokerEndpoint(0, "10.0.0.1:1", "master", 1, True),)
        return TopicRoute(topic, (GroupRoute("a", "c", 2, 2, "rw", master),))

    def send(
        self, batch: list[translate.Incoming], queue: MessageQueue | None, timeout_s: float
    ) -> list[Stored]:
        return [Stored(SendStatus.SEND_OK, "a", 0, i) for i in range(len(batch))]

    def max_body_bytes(self) -> int:
        return 1024


def _signed(ak: str) -> tuple[tuple[str, str], ...]:
    return header(ak, SECRETS[ak], date_of(int(time.time() * 1000)))


class Stream:
    """A raw Telemetry stream, as an official client keeps one open."""

    def __init__(self, stub: service_pb2_grpc.MessagingServiceStub, ak: str) -> None:
        self.commands: queue.Queue[s.TelemetryCommand | None] = queue.Queue()
        self.call = stub.Telemetry(self._requests(), metadata=_signed(ak), timeout=30)

    def _requests(self) -> Iterator[s.TelemetryCommand]:
        while (c := self.commands.get()) is not None:
            yield c

    def settings(self) -> s.TelemetryCommand:
        self.commands.put(s.TelemetryCommand(settings=d.Settings(client_type=d.PRODUCER)))
        return next(self.call)

    def close(self) -> None:
        self.commands.put(None)
        self.call.cancel()


def test_streams_past_the_cap_are_refused_and_sends_still_answer(tmp_path: Path) -> None:
    acl = tmp_path / "acl.toml"
    acl.write_text(
        "".join(
            f'[[account]]\naccess_key = "{a}"\nsecret_key = "{k}"\npublish = ["orders"]\n'
            for a, k in SECRETS.items()
        )
    )
    acl.chmod(0o600)
    policy = Mqv2Policy(AclFile(acl, int(time.time() * 1000)))
    server, _ = build_server(
        WORKERS, 64, 1 << 22, max_receive_bytes=1 << 20, request_limits=request_limits(1 << 20),
        options=keepalive_options(30_000),
    )  # fmt: skip
    svc = MessagingService(
        Backend(),
        policy,
        "127.0.0.1:1",
        lambda: ServerSettings(1024),
        streams=StreamGate(MAX_STREAMS, PER_ACCOUNT),
    )
    add_to_server(svc, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = service_pb2_grpc.MessagingServiceStub(channel)
    streams: list[Stream] = []
    try:
        for _ in range(PER_ACCOUNT):  # app takes its share, each stream open and answered
            streams.append(Stream(stub, "app"))
            assert streams[-1].settings().status.code == d.OK
        extra = Stream(stub, "app")  # past app's share
        streams.append(extra)
        assert extra.settings().status.code == d.TOO_MANY_REQUESTS
        streams.append(Stream(stub, "other"))  # the last of the proxy's streams
        assert streams[-1].settings().status.code == d.OK
        full = Stream(stub, "other")  # past the proxy's cap: refused at once, closed
        streams.append(full)
        t0 = time.monotonic()
        assert full.settings().status.code == d.TOO_MANY_REQUESTS
        with pytest.raises(StopIteration):
            next(full.call)
        assert time.monotonic() - t0 < 2
        assert svc.streams.open_streams() == MAX_STREAMS
        m = d.Message(topic=d.Resource(name="orders"), body=b"x")
        m.system_properties.message_id = "id-1"
        t0 = time.monotonic()
        sent = stub.SendMessage(s.SendMessageRequest(messages=[m]), metadata=_signed("app"), timeout=5)
        assert sent.status.code == d.OK and time.monotonic() - t0 < 2  # threads are left for it
        streams[0].close()  # a stream that ends frees its place
        poll_until(lambda: svc.streams.open_streams() < MAX_STREAMS, 5, "the closed stream's place freed")
        again = Stream(stub, "app")
        streams.append(again)
        assert again.settings().status.code == d.OK
        with pytest.raises(grpc.RpcError) as info:
            # 64 KiB is every request's limit but SendMessage's: refused before it is decoded
            stub.QueryRoute(s.QueryRouteRequest(topic=d.Resource(name="o" * 70_000)), timeout=5)
        assert info.value.code() != grpc.StatusCode.OK
    finally:
        for st in streams:
            st.close()
        channel.close()
        server.stop(0)
