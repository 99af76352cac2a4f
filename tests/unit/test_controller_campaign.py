"""Several controllers over one etcd (the in-memory FakeEtcd, same
compare-and-set rules as etcd: tests/unit/test_etcd_contract.py), stepped by
hand with a fake clock: who leads, what a paused leader can still do, what
a lost etcd costs, and the migration from the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import BrokerUnavailableError, NotControllerError
from core.etcd.fake import FakeEtcd
from nameserver.campaign import Campaign
from nameserver.controller import INITIAL_MASTER, MASTER, Controller, Heartbeat, LeaderInfo
from nameserver.controller_store import FileStore, GroupRecord, StoreConflict, StoreUnavailable
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

    def __init__(self, etcd: FakeEtcd, clock: Clock, name: str) -> None:
        self.store = EtcdStore(etcd, PREFIX)
        self.me = LeaderInfo(name, f"{name}:1")
        self.ctl = Controller(self.store, L, takeover_margin_ms=1000, me=self.me, campaigns=True)
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


@pytest.fixture
def world() -> tuple[FakeEtcd, Clock, Node, Node]:
    clock = Clock()
    etcd = FakeEtcd(lambda: clock.ms / 1000, min_lease_ttl_s=1)
    a, b = Node(etcd, clock, "ns-a"), Node(etcd, clock, "ns-b")
    a.campaign.step()
    b.campaign.step()
    return etcd, clock, a, b


def test_one_leads_the_other_stands_by_and_names_it(world: tuple[FakeEtcd, Clock, Node, Node]) -> None:
    _, clock, a, b = world
    assert a.ctl.leading(clock()) and not b.ctl.leading(clock())
    assert a.ctl.token > 0
    d = a.beat(hb(1, INITIAL_MASTER))
    assert (d.epoch, d.master_id) == (1, 1)  # type: ignore[attr-defined]
    with pytest.raises(NotControllerError) as exc:
        b.beat(hb(1, MASTER, 1))
    assert exc.value.leader_address == "ns-a:1"
    assert b.ctl.elected("g", 1, 1, clock()) == (1, 1)  # a standby reads the claim from etcd


def test_a_paused_leader_is_fenced_and_steps_down(world: tuple[FakeEtcd, Clock, Node, Node]) -> None:
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


def test_a_dead_leaders_successor_waits_a_lease_and_margin(world: tuple[FakeEtcd, Clock, Node, Node]) -> None:
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


def test_etcd_lost_for_a_while_then_back(world: tuple[FakeEtcd, Clock, Node, Node]) -> None:
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


def test_a_resigning_leader_hands_over_at_once(world: tuple[FakeEtcd, Clock, Node, Node]) -> None:
    _, clock, a, b = world
    a.campaign.resign()
    assert not a.ctl.leading(clock())
    b.campaign.step()
    assert b.ctl.leading(clock())


def test_an_unknown_outcome_is_found_out_by_the_next_save(world: tuple[FakeEtcd, Clock, Node, Node]) -> None:
    etcd, clock, a, _ = world
    a.beat(hb(1, INITIAL_MASTER))
    etcd.fail_next(outcome_unknown=True, applied=True)
    with pytest.raises(StoreUnavailable):
        a.beat(hb(1, MASTER, 1, 100, in_sync=frozenset({2})))
    with pytest.raises(StoreConflict):  # the version it holds is stale: it steps down, re-reads
        a.beat(hb(1, MASTER, 1, 100, in_sync=frozenset({3})))
    assert not a.ctl.leading(clock())


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
