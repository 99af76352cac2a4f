"""The producer's send logic (consumer/send_logic.py) driven by a scripted
driver and a fake clock: what it asks for, in what order, and when it gives up."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consumer.circuit import Grant
from consumer.send_logic import Action, AutoCreateLookup, Call, Pause, RouteLookup, SendLogic, by_key
from core.errors import (
    BrokerUnavailableError,
    LeaseExpiredError,
    OutcomeUnknownError,
    PermissionDeniedError,
    RequestTimeoutError,
    TailraceError,
    UnauthenticatedError,
    UnknownTopicError,
)
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import BrokerEndpoint, GroupRoute, MessageQueue, TopicRoute

pytestmark = pytest.mark.unit
MSGS = [b"x"]
OK = pb.SendResponse(status=pb.SEND_OK, topic="T", queue_id=0, queue_offsets=[0], physical_offsets=[64])
REFUSED = BrokerUnavailableError("failed to connect to all addresses")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def route(*groups: str) -> TopicRoute:
    return TopicRoute(
        "T",
        tuple(
            GroupRoute(g, "c", 2, 2, "rw", (BrokerEndpoint(0, f"{g}:1", "master", 1, True),)) for g in groups
        ),
    )


def drive(
    logic: SendLogic, clock: Clock, answer: Callable[[Action], object], **kw: object
) -> tuple[object, list[Action]]:
    """Run one send; each Call and Pause takes its time on the fake clock."""
    steps = logic.steps("T", MSGS, **kw)  # type: ignore[arg-type]
    seen: list[Action] = []
    result: object = None
    try:
        while True:
            action = steps.send(result)
            seen.append(action)
            assert len(seen) < 10_000, "a send that never ends"
            if isinstance(action, Pause):
                clock.t += action.seconds
            if isinstance(action, Call):
                assert action.timeout_s > 0
                clock.t += 0.001
            result = answer(action)
    except StopIteration as done:
        return done.value, seen
    except TailraceError as exc:  # the send's own failure (the test's assertions still raise)
        return exc, seen


def logic(clock: Clock, **kw: object) -> SendLogic:
    args: dict[str, object] = {
        "broker": None, "selector": None, "retries": 2, "retry_timeout_s": 20.0, "rpc_timeout_s": 10.0,
        "backoff_s": 5.0, "clock": clock,
    }  # fmt: skip
    args.update(kw)
    return SendLogic(**args)  # type: ignore[arg-type]


def test_a_dead_group_is_left_for_a_live_one_at_once() -> None:
    clock = Clock()
    lg = logic(clock)

    def answer(a: Action) -> object:
        if isinstance(a, RouteLookup):
            return route("a", "b")
        assert isinstance(a, Call)
        return REFUSED if a.address == "a:1" else OK

    for _ in range(4):
        receipts, seen = drive(lg, clock, answer)
        assert isinstance(receipts, list) and receipts[0].address == "b:1"
        assert not any(isinstance(a, Pause) for a in seen)


def test_a_broker_failing_for_the_timeout_fails_later_sends_at_once() -> None:
    clock = Clock()
    lg = logic(clock)

    def answer(a: Action) -> object:
        return route("a") if isinstance(a, RouteLookup) else REFUSED

    err, seen = drive(lg, clock, answer)
    assert isinstance(err, BrokerUnavailableError) and clock.t - 1000.0 <= 20.0
    clock.t = 1000.0 + 20.01  # failing since the first failure (at 1000.001) for retry_timeout_s now
    t0 = clock.t
    err, seen = drive(lg, clock, answer)  # the circuit (and the topic's) is open now
    assert isinstance(err, BrokerUnavailableError) and "has failed for" in str(err)
    assert clock.t - t0 <= 0.01 and not any(isinstance(a, Call) for a in seen)
    clock.t += 1.0  # a probe is due: one send goes through, and closes it when it works
    _, seen = drive(lg, clock, lambda a: route("a") if isinstance(a, RouteLookup) else OK)
    assert sum(isinstance(a, Call) for a in seen) == 1
    assert lg.breaker.allow("a:1", clock.t) is Grant.GO and lg.breaker.allow("topic T", clock.t) is Grant.GO


def test_a_keyed_send_to_an_open_broker_fails_at_once_instead_of_spinning() -> None:
    clock = Clock()
    lg = logic(clock, selector=by_key)
    for t in range(0, 21, 2):
        lg.breaker.failed("b:1", clock.t + t, "refused")
    clock.t += 20.5
    err, seen = drive(lg, clock, lambda a: route("a", "b"), key=next(k for k in map(str, range(99)) if by_key(
        route("a", "b").write_queues(), k).broker_name == "b"))  # fmt: skip
    assert isinstance(err, BrokerUnavailableError) and "circuit open" in str(err)
    assert len(seen) == 1  # one route lookup, no spinning


def test_pinned_sends_to_a_dead_group_do_not_close_the_topic() -> None:
    clock = Clock()
    lg = logic(clock)

    def answer(a: Action) -> object:
        if isinstance(a, RouteLookup):
            return route("a", "b")
        return REFUSED if isinstance(a, Call) and a.address == "b:1" else OK

    for _ in range(3):  # each gives up after its 20 s on the pinned, dead group
        err, _ = drive(lg, clock, answer, queue=MessageQueue("b", 0))
        assert isinstance(err, BrokerUnavailableError)
    receipts, _ = drive(lg, clock, answer)  # a free send still goes (to a)
    assert isinstance(receipts, list) and receipts[0].address == "a:1"


def test_a_probe_that_raises_releases_the_topic() -> None:
    clock = Clock()
    lg = logic(clock)
    for t in range(0, 21, 2):
        lg.breaker.failed("topic T", clock.t + t, "no route")
    clock.t += 21.5  # open, and a probe is due
    err, _ = drive(
        lg, clock,
        lambda a: UnknownTopicError("no route") if isinstance(a, RouteLookup) else UnknownTopicError(
            "topic 'T' does not exist; create it with `tailrace topic create`"),
    )  # fmt: skip
    assert isinstance(err, UnknownTopicError)
    clock.t += 1.0
    assert lg.breaker.allow("topic T", clock.t) is Grant.PROBE  # not stuck half-open


def test_no_send_outlives_its_timeout_and_lookups_get_the_time_left() -> None:
    clock = Clock()
    lg = logic(clock)
    lookups: list[float] = []

    def answer(a: Action) -> object:
        if isinstance(a, RouteLookup):
            lookups.append(a.timeout_s)
            clock.t += 0.3  # a slow nameserver
            return route("a")
        assert isinstance(a, Call) and a.timeout_s <= 1.0
        clock.t += a.timeout_s  # the broker never answers
        return RequestTimeoutError("Deadline Exceeded")

    t0 = clock.t
    err, _ = drive(lg, clock, answer, timeout_s=1.0)
    assert isinstance(err, OutcomeUnknownError)  # a call timed out: it may have been stored
    assert clock.t - t0 <= 1.0 + 0.3 + 1e-6 and all(t <= 1.0 for t in lookups)


def test_an_unknown_topic_is_sent_to_a_master_that_creates_it() -> None:
    clock = Clock()
    lg = logic(clock)
    creating = TopicRoute(
        "T", (GroupRoute("c1", "c", 0, 0, "rw", (BrokerEndpoint(0, "c1:1", "master", 1, True),), True),)
    )

    def answer(a: Action) -> object:
        if isinstance(a, RouteLookup):
            return UnknownTopicError("no route")
        if isinstance(a, AutoCreateLookup):
            return creating
        assert isinstance(a, Call) and a.address == "c1:1" and a.request.queue_id == -1
        return OK

    receipts, _ = drive(lg, clock, answer)
    assert isinstance(receipts, list) and receipts[0].status == "SEND_OK"


def test_no_retry_timeout_means_one_attempt_with_its_rpc_deadline() -> None:
    clock = Clock()
    lg = logic(clock, retry_timeout_s=0.0)
    calls: list[Call] = []

    def answer(a: Action) -> object:
        if isinstance(a, RouteLookup):
            return route("a")
        assert isinstance(a, Call)
        calls.append(a)
        return OK

    receipts, _ = drive(lg, clock, answer)
    assert isinstance(receipts, list) and len(calls) == 1 and calls[0].timeout_s == 10.0
    err, _ = drive(lg, clock, lambda a: route("a") if isinstance(a, RouteLookup) else REFUSED)
    assert isinstance(err, BrokerUnavailableError)  # failed: not retried


@pytest.mark.parametrize(
    "refusal",
    [UnauthenticatedError("bad signature for access key 'app'"), PermissionDeniedError("may not publish")],
)
def test_a_refusal_of_access_is_raised_at_once_and_never_retried(refusal: TailraceError) -> None:
    clock = Clock()
    lg = logic(clock)
    err, seen = drive(lg, clock, lambda a: route("a", "b") if isinstance(a, RouteLookup) else refusal)
    assert err is refusal
    assert [type(a) for a in seen] == [RouteLookup, Call]  # no other group, no pause, no second try
    err, seen = drive(lg, clock, lambda a: refusal)  # the nameservers refuse the route lookup
    assert err is refusal and [type(a) for a in seen] == [RouteLookup]
    assert lg.breaker.allow("a:1", clock()) is Grant.GO  # a broker that answers is not a dead one


def test_a_master_without_a_lease_is_retried_until_the_timeout_and_named_in_the_error() -> None:
    """MASTER_LEASE_EXPIRED stored nothing: retried (route looked up again)
    until the send's timeout, and the error says the distinct code; once the
    lease is renewed, the same master takes the send."""
    clock = Clock()
    lg = logic(clock, retry_timeout_s=2.0)
    lapsed = pb.SendResponse(status=pb.MASTER_LEASE_EXPIRED, detail="this master's lease lapsed")

    def answer(a: Action) -> object:
        return route("a") if isinstance(a, RouteLookup) else lapsed

    err, seen = drive(lg, clock, answer)
    assert isinstance(err, LeaseExpiredError) and str(err).startswith("MASTER_LEASE_EXPIRED: ")
    assert "lease lapsed" in str(err) and not isinstance(err, OutcomeUnknownError)
    calls = [a for a in seen if isinstance(a, Call)]
    assert len(calls) > 5 and 2.0 - 0.25 <= clock.t - 1000.0 <= 2.0  # kept trying to the end
    assert all(a.refresh for a in seen[1:] if isinstance(a, RouteLookup))
    renewed = iter([lapsed, lapsed, OK])
    receipts, _ = drive(lg, clock, lambda a: route("a") if isinstance(a, RouteLookup) else next(renewed))
    assert isinstance(receipts, list) and receipts[0].address == "a:1"
