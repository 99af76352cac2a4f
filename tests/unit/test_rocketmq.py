"""RocketMQ 5's protocol as plain logic: the v2 signature, message
translation, routes, settings, and the servicer's decisions with a fake
backend and a fake call context (no sockets)."""

from __future__ import annotations

import datetime
import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from core.errors import BrokerUnavailableError, PermissionDeniedError, UnauthenticatedError, UnknownTopicError
from core.pb.rocketmq.v2 import definition_pb2 as d
from core.pb.rocketmq.v2 import service_pb2 as s
from core.rocketmq import routes, translate
from core.rocketmq.codes import Refused, code_for
from core.rocketmq.service import MessagingService, Stored
from core.rocketmq.settings import ServerSettings, answer
from core.roles import SendStatus
from core.route import BrokerEndpoint, GroupRoute, MessageQueue, TopicRoute
from core.security.acl import AclFile
from core.security.mqv2 import Mqv2Policy, any_account, date_of, header, publish, verify_mqv2

pytestmark = pytest.mark.unit

# captured from rocketmq-python-client 5.1.2 (Credentials("myak", "mysk")), issue 18's research
CAPTURED = [
    ("x-mq-date-time", "20261126T062131Z"),
    (
        "authorization",
        "MQv2-HMAC-SHA1 Credential=myak, SignedHeaders=x-mq-date-time, "
        "Signature=5dd8af68ee68771fea1c81f8252f6f851488fd5c",
    ),
]
CAPTURED_MS = int(datetime.datetime(2026, 11, 26, 6, 21, 31, tzinfo=datetime.UTC).timestamp() * 1000)
SECRET = "app-secret-0123456789"


def _secret(ak: str) -> str | None:
    return {"myak": "mysk", "app": SECRET}.get(ak)


# ---- the v2 signature ------------------------------------------------------------------


def test_a_captured_official_header_verifies_and_a_wrong_secret_does_not() -> None:
    account = verify_mqv2(CAPTURED, CAPTURED_MS, _secret)
    assert account is not None and account.access_key == "myak"
    with pytest.raises(UnauthenticatedError, match="does not verify"):
        verify_mqv2(CAPTURED, CAPTURED_MS, lambda ak: "not-the-secret")
    with pytest.raises(UnauthenticatedError, match="does not verify"):  # unknown key: same answer
        verify_mqv2(CAPTURED, CAPTURED_MS, lambda ak: None)


def _local_header(now_ms: int, utc_offset_min: int) -> tuple[tuple[str, str], ...]:
    """What an official client in that zone signs: its local time labelled Z."""
    return header("app", SECRET, date_of(now_ms + utc_offset_min * 60_000))


def test_the_skew_window_is_the_native_one() -> None:
    assert verify_mqv2(CAPTURED, CAPTURED_MS + 299_000, _secret, any_timezone=False) is not None
    with pytest.raises(UnauthenticatedError, match="TZ=UTC"):
        verify_mqv2(CAPTURED, CAPTURED_MS + 301_000, _secret, any_timezone=False)
    with pytest.raises(UnauthenticatedError):  # a client in UTC+2 without TZ=UTC
        verify_mqv2(CAPTURED, CAPTURED_MS - 2 * 3600_000, _secret, any_timezone=False)


def test_clients_in_any_time_zone_verify_by_default() -> None:
    now = CAPTURED_MS
    for offset_min in (
        8 * 60,
        -5 * 60,
        5 * 60 + 45,
        14 * 60,
        -12 * 60,
        0,
    ):  # Shanghai, New York, Kathmandu...
        assert verify_mqv2(_local_header(now + 120_000, offset_min), now, _secret) is not None, offset_min
        with pytest.raises(UnauthenticatedError):  # the same zone, outside the skew
            verify_mqv2(_local_header(now + 400_000, offset_min), now, _secret)
    for offset_min in (8 * 60, -5 * 60):
        with pytest.raises(UnauthenticatedError, match="TZ=UTC"):
            verify_mqv2(_local_header(now, offset_min), now, _secret, any_timezone=False)
    for beyond in (15 * 60, -13 * 60, 8 * 60 + 7):  # no such zone (nor a quarter hour)
        with pytest.raises(UnauthenticatedError):
            verify_mqv2(_local_header(now, beyond), now, _secret)


