"""The native pop client's choice of master and its retries through a
failover, with fake routes, connections and clock (no sockets, no sleeping)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from consumer.pop_client import PopClient
from core.errors import (
    BrokerBusyError,
    BrokerUnavailableError,
    InvalidReceiptError,
    LeaseExpiredError,
    NotMasterError,
    RequestTimeoutError,
)
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import BrokerEndpoint, GroupRoute, TopicRoute
from tests.helpers.records import make

pytestmark = pytest.mark.unit


def _route(master: str | None) -> TopicRoute:
    brokers = (BrokerEndpoint(0, master, "master", 1, True, 0),) if master else ()
    return TopicRoute("T", (GroupRoute("a", "c", 4, 4, "rw", brokers),))


@dataclass
class Clock:
    now: float = 0.0
    pauses: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


@dataclass
class FakeRoutes:
    routes: list[TopicRoute]
    refreshes: int = 0
    clock: Clock = field(default_factory=Clock)
    refresh_s: float = 0.0  # how long a refresh takes

    def get(self, topic: str, refresh: bool = False, timeout_s: float | None = None) -> TopicRoute:
        if refresh:
            self.refreshes += 1
            self.clock.now += self.refresh_s
        return self.routes[min(self.refreshes, len(self.routes) - 1)]


@dataclass
class FakeStub:
    answers: dict[str, list[Any]]
    calls: list[tuple[str, str, Any]]
    address: str
    timeouts: list[float]
    clock: Clock

    def __getattr__(self, method: str) -> Any:
        def call(request: Any, timeout: float) -> Any:
            sent = type(request)()
            sent.CopyFrom(request)  # as it went out (a retry may change the request)
            self.calls.append((self.address, method, sent))
            self.timeouts.append(timeout)
            answer = self.answers[self.address].pop(0)
            if isinstance(answer, tuple):  # (seconds the call takes, then its answer)
                self.clock.now += answer[0]
                answer = answer[1]
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call


@dataclass
class FakeConn:
    stub: FakeStub

    def call(self, method: Any, request: Any, timeout_s: float | None = None) -> Any:
        return method(request, timeout=timeout_s)


@dataclass
class FakePool:
    answers: dict[str, list[Any]]
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)
    clock: Clock = field(default_factory=Clock)

    def get(self, address: str) -> FakeConn:
        return FakeConn(FakeStub(self.answers, self.calls, address, self.timeouts, self.clock))


Answers = dict[str, list[Any]]


def _client(routes: list[TopicRoute], answers: Answers) -> tuple[PopClient, FakePool, FakeRoutes]:
    clock = Clock()
    r, pool = FakeRoutes(routes, clock=clock), FakePool(answers, clock=clock)
    return PopClient(r, pool, clock=clock, sleep=clock.sleep), pool, r  # type: ignore[arg-type]


def _record() -> bytes:
    return make(topic="T", queue_id=1, queue_offset=7, body=b"body", tags="tagA")


def test_pop_goes_to_the_groups_master_and_decodes_the_records() -> None:
    popped = pb.PoppedRecord(record=_record(), attempt=2, receipt_handle="h", deadline_ms=9)
    client, pool, _ = _client([_route("m:1")], {"m:1": [pb.PopResponse(messages=[popped])]})
    batch = client.pop("a", "G", "T", invisible_ms=1000, timeout_s=3, wait_ms=10_000, tag_expression="x||y")
    (m,) = batch.messages
    assert (m.record.body, m.record.tags, m.attempt, m.handle, batch.address) == (
        b"body",
        "tagA",
        2,
        "h",
        "m:1",
    )
    req = pool.calls[0][2]
    assert (req.queue_id, req.invisible_ms, req.max_wait_ms) == (-1, 1000, 2500)  # the wait leaves a margin
    assert req.tag_expression == "x||y"


def test_not_master_follows_the_named_master_once() -> None:
    answers: Answers = {
        "old:1": [NotMasterError("no", "new:1")],
        "new:1": [pb.ChangeInvisibleResponse(receipt_handle="h2")],
    }
    client, pool, routes = _client([_route("old:1")], answers)
    assert client.change_invisible("a", "G", "T", "h", 0, 3) == ("h2", 0)
    assert [c[0] for c in pool.calls] == ["old:1", "new:1"] and routes.refreshes == 0


REFUSED = BrokerUnavailableError("failed to connect to all addresses")  # nothing was sent


def test_a_failover_is_waited_out_with_fresh_routes_and_pauses() -> None:
    """The master killed: its connection refused, then no master in the
    route while the controller elects, then the promoted slave in it."""
    answers: Answers = {
        "old:1": [REFUSED, REFUSED],
        "new:1": [pb.AckPopResponse(results=[pb.AckPopResult(receipt_handle="h")])],
    }
    routes = [_route("old:1"), _route("old:1"), _route(None), _route(None), _route("new:1")]
    client, pool, r = _client(routes, answers)
    assert [o.error for o in client.ack("a", "G", "T", ["h"], 3)] == [None]
    assert [c[0] for c in pool.calls] == ["old:1", "old:1", "new:1"] and r.refreshes == 4
    assert pool.clock.pauses == [0.05, 0.1, 0.2]  # the producer's: once at once, then 50 ms doubling


def test_an_unreachable_master_is_tried_until_the_calls_time_is_up() -> None:
    client, pool, _ = _client([_route("old:1")], {"old:1": [REFUSED] * 100})
    with pytest.raises(BrokerUnavailableError):
        client.ack("a", "G", "T", ["h"], 2)
    assert 2 - 0.25 <= pool.clock.now <= 2  # no pause past the time, none that leaves no try after it
    assert max(pool.clock.pauses) == 0.25 and 8 <= len(pool.calls) <= 12


def test_a_renewal_does_not_wait_a_failover_out() -> None:
    """The proxy's one renewing thread would lag by a failover per handle;
    it tries a failed handle again a second later instead."""
    client, pool, _ = _client([_route("old:1")], {"old:1": [REFUSED] * 10})
    with pytest.raises(BrokerUnavailableError):
        client.renew("a", "G", "T", "h", 60_000, 2)
    assert len(pool.calls) == 2 and pool.clock.now == 0


@pytest.mark.parametrize(
    "refusal",
    [
        BrokerBusyError("1 in-sync slave(s) needed; nothing popped"),  # a new master's slave catching up
        LeaseExpiredError("lease lapsed"),
        NotMasterError("not the master"),  # naming no one: the route is asked again
    ],
)
def test_a_master_that_did_nothing_is_asked_again(refusal: Exception) -> None:
    answers: Answers = {"m:1": [refusal, pb.PopResponse(held=True)]}
    client, pool, routes = _client([_route("m:1")], answers)
    assert client.pop("a", "G", "T", invisible_ms=1000, timeout_s=3).held
    assert len(pool.calls) == 2 and routes.refreshes == 1


def test_no_master_in_the_cached_route_refreshes_it() -> None:
    answers = {"m:1": [pb.AckPopResponse(results=[pb.AckPopResult(receipt_handle="h")])]}
    client, _, routes = _client([_route(None), _route("m:1")], answers)
    assert [o.error for o in client.ack("a", "G", "T", ["h"], 3)] == [None]
    assert routes.refreshes == 1


def test_ack_reports_each_handles_outcome() -> None:
    results = [
        pb.AckPopResult(receipt_handle="h1"),
        pb.AckPopResult(receipt_handle="h2", error_code="INVALID_RECEIPT_HANDLE", detail="acked already"),
    ]
    client, _, _ = _client([_route("m:1")], {"m:1": [pb.AckPopResponse(results=results)]})
    out = client.ack("a", "G", "T", ["h1", "h2"], 3)
    assert out[0].error is None and isinstance(out[1].error, InvalidReceiptError)


def test_a_retried_pop_asks_the_master_to_hold_only_for_the_time_left() -> None:
    broke = BrokerUnavailableError("failed to connect to all addresses")  # (nothing sent: retried)
    answers: Answers = {"old:1": [(10.0, broke)], "new:1": [pb.PopResponse()]}
    client, pool, routes = _client([_route("old:1"), _route("new:1")], answers)
    routes.refresh_s = 4.0  # a slow nameserver
    client.pop("a", "G", "T", invisible_ms=1000, timeout_s=20, wait_ms=19_500)
    waits = [c[2].max_wait_ms for c in pool.calls]
    assert waits == [19_500, 5_500]  # 20 s - 14 s spent - the 0.5 s margin
    assert pool.timeouts == [20, 6]
    assert all(w / 1000 + 0.5 <= t for w, t in zip(waits, pool.timeouts, strict=True))


@pytest.mark.parametrize(
    "failure",
    [
        BrokerUnavailableError("Socket closed"),  # the connection broke after the request went out
        BrokerUnavailableError("Cancelled"),
        RequestTimeoutError("Deadline Exceeded"),
    ],
)
def test_a_call_whose_outcome_is_unknown_is_not_tried_again(failure: Exception) -> None:
    # a second try could pop a second batch, or answer a done ack INVALID_RECEIPT_HANDLE
    for method, call in (
        ("Pop", lambda c: c.pop("a", "G", "T", invisible_ms=1000, timeout_s=3)),
        ("AckPop", lambda c: c.ack("a", "G", "T", ["h"], 3)),
        ("ChangeInvisible", lambda c: c.change_invisible("a", "G", "T", "h", 0, 3)),
        ("PopDeadLetter", lambda c: c.dead_letter("a", "G", "T", "h", 3)),
    ):
        client, pool, routes = _client([_route("old:1"), _route("new:1")], {"old:1": [failure], "new:1": []})
        with pytest.raises(type(failure)):
            call(client)
        assert [c[:2] for c in pool.calls] == [("old:1", method)] and routes.refreshes == 0


def test_a_group_with_no_master_yet_is_tried_again_after_a_refresh() -> None:
    answers: Answers = {"m:1": [pb.PopDeadLetterResponse()]}
    client, pool, routes = _client([_route(None), _route("m:1")], answers)
    client.dead_letter("a", "G", "T", "h", 3)  # nothing was sent the first time: safe to try again
    assert [c[0] for c in pool.calls] == ["m:1"] and routes.refreshes == 1


def test_a_renewal_asks_to_keep_the_handle() -> None:
    answers: Answers = {"m:1": [pb.ChangeInvisibleResponse(receipt_handle="h", deadline_ms=77)]}
    client, pool, _ = _client([_route("m:1")], answers)
    assert client.renew("a", "G", "T", "h", 60_000, 3) == 77
    req = pool.calls[0][2]
    assert (req.receipt_handle, req.invisible_ms, req.keep_handle) == ("h", 60_000, True)
