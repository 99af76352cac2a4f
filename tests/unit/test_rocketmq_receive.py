"""The receive side's plain functions: a popped record as a v2 message, the
filter, the long-poll and invisible times, assignments, consumer settings."""

from __future__ import annotations

import zlib

import pytest

from core.pb.rocketmq.v2 import definition_pb2 as d
from core.pb.rocketmq.v2 import service_pb2 as s
from core.record import decode_record
from core.rocketmq import receive, routes, translate
from core.rocketmq.codes import Refused
from core.rocketmq.settings import ServerSettings, answer
from core.route import BrokerEndpoint, GroupRoute, TopicRoute
from tests.helpers.records import make
from tests.helpers.rocketmq_cases import _msg

pytestmark = pytest.mark.unit
SERVER = ServerSettings(max_body_bytes=1024, long_polling_ms=20_000, min_long_polling_ms=5_000)


def test_a_stored_message_reads_back_as_it_was_sent() -> None:
    sent = _msg(b"payload", tag="TagA", keys=["k1", "k2"], message_group="g1", message_type=d.FIFO)
    sent.user_properties["color"] = "red"
    stored = translate.incoming(sent, 1024, 0)
    raw = make(
        topic="orders", queue_id=2, queue_offset=41, body=stored.body, tags=stored.tags, keys=stored.keys,
        props=stored.properties, born=stored.born_ms, store=1_795_674_092_500,
    )  # fmt: skip
    m = receive.message_of(decode_record(raw), 3, "handle-1", 15_000, "10.0.0.1:10911")
    sp = m.system_properties
    assert m.topic.name == "orders" and m.body == b"payload"
    assert dict(m.user_properties) == {"color": "red"}  # no system name leaks into user properties
    assert (sp.tag, list(sp.keys), sp.message_id) == ("TagA", ["k1", "k2"], sent.system_properties.message_id)
    assert (sp.message_group, sp.message_type, sp.born_host) == ("g1", d.FIFO, "192.0.2.2")
    assert sp.born_timestamp.seconds == sent.system_properties.born_timestamp.seconds
    assert sp.store_timestamp.ToMilliseconds() == 1_795_674_092_500 and sp.store_host == "10.0.0.1:10911"
    assert (sp.queue_id, sp.queue_offset, sp.delivery_attempt, sp.receipt_handle) == (2, 41, 3, "handle-1")
    assert sp.invisible_duration.ToMilliseconds() == 15_000
    assert sp.body_encoding == d.IDENTITY and sp.body_digest.type == d.CRC32
    assert sp.body_digest.checksum == f"{zlib.crc32(b'payload'):08X}"


def test_a_plain_message_has_no_group_tag_or_trace() -> None:
    rec = decode_record(make(topic="orders", body=b"x", tags="", keys="", props={"UNIQ_KEY": "id1"}))
    sp = receive.message_of(rec, 1, "h", 1000, "m:1").system_properties
    assert sp.message_type == d.NORMAL and not sp.HasField("message_group") and not sp.HasField("tag")
    assert list(sp.keys) == [] and sp.message_id == "id1"


@pytest.mark.parametrize(
    ("expression", "native"),
    [("", "*"), ("*", "*"), ("a", "a"), (" a || b ", "a||b"), ("a||*", "*"), ("||", "*")],
)
def test_tag_filters_become_native_tag_expressions(expression: str, native: str) -> None:
    assert receive.tag_expression(d.FilterExpression(type=d.TAG, expression=expression)) == native


def test_sql_filters_are_refused_clearly() -> None:
    with pytest.raises(Refused) as exc:
        receive.tag_expression(d.FilterExpression(type=d.SQL, expression="a > 1"))
    assert exc.value.code == d.UNSUPPORTED and "SQL92" in exc.value.message


def _receive(
    polling_s: int | None = None, invisible_s: int | None = None, auto: bool = False
) -> s.ReceiveMessageRequest:
    r = s.ReceiveMessageRequest(auto_renew=auto)
    if polling_s is not None:
        r.long_polling_timeout.FromSeconds(polling_s)
    if invisible_s is not None:
        r.invisible_duration.FromSeconds(invisible_s)
    return r


@pytest.mark.parametrize(
    ("polling_s", "left_ms", "expected"),
    [
        (5, 7_800, 5_000),  # the official SimpleConsumer's default: as asked
        (1, 7_800, 5_000),  # raised to the least
        (60, 100_000, 20_000),  # cut to the most
        (15, 9_000, 9_000),  # cut to the deadline
        (None, 12_000, 12_000),  # none asked: the time left
    ],
)
def test_polling_time_is_clamped_as_rocketmq_does(polling_s: int | None, left_ms: int, expected: int) -> None:
    assert receive.polling_ms(_receive(polling_s), SERVER, left_ms) == expected


def test_a_deadline_too_close_to_poll_is_refused() -> None:
    with pytest.raises(Refused) as exc:
        receive.polling_ms(_receive(10), SERVER, 3_000)
    assert exc.value.code == d.ILLEGAL_POLLING_TIME


def test_invisible_time_is_the_requests_or_the_proxys_for_auto_renew() -> None:
    assert receive.invisible_ms(_receive(invisible_s=15), SERVER) == 15_000
    assert receive.invisible_ms(_receive(auto=True), SERVER) == SERVER.auto_renew_invisible_ms
    for bad in (_receive(), _receive(invisible_s=0), _receive(invisible_s=13 * 3600)):
        with pytest.raises(Refused) as exc:
            receive.invisible_ms(bad, SERVER)
        assert exc.value.code == d.ILLEGAL_INVISIBLE_TIME
    assert receive.checked_invisible(0) == 0  # a change may make it visible at once


def test_push_consumers_are_assigned_each_group_with_a_master_at_queue_minus_one() -> None:
    def group(name: str, alive: bool, perm: str = "rw") -> GroupRoute:
        return GroupRoute(name, "c", 4, 4, perm, (BrokerEndpoint(0, f"{name}:1", "master", 1, alive),))

    route = TopicRoute(
        "orders", (group("b", True), group("a", True), group("c", False), group("d", True, "w"))
    )
    proxy = routes.endpoints("127.0.0.1:8081")
    got = receive.assignments(route, proxy)
    assert [(a.message_queue.broker.name, a.message_queue.id) for a in got] == [("a", -1), ("b", -1)]
    assert got[0].message_queue.broker.endpoints == proxy and got[0].message_queue.topic.name == "orders"


def test_consumers_are_told_the_brokers_attempts_and_delays() -> None:
    server = ServerSettings(max_body_bytes=1024, max_attempts=3, retry_delays=(1.0, 5.0, 10.0, 30.0))
    push = answer(d.Settings(client_type=d.PUSH_CONSUMER), server)
    policy = push.backoff_policy
    assert policy.max_attempts == 3
    assert [n.ToMilliseconds() for n in policy.customized_backoff.next] == [1000, 5000]
    assert not push.subscription.fifo