def test_anonymous_forms_and_malformed_headers() -> None:
    assert verify_mqv2([], CAPTURED_MS, _secret) is None
    empty = header("", "", "20261126T062131Z")  # the client's Credentials(): Credential=
    assert verify_mqv2(empty, CAPTURED_MS, _secret) is None
    for bad in (
        [("authorization", "TAILRACE-HMAC-SHA256 Credential=a, SignedHeaders=x, Signature=00")],
        [("authorization", CAPTURED[1][1].replace("x-mq-date-time", "x-mq-date-time;host"))],
        [("x-mq-date-time", "2026-11-26"), CAPTURED[1]],
        [CAPTURED[1]],
    ):
        with pytest.raises(UnauthenticatedError):
            verify_mqv2(bad, CAPTURED_MS, _secret)


def _acl(tmp_path: Path, anonymous: str = "") -> AclFile:
    f = tmp_path / "acl.toml"
    f.write_text(
        f'[[account]]\naccess_key = "app"\nsecret_key = "{SECRET}"\npublish = ["orders"]\n'
        f'groups = ["billing"]\n{anonymous}'
    )
    f.chmod(0o600)
    return AclFile(f, 0)


def test_policy_checks_the_account_against_the_acl(tmp_path: Path) -> None:
    now = CAPTURED_MS
    policy = Mqv2Policy(_acl(tmp_path))
    md = header("app", SECRET, date_of(now))
    assert policy.check(md, now, publish("orders")) is not None
    with pytest.raises(PermissionDeniedError, match="publish to topic 'other'"):
        policy.check(md, now, publish("other"))
    with pytest.raises(UnauthenticatedError, match="anonymous access is off"):
        policy.check([], now, any_account)
    open_policy = Mqv2Policy(_acl(tmp_path, '[anonymous]\npublish = ["pub"]\n'), True)
    assert open_policy.check([], now, publish("pub")) is not None
    with pytest.raises(PermissionDeniedError):
        open_policy.check([], now, publish("orders"))
    assert Mqv2Policy(None).check([], now, publish("anything")) is not None  # no ACL: open


# ---- translation -----------------------------------------------------------------------


def _msg(body: bytes = b"hello", **sp: object) -> d.Message:
    m = d.Message(topic=d.Resource(name="orders"), body=body)
    m.system_properties.message_id = "0102FC0000000121C90B1969EB00000000"
    m.system_properties.message_type = d.NORMAL
    m.system_properties.body_encoding = d.IDENTITY
    m.system_properties.born_timestamp.seconds = 1_795_674_091
    m.system_properties.born_host = "192.0.2.2"
    for k, v in sp.items():
        if k == "keys":
            m.system_properties.keys.extend(v)  # type: ignore[arg-type]
        else:
            setattr(m.system_properties, k, v)
    return m


def test_a_normal_message_maps_to_a_native_record() -> None:
    m = _msg(tag="tagA", keys=["k1", "k2"])
    m.user_properties["p"] = "v"
    got = translate.incoming(m, 1024, 0)
    assert (got.topic, got.body, got.tags, got.keys, got.group) == ("orders", b"hello", "tagA", "k1 k2", "")
    assert got.born_ms == 1_795_674_091_000
    assert got.properties == {
        "p": "v",
        translate.MESSAGE_ID: "0102FC0000000121C90B1969EB00000000",
        translate.BORN_HOST: "192.0.2.2",
    }
    back = translate.read_back(got.tags, got.keys, got.properties)
    assert back["keys"] == ["k1", "k2"] and back["user_properties"] == {"p": "v"}


