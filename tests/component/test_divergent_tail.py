"""A former master's divergent tail: two in-process broker cores (no
sockets), roles switched by controller directives the way the controller
link delivers them. The returning master's handshake cuts what it wrote
after the new epoch began, undoes the offset commits in that tail, and the
cut holds across a crash right after it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.broker.core import BrokerCore
from core.broker.failover import FailoverMember
from core.broker_config import load_broker_config
from core.epochs import EpochFile
from core.errors import LeaseExpiredError, NotMasterError, RequestTimeoutError
from core.offsets import ConsumerOffsets
from core.pull import PullArgs, PullReply
from core.record import Message
from core.replication import MasterSession, SlaveSession
from core.roles import Directive, SendStatus
from core.store import MessageStore
from deploy.broker_node import Roles
from deploy.harness import poll_until
from master.leader import LeaderRole
from master.lease import Lease
from slave.follower import FollowerRole
from tests.helpers.store_tools import abandon, check_consistency

pytestmark = pytest.mark.component
Open = Callable[..., MessageStore]
SECRET = "s3cret"
CORES: list[BrokerCore] = []


@pytest.fixture(autouse=True)
def _close_cores() -> Iterator[None]:
    yield
    errors = []
    while CORES:
        try:
            CORES.pop().close()  # stops a leader's scheduler before its store closes
        except Exception as exc:  # close the others all the same
            errors.append(exc)
    assert errors == []


def session(b: BrokerCore) -> SlaveSession:
    role = b.role
    assert isinstance(role, FollowerRole)
    return role.session


def broker(open_store: Open, d: Path, node: int) -> BrokerCore:
    cfg = load_broker_config(
        None,
        {
            "broker.broker_name": "g",
            "broker.broker_id": node,
            "broker.role": "master" if node == 1 else "slave",
            "broker.controller": "127.0.0.1:1",
            "replication.secret": SECRET,
        },
    )
    store = open_store(d / "store")
    b = BrokerCore(cfg, store, ConsumerOffsets(d), EpochFile(d, store.commitlog.max_offset), Roles())
    b.address = f"h:{node}"
    CORES.append(b)
    return b


def direct(b: BrokerCore, epoch: int, master: int, address: str = "") -> None:
    """A controller directive, answering a heartbeat sent just now."""
    member = FailoverMember(b)
    member.directed = True
    req, gen = member.controller_heartbeat()
    member.on_directive(Directive(epoch, master, address, frozenset(), 4000), time.monotonic(), req, gen)
    if b.role.is_leader and b.epoch == epoch:  # the next heartbeat, as master, renews the lease
        req, gen = member.controller_heartbeat()
        member.on_directive(Directive(epoch, master, address, frozenset(), 4000), time.monotonic(), req, gen)


def replicate(master: BrokerCore, slave: BrokerCore) -> None:
    """Join master and slave in memory until the slave has everything."""
    leader = master.leader()
    m = MasterSession(master.store, leader.replicas, "DefaultCluster", "g", SECRET, 1 << 16,
                      leader.epoch, master.epoch_history())  # fmt: skip
    s = session(slave)
    s.on_handshake_reply(m.handshake(s.handshake(), 0, 0))
    while (chunk := m.next_chunk(master.store.commitlog.max_offset)) is not None:
        m.on_ack(s.on_chunk(chunk), 0)


def send(b: BrokerCore, n: int, tag: str) -> None:
    out = b.leader().send("t", 0, [Message("t", 0, f"{tag}-{i}".encode() * 20) for i in range(n)])
    assert out.status is SendStatus.SEND_OK, out


def test_returning_master_cuts_its_divergent_tail(open_store: Open, tmp_path: Path) -> None:
    a, b = broker(open_store, tmp_path / "a", 1), broker(open_store, tmp_path / "b", 2)
    direct(a, 1, 1)
    assert a.role.is_leader and a.epoch == 1 and a.epochs.history == ((1, 0),)
    send(a, 50, "e1")
    a.leader().commit_offset("grp", "t", 0, 10)
    replicate(a, b)
    common = a.store.commitlog.max_offset
    assert b.store.commitlog.max_offset == common and b.epochs.history == ((1, 0),)
    assert b.offsets.query("grp", "t", 0) == 10

    # a goes on alone (its writes never reach b), commits past what b knows
    old = a.leader()
    send(a, 30, "lost")
    old.commit_offset("grp", "t", 0, 70)
    old.commit_offset("other", "t", 0, 5)  # a group b never heard of
    # b is elected for epoch 2 and takes writes
    direct(b, 2, 2)
    assert b.role.is_leader and b.epochs.history == ((1, 0), (2, common))
    send(b, 20, "e2")
    b.leader().commit_offset("grp", "t", 0, 55)

    # a learns of epoch 2: it is a slave now, and takes no writes
    direct(a, 2, 2)
    assert not a.role.is_leader and a.role.name == "slave"
    with pytest.raises(NotMasterError):
        a.leader()
    end = a.store.commitlog.max_offset
    # the retired leader object stores nothing either (a call already under way)
    assert old.send("t", 0, [Message("t", 0, b"x")]).status is SendStatus.NOT_MASTER
    with pytest.raises(NotMasterError):
        old.commit_offset("grp", "t", 0, 99)
    assert a.store.commitlog.max_offset == end
    replicate(b, a)
    assert a.store.commitlog.max_offset == b.store.commitlog.max_offset
    assert bytes(a.store.commitlog.view(0, common)) == bytes(b.store.commitlog.view(0, common))
    assert a.epochs.history == b.epochs.history == ((1, 0), (2, common))
    assert a.offsets.query("grp", "t", 0) == 55  # rolled back to 10, then b's 55 replicated
    assert a.offsets.query("other", "t", 0) is None  # only ever committed in the cut tail
    check_consistency(a.store)


def test_cut_survives_a_crash_right_after_it(open_store: Open, tmp_path: Path) -> None:
    a, b = broker(open_store, tmp_path / "a", 1), broker(open_store, tmp_path / "b", 2)
    direct(a, 1, 1)
    send(a, 40, "e1")
    a.leader().commit_offset("grp", "t", 0, 7)
    replicate(a, b)
    common = a.store.commitlog.max_offset
    send(a, 40, "lost")
    a.leader().commit_offset("grp", "t", 0, 60)
    direct(b, 2, 2)
    send(b, 5, "e2")
    direct(a, 2, 2)
    # only the handshake: a cuts its tail, then dies before any chunk
    lb = b.leader()
    m = MasterSession(
        b.store, lb.replicas, "DefaultCluster", "g", SECRET, 1 << 16, lb.epoch, b.epoch_history()
    )
    session(a).on_handshake_reply(m.handshake(session(a).handshake(), 0, 0))
    assert a.store.commitlog.max_offset == common
    CORES.remove(a)
    a.close()
    abandon(a.store)

    store = open_store(tmp_path / "a" / "store")  # recovery after the crash
    assert store.commitlog.max_offset == common
    assert EpochFile(tmp_path / "a", store.commitlog.max_offset).history == ((1, 0),)
    assert ConsumerOffsets(tmp_path / "a").query("grp", "t", 0) == 7
    check_consistency(store)
    # and the tail never comes back: replication continues from the cut
    cfg = a.config
    again = BrokerCore(
        cfg, store, ConsumerOffsets(tmp_path / "a"), EpochFile(tmp_path / "a", common), Roles()
    )
    CORES.append(again)
    replicate(b, again)
    assert again.store.commitlog.max_offset == b.store.commitlog.max_offset
    assert again.epochs.history == ((1, 0), (2, common))


def test_a_master_whose_lease_lapsed_refuses_writes_until_renewed(open_store: Open, tmp_path: Path) -> None:
    """No controller renews the lease (etcd's quorum gone, say): the master,
    still the leader of its epoch, refuses sends with MASTER_LEASE_EXPIRED
    (not NOT_MASTER), stores nothing, serves pulls; once a controller renews
    the lease in the same epoch, the same master takes sends again."""
    a = broker(open_store, tmp_path / "a", 1)
    direct(a, 1, 1)
    send(a, 1, "ok")
    leader = a.leader()
    assert isinstance(leader, LeaderRole)
    now = [time.monotonic()]
    leader.lease = Lease(lambda: now[0])  # the broker's clock, moved by hand
    member = FailoverMember(a)

    def renew() -> None:  # a controller answers a heartbeat sent now, as the master of epoch 1
        req, gen = member.controller_heartbeat()
        assert req.role == "master" and req.epoch == 1  # it still reports itself the leader
        member.on_directive(Directive(1, 1, "h:1", frozenset(), 4000), now[0], req, gen)

    renew()
    send(a, 1, "renewed")
    now[0] += 3.0  # 3/4 of the 4 s lease: no renewal since, the lease lapsed
    before = a.store.commitlog.max_offset
    out = leader.send("t", 0, [Message("t", 0, b"x")])
    assert out.status is SendStatus.MASTER_LEASE_EXPIRED and out.results == [] and "lease" in out.detail
    with pytest.raises(LeaseExpiredError, match="lease lapsed"):
        leader.commit_offset("grp", "t", 0, 1)
    with pytest.raises(LeaseExpiredError):
        leader.create_topic("new", 1)
    assert a.store.commitlog.max_offset == before  # nothing stored
    reply = a.pull(PullArgs("grp", "t", 0, 0))
    assert reply.result.count == 2  # reads go on
    assert a.role.is_leader and a.epoch == 1 and a.registration().role == "master"

    renew()  # a controller is back, the same epoch: the same master resumes
    send(a, 1, "back")
    leader.commit_offset("grp", "t", 0, 3)
    assert a.epoch == 1 and a.leader() is leader

    a.leader().retire()  # demoted: that is NOT_MASTER, not an expired lease
    assert leader.send("t", 0, [Message("t", 0, b"x")]).status is SendStatus.NOT_MASTER
    with pytest.raises(NotMasterError):
        leader.commit_offset("grp", "t", 0, 3)


def test_no_write_lands_after_a_demotion(open_store: Open, tmp_path: Path) -> None:
    """Writers racing a demotion: once the broker follows, its log never grows
    from them again (the retired leader's write gate), and the role it shows
    the world is a slave's from that moment."""
    a = broker(open_store, tmp_path / "a", 1)
    direct(a, 1, 1)
    leader = a.leader()
    leader.create_topic("t", 2)
    stop = threading.Event()
    outcomes: list[SendStatus] = []

    def write() -> None:
        while not stop.is_set():
            outcomes.append(leader.send("t", -1, [Message("t", 0, b"w" * 200)]).status)
            with contextlib.suppress(NotMasterError, RequestTimeoutError):  # refused; or stored, not acked
                leader.commit_offset("grp", "t", 0, a.store.queue_offsets("t", 0)[1])  # at most the end

    writers = [threading.Thread(target=write, daemon=True) for _ in range(3)]
    for w in writers:
        w.start()
    try:
        poll_until(lambda: len(outcomes) > 50, 10, "writes under way")
        direct(a, 2, 2, "h:2")  # another node leads epoch 2
        after = a.store.commitlog.max_offset
        assert not a.role.is_leader and a.registration().role == "slave" and a.broker_id == 1
        n = len(outcomes)
        poll_until(lambda: len(outcomes) > n + 50, 10, "more writes refused")
    finally:
        stop.set()
        for w in writers:
            w.join(10)
    assert a.store.commitlog.max_offset == after
    assert SendStatus.SEND_OK in outcomes[:n] and set(outcomes[n + 3 :]) == {SendStatus.NOT_MASTER}


def test_a_pull_held_across_a_demotion_sees_only_what_the_new_master_confirmed(
    open_store: Open, tmp_path: Path
) -> None:
    a, b = broker(open_store, tmp_path / "a", 1), broker(open_store, tmp_path / "b", 2)
    direct(a, 1, 1)
    a.leader().create_topic("t", 1)
    replicate(a, b)
    end = a.store.next_queue_offset("t", 0)
    got: list[PullReply] = []
    held = threading.Thread(
        target=lambda: got.append(a.pull(PullArgs("grp", "t", 0, end, max_wait_ms=10_000)))
    )
    held.start()
    poll_until(lambda: a.notifier.waiting(("t", 0)) == 1, 5, "the held pull")
    direct(b, 2, 2)
    direct(a, 2, 2, "h:2")  # a follows b now; its pull is still held
    send(b, 3, "e2")
    lb = b.leader()
    m = MasterSession(
        b.store, lb.replicas, "DefaultCluster", "g", SECRET, 1 << 16, lb.epoch, b.epoch_history()
    )
    s = session(a)
    s.on_handshake_reply(m.handshake(s.handshake(), 0, 0))
    while (chunk := m.next_chunk(0)) is not None:  # nothing confirmed yet
        m.on_ack(s.on_chunk(chunk), 0)
    a.notifier.notify_all()
    held.join(0.5)
    assert held.is_alive() and not got  # on a's log, not confirmed: not served
    s.on_heartbeat(m.heartbeat(b.store.commitlog.max_offset))
    a.notifier.notify_all()
    held.join(5)
    assert got and got[0].result.count == 3 and got[0].held
