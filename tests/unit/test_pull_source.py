"""Which broker a queue is pulled from (consumer/pull_source.py), as a table:
the broker's advice in, the next pull's broker out, the clock passed in."""

from __future__ import annotations

import pytest

from consumer.pull_source import REPLICA_AVOID_S, PullSources
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import BrokerEndpoint, GroupRoute, MessageQueue, TopicRoute

pytestmark = pytest.mark.unit
MQ = MessageQueue("g", 0)


def route(*alive_slaves: int, dead: tuple[int, ...] = ()) -> TopicRoute:
    brokers = [BrokerEndpoint(0, "m:1", "master", 1, True)]
    brokers += [BrokerEndpoint(b, f"s{b}:1", "slave", 1, True) for b in alive_slaves]
    brokers += [BrokerEndpoint(b, f"s{b}:1", "slave", 1, False) for b in dead]
    return TopicRoute("t", (GroupRoute("g", "c", 4, 4, "rw", tuple(brokers)),))


def answer(suggested: int, served_by: int = 0, reason: str = "") -> pb.PullResponse:
    return pb.PullResponse(
        status=pb.FOUND, suggested_broker_id=suggested, served_by=served_by, suggestion_reason=reason
    )


# (pulled from now, suggestion, slaves alive, slaves listed dead, avoided until, now)
#   -> (switched, pulled from next, address of the next pull)
TABLE = [
    ("stay on the master", 0, -1, (1, 2), (), {}, 10.0, (False, 0, "m:1")),
    ("follow a slave the route lists", 0, 2, (1, 2), (), {}, 10.0, (True, 2, "s2:1")),
    ("a slave the route does not list yet", 0, 3, (1, 2), (), {}, 10.0, (False, 0, "m:1")),
    ("a slave that failed us a moment ago", 0, 1, (1,), (), {1: 20.0}, 10.0, (False, 0, "m:1")),
    ("its avoid window is over", 0, 1, (1,), (), {1: 20.0}, 20.5, (True, 1, "s1:1")),
    ("back to the master when told", 1, 0, (1,), (), {}, 10.0, (True, 0, "m:1")),
    ("the same broker again: no change", 1, 1, (1,), (), {}, 10.0, (False, 1, "s1:1")),
    ("a followed slave the route lists dead", 1, -1, (), (1,), {}, 10.0, (False, 0, "m:1")),
]


@pytest.mark.parametrize(
    ("why", "current", "suggested", "alive", "dead", "avoid", "now", "expect"),
    TABLE,
    ids=[t[0] for t in TABLE],
)
def test_replica_choice(
    why: str,
    current: int,
    suggested: int,
    alive: tuple[int, ...],
    dead: tuple[int, ...],
    avoid: dict[int, float],
    now: float,
    expect: tuple[bool, int, str],
) -> None:
    s = PullSources()
    s.pull_from[MQ] = current
    s.avoid.update(avoid)
    r = route(*alive, dead=dead)
    switched = s.advised(MQ, answer(suggested), r, now)
    bid, address = s.address(MQ, r)
    assert (switched, bid, address) == expect, why


def test_a_failed_replica_sends_the_queue_back_and_is_avoided() -> None:
    s, r = PullSources(), route(1, 2)
    assert s.advised(MQ, answer(1), r, 0.0)
    s.issued(MQ, 1)
    s.replica_failed(MQ, s.issued_to(MQ), 5.0)
    assert s.address(MQ, r) == (0, "m:1")
    assert not s.advised(MQ, answer(1), r, 5.0 + REPLICA_AVOID_S - 0.1)  # still avoided
    assert s.advised(MQ, answer(2), r, 6.0)  # another slave is fine
    assert s.address(MQ, r) == (2, "s2:1")


def test_retry_elsewhere_goes_back_to_the_master_unless_another_broker_was_named() -> None:
    s, r = PullSources(), route(1, 2)
    s.pull_from[MQ] = 1
    s.retry_elsewhere(MQ, switched=False)
    assert s.address(MQ, r) == (0, "m:1")
    s.pull_from[MQ] = 1
    switched = s.advised(MQ, answer(2, served_by=1, reason="replica_behind"), r, 1.0)
    s.retry_elsewhere(MQ, switched)
    assert s.address(MQ, r) == (2, "s2:1")
    assert s.last_advice[MQ] == (1, 2, "replica_behind")
