"""The controller's leadership over a state store, with a fake clock: who
answers heartbeats, what a new leader grants, when a leader stops renewing,
and what a conflicting save does."""

from __future__ import annotations

import pytest

from core.errors import BrokerUnavailableError, NotControllerError
from nameserver.controller import INITIAL_MASTER, MASTER, Controller, Heartbeat, LeaderInfo
from nameserver.controller_store import GroupRecord, MemoryStore, StoreConflict

pytestmark = pytest.mark.unit
L = 4000
MARGIN = 1000
ME = LeaderInfo("ns-1", "127.0.0.1:1001")
OTHER = LeaderInfo("ns-2", "127.0.0.1:1002")


def hb(node: int, role: str = "slave", epoch: int = 0, offset: int = 0, **kw: object) -> Heartbeat:
    return Heartbeat("g", "c", node, f"h:{node}", epoch, role, offset, **kw)  # type: ignore[arg-type]


def standby(store: MemoryStore) -> Controller:
    return Controller(store, L, takeover_margin_ms=MARGIN, me=ME, campaigns=True)


def store_with_group(in_sync: frozenset[int] = frozenset({2})) -> MemoryStore:
    store = MemoryStore()
    store.save("g", GroupRecord(3, 1, "h:1", in_sync), 0)
    return store


def test_a_standby_refuses_heartbeats_and_names_the_leader() -> None:
    c = standby(MemoryStore())
    with pytest.raises(NotControllerError) as exc:
        c.heartbeat(hb(1, INITIAL_MASTER), 0)
    assert exc.value.leader_address == ""
    c.follow(OTHER)
    with pytest.raises(NotControllerError) as exc:
        c.heartbeat(hb(1, INITIAL_MASTER), 0)
    assert exc.value.leader_address == OTHER.address and "ns-2 leads" in str(exc.value)
    assert c.tick(10 * L) == []  # a standby elects nothing
    assert c.role(0)["leading"] is False and c.role(0)["leader"] == "ns-2"


def test_a_new_leader_keeps_the_stored_master_for_a_lease_plus_margin() -> None:
    c = standby(store_with_group())
    c.take_over(100, 100 + 2000, token=7)
    assert c.role(100) | {"leading_left_ms": 0} == {
        "name": "ns-1", "store": "memory", "leading": True, "leader": "ns-1",
        "leader_address": ME.address, "token": 7, "leading_left_ms": 0,
    }  # fmt: skip
    assert c.extend(100, 100 + 100 * L)
    c.heartbeat(hb(2, offset=50), 200)  # the in-sync slave is alive, the master silent
    assert c.tick(100 + L + MARGIN) == []  # a lease plus the margin from the take-over
    c.heartbeat(hb(2, offset=50), 100 + L + MARGIN)
    assert c.tick(100 + L + MARGIN + 1) == ["g"]
    assert c.leader_of("g") == (4, 2)  # the next epoch after the stored one


def test_the_stored_master_renews_with_the_new_leader_in_the_same_epoch() -> None:
    c = standby(store_with_group())
    c.take_over(0, 10 * L)
    for t in range(0, 3 * L, 500):
        d = c.heartbeat(hb(1, MASTER, 3, 100, in_sync=frozenset({2})), t)
        c.heartbeat(hb(2, offset=100), t)
        assert c.tick(t) == []
    assert (d.epoch, d.master_id, d.in_sync) == (3, 1, frozenset({2}))


def test_a_leader_whose_etcd_lease_may_have_expired_stops_renewing() -> None:
    c = standby(store_with_group())
    c.take_over(0, 2000)
    c.heartbeat(hb(1, MASTER, 3, 100, in_sync=frozenset({2})), 1999)
    with pytest.raises(BrokerUnavailableError):  # lapsed: neither renews nor elects
        c.heartbeat(hb(1, MASTER, 3, 100, in_sync=frozenset({2})), 2000)
    assert c.tick(100 * L) == []
    assert not c.extend(100 * L, 200 * L)  # lapsed: the caller must take over again (re-read)
    assert not c.leading(100 * L)


def test_a_conflicting_save_steps_the_leader_down_and_changes_nothing() -> None:
    store = store_with_group()
    c = standby(store)
    c.take_over(0, 10 * L)
    store.save("g", GroupRecord(9, 2, "h:2", frozenset()), store.load()["g"][1])  # someone else wrote
    with pytest.raises(StoreConflict):  # the master proposes a new set: a save
        c.heartbeat(hb(1, MASTER, 3, 100, in_sync=frozenset()), 10)
    assert not c.leading(10)
    assert store.load()["g"][0].epoch == 9
    with pytest.raises(NotControllerError):
        c.heartbeat(hb(1, MASTER, 3, 100), 20)


def test_a_standby_checks_a_masters_claim_against_the_store() -> None:
    store = store_with_group()
    c = standby(store)
    assert c.elected("g", 1, 3, 0) == (3, 1)  # read from the store, not refused
    store.save("g", GroupRecord(4, 2, "h:2", frozenset()), store.load()["g"][1])
    assert c.elected("g", 2, 4, 100) == (3, 1)  # re-read at most every 500 ms
    assert c.elected("g", 2, 4, 600) == (4, 2)


def test_a_step_down_stops_answering_at_once() -> None:
    c = standby(store_with_group())
    c.take_over(0, 10 * L, token=5)
    c.step_down("stopping", OTHER)
    with pytest.raises(NotControllerError) as exc:
        c.heartbeat(hb(1, MASTER, 3, 100), 1)
    assert exc.value.leader_address == OTHER.address
    assert c.role(1)["token"] == 0
