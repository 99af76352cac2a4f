"""The producer's retry plan (a table) and its circuit breaker (a fake clock)."""

from __future__ import annotations

import pytest

from consumer.circuit import CircuitBreaker, Grant, State
from consumer.retry_plan import Failure, classify, pause_for, plan
from core.errors import (
    BrokerBusyError,
    BrokerUnavailableError,
    InvalidArgumentError,
    LeaseExpiredError,
    MessageTooLargeError,
    NotMasterError,
    PermissionDeniedError,
    RequestTimeoutError,
    StoreClosedError,
    UnauthenticatedError,
    UnknownTopicError,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (InvalidArgumentError("bad"), Failure.FATAL),
        (MessageTooLargeError("big"), Failure.FATAL),
        (BrokerUnavailableError("failed to connect to all addresses"), Failure.REFUSED),
        (BrokerUnavailableError("Connection refused"), Failure.REFUSED),
        (BrokerUnavailableError("Socket closed"), Failure.OUTCOME_UNKNOWN),  # broke mid-call
        (RequestTimeoutError("Deadline Exceeded"), Failure.OUTCOME_UNKNOWN),
        (StoreClosedError("stopping"), Failure.REFUSED),
        (BrokerBusyError("too many calls"), Failure.REFUSED),
        (NotMasterError("not me", "h:1"), Failure.NOT_MASTER),
        (LeaseExpiredError("lease lapsed"), Failure.LEASE_EXPIRED),
        (UnknownTopicError("no T"), Failure.UNKNOWN_TOPIC),
        # refusals of access are final: a retry is refused the same way
        (UnauthenticatedError("bad signature for access key 'app'"), Failure.FATAL),
        (UnauthenticatedError("anonymous access is off"), Failure.FATAL),
        (PermissionDeniedError("account 'app' may not publish to topic 'T'"), Failure.FATAL),
    ],
)
def test_classify(error: Exception, failure: Failure) -> None:
    assert classify(error) is failure  # type: ignore[arg-type]


# (failure, attempt, seconds left) -> (retry, pause, same queue, refresh route)
PLAN = [
    (Failure.FATAL, 1, 10.0, (False, 0.0, False, True)),
    (Failure.REFUSED, 1, 10.0, (True, 0.0, False, True)),  # at once, another group
    (Failure.REFUSED, 2, 10.0, (True, 0.0, False, True)),
    (Failure.REFUSED, 3, 10.0, (True, 0.05, False, True)),  # then pauses, doubling
    (Failure.REFUSED, 4, 10.0, (True, 0.1, False, True)),
    (Failure.REFUSED, 5, 10.0, (True, 0.2, False, True)),
    (Failure.REFUSED, 9, 10.0, (True, 0.25, False, True)),  # capped
    (Failure.REFUSED, 9, 0.1, (False, 0.0, False, True)),  # a pause that would use up the time: over
    (Failure.REFUSED, 3, 0.1, (True, 0.05, False, True)),  # a pause that leaves time for an attempt
    (Failure.REFUSED, 3, 0.0, (False, 0.0, False, True)),  # time is up
    (Failure.OUTCOME_UNKNOWN, 1, 10.0, (True, 0.0, False, True)),
    (Failure.NOT_MASTER, 1, 10.0, (True, 0.0, False, True)),
    (Failure.LEASE_EXPIRED, 1, 10.0, (True, 0.0, False, True)),  # like NOT_MASTER, a fresh route
    (Failure.LEASE_EXPIRED, 9, 10.0, (True, 0.25, False, True)),
    (Failure.NO_ROUTE, 3, 10.0, (True, 0.05, False, True)),
    (Failure.UNKNOWN_TOPIC, 1, 10.0, (True, 0.0, False, True)),
    (Failure.SLAVE_NOT_AVAILABLE, 1, 10.0, (True, 0.05, True, False)),  # the same queue, after a pause
    (Failure.SLAVE_NOT_AVAILABLE, 4, 10.0, (True, 0.25, True, False)),
    (Failure.SLAVE_NOT_AVAILABLE, 4, -1.0, (False, 0.0, False, True)),
]


@pytest.mark.parametrize(("failure", "attempt", "left", "expect"), PLAN)
def test_retry_plan(
    failure: Failure, attempt: int, left: float, expect: tuple[bool, float, bool, bool]
) -> None:
    now = 100.0
    step = plan(failure, attempt, now, now + left, quick_retries=2)
    assert (step.retry, round(step.pause_s, 6), step.same_queue, step.refresh_route) == expect


