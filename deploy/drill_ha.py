"""The controller's fault injections of `tailrace drill` (issue 17; topology
local-ha: 3 etcd members, a controller on each of 3 nameservers, one leading
through a leased etcd key).

- `kill-controller`: SIGKILL the leading controller; a standby leads within
  the etcd lease (`controller_takeover_s`: from the kill to the first moment
  another nameserver's ControllerStatus says it leads), the master keeps its
  lease and epoch; the killed nameserver, restarted, stands by.
- `pause-controller`: SIGSTOP the leader for 1.5-3 etcd leases, then SIGCONT;
  a standby leads meanwhile and the resumed one steps down (its status names
  the new leader, its log says it stepped down); epoch unchanged.
- `etcd-member-down`: SIGKILL one etcd member (the etcd leader or not, by the
  seed), restart it later: the controller leader and the epoch stay.
- `etcd-quorum-lost`: two phases in one run, each SIGKILLing two of the
  three members and restarting them on their data. (a) for 0.3-0.5 master
  leases: nothing changes (the epoch, the master and the controller leader
  stay: the etcd leader elected when the members return resets every lease
  to its full TTL, and the leading controller's keepalives get through).
  (Members SIGSTOPped instead may change the controller leader: an etcd
  leader paused past the etcd lease still leads when it resumes and expires
  the leases its clock says are due, the leader key's among them; a standby
  takes over, the master keeps its lease.) (b) for 1.5-2 master leases: the
  master refuses
  a probe send with MASTER_LEASE_EXPIRED (the producer only retries: its
  log may show no failure) and serves a probe pull; quorum back, the same
  master takes sends in the same epoch. Probes use their own topic, so the
  consumer's check is untouched.
- `kill-master-and-controller`: SIGKILL the master and the controller leader
  together: a standby takes over, waits out the master's lease plus the
  margin and elects a slave of the in-sync set (a new epoch); both restarted,
  the old master rejoins as a slave and the old controller stands by.

What the report must then show (`expectations`): the epoch kept or changed,
sends never stalled past `MAX_STALL_S` (not for the drills that lose the
master or its lease), the takeover within the etcd lease plus
`TAKEOVER_SLACK_S`.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import grpc

from consumer.connection import BrokerConnection
from core.pb.tailrace.v1 import broker_pb2
from deploy.drill_faults import POLL_S, Fault
from deploy.waits import WaitTimeout, poll_until

HA = (
    "kill-controller",
    "pause-controller",
    "etcd-member-down",
    "etcd-quorum-lost",
    "kill-master-and-controller",
)
PROBE_TOPIC = "drill-probe"  # the probes' own topic (one queue): the consumer never sees them
MAX_STALL_S = 1.0
TAKEOVER_SLACK_S = 1.5
KEEPS_EPOCH = {"kill-controller", "pause-controller", "etcd-member-down", "etcd-quorum-lost"}
NO_STALL = {"kill-controller", "pause-controller", "etcd-member-down"}


def inject_ha(name: str, f: Fault) -> None:
    {
        "kill-controller": _kill_controller,
        "pause-controller": _pause_controller,
        "etcd-member-down": _etcd_member_down,
        "etcd-quorum-lost": _etcd_quorum_lost,
        "kill-master-and-controller": _kill_master_and_controller,
    }[name](f)


def _leader(f: Fault) -> str:
    found: list[str] = []

    def leads() -> bool:
        found[:] = [x for x in [f.view.controller_leader()] if x]
        return bool(found)

    poll_until(leads, 10 + 3 * f.etcd_lease_s, "a controller leading", every_s=POLL_S)
    return found[0]


def _taken_over(f: Fault, old: str, since: float) -> str:
    """Poll until a controller other than `old` leads; `f.takeover_s` from `since`."""
    found: list[str] = []

    def another_leads() -> bool:
        found[:] = [x for x in [f.view.controller_leader(exclude=old)] if x]
        return bool(found)

    poll_until(another_leads, 10 + 5 * f.etcd_lease_s, f"a controller other than {old} leading", every_s=0.02)
    f.takeover_s = round(time.monotonic() - since, 3)
    f.note(f"{found[0]} leads after {f.takeover_s} s")
    f.expect(
        f.takeover_s <= f.etcd_lease_s + TAKEOVER_SLACK_S,
        f"controller takeover took {f.takeover_s} s (etcd lease {f.etcd_lease_s} s + {TAKEOVER_SLACK_S} s)",
    )
    return found[0]


def _standing_by(f: Fault, name: str, leader: str) -> None:
    def stands_by() -> bool:
        role = f.view.controller_role(name)
        return role is not None and not role.get("leading") and role.get("leader") == leader

    poll_until(stands_by, 30 + 3 * f.etcd_lease_s, f"{name} standing by under {leader}", every_s=POLL_S)


def _kill_controller(f: Fault) -> None:
    view = f.view
    c = _leader(f)
    t = time.monotonic()
    view.signal(c, signal.SIGKILL)
    f.note(f"SIGKILL {c} (controller leader)")
    new = _taken_over(f, c, t)
    time.sleep(f.rng.uniform(0.5, 1.5) * f.etcd_lease_s)  # the schedule: how long it stays down
    view.start(c)
    _standing_by(f, c, new)
    f.note(f"restarted {c}: standby")


def _pause_controller(f: Fault) -> None:
    view = f.view
    c = _leader(f)
    pause_s = f.rng.uniform(1.5, 3.0) * f.etcd_lease_s
    t = time.monotonic()
    view.signal(c, signal.SIGSTOP)
    f.note(f"SIGSTOP {c} (controller leader) for {pause_s:.1f} s")
    new = _taken_over(f, c, t)
    time.sleep(max(0.0, pause_s - (time.monotonic() - t)))  # the schedule
    log_file = view.log_of(c)
    seen = log_file.stat().st_size
    view.signal(c, signal.SIGCONT)
    f.note(f"SIGCONT {c}")
    _standing_by(f, c, new)
    f.note(f"{c} stands by under {new}")
    tail = log_file.read_bytes()[seen:].decode(errors="replace").splitlines()
    said = [line for line in tail if f"controller {c} steps down" in line or "fenc" in line]
    f.expect(bool(said), f"{c}'s log says nothing of stepping down after SIGCONT")
    if said:
        at = max(0, said[0].find(f"controller {c}"))
        f.note(f"{c}'s log: {said[0][at : at + 120]}")
    f.expect(view.controller_leader() == new, f"{new} no longer leads after {c} came back")


def _etcd_member_down(f: Fault) -> None:
    view = f.view
    members = view.etcd_members()
    lead = view.etcd_leader()
    followers = [m for m in members if m != lead]
    victim = lead if lead is not None and f.rng.random() < 0.5 else f.rng.choice(followers)
    f.extra["etcd_victim"] = f"{victim} ({'leader' if victim == lead else 'follower'})"
    view.signal(victim, signal.SIGKILL)
    f.note(f"SIGKILL {victim} ({'the etcd leader' if victim == lead else 'an etcd follower'})")
    time.sleep(f.rng.uniform(1.0, 3.0) * f.etcd_lease_s)  # the schedule
    view.start(victim)
    poll_until(lambda: _etcd_whole(f), 30, f"{victim} back in the etcd cluster", every_s=POLL_S)
    f.note(f"restarted {victim}: etcd leader {view.etcd_leader()}")


def _etcd_whole(f: Fault) -> bool:
    return all(f.view.etcd_member_status(m) is not None for m in f.view.etcd_members()) and bool(
        f.view.etcd_leader()
    )


def _probe_send(f: Fault, address: str) -> str:
    """One send to `address` on the probe topic: its status (or error code)."""
    conn = BrokerConnection(address, 2.0, f.view.security)
    try:
        req = broker_pb2.SendBatchRequest(
            topic=PROBE_TOPIC, queue_id=0, messages=[broker_pb2.Message(body=b"p")]
        )
        return str(broker_pb2.SendStatus.Name(conn.stub.SendBatch(req, timeout=2.0).status))
    except grpc.RpcError as exc:
        return str(conn.error(exc).code)
    finally:
        conn.close()


def _probe_pull(f: Fault, address: str) -> str:
    conn = BrokerConnection(address, 2.0, f.view.security)
    try:
        req = broker_pb2.PullRequest(group="drill-probe", topic=PROBE_TOPIC, queue_id=0, max_messages=1)
        return str(broker_pb2.PullStatus.Name(conn.stub.Pull(req, timeout=2.0).status))
    except grpc.RpcError as exc:
        return str(conn.error(exc).code)
    finally:
        conn.close()


def _quorum_down(f: Fault, phase: str, down_s: float) -> tuple[list[str], float]:
    pair = sorted(f.rng.sample(f.view.etcd_members(), 2))
    lead = f.view.etcd_leader()
    for m in pair:
        f.view.signal(m, signal.SIGKILL)
    f.note(f"phase {phase}: SIGKILL {', '.join(pair)} for {down_s:.1f} s (etcd leader was {lead})")
    return pair, time.monotonic()


def _quorum_back(f: Fault, phase: str, pair: list[str], window: float) -> None:
    for m in pair:
        poll_until(lambda m=m: not f.view.alive(m), 10, f"{m} exiting", every_s=POLL_S)  # type: ignore[misc]
        f.view.start(m)
    f.extra.setdefault("phases", {})[phase] = [round(window, 3), round(time.time(), 3)]
    f.note(f"phase {phase}: restarted {', '.join(pair)}")
    poll_until(lambda: _etcd_whole(f), 30, "the etcd quorum back", every_s=POLL_S)
    f.note(f"phase {phase}: etcd whole again, {_leader(f)} leads")


def _etcd_quorum_lost(f: Fault) -> None:
    view = f.view
    master, ctl = view.master(), _leader(f)
    address = view.procs[master]["address"]
    # (a) shorter than a master lease: nothing changes
    short_s = f.rng.uniform(0.3, 0.5) * f.lease_s
    pair, t = _quorum_down(f, "a", short_s)
    wall = time.time()
    time.sleep(short_s)  # the schedule
    _quorum_back(f, "a", pair, wall)
    poll_until(lambda: _probe_send(f, address) == "SEND_OK", 30, f"{master} taking sends", every_s=POLL_S)
    f.expect(view.epoch() == f.epoch0, f"phase a changed the epoch ({f.epoch0} -> {view.epoch()})")
    f.expect(view.master() == master, f"phase a changed the master ({master} -> {view.master()})")
    now = _leader(f)
    f.extra["phase_a_controller"] = ctl if now == ctl else f"{ctl} -> {now}"
    f.expect(now == ctl, f"phase a changed the controller leader ({ctl} -> {now})")
    f.note(f"phase a: {master} still master in epoch {f.epoch0}; controller {f.extra['phase_a_controller']}")
    time.sleep(f.rng.uniform(1.0, 2.0) * f.etcd_lease_s)  # the schedule: between the phases
    # (b) longer than a master lease: sends refused with MASTER_LEASE_EXPIRED, pulls served
    long_s = f.rng.uniform(1.5, 2.0) * f.lease_s
    pair, t = _quorum_down(f, "b", long_s)
    wall = time.time()
    try:
        poll_until(
            lambda: _probe_send(f, address) == "MASTER_LEASE_EXPIRED",
            max(0.5, long_s - 0.5),
            "a probe send refused with MASTER_LEASE_EXPIRED",
            every_s=0.1,
        )
        f.extra["lease_refused_after_s"] = round(time.monotonic() - t, 3)
        f.note(f"phase b: probe send refused MASTER_LEASE_EXPIRED after {f.extra['lease_refused_after_s']} s")
        pulled = _probe_pull(f, address)
        f.note(f"phase b: probe pull answered {pulled}")
        f.expect(pulled in ("FOUND", "NO_NEW_MSG"), f"phase b: a pull on {master} answered {pulled}")
    except WaitTimeout as exc:
        f.expect(False, f"phase b: {exc}")
    time.sleep(max(0.0, long_s - (time.monotonic() - t)))  # the schedule
    _quorum_back(f, "b", pair, wall)
    t_back = time.monotonic()
    poll_until(lambda: _probe_send(f, address) == "SEND_OK", 60, f"{master} taking sends again", every_s=0.1)
    f.extra["sends_resumed_after_s"] = round(time.monotonic() - t_back, 3)
    f.note(
        f"phase b: {master} takes sends again {f.extra['sends_resumed_after_s']} s after the quorum came back"
    )
    f.expect(view.master() == master, f"phase b changed the master ({master} -> {view.master()})")


def _kill_master_and_controller(f: Fault) -> None:
    view = f.view
    m, c = view.master(), _leader(f)
    in_sync = {int(i) for i in view.group_status().get("in_sync", [])}
    t = time.monotonic()
    view.signal(m, signal.SIGKILL)
    view.signal(c, signal.SIGKILL)
    f.note(f"SIGKILL {m} (master) and {c} (controller leader)")
    new = _taken_over(f, c, t)
    f.elected()
    elected = view.master()
    f.expect(
        int(view.procs[elected]["broker_id"]) in in_sync,
        f"{elected} was elected from outside the in-sync set {sorted(in_sync)}",
    )
    time.sleep(f.rng.uniform(0.2, 1.0) * f.lease_s)  # the schedule: how long they stay down
    for n in f.rng.sample([m, c], 2):
        view.start(n)
    f.back_as_slave(m, 30, "rejoining as a slave")
    _standing_by(f, c, new)
    f.note(f"restarted {m}: slave; {c}: standby")


def expectations(name: str, report: dict[str, Any]) -> list[str]:
    """What the report of HA drill `name` must show, beyond the logs' check."""
    out = []
    e0, e1 = report["epochs"]
    if name in KEEPS_EPOCH and e1 != e0:
        out.append(f"the epoch changed ({e0} -> {e1}): the master should have kept its lease")
    if name == "kill-master-and-controller" and not e1 > e0:
        out.append(f"no new epoch ({e0} -> {e1})")
    stall = report.get("max_send_stall_s")
    if name in NO_STALL and (stall is None or stall > MAX_STALL_S):
        out.append(f"sends stalled {stall} s (at most {MAX_STALL_S} s)")
    return out
