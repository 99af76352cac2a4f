"""The fetcher (consumer/fetcher.py) as plain logic: which pulls go out, and
what each answer means; no sockets, the clock passed in."""

from __future__ import annotations

import pytest

from consumer.fetcher import (
    DENIED_BACKOFF_S,
    NOT_HELD_BACKOFF_S,
    RETRY_BACKOFF_S,
    Answered,
    Fetcher,
    PullSettings,
)
from consumer.positions import QueuePositions
from consumer.pull_source import REPLICA_TIMEOUT_S
from consumer.queue_hooks import QueueHooks
from core.errors import BrokerUnavailableError, PermissionDeniedError, UnknownTopicError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import BrokerEndpoint, GroupRoute, MessageQueue, TopicRoute
from core.subscription import Subscription
from tests.unit.test_framing import record

pytestmark = pytest.mark.unit
MQ = MessageQueue("g", 0)
ROUTE = TopicRoute(
    "orders",
    (
        GroupRoute(
            "g",
            "c",
            1,
            1,
            "rw",
            (BrokerEndpoint(0, "m:1", "master", 1, True), BrokerEndpoint(1, "s:1", "slave", 1, True)),
        ),
    ),
)


class Call:
    """A pull in flight, as positions.py sees one."""

    def cancel(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False


def fetcher(subscription: str = "*", long_poll_ms: int = 20_000) -> Fetcher:
    s = PullSettings("G", "orders", Subscription.parse(subscription), 256, 1 << 20, long_poll_ms, 10.0)
    positions = QueuePositions()
    positions.add(MQ, 7)
    return Fetcher(s, positions, QueueHooks())


def issue(f: Fetcher, now: float = 0.0) -> tuple[int, Call]:
    with f.positions.lock:
        (p,) = f.due(ROUTE, now)
        call = Call()
        return f.positions.issued(p.mq, call), call  # type: ignore[arg-type]


def answer(f: Fetcher, sent: tuple[int, Call], what: object, address: str, now: float) -> Answered:
    """As a driver does: hand the answer to a pull over."""
    gen, call = sent
    return f.answered(MQ, gen, call, what, address, ROUTE, now)  # type: ignore[arg-type]


def test_one_pull_per_queue_to_the_master_with_a_long_poll_deadline() -> None:
    f = fetcher()
    with f.positions.lock:
        (p,) = f.due(ROUTE, 0.0)
        assert (p.address, p.request.queue_offset, p.request.max_wait_ms) == ("m:1", 7, 20_000)
        assert p.timeout_s == 20.0 + 10.0
        f.positions.issued(p.mq, Call())  # type: ignore[arg-type]
        assert f.due(ROUTE, 0.0) == []  # one in flight per queue


def test_found_records_advance_the_position_and_unwanted_tags_are_dropped() -> None:
    f = fetcher("TagA")
    sent = issue(f)
    data = bytes(record(100, queue_offset=7)) + bytes(record(100 + 300, queue_offset=8, tags=b"TagB"))
    resp = pb.PullResponse(status=pb.FOUND, records=data, count=2, next_queue_offset=9, served_by=0)
    out = answer(f, sent, resp, "m:1", 1.0)
    assert [r.tags for r in out.records] == ["TagA"] and out.records[0].broker_name == "g"
    assert f.positions.offsets[MQ] == 9 and f.served_by[0] == 2


def test_a_suggested_slave_gets_the_next_pull_with_a_short_deadline() -> None:
    f = fetcher()
    sent = issue(f)
    resp = pb.PullResponse(status=pb.NO_NEW_MSG, suggested_broker_id=1, served_by=0, held=True)
    answer(f, sent, resp, "m:1", 1.0)
    with f.positions.lock:
        (p,) = f.due(ROUTE, 1.0)
    assert (p.address, p.timeout_s) == ("s:1", REPLICA_TIMEOUT_S)


def test_an_empty_answer_that_was_not_held_backs_off() -> None:
    f = fetcher()
    sent = issue(f)
    answer(f, sent, pb.PullResponse(status=pb.NO_NEW_MSG, held=False), "m:1", 5.0)
    assert f.retry_at[MQ] == 5.0 + NOT_HELD_BACKOFF_S
    sent = issue(f, 6.0)
    answer(f, sent, pb.PullResponse(status=pb.NO_NEW_MSG, held=True), "m:1", 7.0)
    assert f.retry_at[MQ] < 7.0  # held until its wait ended: ask again at once


def test_failures_back_off_refresh_the_route_and_name_the_broker() -> None:
    f = fetcher()
    sent = issue(f)
    out = answer(f, sent, BrokerUnavailableError("failed to connect"), "m:1", 2.0)
    assert out.refresh_route and f.retry_at[MQ] == 2.0 + RETRY_BACKOFF_S and "m:1" in f.unreachable
    sent = issue(f, 3.0)
    out = answer(f, sent, UnknownTopicError("gone"), "m:1", 3.0)  # not retriable: longer
    assert f.retry_at[MQ] > 3.0 + RETRY_BACKOFF_S
    f.sources.pull_from[MQ] = 1
    sent = issue(f, 10.0)
    out = answer(f, sent, BrokerUnavailableError("gone"), "s:1", 10.0)
    assert out.refresh_route and f.sources.pull_from[MQ] == 0  # a failed slave: the master at once


def test_a_pull_refused_access_is_kept_for_the_caller_and_not_retried_soon() -> None:
    f = fetcher()
    sent = issue(f)
    denied = PermissionDeniedError("account 'app' may not subscribe to topic 'orders' as group 'G'")
    out = answer(f, sent, denied, "m:1", 2.0)
    assert out == Answered() and f.retry_at[MQ] == 2.0 + DENIED_BACKOFF_S and "m:1" not in f.unreachable
    with f.positions.lock:
        assert f.due(ROUTE, 3.0) == []  # no pull until the back-off is over (the caller polls on)
    assert f.take_denied() is denied and f.take_denied() is None  # raised once


def test_an_answer_to_a_pull_no_longer_current_is_ignored() -> None:
    f = fetcher()
    sent = issue(f)
    f.positions.move(MQ, 500)  # a seek: the pull in flight is discarded
    data = bytes(record(100, queue_offset=7))
    out = answer(
        f, sent, pb.PullResponse(status=pb.FOUND, records=data, count=1, next_queue_offset=8), "m:1", 1.0
    )
    assert out.records == [] and f.positions.offsets[MQ] == 500


def test_a_corrupt_batch_is_dropped_and_its_queue_retried() -> None:
    f = fetcher()
    sent = issue(f)
    bad = bytearray(record(100, queue_offset=7))
    bad[-1] ^= 0xFF  # the CRC no longer matches
    resp = pb.PullResponse(status=pb.FOUND, records=bytes(bad), count=1, next_queue_offset=8)
    out = answer(f, sent, resp, "m:1", 2.0)
    assert out.records == [] and f.positions.offsets[MQ] == 7 and f.retry_at[MQ] == 2.0 + RETRY_BACKOFF_S
