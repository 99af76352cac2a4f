"""Clients over TLS with signed calls, against a tiny in-process server.

One gRPC server in this process serves a fake nameserver and a fake broker
(no interceptor: each handler checks the call's signature itself with
core/security/signing.py's `verify`, for its own method path) on a TLS
port whose certificate comes from a test CA, and on a plaintext port. The
clients are built from profiles, as a user builds them.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from consumer import Admin, Producer, PullConsumer
from consumer.aio import AsyncProducer
from consumer.aio.channels import AioStubs
from consumer.channels import open_aio_channel, open_channel
from consumer.connection import BrokerConnection
from consumer.profile import Profile
from core.errors import BrokerUnavailableError, PermissionDeniedError, UnauthenticatedError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc, nameserver_pb2_grpc
from core.pb.tailrace.v1 import nameserver_pb2 as npb
from core.security.certs import CertificateAuthority
from core.security.signing import verify

pytestmark = pytest.mark.component
SECRET = "app-secret-app-secret"
BROKER = "/tailrace.v1.Broker/"
NAMESERVER = "/tailrace.v1.NameServer/"


@dataclass
class Seen:
    """What the server saw, and what it demands."""

    calls: list[tuple[str, str | None]] = field(default_factory=list)  # (method, access key or None)
    require_signature: bool = False
    deny: set[str] = field(default_factory=set)  # methods answered PERMISSION_DENIED
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, method: str, context: grpc.ServicerContext) -> None:
        """Authenticate the call as the real guard does: its signature must be
        for `method`, the handler's own path."""
        try:
            account = verify(
                context.invocation_metadata(),
                method,
                int(time.time() * 1000),
                lambda ak: SECRET if ak == "app" else None,
            )
        except UnauthenticatedError as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
        with self.lock:
            self.calls.append((method, account.access_key if account else None))
        if account is None and self.require_signature:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "this server requires a signed request")
        if method in self.deny:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"account 'app' may not call {method}")

    def methods(self) -> set[str]:
        with self.lock:
            return {m for m, _ in self.calls}


class FakeNameServer(nameserver_pb2_grpc.NameServerServicer):
    def __init__(self, seen: Seen, broker_address: list[str]) -> None:
        self.seen = seen
        self.broker_address = broker_address  # the port clients dial (TLS or not), set per test

    def _group(self) -> npb.GroupRoute:
        master = npb.BrokerRoute(broker_id=0, address=self.broker_address[0], role="master", alive=True)
        return npb.GroupRoute(
            broker_name="g", cluster="c", read_queues=2, write_queues=2, perm="rw", brokers=[master]
        )

    def GetRoute(self, request: npb.GetRouteRequest, context: grpc.ServicerContext) -> npb.GetRouteResponse:
        self.seen.check(NAMESERVER + "GetRoute", context)
        return npb.GetRouteResponse(topic=request.topic, groups=[self._group()])

    def ListClusters(
        self, request: npb.ListClustersRequest, context: grpc.ServicerContext
    ) -> npb.ListClustersResponse:
        self.seen.check(NAMESERVER + "ListClusters", context)
        return npb.ListClustersResponse(clusters=[npb.ClusterInfo(name="c", groups=[self._group()])])


class FakeBroker(broker_pb2_grpc.BrokerServicer):
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusResponse:
        self.seen.check(BROKER + "Status", context)
        return pb.StatusResponse(broker_name="g", role="master")

    def SendBatch(self, request: pb.SendBatchRequest, context: grpc.ServicerContext) -> pb.SendResponse:
        self.seen.check(BROKER + "SendBatch", context)
        n = len(request.messages)
        return pb.SendResponse(
            status=pb.SEND_OK, topic=request.topic, queue_id=max(0, request.queue_id), broker_name="g",
            queue_offsets=list(range(n)), physical_offsets=[64 * i for i in range(n)],
        )  # fmt: skip

    def Pull(self, request: pb.PullRequest, context: grpc.ServicerContext) -> pb.PullResponse:
        self.seen.check(BROKER + "Pull", context)
        return pb.PullResponse(status=pb.NO_NEW_MSG, next_queue_offset=request.queue_offset, held=True)

    def QueryOffset(
        self, request: pb.QueryOffsetRequest, context: grpc.ServicerContext
    ) -> pb.QueryOffsetResponse:
        self.seen.check(BROKER + "QueryOffset", context)
        return pb.QueryOffsetResponse(found=True, offset=0)

    def CommitOffset(
        self, request: pb.CommitOffsetRequest, context: grpc.ServicerContext
    ) -> pb.CommitOffsetResponse:
        self.seen.check(BROKER + "CommitOffset", context)
        return pb.CommitOffsetResponse()

    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        self.seen.check(BROKER + "Heartbeat", context)
        return pb.HeartbeatResponse(members=[request.client_id])

    def Unregister(
        self, request: pb.UnregisterRequest, context: grpc.ServicerContext
    ) -> pb.UnregisterResponse:
        self.seen.check(BROKER + "Unregister", context)
        return pb.UnregisterResponse()