def test_fifo_keeps_its_group_and_types_not_served_are_refused() -> None:
    fifo = translate.incoming(_msg(message_type=d.FIFO, message_group="g1"), 1024, 0)
    assert fifo.group == "g1" and fifo.properties[translate.MESSAGE_GROUP] == "g1"
    cases = [
        (_msg(message_type=d.DELAY), d.NOT_IMPLEMENTED),
        (_msg(message_type=d.TRANSACTION), d.NOT_IMPLEMENTED),
        (_msg(message_type=d.FIFO), d.ILLEGAL_MESSAGE_GROUP),
        (_msg(message_group="g"), d.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE),
        (_msg(b""), d.MESSAGE_BODY_EMPTY),
        (_msg(b"x" * 1025), d.MESSAGE_BODY_TOO_LARGE),
        (_msg(tag="a|b"), d.ILLEGAL_MESSAGE_TAG),
        (_msg(born_host="h" * 256), d.BAD_REQUEST),  # refused, never cut
        (_msg(trace_context="t" * 1025), d.BAD_REQUEST),
        (_msg(message_id=""), d.ILLEGAL_MESSAGE_ID),
    ]
    for name in (
        "RECONSUME_TIMES",
        "ORIGIN_MSG_ID",
        "PGROUP",
        "__STARTDELIVERTIME",
        "WAIT",
        "REAL_QID",
        "TRANSACTION_CHECK_TIMES",
        "CHECK_IMMUNITY_TIME_IN_SECONDS",
        "__RMQ.TRANSIENT.X",
    ):
        reserved = _msg()
        reserved.user_properties[name] = "0"
        cases.append((reserved, d.ILLEGAL_MESSAGE_PROPERTY_KEY))
    big = _msg()
    big.user_properties["p"] = "v" * 70_000
    cases.append((big, d.MESSAGE_PROPERTIES_TOO_LARGE))
    many = _msg()
    for i in range(20):
        many.user_properties[f"p{i}"] = "v" * 1000
    cases.append((many, d.MESSAGE_PROPERTIES_TOO_LARGE))
    namespaced = _msg()
    namespaced.topic.resource_namespace = "ns"
    cases.append((namespaced, d.UNSUPPORTED))
    broker_topic = _msg()
    broker_topic.topic.name = "%RETRY%g"
    cases.append((broker_topic, d.ILLEGAL_TOPIC))
    for m, code in cases:
        with pytest.raises(Refused) as info:
            translate.incoming(m, 1024, 0)
        assert info.value.code == code, (m, info.value.message)


def test_a_key_with_a_space_is_stored_and_reads_back_split_as_in_rocketmq() -> None:
    got = translate.incoming(_msg(keys=["order 17", "k2"]), 1024, 0)
    assert got.keys == "order 17 k2"
    assert translate.read_back(got.tags, got.keys, got.properties)["keys"] == ["order", "17", "k2"]


def test_body_encoding_and_digest() -> None:
    body = b"payload" * 10
    zipped = _msg(gzip.compress(body), body_encoding=d.GZIP)
    assert translate.incoming(zipped, 1024, 0).body == body
    with pytest.raises(Refused) as info:
        translate.incoming(_msg(gzip.compress(b"x" * 2000), body_encoding=d.GZIP), 1024, 0)
    assert info.value.code == d.MESSAGE_BODY_TOO_LARGE  # inflated within the limit, not past it
    two_members = gzip.compress(b"ab") + gzip.compress(b"cd")  # RFC 1952: a body of two members
    assert translate.incoming(_msg(two_members, body_encoding=d.GZIP), 1024, 0).body == b"abcd"
    whole = gzip.compress(body)
    for corrupted in (whole[:-4], whole[:20], whole + b"junk", whole + gzip.compress(b"x")[:-3], b"nozip"):
        with pytest.raises(Refused) as info:
            translate.incoming(_msg(corrupted, body_encoding=d.GZIP), 1024, 0)
        assert info.value.code == d.MESSAGE_CORRUPTED, corrupted
    bomb = gzip.compress(b"\0" * 10_000_000)  # ~10 KB inflating to 10 MB: stopped at the limit
    with pytest.raises(Refused) as info:
        translate.incoming(_msg(bomb, body_encoding=d.GZIP), 1024, 0)
    assert info.value.code == d.MESSAGE_BODY_TOO_LARGE
    split_bomb = gzip.compress(b"x" * 1000) + gzip.compress(b"y" * 1000)  # each member fits, both do not
    with pytest.raises(Refused) as info:
        translate.incoming(_msg(split_bomb, body_encoding=d.GZIP), 1024, 0)
    assert info.value.code == d.MESSAGE_BODY_TOO_LARGE
    for kind in (d.CRC32, d.MD5, d.SHA1):
        ok = _msg(body)
        ok.system_properties.body_digest.type = kind
        ok.system_properties.body_digest.checksum = translate.digest(body, kind)
        assert translate.incoming(ok, 1024, 0).body == body
        ok.system_properties.body_digest.checksum = translate.digest(b"other", kind)
        with pytest.raises(Refused) as info:
            translate.incoming(ok, 1024, 0)
        assert info.value.code == d.MESSAGE_CORRUPTED