def test_pauses_never_sum_past_the_deadline() -> None:
    now, deadline, attempt = 0.0, 3.0, 0
    while True:
        attempt += 1
        step = plan(Failure.REFUSED, attempt, now, deadline)
        if not step.retry:
            break
        now += step.pause_s + 0.01  # the attempt itself takes 10 ms
    assert 2.75 <= now <= 3.0 and attempt > 10  # never past the deadline
    assert pause_for(1, 2) == pause_for(2, 2) == 0.0


def test_a_broker_failing_for_the_timeout_opens_and_a_probe_closes_it() -> None:
    cb = CircuitBreaker(open_after_s=20.0, probe_every_s=1.0, avoid_s=5.0)
    a = "a:1"
    assert cb.allow(a, 0.0) and cb.state(a, 0.0) is State.CLOSED
    cb.failed(a, 0.0, "refused")
    assert cb.avoid(a, 1.0) and not cb.avoid(a, 6.0)  # avoided for a while where others can serve
    for t in range(1, 20):  # failing, but not for long enough: sends still go
        assert cb.allow(a, float(t))
        cb.failed(a, float(t), "refused")
    assert cb.state(a, 19.5) is State.CLOSED
    cb.failed(a, 20.0, "refused")
    assert cb.state(a, 20.0) is State.OPEN
    assert not cb.allow(a, 20.5)  # open: at once
    assert "failed for 20 s" in cb.why(a, 20.5) and "refused" in cb.why(a, 20.5)
    assert cb.allow(a, 21.0)  # the probe
    assert cb.state(a, 21.0) is State.HALF_OPEN
    assert not cb.allow(a, 21.0)  # one probe at a time
    cb.failed(a, 21.5, "still refused")
    assert not cb.allow(a, 22.0) and cb.allow(a, 22.5)  # the next probe a second later
    cb.succeeded(a)
    assert cb.state(a, 22.6) is State.CLOSED and cb.allow(a, 22.6) and not cb.avoid(a, 22.6)


def test_an_answer_is_not_a_failure_and_a_success_resets_the_count() -> None:
    cb = CircuitBreaker(open_after_s=10.0)
    a = "a:1"
    cb.failed(a, 0.0, "refused")
    cb.answered(a)  # e.g. UNKNOWN_TOPIC: the broker is up
    cb.failed(a, 9.0, "refused")
    assert cb.state(a, 12.0) is State.CLOSED  # failing for 3 s only, not 12
    cb.refused(a, 12.0)  # NOT_MASTER: up, but avoided
    assert cb.avoid(a, 13.0) and cb.state(a, 13.0) is State.CLOSED
    cb.failed(a, 13.0, "x")
    cb.succeeded(a)
    for t in range(30, 41, 2):  # failing again, from 30 on
        cb.failed(a, float(t), "x")
    assert cb.state(a, 39.9) is State.CLOSED and cb.state(a, 40.0) is State.OPEN
    assert cb.state(a, 45.1) is State.CLOSED  # nothing tried for half the time: closed again


def test_one_glitch_then_a_quiet_spell_is_not_a_dead_broker() -> None:
    cb = CircuitBreaker(open_after_s=20.0)
    cb.failed("a", 0.0, "timeout")
    cb.failed("a", 30.0, "timeout")  # the next failure long after: counted from here
    assert cb.state("a", 30.0) is State.CLOSED and cb.allow("a", 30.0) is Grant.GO


def test_an_open_broker_is_tried_when_its_probe_is_due_even_with_other_groups_up() -> None:
    cb = CircuitBreaker(open_after_s=2.0, probe_every_s=1.0, avoid_s=5.0)
    for t in (0.0, 0.5, 1.0, 1.5, 2.0):
        cb.failed("a", t, "refused")
    assert cb.state("a", 2.0) is State.OPEN
    assert cb.avoid("a", 2.5)  # probe not due: other groups take the sends
    assert not cb.avoid("a", 3.0)  # due: chosen again, so that it can close
    assert cb.allow("a", 3.0) is Grant.PROBE and cb.avoid("a", 3.1)
    cb.succeeded("a")
    assert not cb.avoid("a", 3.2) and cb.allow("a", 3.2) is Grant.GO


def test_a_probe_that_never_reports_does_not_hold_the_circuit_for_good() -> None:
    cb = CircuitBreaker(open_after_s=10.0, probe_every_s=1.0)
    for t in range(11):
        cb.failed("a", float(t), "refused")
    assert cb.allow("a", 11.0) is Grant.PROBE
    assert cb.allow("a", 12.0) is Grant.REFUSED  # one probe at a time
    assert cb.allow("a", 15.1) is Grant.GO  # nothing heard for half the time: closed, tried afresh
    for t in range(16, 27):
        cb.failed("a", float(t), "refused")
    assert cb.allow("a", 27.0) is Grant.PROBE
    cb.release("a")  # its sender ended without a verdict
    assert cb.allow("a", 27.1) is Grant.PROBE
