"""The broker's tables keyed by client input are bounded and forget (issue 16):
consumer groups, queue locks and the keys behind redirect state and metrics
series, with the clock passed in."""

from __future__ import annotations

import pytest

from core.consumer_groups import ConsumerGroups
from core.errors import QuotaExceededError
from core.expiring import ExpiringKeys
from core.pop.recent import RecentPops
from core.queue_locks import QueueLocks

pytestmark = pytest.mark.unit


def test_expiring_keys_forget_the_idle_and_refuse_beyond_the_cap() -> None:
    keys = ExpiringKeys(ttl_ms=1000, max_keys=2)
    assert keys.touch("a", 0) and keys.touch("b", 500)
    assert not keys.touch("c", 900) and "c" not in keys  # full, nothing expired yet
    assert keys.touch("a", 950)  # an old key touched again: fine, and now the newest
    assert keys.touch("c", 1600) and "b" not in keys  # b idle past its TTL: room for c
    assert keys.expire(10_000) == ["a", "c"] and len(keys) == 0


def test_recent_pops_are_live_for_a_while_and_bounded_without_letting_a_reset_through() -> None:
    pops = RecentPops(live_ms=1000, max_keys=2)
    assert pops.last("g", "t", 0) is None
    pops.note("g", "t", 100)
    pops.note("g", "other", 200)
    assert pops.last("g", "t", 1099) == 100 and pops.last("h", "t", 1099) is None
    assert pops.last("g", "t", 1100) is None  # live_ms passed: no longer live
    pops.note("g", "t", 1250)  # (g, other) expired meanwhile: gone as others come in
    assert len(pops) == 1
    pops.note("a", "t", 1300)
    pops.note("b", "t", 1400)  # past the bound: the least recently popped (g, t) is forgotten...
    assert len(pops) == 2
    assert pops.last("g", "t", 1500) == 1500  # ...and counts as live until live_ms has passed
    assert pops.last("z", "t", 1500) == 1500
    assert pops.last("z", "t", 2400) is None and pops.last("b", "t", 2399) == 1400


def test_consumer_groups_are_capped_and_forget_members_that_went_silent() -> None:
    groups = ConsumerGroups(max_groups=2, max_members=2)
    groups.heartbeat("g1", "t", "c1", 100, 0)
    groups.heartbeat("g2", "t", "c1", 100, 0)
    with pytest.raises(QuotaExceededError, match="max_groups"):
        groups.heartbeat("g3", "t", "c1", 100, 10)
    groups.heartbeat("g1", "t", "c2", 100, 10)
    with pytest.raises(QuotaExceededError, match="max_members_per_group"):
        groups.heartbeat("g1", "t", "c3", 100, 20)
    assert groups.heartbeat("g1", "t", "c1", 100, 20) == ["c1", "c2"]  # members already in: fine
    # 3 missed heartbeats later every one is gone, without anyone asking for those groups
    groups.heartbeat("g3", "t", "c1", 100, 2000)
    assert len(groups) == 1 and groups.members("g1", "t", 2000) == []


def test_queue_locks_are_capped_and_expired_leases_forgotten() -> None:
    locks = QueueLocks(max_locks=3)
    assert locks.lock("g", "t", "c1", [0, 1, 2], 1000, 0) == [0, 1, 2]
    with pytest.raises(QuotaExceededError, match="max_queue_locks"):
        locks.lock("g2", "t", "c2", [0], 1000, 10)
    assert locks.lock("g", "t", "c1", [0, 1, 2], 1000, 500) == [0, 1, 2]  # renewing is not new
    assert locks.lock("g2", "t", "c2", [0], 1000, 2000) == [0] and len(locks) == 1  # the old ones lapsed


def test_the_controller_bounds_its_groups_and_forgets_long_silent_nodes() -> None:
    from core.roles import Role
    from nameserver.controller import FORGET_LEASES, MAX_GROUPS, Controller, Heartbeat

    ctl = Controller(None, lease_ms=1000)

    def beat(group: str, node: int, now: int, role: Role = Role.SLAVE) -> None:
        ctl.heartbeat(Heartbeat(group, "c", node, f"10.0.0.{node}:1", 0, role, 0), now)

    for i in range(MAX_GROUPS):
        beat(f"g{i}", 1, 0, Role.MASTER)
    with pytest.raises(QuotaExceededError):
        beat("one-too-many", 1, 0)
    beat("g0", 7, 0)  # a node heard once
    late = FORGET_LEASES * 1000 + 1
    beat("g0", 1, late, Role.MASTER)
    members = ctl.status(late)["g0"]["members"]
    assert list(members) == [1]  # node 7 forgotten; the master kept