def test_errors_map_to_v2_codes() -> None:
    assert code_for(UnauthenticatedError("x")) == d.UNAUTHORIZED
    assert code_for(PermissionDeniedError("x")) == d.FORBIDDEN
    assert code_for(UnknownTopicError("x")) == d.TOPIC_NOT_FOUND
    assert code_for(BrokerUnavailableError("x")) == d.HA_NOT_AVAILABLE


# ---- routes and settings ---------------------------------------------------------------


def _route(*groups: tuple[str, int, bool]) -> TopicRoute:
    out = []
    for name, queues, live in groups:
        master = (BrokerEndpoint(0, f"10.0.0.1:{len(out) + 1}", "master", 1, live),)
        out.append(GroupRoute(name, "c", queues, queues, "rw", master))
    return TopicRoute("orders", tuple(out))


def test_routes_name_the_proxy_in_a_stable_order() -> None:
    route = _route(("b", 2, True), ("a", 3, False))
    proxy = routes.endpoints("127.0.0.1:8081")
    mqs = routes.message_queues(route, proxy)
    assert [(q.broker.name, q.id) for q in mqs] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    assert all(q.broker.id == 0 and q.broker.endpoints == proxy for q in mqs)
    assert all(
        q.permission == d.READ_WRITE and list(q.accept_message_types) == [d.NORMAL, d.FIFO] for q in mqs
    )
    assert proxy.scheme == d.IPv4 and routes.endpoints("[::1]:1").scheme == d.IPv6
    assert routes.endpoints("proxy.example:1").scheme == d.DOMAIN_NAME
    read_only = TopicRoute("t", (GroupRoute("a", "c", 2, 1, "rw", ()),))
    perms = [q.permission for q in routes.message_queues(read_only, proxy)]
    assert perms == [d.READ_WRITE, d.READ]
    assert routes.writable(read_only) == [MessageQueue("a", 0)]


# captured from rocketmq-python-client 5.1.2: QueueSelector(list(range(n))).select_queue_by_hash_key(group)
# for n in OFFICIAL_NS, run once in its own process (issue 18's review)
OFFICIAL_NS = (1, 2, 3, 5, 8, 16)
OFFICIAL_PICKS = {
    "g1": [0, 0, 2, 4, 0, 8],
    "g2": [0, 1, 0, 0, 5, 13],
    "order-17": [0, 1, 2, 0, 3, 11],
    "客户-42": [0, 1, 1, 0, 5, 5],
}


def test_fifo_queue_is_the_official_python_clients_choice() -> None:
    for group, picks in OFFICIAL_PICKS.items():
        for n, pick in zip(OFFICIAL_NS, picks, strict=True):
            queues = [MessageQueue("a", i) for i in range(n)]
            assert routes.fifo_queue(group, queues) == queues[pick], (group, n)
    with pytest.raises(Refused) as info:
        routes.fifo_queue("g1", [])
    assert info.value.code == d.TOPIC_NOT_FOUND


