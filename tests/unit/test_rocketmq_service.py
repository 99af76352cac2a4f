"""The v2 servicer's decisions with a fake backend and a fake call context
(no sockets): sends stored whole or not at all, refusals that change
nothing, routes, Telemetry and the calls not served."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from core.errors import (
    BrokerUnavailableError,
    InvalidTransactionError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnknownTopicError,
)
from core.pb.rocketmq.v2 import definition_pb2 as d
from core.pb.rocketmq.v2 import service_pb2 as s
from core.record import Record
from core.rocketmq import routes, translate
from core.rocketmq.service import MessagingService, Stored
from core.rocketmq.settings import ServerSettings
from core.rocketmq.transactions import Check, OrphanPump, Report
from core.roles import SendStatus
from core.route import GroupRoute, MessageQueue, TopicRoute
from core.security.mqv2 import Mqv2Policy, date_of, header
from tests.helpers.rocketmq_cases import CAPTURED_MS, SECRET, _acl, _msg, _route

pytestmark = pytest.mark.unit


# ---- the servicer with a fake backend --------------------------------------------------


@dataclass
class FakeBackend:
    route_of: TopicRoute = field(default_factory=lambda: _route(("a", 4, True)))
    sent: list[tuple[translate.Incoming, MessageQueue | None]] = field(default_factory=list)
    fail: Exception | None = None
    calls: int = 0  # native sends (one per batch)
    routes: int = 0  # route lookups
    refreshes: int = 0  # of them, refreshed
    ended: list[tuple[str, str, bool, bool]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    reports: dict[str, Report] = field(default_factory=dict)  # the last told to each master

    def route(self, topic: str, timeout_s: float, refresh: bool = False) -> TopicRoute:
        self.routes += 1
        self.refreshes += refresh
        if topic != "orders":
            raise UnknownTopicError(f"no route for {topic!r}")
        return self.route_of

    def send(
        self, batch: list[translate.Incoming], queue: MessageQueue | None, timeout_s: float
    ) -> list[Stored]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        q = queue or MessageQueue("a", 0)
        out = []
        for message in batch:
            self.sent.append((message, queue))
            tid = f"txn-{len(self.sent)}" if message.transactional else ""
            out.append(Stored(SendStatus.SEND_OK, q.broker_name, q.queue_id, len(self.sent) - 1, tid))
        return out

    def end_transaction(
        self, topic: str, transaction_id: str, commit: bool, from_check: bool, timeout_s: float
    ) -> None:
        if self.fail is not None:
            raise self.fail
        self.ended.append((topic, transaction_id, commit, from_check))

    def poll_orphans(
        self,
        topics: frozenset[str],
        max_count: int,
        max_bytes: int,
        reports: dict[str, Report],
        timeout_s: float,
    ) -> list[Check]:
        """As a master does: only checks of `topics` are handed out; the reports are taken."""
        self.reports.update(reports)
        reports.clear()
        out = [c for c in self.checks if c.record.topic in topics][:max_count]
        self.checks = [c for c in self.checks if c not in out]
        return out

    def max_body_bytes(self) -> int:
        return 1024


class FakeContext:
    def __init__(self, metadata: list[tuple[str, str]] | tuple[()] = (), left_s: float = 3.0) -> None:
        self.metadata = list(metadata)
        self.left_s = left_s
        self.active = True

    def is_active(self) -> bool:
        return self.active

    def cancel(self) -> None:
        self.active = False

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self.metadata

    def time_remaining(self) -> float:
        return self.left_s

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5"


def _service(tmp_path: Path, backend: FakeBackend) -> MessagingService:
    policy = Mqv2Policy(_acl(tmp_path))
    return MessagingService(
        backend, policy, "127.0.0.1:8081", lambda: ServerSettings(1024), wall_ms=lambda: CAPTURED_MS
    )


def _signed(secret: str = SECRET) -> FakeContext:
    return FakeContext(list(header("app", secret, date_of(CAPTURED_MS))))


def test_send_stores_and_echoes_the_message_id(tmp_path: Path) -> None:
    backend = FakeBackend()
    svc = _service(tmp_path, backend)
    resp = svc.SendMessage(s.SendMessageRequest(messages=[_msg()]), _signed())
    assert resp.status.code == d.OK and len(resp.entries) == 1
    assert resp.entries[0].message_id == "0102FC0000000121C90B1969EB00000000"
    fifo = _msg(message_type=d.FIFO, message_group="g1")
    svc.SendMessage(s.SendMessageRequest(messages=[fifo]), _signed())
    queues = routes.writable(backend.route_of)
    assert backend.sent[0][1] is None and backend.sent[1][1] == routes.fifo_queue("g1", queues)


def test_refused_sends_change_nothing(tmp_path: Path) -> None:
    backend = FakeBackend()
    svc = _service(tmp_path, backend)
    req = s.SendMessageRequest(messages=[_msg()])
    assert svc.SendMessage(req, _signed("wrong-secret-wrong")).status.code == d.UNAUTHORIZED
    assert svc.SendMessage(req, FakeContext()).status.code == d.UNAUTHORIZED  # anonymous: off
    other = _msg()
    other.topic.name = "audit"
    forbidden = svc.SendMessage(s.SendMessageRequest(messages=[other]), _signed())
    assert forbidden.status.code == d.FORBIDDEN and forbidden.entries[0].status.code == d.FORBIDDEN
    lite = svc.SendMessage(s.SendMessageRequest(messages=[_msg(message_type=d.LITE)]), _signed())
    assert lite.status.code == d.NOT_IMPLEMENTED
    assert backend.sent == []
    backend.fail = BrokerUnavailableError("no master")
    assert svc.SendMessage(req, _signed()).status.code == d.HA_NOT_AVAILABLE


def _fifo(i: int, group: str = "g1") -> d.Message:
    m = _msg(f"m{i}".encode(), message_type=d.FIFO, message_group=group)
    m.system_properties.message_id = f"id-{i}"
    return m


def test_a_request_is_stored_whole_in_one_queue_or_not_at_all(tmp_path: Path) -> None:
    backend = FakeBackend()
    svc = _service(tmp_path, backend)
    batch = [_fifo(i) for i in range(3)]
    resp = svc.SendMessage(s.SendMessageRequest(messages=batch), _signed())
    assert resp.status.code == d.OK and [e.message_id for e in resp.entries] == ["id-0", "id-1", "id-2"]
    assert backend.calls == 1 and [m.body for m, _ in backend.sent] == [b"m0", b"m1", b"m2"]
    assert len({q for _, q in backend.sent}) == 1  # one queue, in order
    backend.sent.clear()
    backend.fail = BrokerUnavailableError("no master")  # the one native send fails: nothing stored
    resp = svc.SendMessage(s.SendMessageRequest(messages=batch), _signed())
    assert resp.status.code == d.HA_NOT_AVAILABLE and backend.sent == []
    assert [e.status.code for e in resp.entries] == [d.HA_NOT_AVAILABLE] * 3
    backend.fail = None
    # one bad message refuses the whole request, before anything is sent
    bad = [_fifo(0), _msg(b"", message_type=d.FIFO, message_group="g1"), _fifo(2)]
    resp = svc.SendMessage(s.SendMessageRequest(messages=bad), _signed())
    assert resp.status.code == d.MESSAGE_BODY_EMPTY and backend.sent == []
    assert {e.status.code for e in resp.entries} == {d.MESSAGE_BODY_EMPTY}
    # what would go to several queues is refused (the official clients never send it)
    other_topic = _msg()
    other_topic.topic.name = "audit"
    for mixed in (
        [_fifo(0, "g1"), _fifo(1, "g2")],
        [_fifo(0), _msg()],
        [_msg(), other_topic],
    ):
        resp = svc.SendMessage(s.SendMessageRequest(messages=mixed), _signed())
        assert resp.status.code == d.BAD_REQUEST, mixed
    too_many = [_msg() for _ in range(1025)]
    assert svc.SendMessage(s.SendMessageRequest(messages=too_many), _signed()).status.code == d.BAD_REQUEST
    ctx = FakeContext(list(header("app", SECRET, date_of(CAPTURED_MS))), left_s=0.1)
    assert svc.SendMessage(s.SendMessageRequest(messages=batch), ctx).status.code == d.PROXY_TIMEOUT
    assert backend.sent == []
    backend.route_of = TopicRoute("orders", (GroupRoute("a", "c", 2, 2, "r", ()),))  # no writable queue
    assert svc.SendMessage(s.SendMessageRequest(messages=batch), _signed()).status.code == d.TOPIC_NOT_FOUND


def test_the_clusters_refusal_of_the_proxys_account_is_an_internal_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend()
    svc = _service(tmp_path, backend)
    req = s.SendMessageRequest(messages=[_msg()])
    for err in (
        UnauthenticatedError("proxy key rejected by 10.0.0.1:1"),
        PermissionDeniedError("at 10.0.0.1:1"),
    ):
        backend.fail = err
        with caplog.at_level("ERROR", logger="core.rocketmq.service"):
            resp = svc.SendMessage(req, _signed())
        assert resp.status.code == d.INTERNAL_SERVER_ERROR and "10.0.0.1" not in resp.status.message
        assert "10.0.0.1" in caplog.text  # the operator learns it, in the proxy's log
        caplog.clear()
    backend.fail = BrokerUnavailableError("no master at 10.0.0.1:1")
    resp = svc.SendMessage(req, _signed())
    assert resp.status.code == d.HA_NOT_AVAILABLE and "10.0.0.1" not in resp.status.message


def test_an_unproven_caller_is_refused_before_its_request_is_read(tmp_path: Path) -> None:
    svc = _service(tmp_path, FakeBackend())
    nameless = _msg()
    nameless.topic.name = ""
    resp = svc.SendMessage(s.SendMessageRequest(messages=[nameless]), FakeContext())
    assert resp.status.code == d.UNAUTHORIZED


def _endpoints(scheme: int, *addresses: tuple[str, int]) -> d.Endpoints:
    return d.Endpoints(scheme=scheme, addresses=[d.Address(host=h, port=p) for h, p in addresses])  # type: ignore[arg-type]


def test_routes_name_the_endpoints_the_client_asked_with_when_well_formed(tmp_path: Path) -> None:
    svc = _service(tmp_path, FakeBackend())
    own = routes.endpoints("127.0.0.1:8081")
    good = [
        _endpoints(d.DOMAIN_NAME, ("mq.example.com", 443)),
        _endpoints(d.IPv4, ("192.0.2.1", 8081), ("192.0.2.2", 8081)),
        _endpoints(d.IPv6, ("2001:db8::1", 8081)),
    ]
    bad = [
        _endpoints(d.DOMAIN_NAME, ("a.example", 1), ("b.example", 1)),  # a domain name comes alone
        _endpoints(d.IPv4, ("mq.example.com", 1)),  # not of its scheme
        _endpoints(d.IPv4, ("192.0.2.1", 0)),
        _endpoints(d.IPv6, ("192.0.2.1", 1)),
        _endpoints(d.DOMAIN_NAME, ("bad host/x", 1)),
        _endpoints(d.IPv4, *[("192.0.2.1", 1)] * 17),
        d.Endpoints(),
    ]
    for asked, expected in [(e, e) for e in good] + [(e, own) for e in bad]:
        req = s.QueryRouteRequest(topic=d.Resource(name="orders"), endpoints=asked)
        got = svc.QueryRoute(req, _signed())
        assert got.status.code == d.OK
        assert all(q.broker.endpoints == expected for q in got.message_queues), asked


def test_route_telemetry_and_unimplemented_rpcs(tmp_path: Path) -> None:
    svc = _service(tmp_path, FakeBackend())
    route = svc.QueryRoute(s.QueryRouteRequest(topic=d.Resource(name="orders")), _signed())
    assert route.status.code == d.OK and len(route.message_queues) == 4
    missing = svc.QueryRoute(s.QueryRouteRequest(topic=d.Resource(name="nope")), _signed())
    assert missing.status.code == d.TOPIC_NOT_FOUND
    settings = d.Settings(client_type=d.PRODUCER)

    def commands() -> Iterator[s.TelemetryCommand]:
        yield s.TelemetryCommand(settings=settings)
        yield s.TelemetryCommand(settings=settings)

    answers = list(svc.Telemetry(commands(), _signed()))
    assert [a.status.code for a in answers] == [d.OK, d.OK]
    assert answers[0].settings.publishing.max_body_size == 1024

    def cancelled() -> Iterator[s.TelemetryCommand]:
        yield s.TelemetryCommand(settings=settings)
        raise grpc.RpcError()  # what gRPC's request iterator raises once the client cancels

    assert [a.status.code for a in svc.Telemetry(cancelled(), _signed())] == [d.OK]  # ends quietly
    refused = list(svc.Telemetry(iter(()), FakeContext()))
    assert [a.status.code for a in refused] == [d.UNAUTHORIZED]
    assert svc.Heartbeat(s.HeartbeatRequest(group=d.Resource(name="billing")), _signed()).status.code == d.OK
    assert svc.Heartbeat(s.HeartbeatRequest(group=d.Resource(name="x")), _signed()).status.code == d.FORBIDDEN
    assert svc.NotifyClientTermination(s.NotifyClientTerminationRequest(), _signed()).status.code == d.OK
    assert svc.EndTransaction(s.EndTransactionRequest(), _signed()).status.code == d.ILLEGAL_TOPIC
    frames = list(svc.PullMessage(s.PullMessageRequest(), _signed()))
    assert [f.status.code for f in frames] == [d.NOT_IMPLEMENTED]
    assert svc.QueryAssignment(s.QueryAssignmentRequest(), FakeContext()).status.code == d.UNAUTHORIZED


# ---- transactions ---------------------------------------------------------------------------


def test_a_transaction_message_is_answered_with_its_transaction_id(tmp_path: Path) -> None:
    backend = FakeBackend()
    svc = _service(tmp_path, backend)
    resp = svc.SendMessage(s.SendMessageRequest(messages=[_msg(message_type=d.TRANSACTION)]), _signed())
    assert resp.status.code == d.OK and resp.entries[0].transaction_id == "txn-1"
    assert backend.sent[0][0].properties["TRAN_MSG"] == "true"
    plain = svc.SendMessage(s.SendMessageRequest(messages=[_msg()]), _signed())
    assert plain.entries[0].transaction_id == ""


def test_end_transaction_goes_to_the_backend_for_a_publisher_of_the_topic(tmp_path: Path) -> None:
    backend = FakeBackend()
    svc = _service(tmp_path, backend)

    def end(topic: str = "orders", resolution: int = d.COMMIT, source: int = d.SOURCE_CLIENT) -> int:
        req = s.EndTransactionRequest(
            topic=d.Resource(name=topic), transaction_id="t1.x.y", resolution=resolution, source=source
        )
        return int(svc.EndTransaction(req, _signed()).status.code)

    assert end(resolution=d.COMMIT) == d.OK
    assert end(resolution=d.ROLLBACK, source=d.SOURCE_SERVER_CHECK) == d.OK
    assert backend.ended == [("orders", "t1.x.y", True, False), ("orders", "t1.x.y", False, True)]
    assert end("audit", resolution=d.COMMIT) == d.FORBIDDEN  # publishes to orders only
    assert end(resolution=d.TRANSACTION_RESOLUTION_UNSPECIFIED) == d.BAD_REQUEST
    unsigned = s.EndTransactionRequest(
        topic=d.Resource(name="orders"), transaction_id="t", resolution=d.COMMIT
    )
    assert svc.EndTransaction(unsigned, FakeContext()).status.code == d.UNAUTHORIZED
    backend.fail = InvalidTransactionError("forged")
    assert end(resolution=d.COMMIT) == d.INVALID_TRANSACTION_ID
    assert len(backend.ended) == 2


def _check(topic: str = "orders") -> Check:
    props = {"UNIQ_KEY": "m-1", "p": "v", "TRAN_MSG": "true"}
    return Check("t1.a.b", Record(topic, 1, 0, 0, 0, 1000, 2000, "tag", "k", props, b"half"), "10.0.0.1:1")


def test_an_orphan_check_is_written_on_the_telemetry_stream_of_a_producer_of_its_topic(
    tmp_path: Path,
) -> None:
    backend = FakeBackend(checks=[_check("elsewhere"), _check()])
    svc = _service(tmp_path, backend)
    pump = OrphanPump(backend, svc.producers)
    ctx = _signed()
    topics = [d.Resource(name="orders")]
    settings = d.Settings(client_type=d.PRODUCER, publishing=d.Publishing(topics=topics))
    release = threading.Event()

    def commands() -> Iterator[s.TelemetryCommand]:
        yield s.TelemetryCommand(settings=settings)
        release.wait(10)

    stream = svc.Telemetry(commands(), ctx)
    assert next(stream).status.code == d.OK  # settings answered: the producer is registered
    assert pump.run_once() == 1 and svc.producers.dropped == 0
    assert [c.record.topic for c in backend.checks] == ["elsewhere"]  # no producer here: not asked for
    pushed = next(stream).recover_orphaned_transaction_command
    assert pushed.transaction_id == "t1.a.b"
    m = pushed.message
    assert (m.topic.name, m.body, m.system_properties.message_id) == ("orders", b"half", "m-1")
    assert (
        m.system_properties.message_type == d.TRANSACTION and m.system_properties.body_encoding == d.IDENTITY
    )
    assert dict(m.user_properties) == {"p": "v"}
    release.set()
    assert list(stream) == []  # the client ended its side: so does the stream
    assert not svc.producers.any()


def test_a_consumer_stream_takes_no_orphan_check(tmp_path: Path) -> None:
    backend = FakeBackend(checks=[_check()])
    svc = _service(tmp_path, backend)
    settings = d.Settings(client_type=d.SIMPLE_CONSUMER)
    release = threading.Event()

    def commands() -> Iterator[s.TelemetryCommand]:
        yield s.TelemetryCommand(settings=settings)
        release.wait(10)

    stream = svc.Telemetry(commands(), _signed())
    assert next(stream).status.code == d.OK
    assert OrphanPump(backend, svc.producers).run_once() == 0
    release.set()
    assert list(stream) == []


def test_a_stream_gets_no_check_of_a_topic_its_account_may_not_publish(tmp_path: Path) -> None:
    """Review B2: a stream claiming to publish a topic its account may not
    ("app" publishes to orders only) is not given that topic's checks (its
    bodies and ids); a publish permission the ACL withdraws later stops them."""
    now = [CAPTURED_MS]
    backend = FakeBackend(checks=[_check("audit"), _check()])
    acl = _acl(tmp_path)
    svc = MessagingService(
        backend, Mqv2Policy(acl), "127.0.0.1:8081", lambda: ServerSettings(1024), wall_ms=lambda: now[0]
    )
    claimed = [d.Resource(name="audit"), d.Resource(name="orders")]
    settings = d.Settings(client_type=d.PRODUCER, publishing=d.Publishing(topics=claimed))
    release = threading.Event()

    def commands() -> Iterator[s.TelemetryCommand]:
        yield s.TelemetryCommand(settings=settings)
        release.wait(10)

    stream = svc.Telemetry(commands(), _signed())
    assert next(stream).status.code == d.OK
    pump = OrphanPump(backend, svc.producers)
    assert svc.producers.topics() == {"orders"}
    assert pump.run_once() == 1 and [c.record.topic for c in backend.checks] == ["audit"]  # not asked for
    assert next(stream).recover_orphaned_transaction_command.message.topic.name == "orders"
    acl.path.write_text(f'[[account]]\naccess_key = "app"\nsecret_key = "{SECRET}"\npublish = ["other"]\n')
    now[0] += 2000  # the ACL file is looked at again
    backend.checks = [_check()]
    assert pump.run_once() == 0 and svc.producers.dropped == 1
    assert backend.reports["10.0.0.1:1"] == Report(["t1.a.b"], [])  # told with this poll: delivered
    pump.run_once()  # and this one's, with the next: returned (handed out again, not counted)
    assert backend.reports["10.0.0.1:1"] == Report([], ["t1.a.b"])
    release.set()
    assert list(stream) == []


def test_settings_of_another_client_type_end_a_producers_registration(tmp_path: Path) -> None:
    backend = FakeBackend(checks=[_check()])
    svc = _service(tmp_path, backend)
    producer = d.Settings(client_type=d.PRODUCER, publishing=d.Publishing(topics=[d.Resource(name="orders")]))
    consumer = d.Settings(client_type=d.SIMPLE_CONSUMER)
    release = threading.Event()

    def commands() -> Iterator[s.TelemetryCommand]:
        yield s.TelemetryCommand(settings=producer)
        yield s.TelemetryCommand(settings=consumer)
        release.wait(10)

    stream = svc.Telemetry(commands(), _signed())
    assert next(stream).status.code == d.OK and next(stream).status.code == d.OK
    assert not svc.producers.any() and OrphanPump(backend, svc.producers).run_once() == 0
    release.set()
    assert list(stream) == []