ECHO = "/test.Echo/"


def _echo_handlers(seen: Seen) -> grpc.GenericRpcHandler:
    """Streaming methods (the client library has none yet; its channels must sign them)."""

    def many(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        seen.check(ECHO + "Many", context)
        yield from (request, request)

    def chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        seen.check(ECHO + "Chat", context)
        yield from requests

    def total(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        seen.check(ECHO + "Total", context)
        return b"".join(requests)

    return grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Many": grpc.unary_stream_rpc_method_handler(many),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "Total": grpc.stream_unary_rpc_method_handler(total),
        },
    )


@dataclass
class Servers:
    tls: str  # the TLS port's address
    plain: str  # the plaintext port's address
    seen: Seen
    broker_address: list[str]  # what the nameserver routes to
    ca: CertificateAuthority
    dir: Path

    def profile(self, name: str, *, ca: bool = True, account: bool = True, **extra: str) -> Path:
        """A profile file (0600) for this server: TLS with the test CA, signed
        by account 'app', the nameserver on the port matching `ca`."""
        address = self.tls if ca else self.plain
        self.broker_address[0] = address
        lines = [f'namesrv = ["{address}"]']
        if ca:
            lines.append('ca_file = "pki/ca.pem"')  # relative to the profile's directory
        if account:
            lines += ['access_key = "app"', f'secret_key = "{SECRET}"']
        lines += [f'{k} = "{v}"' for k, v in extra.items()]
        path = self.dir / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        os.chmod(path, 0o600)
        return path


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    ca = CertificateAuthority.create("client test CA")
    pki = tmp_path / "pki"
    ca.save(pki)
    issued = ca.issue("test server", [], ["broker.test"], ["127.0.0.1"], pki, "server")
    creds = grpc.ssl_server_credentials([(issued.key_file.read_bytes(), issued.cert_file.read_bytes())])
    seen = Seen()
    broker_address = [""]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    nameserver_pb2_grpc.add_NameServerServicer_to_server(FakeNameServer(seen, broker_address), server)  # type: ignore[no-untyped-call]
    broker_pb2_grpc.add_BrokerServicer_to_server(FakeBroker(seen), server)  # type: ignore[no-untyped-call]
    server.add_generic_rpc_handlers((_echo_handlers(seen),))
    tls = f"127.0.0.1:{server.add_secure_port('127.0.0.1:0', creds)}"
    plain = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        yield Servers(tls, plain, seen, broker_address, ca, tmp_path)
    finally:
        server.stop(None)


def test_a_client_from_a_profile_connects_over_tls_and_signs_every_call(servers: Servers) -> None:
    path = servers.profile("client")
    profile = Profile.load(path)
    assert profile.security().tls and profile.security().signed
    with Producer(profile=path, retry_timeout_s=5) as producer:  # the profile's nameservers
        receipt = producer.send("orders", b"hello")
    assert receipt.status == "SEND_OK" and receipt.address == servers.tls
    with Admin(profile=path) as admin:
        assert admin.masters() == {"g": servers.tls}
    with Admin(servers.tls, profile=profile) as admin:
        assert admin.status()["broker_name"] == "g"
    conn = BrokerConnection(servers.tls, 5.0, profile.security())
    try:  # the pull consumer's long polls are futures: signed too
        pull = conn.stub.Pull.future(pb.PullRequest(group="G", topic="orders", queue_id=0), timeout=5)
        assert pull.result().status == pb.NO_NEW_MSG
    finally:
        conn.close()
    assert {
        NAMESERVER + "GetRoute", NAMESERVER + "ListClusters", BROKER + "SendBatch", BROKER + "Status",
        BROKER + "Pull",
    } <= servers.seen.methods()  # fmt: skip
    assert servers.seen.calls and all(ak == "app" for _, ak in servers.seen.calls)  # each verified


def test_a_pull_consumer_and_the_asyncio_clients_sign_every_call(servers: Servers) -> None:
    path = servers.profile("client")
    with PullConsumer(group="G", topic="orders", profile=path, long_poll_ms=50) as consumer:
        assert consumer.poll(300) == []  # long polls (futures) answered: nothing there
        assert len(consumer.assignment) == 2
    assert {
        BROKER + "Heartbeat", BROKER + "QueryOffset", BROKER + "Pull", BROKER + "Unregister"
    } <= servers.seen.methods()  # fmt: skip

    async def asyncio_clients() -> None:
        async with AsyncProducer(profile=path, retry_timeout_s=5) as producer:
            receipts = await producer.send_batch("orders", [b"a", b"b"])
            assert [r.queue_offset for r in receipts] == [0, 1]
        stubs = AioStubs(Profile.load(path).security())
        try:
            answer = await stubs.get(servers.tls).Pull(pb.PullRequest(group="G", topic="orders"), timeout=5)
            assert answer.status == pb.NO_NEW_MSG
        finally:
            await stubs.close()

    servers.seen.calls.clear()
    asyncio.run(asyncio_clients())
    assert {BROKER + "SendBatch", BROKER + "Pull"} <= servers.seen.methods()
    assert all(ak == "app" for _, ak in servers.seen.calls)


