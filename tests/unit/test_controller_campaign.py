"""Several controllers over one etcd (the in-memory FakeEtcd, same
compare-and-set rules as etcd: tests/unit/test_etcd_contract.py), stepped by
hand with a fake clock: who leads, what a paused leader can still do, what
a lost etcd costs, and the migration from the file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from core.errors import BrokerUnavailableError, NotControllerError
from core.etcd import EtcdError, EtcdOutcomeUnknown
from core.etcd.fake import FakeEtcd
from deploy.waits import poll_until
from nameserver.campaign import Campaign
from nameserver.controller import INITIAL_MASTER, MASTER, Controller, Heartbeat, LeaderInfo
from nameserver.controller_store import (
    DamagedRecordError,
    FileStore,
    GroupRecord,
    StoreConflict,
    StoreInDoubt,
)
from nameserver.etcd_store import EtcdStore
from nameserver.migrate import MigrationRefused, migrate

pytestmark = pytest.mark.unit
L = 4000
TTL = 2  # s
PREFIX = "/tailrace/c/controller/"


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def hb(node: int, role: str = "slave", epoch: int = 0, offset: int = 0, **kw: object) -> Heartbeat:
    return Heartbeat("g", "c", node, f"h:{node}", epoch, role, offset, **kw)  # type: ignore[arg-type]


class Node:
    """One nameserver's controller and its campaign."""

    def __init__(self, etcd: FakeEtcd, clock: Clock, name: str, lease_ms: int = L) -> None:
        self.store = EtcdStore(etcd, PREFIX)
        self.me = LeaderInfo(name, f"{name}:1")
        self.ctl = Controller(self.store, lease_ms, takeover_margin_ms=1000, me=self.me, campaigns=True)
        self.campaign = Campaign(etcd, self.store, self.ctl, TTL, clock)
        self.clock = clock

    def beat(self, h: Heartbeat) -> object:
        return self.ctl.heartbeat(h, self.clock())


def advance(clock: Clock, ms: int, *nodes: Node) -> None:
    """Let `ms` pass, the nodes' campaigns stepping every 500 ms."""
    end = clock.ms + ms
    while clock.ms < end:
        clock.ms = min(end, clock.ms + 500)
        for n in nodes:
            n.campaign.step()


World = tuple[FakeEtcd, Clock, Node, Node]


@pytest.fixture
def world() -> World:
    clock = Clock()
    etcd = FakeEtcd(lambda: clock.ms / 1000, min_lease_ttl_s=1)
    a, b = Node(etcd, clock, "ns-a"), Node(etcd, clock, "ns-b")
    a.campaign.step()
    b.campaign.step()
    return etcd, clock, a, b


def test_one_leads_the_other_stands_by_and_names_it(world: World) -> None:
    _, clock, a, b = world
    assert a.ctl.leading(clock()) and not b.ctl.leading(clock())
    assert a.ctl.token > 0
    d = a.beat(hb(1, INITIAL_MASTER))
    assert (d.epoch, d.master_id) == (1, 1)  # type: ignore[attr-defined]
    with pytest.raises(NotControllerError) as exc:
        b.beat(hb(1, MASTER, 1))
    assert exc.value.leader_address == "ns-a:1"
    assert b.ctl.elected("g", 1, 1, clock()) == (1, 1)  # a standby reads the claim from etcd


def test_a_paused_leader_is_fenced_and_steps_down(world: World) -> None:
    etcd, clock, a, b = world
    a.beat(hb(1, INITIAL_MASTER))
    a.beat(hb(1, MASTER, 1, 100, in_sync=frozenset({2})))
    clock.ms += TTL * 1000 + 1  # a is paused: no keepalive; its lease expires in etcd
    assert not a.ctl.leading(clock())  # by its own clock it may no longer lead
    with pytest.raises(BrokerUnavailableError):
        a.beat(hb(1, MASTER, 1, 100))
    b.campaign.step()
    assert b.ctl.leading(clock()) and b.ctl.token > a.ctl.token
    d = b.beat(hb(1, MASTER, 1, 100, in_sync=frozenset({2})))  # the master keeps its epoch
    assert (d.epoch, d.master_id, d.in_sync) == (1, 1, frozenset({2}))  # type: ignore[attr-defined]
    with pytest.raises(StoreConflict, match="fenced"):  # what a's writes meet now
        a.store.save("g", GroupRecord(2, 2, "h:2", frozenset()), a.ctl._versions["g"])
    assert etcd.get(b"/tailrace/c/controller/groups/g").kvs[0].value.startswith(b'{"epoch": 1')
    a.campaign.step()  # resumed: its keepalive finds the lease gone
    assert not a.ctl.leading(clock()) and a.campaign.lease_id == 0
    a.campaign.step()
    assert a.ctl.leader() == b.me


