"""The pop client's cold reads (issue 18): a Pop asked with
bodies_elsewhere, the bodies the master left out read from the slave it
named, the master's Pull for what the slave cannot serve, another tag acked
and a message without a body given back. Fake routes and connections."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from consumer.pop_client import COLD_FETCH_S, PENALTY_S, WAIT_MARGIN_S, PopClient
from core.errors import BrokerUnavailableError, RequestTimeoutError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import BrokerEndpoint, GroupRoute, TopicRoute
from tests.helpers.records import make
from tests.unit.test_pop_client import Answers, Clock, FakePool, FakeRoutes

pytestmark = pytest.mark.unit


def _route(slave_alive: bool = True) -> TopicRoute:
    brokers = (
        BrokerEndpoint(0, "m:1", "master", 1, True, 0),
        BrokerEndpoint(1, "s:1", "slave", 1, slave_alive, 0),
    )
    return TopicRoute("T", (GroupRoute("a", "c", 4, 4, "rw", brokers),))


def _client(answers: Answers, slave_alive: bool = True) -> tuple[PopClient, FakePool]:
    clock = Clock()
    r, pool = FakeRoutes([_route(slave_alive)], clock=clock), FakePool(answers, clock=clock)
    client = PopClient(r, pool, clock=clock, bodies_elsewhere=True, wall=clock)  # type: ignore[arg-type]
    return client, pool


def _rec(offset: int, tags: str = "x") -> bytes:
    return make(topic="T", queue_id=2, queue_offset=offset, body=f"b{offset}".encode(), tags=tags)


def _cold(offset: int, tags: str = "x", deadline_ms: int = 60_000) -> pb.PoppedRecord:
    size = len(_rec(offset, tags))
    return pb.PoppedRecord(
        attempt=1,
        receipt_handle=f"h{offset}",
        deadline_ms=deadline_ms,  # on the fake clock, which is the wall clock too
        queue_id=2,
        queue_offset=offset,
        size=size,
        read_from=1,
        physical_offset=1 << 40,  # as `make` stores it
    )


def _pulled(*records: bytes) -> pb.PullResponse:
    return pb.PullResponse(status=pb.FOUND, records=b"".join(records), count=len(records))


def _pop(client: PopClient, tags: str = "*") -> list[bytes]:
    batch = client.pop("a", "G", "T", invisible_ms=1000, timeout_s=3, tag_expression=tags)
    return [m.record.body for m in batch.messages]


def _calls(pool: FakePool) -> list[tuple[str, str]]:
    return [(address, method) for address, method, _ in pool.calls]


def test_the_bodies_left_out_are_read_from_the_named_slave_in_one_pull() -> None:
    hot = pb.PoppedRecord(record=_rec(0), attempt=1, receipt_handle="h0", deadline_ms=9)
    answers: dict[str, list[Any]] = {
        "m:1": [pb.PopResponse(messages=[hot, _cold(5), _cold(6)])],
        "s:1": [_pulled(_rec(5), _rec(6))],
    }
    client, pool = _client(answers)
    assert _pop(client) == [b"b0", b"b5", b"b6"]
    assert pool.calls[0][2].bodies_elsewhere
    pull = pool.calls[1][2]
    assert (pool.calls[1][:2], pull.group, pull.queue_id, pull.queue_offset, pull.max_messages) == (
        ("s:1", "Pull"), "G", 2, 5, 2,
    )  # fmt: skip
    assert client.bodies == {"pop": 1, "slave": 2, "master_pull": 0}


def test_a_slave_that_fails_sends_the_read_to_the_master() -> None:
    answers: dict[str, list[Any]] = {
        "m:1": [pb.PopResponse(messages=[_cold(5), _cold(6)]), _pulled(_rec(5), _rec(6))],
        "s:1": [BrokerUnavailableError("down")],
    }
    client, pool = _client(answers)
    assert _pop(client) == [b"b5", b"b6"]
    assert _calls(pool) == [("m:1", "Pop"), ("s:1", "Pull"), ("m:1", "Pull")]
    assert client.bodies["master_pull"] == 2 and client.bodies["slave"] == 0


def test_a_slave_the_route_says_is_down_is_not_asked() -> None:
    answers: dict[str, list[Any]] = {"m:1": [pb.PopResponse(messages=[_cold(5)]), _pulled(_rec(5))]}
    client, pool = _client(answers, slave_alive=False)
    assert _pop(client) == [b"b5"]
    assert _calls(pool) == [("m:1", "Pop"), ("m:1", "Pull")]


def test_another_tag_behind_a_hash_collision_is_acked_not_delivered() -> None:
    answers: dict[str, list[Any]] = {
        "m:1": [
            pb.PopResponse(messages=[_cold(5, "x"), _cold(6, "y")]),
            pb.AckPopResponse(results=[pb.AckPopResult()]),
        ],
        "s:1": [_pulled(_rec(5, "x"), _rec(6, "y"))],
    }
    client, pool = _client(answers)
    assert _pop(client, tags="x") == [b"b5"]
    address, method, ack = pool.calls[-1]
    assert (address, method, list(ack.receipt_handles)) == ("m:1", "AckPop", ["h6"])
    assert client.bodies["tag_mismatch"] == 1


def test_a_message_no_broker_has_is_given_back_not_dropped() -> None:
    answers: dict[str, list[Any]] = {
        "m:1": [
            pb.PopResponse(messages=[_cold(5), _cold(6)]),
            pb.PullResponse(status=pb.NO_NEW_MSG),  # the master: not there either (6)
            pb.ChangeInvisibleResponse(receipt_handle="h6b", deadline_ms=1),
        ],
        "s:1": [_pulled(_rec(5)), pb.PullResponse(status=pb.RETRY_ELSEWHERE)],  # the slave stops after 5
    }
    client, pool = _client(answers)
    assert _pop(client) == [b"b5"]
    address, method, change = pool.calls[-1]
    assert (address, method, change.receipt_handle, change.invisible_ms) == (
        "m:1",
        "ChangeInvisible",
        "h6",
        1000,
    )
    assert client.bodies["given_back"] == 1


def test_without_the_flag_the_request_asks_for_bodies() -> None:
    hot = pb.PoppedRecord(record=_rec(0), attempt=1, receipt_handle="h0", deadline_ms=9)
    clock = Clock()
    pool = FakePool({"m:1": [pb.PopResponse(messages=[hot])]}, clock=clock)
    client = PopClient(FakeRoutes([_route()], clock=clock), pool, clock=clock)  # type: ignore[arg-type]
    assert _pop(client) == [b"b0"]
    assert not pool.calls[0][2].bodies_elsewhere


def test_a_hung_slave_costs_its_share_then_its_group_pops_with_bodies_for_a_while() -> None:
    hot = pb.PoppedRecord(record=_rec(7), attempt=1, receipt_handle="h7", deadline_ms=9)
    answers: dict[str, list[Any]] = {
        "m:1": [
            pb.PopResponse(messages=[_cold(5), _cold(6)]),
            _pulled(_rec(5), _rec(6)),
            pb.PopResponse(messages=[hot]),  # kept out: the master reads the bodies
            pb.PopResponse(messages=[_cold(8)]),
            _pulled(_rec(8)),
        ],
        "s:1": [(1.0, RequestTimeoutError("deadline exceeded")), _pulled(_rec(8))],
    }
    client, pool = _client(answers)
    assert _pop(client) == [b"b5", b"b6"]  # the master served them in the time the slave left
    assert _calls(pool) == [("m:1", "Pop"), ("s:1", "Pull"), ("m:1", "Pull")]
    assert pool.timeouts[1] <= 1.0 and pool.timeouts[2] >= 1.0
    assert _pop(client) == [b"b7"]
    assert not pool.calls[3][2].bodies_elsewhere
    pool.clock.now += PENALTY_S
    assert _pop(client) == [b"b8"]
    assert pool.calls[4][2].bodies_elsewhere and _calls(pool)[-1] == ("s:1", "Pull")


def test_a_held_cold_pop_leaves_the_bodies_reads_time_of_their_own() -> None:
    answers: dict[str, list[Any]] = {"m:1": [pb.PopResponse(), pb.PopResponse()]}
    client, pool = _client(answers)
    client.pop("a", "G", "T", invisible_ms=30_000, timeout_s=20, wait_ms=30_000)
    assert pool.calls[0][2].max_wait_ms == int((20 - WAIT_MARGIN_S - COLD_FETCH_S) * 1000)
    client.bodies_elsewhere = False
    client.pop("a", "G", "T", invisible_ms=30_000, timeout_s=20, wait_ms=30_000)
    assert pool.calls[1][2].max_wait_ms == int((20 - WAIT_MARGIN_S) * 1000)  # a hot answer carries them


def test_the_reads_end_before_the_invisibility_and_a_late_body_is_given_back() -> None:
    """Invisible for 2 s: the reads must end 1 s before (the slave gets
    half of that); a body that arrives past it is not delivered (its
    handle may be another pop's by the time the client acks) but given
    back while the handle is live."""
    answers: dict[str, list[Any]] = {
        "m:1": [
            pb.PopResponse(messages=[_cold(5, deadline_ms=2000)]),
            (0.9, _pulled(_rec(5))),  # the master's answer comes 0.9 s later: too late
            pb.ChangeInvisibleResponse(receipt_handle="h5b", deadline_ms=1),
        ],
        "s:1": [(0.5, RequestTimeoutError("deadline exceeded"))],
    }
    client, pool = _client(answers)
    batch = client.pop("a", "G", "T", invisible_ms=2000, timeout_s=20)
    assert batch.messages == []
    assert pool.timeouts[1] == pytest.approx(0.5) and pool.timeouts[2] == pytest.approx(0.5)
    assert _calls(pool)[-1] == ("m:1", "ChangeInvisible") and client.bodies["given_back"] == 1


def test_a_failed_ack_of_another_tag_is_tried_again() -> None:
    answers: dict[str, list[Any]] = {
        "m:1": [
            pb.PopResponse(messages=[_cold(5, "x"), _cold(6, "y")]),
            RequestTimeoutError("deadline exceeded"),  # the ack's outcome unknown
            pb.AckPopResponse(results=[pb.AckPopResult()]),
        ],
        "s:1": [_pulled(_rec(5, "x"), _rec(6, "y"))],
    }
    client, pool = _client(answers)
    assert _pop(client, tags="x") == [b"b5"]
    assert [(c[1], list(c[2].receipt_handles)) for c in pool.calls[-2:]] == [("AckPop", ["h6"])] * 2
    assert client.bodies["tag_mismatch"] == 1


def test_the_bodies_counters_change_under_a_lock() -> None:
    answers: dict[str, list[Any]] = {
        "m:1": [pb.PopResponse(messages=[_cold(5)])],
        "s:1": [_pulled(_rec(5))],
    }
    client, _ = _client(answers)

    class Checked(Counter[str]):
        def __setitem__(self, key: str, value: int) -> None:
            assert client._lock.locked()  # receives run on many threads
            super().__setitem__(key, value)

    client.bodies = Checked()
    assert _pop(client) == [b"b5"]
    assert client.counts() == {"pop": 0, "slave": 1, "master_pull": 0}