def test_over_plaintext_the_calls_are_signed_all_the_same(servers: Servers) -> None:
    path = servers.profile("plain", ca=False)
    assert not Profile.load(path).security().tls
    with Producer(profile=path, retry_timeout_s=5) as producer:
        assert producer.send("orders", b"x").address == servers.plain
    assert servers.seen.calls and all(ak == "app" for _, ak in servers.seen.calls)


def test_the_server_name_is_verified_instead_of_the_dialed_host(servers: Servers) -> None:
    named = Profile.load(servers.profile("named", server_name="broker.test"))
    with Admin(servers.tls, profile=named) as admin:
        assert admin.status()["role"] == "master"  # broker.test is in the certificate
    wrong = Profile.load(servers.profile("wrong", server_name="other.test"))
    with Admin(servers.tls, profile=wrong) as admin, pytest.raises(BrokerUnavailableError) as info:
        admin.status()
    assert f"{servers.tls}'s certificate does not name the host" in str(info.value)


def test_a_client_trusting_another_ca_fails_saying_the_certificate_is_not_trusted(servers: Servers) -> None:
    other = CertificateAuthority.create("someone else's CA").save(servers.dir / "other")
    path = servers.profile("other")
    text = path.read_text().replace('"pki/ca.pem"', f'"{other.cert_file}"')
    path.write_text(text)
    with Admin(servers.tls, profile=path) as admin, pytest.raises(BrokerUnavailableError) as info:
        admin.status()
    message = str(info.value)
    assert f"{servers.tls}'s certificate is not trusted" in message and str(other.cert_file) in message
    t0 = time.monotonic()
    with Producer(profile=path, retry_timeout_s=1) as producer, pytest.raises(BrokerUnavailableError) as info:
        producer.send("orders", b"x")  # the nameserver is the one it cannot trust
    assert f"{servers.tls}'s certificate is not trusted" in str(info.value)
    assert time.monotonic() - t0 < 10
    assert servers.seen.calls == []  # no call got through


def test_an_unsigned_client_is_refused_at_once_and_never_retried(servers: Servers) -> None:
    servers.seen.require_signature = True
    path = servers.profile("anonymous", account=False)
    t0 = time.monotonic()
    with Producer(profile=path, retry_timeout_s=20) as producer, pytest.raises(UnauthenticatedError) as info:
        producer.send("orders", b"x")
    assert time.monotonic() - t0 < 5  # not retried for the 20 s a failover would get
    assert "requires a signed request" in str(info.value)
    assert servers.seen.calls == [(NAMESERVER + "GetRoute", None)]  # asked once, no other nameserver


def test_a_consumer_its_group_is_refused_to_fails_at_start(servers: Servers) -> None:
    servers.seen.deny = {BROKER + "Heartbeat"}
    path = servers.profile("client")
    with pytest.raises(PermissionDeniedError, match=r"may not call /tailrace\.v1\.Broker/Heartbeat"):
        PullConsumer(group="G", topic="orders", profile=path)
    servers.seen.deny = {BROKER + "SendBatch"}
    with Producer(profile=path, retry_timeout_s=20) as producer, pytest.raises(PermissionDeniedError):
        producer.send("orders", b"x")
    sends = [m for m, _ in servers.seen.calls if m == BROKER + "SendBatch"]
    assert len(sends) == 1  # refused: not sent again to another queue or after a pause


def test_streaming_calls_are_signed_too(servers: Servers) -> None:
    security = Profile.load(servers.profile("client")).security()
    with open_channel(servers.tls, security) as channel:
        assert list(channel.unary_stream(ECHO + "Many")(b"a", timeout=5)) == [b"a", b"a"]
        assert list(channel.stream_stream(ECHO + "Chat")(iter([b"x", b"y"]), timeout=5)) == [b"x", b"y"]
        assert channel.stream_unary(ECHO + "Total").future(iter([b"1", b"2"]), timeout=5).result() == b"12"

    async def asyncio_streams() -> None:
        channel = open_aio_channel(servers.tls, security)
        try:
            assert [r async for r in channel.unary_stream(ECHO + "Many")(b"b", timeout=5)] == [b"b", b"b"]
            call = channel.stream_stream(ECHO + "Chat")(timeout=5)  # written by the caller
            await call.write(b"z")
            await call.done_writing()
            assert [r async for r in call] == [b"z"]
            assert await channel.stream_unary(ECHO + "Total")(iter([b"3", b"4"]), timeout=5) == b"34"
        finally:
            await channel.close()

    asyncio.run(asyncio_streams())
    methods = [m for m, _ in servers.seen.calls]
    assert sorted(methods) == sorted([ECHO + "Many", ECHO + "Chat", ECHO + "Total"] * 2)
    assert all(ak == "app" for _, ak in servers.seen.calls)