def test_a_dead_leaders_successor_waits_a_lease_and_margin(world: World) -> None:
    _, clock, a, b = world
    a.beat(hb(1, INITIAL_MASTER))
    a.beat(hb(1, MASTER, 1, 100, in_sync=frozenset({2})))
    a.beat(hb(1, MASTER, 1, 100, in_sync=frozenset({2})))
    clock.ms += TTL * 1000 + 1  # a is dead
    b.campaign.step()
    took = clock()
    b.beat(hb(2, offset=100))
    advance(clock, took + L + 1000 - clock.ms, b)
    b.beat(hb(2, offset=100))
    assert b.ctl.tick(clock()) == []  # the master might have been renewed just before a died
    clock.ms += 1
    assert b.ctl.tick(clock()) == ["g"]
    assert b.ctl.leader_of("g") == (2, 2)


def test_etcd_lost_for_a_while_then_back(world: World) -> None:
    etcd, clock, a, b = world
    a.beat(hb(1, INITIAL_MASTER))
    etcd.down = True
    for _ in range(10):  # keepalives fail for 1.5 TTLs; etcd keeps the lease (no quorum, no expiry)
        clock.ms += 300
        a.campaign.step()
        b.campaign.step()
    assert not a.ctl.leading(clock()) and not b.ctl.leading(clock())
    with pytest.raises(BrokerUnavailableError):  # no controller renews: masters fence themselves
        a.beat(hb(1, MASTER, 1, 100))
    etcd.down = False
    etcd.new_leader()  # quorum back: a new etcd leader, every lease back to its full TTL
    a.campaign.step()
    assert a.ctl.leading(clock())  # still holds the key: leads again, the same master renewed
    d = a.beat(hb(1, MASTER, 1, 100))
    assert (d.epoch, d.master_id) == (1, 1)  # type: ignore[attr-defined]
    assert a.ctl.tick(clock() + L) == []  # a full lease again after the gap


def test_a_resigning_leader_hands_over_at_once(world: World) -> None:
    _, clock, a, b = world
    a.campaign.resign()
    assert not a.ctl.leading(clock())
    b.campaign.step()
    assert b.ctl.leading(clock())


def master_gone_silent(clock: Clock, a: Node) -> None:
    """Master 1 leads epoch 1 with slave 2 in sync, then falls silent past its lease."""
    a.beat(hb(1, INITIAL_MASTER))
    a.beat(hb(1, MASTER, 1, 100, in_sync=frozenset({2})))
    a.beat(hb(1, MASTER, 1, 100, in_sync=frozenset({2})))
    for _ in range(7):
        advance(clock, 500, a)
        a.beat(hb(2, offset=100))
    advance(clock, 1000, a)  # past the lease: the next tick elects


def test_an_election_whose_answer_was_lost_is_read_back(world: World) -> None:
    etcd, clock, a, _ = world
    master_gone_silent(clock, a)
    etcd.fail_next(outcome_unknown=True, applied=True)  # applied, the answer lost
    assert a.ctl.tick(clock()) == ["g"]  # read back: it was applied
    assert a.ctl.leader_of("g") == (2, 2)
    d = a.beat(hb(1, MASTER, 1, 100))  # the old master is told, never renewed
    assert (d.epoch, d.master_id) == (2, 2)  # type: ignore[attr-defined]


def test_a_save_in_doubt_steps_down_until_the_store_is_read(
    world: World,
) -> None:
    etcd, clock, a, _ = world
    master_gone_silent(clock, a)
    etcd.fail_next(2, outcome_unknown=True, applied=True)  # applied; the read-back fails too
    with pytest.raises(StoreInDoubt):
        a.ctl.tick(clock())
    with pytest.raises(NotControllerError):  # memory may disagree with etcd: nothing renewed
        a.beat(hb(1, MASTER, 1, 100))
    a.campaign.step()  # the key is still ours: take over again, re-reading etcd
    assert a.ctl.leading(clock()) and a.ctl.leader_of("g") == (2, 2)


