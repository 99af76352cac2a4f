"""Which controller a broker heartbeats (core/broker/controller_choice.py):
answers in, the next controller to try out; no sockets, no clock."""

from __future__ import annotations

import pytest

from core.broker.controller_choice import Attempt, ControllerChoice
from core.errors import InvalidArgumentError

pytestmark = pytest.mark.unit
A, B, C = "a:1", "b:1", "c:1"


def test_starts_with_the_first_and_stays_while_it_answers() -> None:
    c = ControllerChoice([A, B, C])
    assert c.begin() == Attempt(A, likely=True)
    assert c.answered(A) is None and c.leader == A
    assert c.begin().address == A


def test_a_standby_naming_a_configured_leader_is_followed_at_once() -> None:
    c = ControllerChoice([A, B, C])
    c.begin()
    assert c.refused(A, C) == Attempt(C, likely=True)  # straight to the named one, skipping B
    switch = c.answered(C)
    assert switch is not None and (switch.old, switch.new) == (A, C)
    assert "a:1 answered NOT_CONTROLLER naming c:1" in switch.reason
    assert c.leader == C and c.begin() == Attempt(C, likely=True)  # the next beat starts there
    assert c.answered(C) is None  # reported once per change


def test_a_hint_outside_the_list_is_ignored() -> None:
    c = ControllerChoice([A, B])
    c.begin()
    nxt = c.refused(A, "evil:1")
    assert nxt.address == B and nxt.ignored_hint == "evil:1" and not nxt.likely
    assert "not a configured one" in c.why


def test_failures_and_refusals_without_a_leader_go_round_the_list() -> None:
    c = ControllerChoice([A, B, C])
    c.begin()
    c.refused(A, C)
    c.answered(C)  # C leads now
    assert c.begin().address == C
    assert c.failed(C, "UNAVAILABLE").address == A  # after C, wrapping round
    assert c.refused(A, "").address == B
    assert c.failed(B, "DEADLINE_EXCEEDED") == Attempt("")  # each tried once: the beat is over
    assert c.leader == C  # nobody answered: the believed leader stays
    assert "c:1: UNAVAILABLE" in c.why and "naming no leader" in c.why and "b:1: DEADLINE" in c.why


def test_a_stale_hint_to_one_already_tried_moves_on() -> None:
    """The leader stopped answering; a standby still names it (its lease in
    etcd has not run out): try the others, never the same one twice."""
    c = ControllerChoice([A, B, C])
    c.begin()
    assert c.failed(A, "DEADLINE_EXCEEDED").address == B
    assert c.refused(B, A).address == C
    assert c.refused(C, A) == Attempt("")
    assert c.leader == A


def test_a_controller_naming_itself_is_no_hint() -> None:
    c = ControllerChoice([A, B])
    c.begin()
    assert c.refused(A, A) == Attempt(B)


def test_the_budget_is_shared() -> None:
    """A likely leader gets half of what is left (all of it when no other is
    left); a blind try an equal share with the others left."""
    c = ControllerChoice([A, B, C])
    first = c.begin()
    assert c.share(first, 1.0) == pytest.approx(0.5)
    second = c.failed(A, "DEADLINE_EXCEEDED")  # it used its half
    assert c.share(second, 0.5) == pytest.approx(0.25)
    third = c.refused(B, "")
    assert c.share(third, 0.25) == pytest.approx(0.25)
    one = ControllerChoice([A])
    assert one.share(one.begin(), 1.0) == 1.0  # a single controller: the whole beat, as before
    hinted = ControllerChoice([A, B, C])
    hinted.begin()
    named = hinted.refused(A, C)
    assert named.likely and hinted.share(named, 0.9) == pytest.approx(0.45)


def test_bad_lists_are_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        ControllerChoice([])
    with pytest.raises(InvalidArgumentError):
        ControllerChoice([A, A])
