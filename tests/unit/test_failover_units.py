"""Failover logic with a fake clock: the controller's elections and their
persistence, lease fencing against election timing, epoch histories and the
divergent-tail truncation point, and the set of slaves sync writes wait for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.epochs import EpochFile, divergence_point, end_of
from core.errors import BrokerUnavailableError, InvalidArgumentError, StorageFullError
from core.offsets import ConsumerOffsets
from core.replicas import ReplicaSet
from core.replication import Ack
from master.lease import FENCE_FRACTION, Lease
from nameserver.controller import INITIAL_MASTER, MASTER, NO_MASTER, Controller, Heartbeat

pytestmark = pytest.mark.unit
L = 4000  # lease ms


def hb(node: int, role: str = "slave", epoch: int = 0, offset: int = 0, **kw: object) -> Heartbeat:
    return Heartbeat("g", "c", node, f"h:{node}", epoch, role, offset, **kw)  # type: ignore[arg-type]


def bootstrapped(tmp_path: Path | None = None) -> Controller:
    c = Controller(tmp_path, L)
    d = c.heartbeat(hb(1, INITIAL_MASTER), 0)
    assert (d.epoch, d.master_id) == (1, 1)
    return c


# ---- controller: elections -------------------------------------------------------------


def test_bootstrap_needs_a_configured_master() -> None:
    c = Controller(None, L)
    assert c.heartbeat(hb(2), 0).master_id == NO_MASTER  # a slave never bootstraps a group
    d = c.heartbeat(hb(1, INITIAL_MASTER), 10)
    assert (d.epoch, d.master_id, d.master_address) == (1, 1, "h:1")


def test_lost_state_file_adopts_the_leader_in_a_newer_epoch() -> None:
    c = Controller(None, L)  # no state: the file was lost, the brokers still run
    c.heartbeat(hb(2, "slave", 4, 90), 0)
    d = c.heartbeat(hb(1, MASTER, 4, 100), 10)
    assert (d.epoch, d.master_id) == (5, 1)  # never an epoch the group has used


def test_master_renews_and_reports_in_sync() -> None:
    c = bootstrapped()
    for t in range(0, 20_000, 1000):
        d = c.heartbeat(hb(1, MASTER, 1, 100, in_sync=frozenset({2, 3})), t)
        c.heartbeat(hb(2, offset=90), t)
        assert c.tick(t) == []
    assert d.in_sync == {2, 3} and d.epoch == 1


def test_expired_lease_elects_highest_offset_in_sync_slave() -> None:
    c = bootstrapped()
    c.heartbeat(hb(1, MASTER, 1, 500, in_sync=frozenset({2, 3})), 0)
    c.heartbeat(hb(2, offset=300), 100)
    c.heartbeat(hb(3, offset=400), 100)
    c.heartbeat(hb(4, offset=900), 100)  # most data, but not in sync: never chosen
    assert c.tick(L) == []  # lease lasts exactly L
    c.heartbeat(hb(2, offset=300), L)
    c.heartbeat(hb(3, offset=400), L)
    c.heartbeat(hb(4, offset=900), L)
    assert c.tick(L + 1) == ["g"]
    d = c.heartbeat(hb(2, offset=300), L + 2)
    assert (d.epoch, d.master_id, d.master_address, d.in_sync) == (2, 3, "h:3", frozenset())


def test_tie_broken_by_priority_then_node_id() -> None:
    c = bootstrapped()
    c.heartbeat(hb(1, MASTER, 1, 500, in_sync=frozenset({2, 3, 4})), 0)
    c.heartbeat(hb(2, offset=400), L)
    c.heartbeat(hb(3, offset=400, priority=5), L)
    c.heartbeat(hb(4, offset=400, priority=5), L)
    c.tick(L + 1)
    assert c.heartbeat(hb(2, offset=400), L + 2).master_id == 3


def test_no_in_sync_slave_no_election_and_status_says_why() -> None:
    c = bootstrapped()
    c.heartbeat(hb(1, MASTER, 1, 500, in_sync=frozenset()), 0)
    c.heartbeat(hb(2, offset=100), L)
    assert c.tick(L + 1) == []
    st = c.status(L + 1)["g"]
    assert st["master_id"] == 1 and st["epoch"] == 1
    assert "no in-sync slave is alive" in st["status"] and "unclean_election is off" in st["status"]


def test_dead_in_sync_slave_is_not_elected() -> None:
    c = bootstrapped()
    c.heartbeat(hb(1, MASTER, 1, 500, in_sync=frozenset({2})), 0)
    c.heartbeat(hb(2, offset=500), 0)  # then silent
    c.heartbeat(hb(3, offset=100), 2 * L)
    assert c.tick(2 * L) == []
    assert "no in-sync slave is alive" in c.status(2 * L)["g"]["status"]


def test_unclean_election_when_enabled() -> None:
    c = Controller(None, L, unclean_election=True)
    c.heartbeat(hb(1, INITIAL_MASTER), 0)
    c.heartbeat(hb(1, MASTER, 1, 500), 0)
    c.heartbeat(hb(2, offset=100), L)
    assert c.tick(L + 1) == ["g"]
    assert "unclean" in c.status(L + 1)["g"]["status"]


def test_restarted_master_is_re_elected_only_through_a_new_epoch() -> None:
    c = bootstrapped()
    c.heartbeat(hb(1, MASTER, 1, 500, in_sync=frozenset({2})), 0)
    c.heartbeat(hb(2, offset=450), 100)
    # node 1 comes back (kill -9 and restart) not leading: the controller waits
    # for the in-sync slave's current offset before choosing the longest log
    d = c.heartbeat(hb(1, "slave", 1, 400), 200)
    assert (d.epoch, d.master_id) == (1, 1)
    assert "waiting for in-sync slaves [2]" in c.status(200)["g"]["status"]
    d = c.heartbeat(hb(2, offset=450), 300)
    assert (d.epoch, d.master_id) == (2, 2)  # 450 > 400
    # and when the restarted master has the longest log, it is re-elected in a new epoch
    c2 = bootstrapped()
    c2.heartbeat(hb(1, MASTER, 1, 500, in_sync=frozenset({2})), 0)
    c2.heartbeat(hb(1, "slave", 1, 500), 200)
    d = c2.heartbeat(hb(2, offset=450), 300)
    assert (d.epoch, d.master_id) == (2, 1)


def test_restarted_master_alone_is_never_elected_over_a_silent_in_sync_slave() -> None:
    c = bootstrapped()
    c.heartbeat(hb(1, MASTER, 1, 1000, in_sync=frozenset({2})), 0)
    c.heartbeat(hb(2, offset=1000), 0)
    # the host crashed: node 1 lost its unflushed tail; node 2 cannot reach the controller
    for t in (5000, 6000, 12_000):
        d = c.heartbeat(hb(1, "slave", 1, 800), t)
        c.tick(t)
        assert (d.epoch, d.master_id) == (1, 1)  # no election: node 2 may hold acknowledged writes
    assert "waiting for in-sync slaves [2]" in c.status(12_000)["g"]["status"]


def test_isolated_broker_cannot_renew() -> None:
    c = bootstrapped()
    c.heartbeat(hb(1, MASTER, 1, 500, in_sync=frozenset({2})), 0)
    c.isolate("h:1", 10 * L, 0)
    with pytest.raises(BrokerUnavailableError):
        c.heartbeat(hb(1, MASTER, 1, 500, in_sync=frozenset({2})), 1000)
    c.heartbeat(hb(2, offset=500), L)
    assert c.tick(L + 1) == ["g"]


def test_bad_heartbeat_is_refused_and_changes_nothing() -> None:
    c = bootstrapped()
    before = c.status(0)
    bad_ones = (hb(0), Heartbeat("", "c", 1, "h:1", 0, "slave", 0), Heartbeat("g", "c", 1, "", 0, "slave", 0))
    for bad in bad_ones:
        with pytest.raises(InvalidArgumentError):
            c.heartbeat(bad, 1)
    assert c.status(0) == before


# ---- controller: persistence -------------------------------------------------------------


def test_epoch_survives_restart_and_is_never_reused(tmp_path: Path) -> None:
    c = bootstrapped(tmp_path)
    c.heartbeat(hb(1, MASTER, 1, 500, in_sync=frozenset({2})), 0)
    c.heartbeat(hb(2, offset=500), L)
    assert c.tick(L + 1) == ["g"]  # epoch 2, node 2
    saved = json.loads((tmp_path / "controller.json").read_text())["groups"]["g"]
    assert (saved["epoch"], saved["master_id"]) == (2, 2)

    again = Controller(tmp_path, L, now_ms=50_000)  # a restart: a new clock origin
    st = again.status(50_000)["g"]
    assert (st["epoch"], st["master_id"]) == (2, 2)
    # the master gets a full lease after the restart: no election before it ends
    again.heartbeat(hb(1, offset=900), 50_000 + L)
    assert again.tick(50_000 + L) == []
    # then one election, to epoch 3 (never a second epoch 2)
    assert again.tick(50_000 + L + 1) == []  # node 1 is not in the (empty) in-sync set
    again.heartbeat(hb(2, MASTER, 2, 600, in_sync=frozenset({1})), 50_000 + L + 2)
    d = again.heartbeat(hb(1, offset=600), 50_000 + 3 * L)  # the heartbeat finds the lease expired
    assert (d.epoch, d.master_id) == (3, 1)
    assert again.tick(50_000 + 3 * L + 1) == []  # elected once
    assert json.loads((tmp_path / "controller.json").read_text())["groups"]["g"]["epoch"] == 3


def test_a_state_write_that_fails_announces_nothing(tmp_path: Path) -> None:
    d = tmp_path / "ctl"
    d.mkdir()
    c = Controller(d, L)
    c.heartbeat(hb(1, INITIAL_MASTER), 0)
    c.heartbeat(hb(1, MASTER, 1, 500, in_sync=frozenset({2})), 0)
    c.heartbeat(hb(2, offset=500), L)
    for f in d.iterdir():
        f.unlink()
    d.rmdir()  # the state can no longer be written: the error names the file
    with pytest.raises(StorageFullError, match=r"controller\.json"):
        c.tick(L + 1)
    st = c.status(L + 1)["g"]
    assert (st["epoch"], st["master_id"]) == (1, 1)  # not elected in memory either
    with pytest.raises(StorageFullError):  # a new in-sync set is not confirmed either
        c.heartbeat(hb(1, MASTER, 1, 600, in_sync=frozenset({2, 3})), 10)
    assert c.status(10)["g"]["in_sync"] == [2]


# ---- lease: fencing before election ------------------------------------------------------------


def test_lease_fences_the_master_before_the_controller_may_elect() -> None:
    broker_clock = [0.0]
    lease = Lease(lambda: broker_clock[0])
    c = bootstrapped()
    # the heartbeat leaves the broker at t0 and reaches the controller later, at t1
    for t0, delay in ((0.0, 0.0), (1.0, 0.3), (2.0, 0.9)):
        t1_ms = int((t0 + delay) * 1000)
        c.heartbeat(hb(1, MASTER, 1, 100, in_sync=frozenset({2})), t1_ms)
        lease.grant(t0, L)
        c.heartbeat(hb(2, offset=100), t1_ms)
    last_send, last_arrival_ms = 2.0, 2900
    fenced_at = last_send + FENCE_FRACTION * L / 1000
    broker_clock[0] = fenced_at - 0.001
    assert lease.valid()
    broker_clock[0] = fenced_at
    assert not lease.valid()
    # the controller elects only after the lease it granted: well after the fence
    assert c.tick(last_arrival_ms + L) == []
    c.heartbeat(hb(2, offset=100), last_arrival_ms + L)
    assert c.tick(last_arrival_ms + L + 1) == ["g"]
    assert fenced_at * 1000 < last_arrival_ms + L - L / 8
    lease.revoke()
    assert not lease.valid() and lease.left_ms() == 0


# ---- epoch histories -----------------------------------------------------------------------


def test_end_of_epochs() -> None:
    h = ((1, 0), (2, 80), (4, 200))
    assert [end_of(h, e, 300) for e in (0, 1, 2, 3, 4)] == [0, 80, 200, 200, 300]


@pytest.mark.parametrize(
    ("leader", "leader_end", "follower", "follower_end", "point"),
    [
        # old master A wrote [0,100) in epoch 1; B had [0,80) and led epoch 2 from 80
        (((1, 0), (2, 80)), 150, ((1, 0),), 100, 80),
        # a slave behind in the same epoch keeps everything
        (((1, 0), (2, 80)), 150, ((1, 0), (2, 80)), 120, 120),
        # a slave ahead of its master in the same epoch is cut to the master's end
        (((1, 0),), 100, ((1, 0),), 130, 100),
        # the follower led an epoch the leader never saw (3): cut at the start of 3
        (((1, 0), (2, 80), (4, 200)), 300, ((1, 0), (2, 80), (3, 150)), 180, 150),
        # no controller anywhere: the shorter log wins
        ((), 100, (), 60, 60),
        # a follower with no epochs against a leader that started epoch 1 at 50
        (((1, 50),), 90, (), 70, 50),
    ],
)
def test_divergence_point(
    leader: tuple[tuple[int, int], ...],
    leader_end: int,
    follower: tuple[tuple[int, int], ...],
    follower_end: int,
    point: int,
) -> None:
    assert divergence_point(leader, leader_end, follower, follower_end) == point


def test_epoch_file_persists_truncates_and_clips(tmp_path: Path) -> None:
    f = EpochFile(tmp_path, log_end=0)
    f.apply({"epoch": 1, "start": 0})
    f.apply({"epoch": 2, "start": 80})
    f.apply({"epoch": 2, "start": 80})  # replayed by recovery: no change
    assert EpochFile(tmp_path, 500).history == ((1, 0), (2, 80))
    f.truncate_from(80)
    assert EpochFile(tmp_path, 500).history == ((1, 0),)
    f.add(3, 90)
    # a crash after cutting the log to 90 but before the file was rewritten
    assert EpochFile(tmp_path, 90).history == ((1, 0),)
    assert EpochFile(tmp_path, 90).last_epoch == 1


# ---- the required set of sync writes ---------------------------------------------------------------


def test_required_set_grows_on_catch_up_and_shrinks_only_when_confirmed() -> None:
    rs = ReplicaSet(max_lag_bytes=1000, max_ack_age_ms=10_000)
    rs.reset_required(hw=100)
    s2 = rs.attach(2, 0, 0)
    s3 = rs.attach(3, 0, 0)
    assert not rs.required_ready(1, 100, 0)
    rs.ack(s2, Ack(50, 50), 0)
    assert rs.required() == set()  # behind the acknowledged writes
    rs.ack(s2, Ack(100, 100), 0)
    assert rs.required() == {2}
    assert rs.required_ready(1, 100, 0)
    rs.ack(s3, Ack(100, 100), 0)
    gen, proposal = rs.propose(100, 0)
    assert proposal == {2, 3}
    rs.confirm(gen, proposal)
    assert rs.wait_required(100, 1, 0.01)
    assert not rs.wait_required(200, 1, 0.01)  # 3 did not ack 200
    rs.ack(s2, Ack(200, 200), 0)
    rs.detach(3, s3)  # slave 3 dies
    assert not rs.required_ready(1, 200, 0)  # still required until confirmed
    assert not rs.wait_required(200, 1, 0.01)
    gen, proposal = rs.propose(200, 0)
    assert proposal == {2}
    rs.confirm(gen, proposal)
    assert rs.required() == {2}
    assert rs.required_ready(1, 200, 0)
    assert rs.wait_required(200, 1, 0.01)
    assert rs.safe_offset(300, 1) == 200


# ---- undoing offset commits in a cut tail ------------------------------------------------------


def test_offset_roll_back_uses_prev_without_reading_the_log(tmp_path: Path) -> None:
    offs = ConsumerOffsets(tmp_path)
    offs.commit("g", "t", 0, 70)
    offs.commit("g", "t", 1, 9)
    offs.commit("new", "t", 0, 5)
    tail = [
        {"group": "g", "topic": "t", "queue": 0, "offset": 60, "prev": 40},  # first in the tail: back to 40
        {"group": "g", "topic": "t", "queue": 0, "offset": 70, "prev": 60},
        {"group": "new", "topic": "t", "queue": 0, "offset": 5, "prev": -1},  # first commit ever: forgotten
    ]

    def no_scan() -> list[dict[str, object]]:
        raise AssertionError("the log was read although every record carries prev")

    assert offs.roll_back(tail, no_scan) == 2
    assert offs.query("g", "t", 0) == 40 and offs.query("new", "t", 0) is None
    assert offs.query("g", "t", 1) == 9  # untouched
    again = ConsumerOffsets(tmp_path)  # persisted
    assert again.query("g", "t", 0) == 40 and again.query("new", "t", 0) is None


def test_offset_roll_back_of_old_records_reads_the_rest_of_the_log(tmp_path: Path) -> None:
    offs = ConsumerOffsets(tmp_path)
    offs.commit("g", "t", 0, 70)
    offs.commit("h", "t", 0, 3)
    tail = [
        {"group": "g", "topic": "t", "queue": 0, "offset": 70},
        {"group": "h", "topic": "t", "queue": 0, "offset": 3},
    ]
    before = [
        {"group": "g", "topic": "t", "queue": 0, "offset": 20},
        {"group": "g", "topic": "t", "queue": 0, "offset": 35},
    ]
    assert offs.roll_back(tail, lambda: before) == 2
    assert offs.query("g", "t", 0) == 35 and offs.query("h", "t", 0) is None