def test_an_unknown_create_is_adopted_when_the_key_is_ours() -> None:
    clock = Clock()
    etcd = FakeEtcd(lambda: clock.ms / 1000, min_lease_ttl_s=1)
    a = Node(etcd, clock, "ns-a")
    calls = {"n": 0}
    txn = etcd.txn

    def lossy(*args: object, **kw: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            txn(*args, **kw)  # type: ignore[arg-type]
            raise EtcdOutcomeUnknown("answer lost")
        return txn(*args, **kw)  # type: ignore[arg-type]

    etcd.txn = lossy  # type: ignore[method-assign,assignment]
    a.campaign.step()
    assert a.ctl.leading(clock()) and a.campaign.lease_id != 0


def test_a_leader_whose_key_is_deleted_by_hand_steps_down(world: World) -> None:
    etcd, clock, a, b = world
    etcd.delete(b"/tailrace/c/controller/leader")
    b.campaign.step()  # b creates it anew
    assert b.ctl.leading(clock())
    a.campaign.step()
    assert not a.ctl.leading(clock()) and a.ctl.leader() is None


def test_a_new_leader_waits_out_the_longest_lease_granted_before(tmp_path: Path) -> None:
    clock = Clock()
    etcd = FakeEtcd(lambda: clock.ms / 1000, min_lease_ttl_s=1)
    old = Node(etcd, clock, "ns-old", lease_ms=3 * L)
    old.campaign.step()
    old.beat(hb(1, INITIAL_MASTER))
    old.beat(hb(1, MASTER, 1, 100, in_sync=frozenset({2})))
    old.campaign.resign()
    new = Node(etcd, clock, "ns-new")  # a shorter lease_ms
    new.campaign.step()
    took = clock()
    advance(clock, 3 * L + 1000, new)
    new.beat(hb(2, offset=100))
    assert new.ctl.tick(clock()) == [] and new.ctl.leader_of("g") == (1, 1)  # the old leader's 3 L
    advance(clock, 500, new)
    new.beat(hb(2, offset=100))  # past 3 L + margin: elected
    assert new.ctl.leader_of("g") == (2, 2) and clock() > took + 3 * L + 1000
    assert etcd.get(b"/tailrace/c/controller/lease_ms").kvs[0].value == str(3 * L).encode()


def test_a_standbys_campaign_survives_a_failing_watch(world: World) -> None:
    etcd, clock, a, b = world

    def compacted(*args: object, **kw: object) -> object:
        raise EtcdError(11, "mvcc: required revision has been compacted")

    etcd.watch = compacted  # type: ignore[method-assign,assignment]
    stop = threading.Event()
    t = threading.Thread(target=b.campaign.run, args=(stop,), daemon=True)
    t.start()
    try:
        poll_until(lambda: b.campaign.watch_revision > 0, 5, "b standing by, watching")
        a.campaign.resign()
        poll_until(lambda: b.ctl.leading(clock()), 5, "b leading after its watches failed")
    finally:
        stop.set()
        t.join(5)


def test_a_damaged_record_stops_its_group_only(world: World) -> None:
    etcd, clock, a, b = world
    a.beat(hb(1, INITIAL_MASTER))
    etcd.put(b"/tailrace/c/controller/groups/h", b"{not json")
    a.campaign.resign()
    b.campaign.step()
    d = b.beat(hb(1, MASTER, 1, 100))
    assert (d.epoch, d.master_id) == (1, 1)  # type: ignore[attr-defined]
    with pytest.raises(DamagedRecordError, match="repair"):
        b.ctl.heartbeat(Heartbeat("h", "c", 1, "h:1", 1, MASTER, 0), clock())
    assert "damaged" in b.ctl.status(clock())["h"]["status"]


def test_migration_keeps_every_epoch_and_refuses_conflicts(tmp_path: Path) -> None:
    clock = Clock()
    etcd = FakeEtcd(lambda: clock.ms / 1000)
    fs = FileStore(tmp_path)
    fs.save("g", GroupRecord(7, 2, "h:2", frozenset({3})), 0)
    fs.save("h", GroupRecord(1, 1, "h:1", frozenset()), 0)
    groups = {n: rec for n, (rec, _) in fs.load().items()}
    target = EtcdStore(etcd, PREFIX)
    assert sorted(migrate(groups, target).copied) == ["g", "h"]
    assert migrate(groups, target).already == ["g", "h"]  # twice: harmless
    before = etcd.revision
    with pytest.raises(MigrationRefused, match="epoch 7"):
        migrate({"g": GroupRecord(6, 1, "h:1", frozenset())}, target)
    assert etcd.revision == before  # nothing written
    n = Node(etcd, clock, "ns-a")
    n.campaign.step()
    assert n.ctl.leader_of("g") == (7, 2)  # the epochs carried over
    with pytest.raises(MigrationRefused, match="already leads"):
        migrate(groups, target)
