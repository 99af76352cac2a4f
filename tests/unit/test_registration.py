"""A broker's registration timing: heartbeats, and changes announced at once
but coalesced (RegistrationSchedule with a fake clock); `poke` never waits
for a registration under way (Registrar, no nameservers)."""

from __future__ import annotations

import threading
import time

import pytest

from core.pb.tailrace.v1 import nameserver_pb2 as pb
from core.registration import Registrar, RegistrationSchedule
from deploy.waits import poll_until

pytestmark = pytest.mark.unit


def schedule(now: float = 0.0) -> RegistrationSchedule:
    return RegistrationSchedule(heartbeat_s=10.0, settle_s=0.01, min_gap_s=0.1, now=now)


def test_without_changes_registrations_come_every_heartbeat() -> None:
    s = schedule()
    assert s.due_in(0.0) == 10.0
    assert s.due_in(9.5) == pytest.approx(0.5)
    assert s.due_in(12.0) == 0.0  # overdue: now
    s.started(12.0)
    assert s.due_in(12.0) == 10.0


def test_a_change_is_registered_after_the_settle_time_not_the_heartbeat() -> None:
    s = schedule()
    s.started(5.0)
    s.poke(6.0)
    assert s.due_in(6.0) == pytest.approx(0.01)
    assert s.due_in(6.02) == 0.0


def test_a_burst_of_changes_is_one_registration() -> None:
    s = schedule()
    s.started(5.0)
    for t in (6.0, 6.002, 6.004, 6.009):
        s.poke(t)
    assert s.due_in(6.009) == pytest.approx(0.001)  # counted from the burst's first change
    s.started(6.01)
    assert s.pending_since is None and s.due_in(6.01) == pytest.approx(10.0)  # all covered


def test_changes_right_after_a_registration_wait_for_the_minimum_gap() -> None:
    s = schedule()
    s.started(5.0)
    s.poke(5.001)
    assert s.due_in(5.001) == pytest.approx(0.099)  # 5.1, not 5.011
    s.started(5.1)
    s.poke(5.5)  # long after: only the settle time
    assert s.due_in(5.5) == pytest.approx(0.01)


def test_a_change_during_a_registration_is_registered_again() -> None:
    s = schedule()
    s.started(5.0)  # describes the broker from here on
    s.poke(5.05)  # changed after it was described
    assert s.due_in(5.06) == pytest.approx(0.04)


def test_the_minimum_gap_never_exceeds_the_heartbeat() -> None:
    s = RegistrationSchedule(heartbeat_s=0.05, settle_s=0.01, min_gap_s=0.1, now=0.0)
    s.poke(0.0)
    assert s.due_in(0.0) == pytest.approx(0.05)


def test_poke_returns_at_once_while_a_registration_is_under_way() -> None:
    described = 0
    gate = threading.Event()
    gate.set()

    def describe() -> pb.BrokerRegistration:
        nonlocal described
        described += 1
        gate.wait(10)  # a registration that hangs (an unreachable nameserver)
        return pb.BrokerRegistration(broker_name="g", address="h:1", heartbeat_ms=60_000)

    reg = Registrar([], 60_000, describe)
    reg.start()
    try:
        assert described == 1
        gate.clear()
        reg.poke()  # the write path's call
        poll_until(lambda: described == 2, 5, "a registration for the change")
        t0 = time.monotonic()
        for _ in range(100):  # a burst, while that registration hangs
            reg.poke()
        assert time.monotonic() - t0 < 0.5
        gate.set()
        poll_until(lambda: described == 3, 5, "one registration for the whole burst")
    finally:
        gate.set()
        reg.close(unregister=False)
    assert described == 3
