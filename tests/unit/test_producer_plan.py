"""The producer's retry plan (a table) and its circuit breaker (a fake clock)."""

from __future__ import annotations

import pytest

from consumer.circuit import CircuitBreaker, State
from consumer.retry_plan import Failure, classify, pause_for, plan
from core.errors import (
    BrokerBusyError,
    BrokerUnavailableError,
    InvalidArgumentError,
    MessageTooLargeError,
    NotMasterError,
    RequestTimeoutError,
    StoreClosedError,
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
        (UnknownTopicError("no T"), Failure.UNKNOWN_TOPIC),
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
    (Failure.REFUSED, 9, 0.1, (True, 0.1, False, True)),  # never past the deadline
    (Failure.REFUSED, 3, 0.0, (False, 0.0, False, True)),  # time is up
    (Failure.OUTCOME_UNKNOWN, 1, 10.0, (True, 0.0, False, True)),
    (Failure.NOT_MASTER, 1, 10.0, (True, 0.0, False, True)),
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
    assert 3.0 <= now < 3.3 and attempt > 10
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
    cb.failed(a, 30.0, "x")
    assert cb.state(a, 39.0) is State.CLOSED and cb.state(a, 40.0) is State.OPEN
