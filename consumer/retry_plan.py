"""The producer's retry plan: a pure function of (failure, attempt, clock).

A failed send attempt is classified (`classify`), then `plan` says what to do
next: give up, or try again after a pause, on the same queue or on another
group's, with a fresh route or not. Time is passed in; the producer owns the
clock and the sleeping.

The plan (RocketMQ's retries, with a deadline):
- bad input is never retried, nor is a refusal of access (UNAUTHENTICATED,
  PERMISSION_DENIED: `ACCESS_REFUSED`, final everywhere in the client: a
  retry would be refused the same way);
- the first `quick_retries` retries go at once, each to another group when
  there is one (a dead broker costs no waiting where another can take it);
- then pauses of 50 ms doubling to 250 ms, every group eligible again, until
  the deadline: short enough that a send lands within a fraction of a second
  of a new master appearing in the routes (a failover takes about a lease);
- `SLAVE_NOT_AVAILABLE` (nothing stored; the master waits for its slaves)
  is retried on the same queue after a pause, whatever the attempt;
- `MASTER_LEASE_EXPIRED` (nothing stored; the master waits for a controller
  to renew its lease) is retried like `NOT_MASTER`, with a fresh route:
  another master may lead by now, or this one resumes;
- every retry after a broker's failure or refusal looks the route up again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from core.errors import (
    BrokerBusyError,
    BrokerUnavailableError,
    LeaseExpiredError,
    NotMasterError,
    PermissionDeniedError,
    RequestTimeoutError,
    StoreClosedError,
    TailraceError,
    UnauthenticatedError,
    UnknownTopicError,
)

ACCESS_REFUSED = (UnauthenticatedError, PermissionDeniedError)  # the server said no: never retried
FIRST_PAUSE_S = 0.05
MAX_PAUSE_S = 0.25


class Failure(Enum):
    FATAL = "fatal"  # bad input, or anything a retry cannot fix
    REFUSED = "refused"  # nothing stored: no connection, broker stopping or busy
    OUTCOME_UNKNOWN = "outcome unknown"  # the call may have been carried out (deadline, broken mid-call)
    NOT_MASTER = "not master"  # the broker answered: it does not lead (a failover, a stale route)
    # the broker answered: it leads, but no controller renewed its lease (retried like NOT_MASTER)
    LEASE_EXPIRED = "master lease expired"
    NO_ROUTE = "no route"  # no route, or no live master in it
    UNKNOWN_TOPIC = "unknown topic"  # the group does not know the topic (yet)
    SLAVE_NOT_AVAILABLE = "slave not available"  # nothing stored: too few in-sync slaves for now


@dataclass(frozen=True, slots=True)
class Step:
    retry: bool
    pause_s: float = 0.0
    same_queue: bool = False  # else another group's queue when there is one
    refresh_route: bool = True


GIVE_UP = Step(False)


def outcome_unknown(err: TailraceError) -> bool:
    """Whether a failed call may have been carried out: its deadline passed,
    or the connection broke after the call was sent (a refused connection
    or a broker that answered with an error did nothing)."""
    if isinstance(err, RequestTimeoutError):
        return True
    if isinstance(err, BrokerUnavailableError):
        text = err.message.lower()
        return not ("failed to connect" in text or "connection refused" in text or "not the master" in text)
    return False


def classify(err: TailraceError) -> Failure:
    if isinstance(err, ACCESS_REFUSED):
        return Failure.FATAL
    if isinstance(err, NotMasterError):
        return Failure.NOT_MASTER
    if isinstance(err, LeaseExpiredError):
        return Failure.LEASE_EXPIRED
    if isinstance(err, UnknownTopicError):
        return Failure.UNKNOWN_TOPIC
    if outcome_unknown(err):
        return Failure.OUTCOME_UNKNOWN
    if isinstance(err, BrokerUnavailableError | StoreClosedError | BrokerBusyError):
        return Failure.REFUSED
    if err.retriable or err.refresh_route:
        return Failure.REFUSED
    return Failure.FATAL


def pause_for(attempt: int, quick_retries: int) -> float:
    """The pause before retry number `attempt` (1-based)."""
    if attempt <= quick_retries:
        return 0.0
    return min(MAX_PAUSE_S, FIRST_PAUSE_S * float(2 ** (attempt - quick_retries - 1)))


def plan(failure: Failure, attempt: int, now: float, deadline: float, quick_retries: int = 2) -> Step:
    """What to do after attempt number `attempt` (1-based) failed with
    `failure`, at `now`, for a send that must be over by `deadline`."""
    if failure is Failure.FATAL or now >= deadline:
        return GIVE_UP
    left = deadline - now
    if failure is Failure.SLAVE_NOT_AVAILABLE:
        pause = min(MAX_PAUSE_S, FIRST_PAUSE_S * float(2 ** max(0, attempt - 1)))
        same_queue, refresh = True, False
    else:
        pause, same_queue, refresh = pause_for(attempt, quick_retries), False, True
    if pause >= left:  # the pause would use up the time: no attempt would follow it
        return GIVE_UP
    return Step(True, pause, same_queue=same_queue, refresh_route=refresh)