def test_settings_answer_is_complete() -> None:
    server = ServerSettings(max_body_bytes=4_000_000)
    producer = d.Settings(client_type=d.PRODUCER)
    producer.publishing.max_body_size = 134_217_728
    producer.metric.on = True
    out = answer(producer, server)
    assert out.publishing.max_body_size == 4_000_000 and not out.metric.on
    assert out.backoff_policy.max_attempts == 3 and out.backoff_policy.HasField("exponential_backoff")
    push = answer(d.Settings(client_type=d.PUSH_CONSUMER), server)
    assert push.subscription.long_polling_timeout.ToMilliseconds() == 20_000
    assert push.subscription.receive_batch_size == 32 and not push.subscription.fifo
    assert push.backoff_policy.customized_backoff.next[0].ToMilliseconds() == 1000
    simple = d.Settings(client_type=d.SIMPLE_CONSUMER)
    simple.subscription.long_polling_timeout.FromSeconds(600)
    assert answer(simple, server).subscription.long_polling_timeout.ToMilliseconds() == 20_000
    assert producer.publishing.max_body_size == 134_217_728  # the client's copy untouched


# ---- the servicer with a fake backend --------------------------------------------------


@dataclass
class FakeBackend:
    route_of: TopicRoute = field(default_factory=lambda: _route(("a", 4, True)))
    sent: list[tuple[translate.Incoming, MessageQueue | None]] = field(default_factory=list)
    fail: Exception | None = None
    calls: int = 0  # native sends (one per batch)

    def route(self, topic: str, timeout_s: float) -> TopicRoute:
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
            out.append(Stored(SendStatus.SEND_OK, q.broker_name, q.queue_id, len(self.sent) - 1))
        return out

    def max_body_bytes(self) -> int:
        return 1024


class FakeContext:
    def __init__(self, metadata: list[tuple[str, str]] | tuple[()] = (), left_s: float = 3.0) -> None:
        self.metadata = list(metadata)
        self.left_s = left_s

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
    delayed = svc.SendMessage(s.SendMessageRequest(messages=[_msg(message_type=d.DELAY)]), _signed())
    assert delayed.status.code == d.NOT_IMPLEMENTED
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
    assert svc.AckMessage(s.AckMessageRequest(), _signed()).status.code == d.NOT_IMPLEMENTED
    assert svc.EndTransaction(s.EndTransactionRequest(), _signed()).status.code == d.NOT_IMPLEMENTED
    frames = list(svc.ReceiveMessage(s.ReceiveMessageRequest(), _signed()))
    assert [f.status.code for f in frames] == [d.NOT_IMPLEMENTED]
    assert svc.QueryAssignment(s.QueryAssignmentRequest(), FakeContext()).status.code == d.UNAUTHORIZED


# ---- the launcher's part ---------------------------------------------------------------


def test_local_pki_gives_the_proxy_an_account_that_is_not_admin(tmp_path: Path) -> None:
    from consumer.profile import Profile
    from core.security.acl import load_acl
    from deploy.pki import PROXY, LocalPki

    pki = LocalPki(tmp_path / "c", "DefaultCluster")
    acl = load_acl(pki.acl_file)
    perms = acl.permissions[PROXY]
    assert not perms.admin and perms.may_publish("orders") and perms.may_subscribe("orders", "billing")
    assert not perms.may_publish("%SCHEDULE%") and not perms.may_create("orders")
    assert acl.permissions["admin"].admin
    again = LocalPki(tmp_path / "c", "DefaultCluster")  # a second `up` keeps both secrets
    assert (again.admin_secret, again.proxy_secret) == (pki.admin_secret, pki.proxy_secret)
    flags = pki.proxy_flags("proxy-1", ["127.0.0.1"], ["127.0.0.1:9876"])
    assert pki.proxy_secret not in " ".join(flags)  # paths on the command line, never a secret
    proxy_profile = Profile.load(pki.proxy_profile_file)
    assert proxy_profile.access_key == PROXY and proxy_profile.namesrv == ("127.0.0.1:9876",)
    pki.write_profile(["127.0.0.1:9876"], ["127.0.0.1:8081"])
    assert Profile.load(pki.profile_file).rocketmq_endpoints == ("127.0.0.1:8081",)


def test_topologies_ask_for_proxies(tmp_path: Path) -> None:
    from core.errors import ConfigError
    from deploy.topology import load_topology, resolve_topology

    assert load_topology(resolve_topology("local-rocketmq")).rocketmq_proxies == 1
    assert load_topology(resolve_topology("local-1m-2s")).rocketmq_proxies == 0
    bad = tmp_path / "t.toml"
    bad.write_text('[cluster]\nrocketmq_proxies = 99\n[[nameserver]]\nname = "n"\n[[group]]\nname = "g"\n')
    with pytest.raises(ConfigError, match="rocketmq_proxies"):
        load_topology(bad)


def test_the_body_limit_is_the_smallest_masters_less_headroom() -> None:
    from deploy.proxy_backend import HEADROOM_BYTES, body_limit

    assert body_limit([4 << 20, 8 << 20], 123) == (4 << 20) - HEADROOM_BYTES
    assert body_limit([], 123) == 123  # no master answered yet
    assert body_limit([1000], 123) == 1024  # never below 1 KiB


def test_the_limit_is_asked_of_the_proxys_cluster_only() -> None:
    from core.pb.tailrace.v1 import nameserver_pb2 as npb
    from deploy.proxy_backend import groups_of

    answer = npb.ListClustersResponse(
        clusters=[
            npb.ClusterInfo(name="mine", groups=[npb.GroupRoute(broker_name="a")]),
            npb.ClusterInfo(name="other", groups=[npb.GroupRoute(broker_name="b")]),
        ]
    )
    assert [g.broker_name for g in groups_of(answer, "mine")] == ["a"]
    assert [g.broker_name for g in groups_of(answer, "")] == ["a", "b"]


def test_proxy_config_is_checked_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import argparse

    from core.errors import ConfigError
    from deploy import proxy_main

    monkeypatch.delenv("TAILRACE_PROFILE", raising=False)

    def wiring(*sets: str, insecure: bool = False) -> tuple[object, list[str]]:
        p = argparse.ArgumentParser()
        proxy_main.add_arguments(p)
        argv = [x for item in sets for x in ("--set", item)] + (["--insecure"] if insecure else [])
        return proxy_main._wiring(proxy_main.load(p.parse_args(argv)))

    with pytest.raises(ConfigError, match=r"proxy\.namesrv"):
        wiring()
    with pytest.raises(ConfigError, match="not loopback"):
        wiring("proxy.namesrv=127.0.0.1:9876", "proxy.listen=10.1.2.3:8081")
    with pytest.raises(ConfigError, match=r"proxy\.advertise"):
        wiring("proxy.namesrv=127.0.0.1:9876", "proxy.listen=0.0.0.0:8081", insecure=True)
    with pytest.raises(ConfigError, match=r"proxy\.long_polling_ms"):
        wiring("proxy.namesrv=127.0.0.1:9876", "proxy.long_polling_ms=5")
    _, namesrv = wiring("proxy.namesrv=127.0.0.1:1,127.0.0.1:2")
    assert namesrv == ["127.0.0.1:1", "127.0.0.1:2"]
    # Telemetry streams must leave threads for other calls (the proxy's default: 256 workers)
    with pytest.raises(ConfigError, match=r"proxy\.max_telemetry_streams"):
        wiring("proxy.namesrv=127.0.0.1:9876", "server.max_workers=64", "proxy.max_telemetry_streams=64")
    wiring("proxy.namesrv=127.0.0.1:9876", "proxy.max_telemetry_streams=255")
    # a proxy holding an account but checking none of its callers would lend that account to anyone
    profile = tmp_path / "profile.toml"
    profile.write_text(
        'namesrv = ["127.0.0.1:9876"]\naccess_key = "proxy"\nsecret_key = "proxy-secret-0123"\n'
    )
    profile.chmod(0o600)
    with pytest.raises(ConfigError, match=r"auth\.acl_file"):
        wiring(f"proxy.profile={profile}")
    wiring(f"proxy.profile={profile}", "proxy.allow_anonymous=true")  # the loud opt-in


def test_refused_calls_are_logged_within_a_budget() -> None:
    from core.rocketmq.service import LogBudget

    budget = LogBudget(lines=2, window_s=10)
    assert [budget.allow(t) for t in (0, 1, 2, 3)] == [True, True, False, False]
    assert budget.dropped == 2
    assert budget.allow(10.5) and budget.dropped == 0  # a new window (the dropped count logged)
