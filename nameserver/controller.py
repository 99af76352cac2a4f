"""The failover controller: per broker group, who is master, in which epoch,
and which slaves may be elected. Plain logic, the clock passed in.

Brokers of a failover-enabled group heartbeat to the controller every
`controller_heartbeat_ms`. The master's heartbeat renews its lease and
reports its in-sync set (the slaves that hold every acknowledged write);
every heartbeat is answered with the group's `Directive` (epoch, master,
confirmed in-sync set), which is how brokers learn of an election.

Election: when the master's lease has expired (`tick`), the controller picks,
among the alive members of the confirmed in-sync set, the one with the highest
reported max offset (then the highest priority, then the lowest node id),
bumps the epoch, persists it and only then announces it. With no such member
nothing is elected (unless `unclean_election`), and `status` says why.

Persistence: a state store (nameserver/controller_store.py: the file
`controller.json`, or etcd) holds every group's epoch, master and in-sync
set; a change is saved (compare-and-set) before it is announced, so a
restarted controller never reuses an epoch.

Leadership: only a leading controller answers heartbeats and elects. A file
or memory store leads alone, from construction. With etcd, several
controllers campaign for a leased key (nameserver/campaign.py) and the one
that holds it leads until `leading_until` (counted from when its last
keepalive was sent, on this process's monotonic clock): past it, it stops
renewing master leases, since its etcd lease may have expired and another
controller may lead. Whenever a controller starts (or resumes) leading, it
re-reads the store and gives every master a full lease plus a margin before
it can be replaced: it cannot know when another controller last renewed it.
A save that finds the leader key or the group changed makes it step down.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.errors import (
    BrokerUnavailableError,
    InvalidArgumentError,
    NotControllerError,
    QuotaExceededError,
    brief,
)
from core.roles import NO_MASTER, Directive, Role
from nameserver.controller_store import (
    ControllerStore,
    DamagedRecordError,
    FileStore,
    GroupRecord,
    MemoryStore,
    StoreConflict,
)

log = logging.getLogger(__name__)
MASTER = Role.MASTER  # a broker leading in its epoch
INITIAL_MASTER = Role.INITIAL_MASTER  # configured master, never directed: may bootstrap a new group
CLAIM_RELOAD_MS = 500  # a standby re-reads the store for a master's claim at most this often

MAX_GROUPS = 1024  # broker groups one controller tracks
MAX_NODE_ID = 1 << 20
FORGET_LEASES = 20  # a node silent this many leases (and neither master nor in sync) is forgotten
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # as broker.broker_name


@dataclass(frozen=True, slots=True)
class Heartbeat:
    group: str
    cluster: str
    node_id: int
    address: str
    epoch: int  # the epoch the broker runs in
    role: Role  # as the broker sees itself
    max_offset: int
    in_sync: frozenset[int] = frozenset()  # a master's proposal
    priority: int = 0
    member_address: str = ""  # its members' port (replication); "": address


@dataclass(slots=True)
class Member:
    node_id: int
    address: str
    max_offset: int
    priority: int
    last_seen_ms: int
    member_address: str = ""


@dataclass(slots=True)
class GroupState:
    epoch: int = 0
    master_id: int = NO_MASTER
    master_address: str = ""
    in_sync: frozenset[int] = frozenset()
    lease_until_ms: int = 0
    members: dict[int, Member] = field(default_factory=dict)
    status: str = "waiting for a master to register"
    elections: int = 0
    restarted_ms: int = -1  # when the master was seen back without leading (-1: not)
    damaged: str = ""  # its stored record could not be read: no answers for it


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """Who leads the controllers: a nameserver's name and its members' address."""

    name: str
    address: str


class Controller:
    def __init__(
        self,
        store: ControllerStore | Path | None,
        lease_ms: int,
        unclean_election: bool = False,
        now_ms: int = 0,
        *,
        takeover_margin_ms: int = 0,
        me: LeaderInfo | None = None,
        campaigns: bool = False,
    ) -> None:
        """`store`: a ControllerStore, or a data dir (a FileStore there), or
        None (nothing kept). Unless it `campaigns` for leadership (etcd), the
        controller leads alone from now on."""
        if lease_ms <= 0:
            raise InvalidArgumentError("lease_ms must be positive")
        if takeover_margin_ms < 0:
            raise InvalidArgumentError("takeover_margin_ms must not be negative")
        self.lease_ms = lease_ms
        self.unclean_election = unclean_election
        self.takeover_margin_ms = takeover_margin_ms
        if isinstance(store, Path):
            store = FileStore(store)
        self.store: ControllerStore = store if store is not None else MemoryStore()
        self.me = me or LeaderInfo("", "")
        self._lock = threading.Lock()
        self._groups: dict[str, GroupState] = {}
        self._versions: dict[str, int] = {}  # each group's record version in the store
        self._isolated: dict[str, int] = {}  # address -> until (drills: cut off at the controller)
        self._leading_until: float = -1.0  # leads while now < this (inf: alone)
        self._leader: LeaderInfo | None = None  # who leads, as last seen
        self._took_over_ms = -1
        self._claims_loaded_ms = -(1 << 62)
        self.token = 0  # the leader key's create_revision while leading through etcd
        if not campaigns:
            self.take_over(now_ms, math.inf)

    # ---- leadership --------------------------------------------------------------------

    def take_over(self, now_ms: int, until_ms: float, token: int = 0, wait_ms: int = 0) -> None:
        """Lead until `until_ms`: re-read every group from the store, and give
        every master a full lease (the longest a previous leader may have
        granted: `wait_ms`, if longer than ours) plus the margin before it
        can be replaced."""
        rows = self.store.load()  # StoreUnavailable: nothing changes
        damaged = self.store.damaged()
        wait = max(self.lease_ms, wait_ms) + self.takeover_margin_ms
        with self._lock:
            self._groups, self._versions = {}, {}
            for name, (rec, version) in rows.items():
                self._groups[name] = GroupState(
                    epoch=rec.epoch,
                    master_id=rec.master_id,
                    master_address=rec.master_address,
                    in_sync=rec.in_sync,
                    lease_until_ms=now_ms + wait,
                    status="controller took over: the master has a full lease to renew",
                )
                self._versions[name] = version
            for name, why in damaged.items():
                self._groups[name] = GroupState(status=f"damaged: {why}", damaged=why)
            self._leading_until = until_ms
            self._leader = self.me
            self._took_over_ms = now_ms
            self._claims_loaded_ms = now_ms
            self.token = token
        for name, why in damaged.items():
            log.error("controller %s: group %s gets no answers: %s", self.me.name, name, why)
        if not math.isinf(until_ms):
            log.warning(
                "controller %s leads (%s store, token %d): %d groups, masters keep their leases",
                self.me.name, self.store.kind, token, len(rows),
            )  # fmt: skip

    def extend(self, now_ms: int, until_ms: float) -> bool:
        """A keepalive sent before `until_ms - ttl` was answered: lead on.
        False if leadership had already lapsed (the caller takes over again,
        re-reading the store)."""
        with self._lock:
            if now_ms >= self._leading_until:
                return False
            self._leading_until = max(self._leading_until, until_ms)
            return True

    def step_down(self, why: str, leader: LeaderInfo | None = None) -> None:
        """Stop leading at once (nothing is renewed, nothing elected)."""
        with self._lock:
            was = self._leading_until >= 0
            self._leading_until = -1.0
            self._leader = leader
            self.token = 0
        if was:
            log.warning("controller %s steps down: %s", self.me.name, why)

    def follow(self, leader: LeaderInfo | None) -> None:
        """A standby's view of who leads (named in NOT_CONTROLLER answers)."""
        with self._lock:
            if self._leading_until < 0:
                self._leader = leader

    def leading(self, now_ms: int) -> bool:
        with self._lock:
            return now_ms < self._leading_until

    def leader(self) -> LeaderInfo | None:
        with self._lock:
            return self._leader

    def _require_leading(self, now_ms: int) -> None:
        """(Under the lock.) A standby, or a leader whose etcd lease may have
        expired, refuses: the broker asks the leader instead."""
        if now_ms < self._leading_until:
            return
        who = self._leader if self._leader != self.me else None
        if self._leading_until >= 0:  # lapsed, not yet stepped down
            raise BrokerUnavailableError(
                f"controller {self.me.name} cannot renew its leadership (etcd unreachable): not answering"
            )
        raise NotControllerError(
            f"controller {self.me.name or '?'} stands by; "
            + (f"{who.name} leads at {who.address}" if who else "no leader known"),
            leader_address=who.address if who else "",
        )

    # ---- heartbeats --------------------------------------------------------------------

    def heartbeat(self, hb: Heartbeat, now_ms: int) -> Directive:
        if not hb.group or hb.node_id <= 0 or not hb.address:
            raise InvalidArgumentError("a controller heartbeat needs group, node_id > 0 and address")
        if not _NAME.fullmatch(hb.group) or hb.node_id > MAX_NODE_ID:
            raise InvalidArgumentError(f"group {brief(hb.group)} or node id {hb.node_id} out of range")
        with self._lock:
            self._require_leading(now_ms)
            if self._isolated.get(hb.address, 0) > now_ms:
                raise BrokerUnavailableError(f"{brief(hb.address)} is cut off at the controller (drill)")
            self._isolated = {a: t for a, t in self._isolated.items() if t > now_ms}
            damaged = self._groups[hb.group].damaged if hb.group in self._groups else ""
            if damaged:
                raise DamagedRecordError(f"group {brief(hb.group)}: {damaged}; repair it in the store")
            if hb.group not in self._groups and len(self._groups) >= MAX_GROUPS:
                raise QuotaExceededError(f"the controller already holds {MAX_GROUPS} groups")
            g = self._groups.setdefault(hb.group, GroupState())
            # nodes silent for many leases are forgotten (a node id a peer used once)
            stale = [
                n for n, m in g.members.items() if now_ms - m.last_seen_ms > FORGET_LEASES * self.lease_ms
            ]
            for n in stale:
                if n != g.master_id and n not in g.in_sync:
                    del g.members[n]
            g.members[hb.node_id] = Member(
                hb.node_id, hb.address, hb.max_offset, hb.priority, now_ms, hb.member_address
            )
            if g.master_id == NO_MASTER and g.epoch == 0 and hb.role in (MASTER, INITIAL_MASTER):
                # (a leader from before a lost state file gets an epoch above its own)
                self._install(
                    hb.group, g, hb.node_id, hb.address, now_ms, "bootstrap", max(g.epoch, hb.epoch)
                )
            elif hb.node_id == g.master_id:
                g.master_address = hb.address
                if hb.epoch == g.epoch and hb.role == MASTER:  # leading in the current epoch: renew
                    proposed = hb.in_sync - {hb.node_id}
                    if proposed != g.in_sync:
                        self._persist(hb.group, in_sync=proposed)  # on disk before it is confirmed
                        g.in_sync = proposed
                    g.lease_until_ms = max(g.lease_until_ms, now_ms + self.lease_ms)
                    g.restarted_ms = -1
                    g.status = "ok"
                elif hb.epoch == g.epoch and g.restarted_ms < 0:
                    # the master restarted: its log may have lost an unflushed tail, so
                    # it may not simply lead on; elect now (it is a candidate too)
                    g.lease_until_ms = now_ms - 1
                    g.restarted_ms = now_ms
                    g.status = f"master {hb.node_id} restarted: electing"
            self._elect_if_expired(hb.group, g, now_ms)
            return self._directive(g)

    def _directive(self, g: GroupState) -> Directive:
        m = g.members.get(g.master_id)
        member_address = m.member_address if m is not None and m.address == g.master_address else ""
        return Directive(g.epoch, g.master_id, g.master_address, g.in_sync, self.lease_ms, member_address)

    # ---- elections ---------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[str]:
        """Elect wherever a master's lease has expired; returns the groups
        that got a new master."""
        with self._lock:
            if now_ms >= self._leading_until:
                return []
            return [name for name, g in self._groups.items() if self._elect_if_expired(name, g, now_ms)]

    def _elect_if_expired(self, name: str, g: GroupState, now_ms: int) -> bool:
        if g.master_id == NO_MASTER or now_ms <= g.lease_until_ms or g.damaged:
            return False
        alive = {
            m.node_id: m
            for m in g.members.values()
            if m.node_id != g.master_id and now_ms - m.last_seen_ms <= self.lease_ms
        }
        others = dict(alive)
        master = g.members.get(g.master_id)
        if g.restarted_ms >= 0:
            reported = all(i in g.members and g.members[i].last_seen_ms >= g.restarted_ms for i in g.in_sync)
            if not reported and now_ms - g.restarted_ms <= self.lease_ms:
                g.status = f"master restarted; waiting for in-sync slaves {sorted(g.in_sync)} to report"
                return False  # their current offsets decide whether the restarted log is longest
            if reported and master is not None and now_ms - master.last_seen_ms <= self.lease_ms:
                # every acknowledged write is on an in-sync slave or on it, and
                # the longest log holds them all. (Unless all have reported, only
                # an in-sync slave may be elected: the restarted log may have lost
                # an unflushed tail.)
                alive[master.node_id] = master
        candidates = [m for i, m in alive.items() if i in g.in_sync or i == g.master_id]
        how = "clean"
        if not candidates and self.unclean_election and g.restarted_ms < 0:
            candidates, how = list(alive.values()), "unclean"
        if not candidates:
            why = "no in-sync slave is alive" if others else "no slave is alive"
            if g.restarted_ms >= 0:
                why = f"master restarted; waiting for in-sync slaves {sorted(g.in_sync)} to report"
            g.status = (
                f"master {g.master_id} lost its lease; {why}"
                + ("" if self.unclean_election else " (unclean_election is off)")
                + ": not electing"
            )
            return False
        best = choose(candidates)
        self._install(name, g, best.node_id, best.address, now_ms, how)
        return True

    def _install(
        self,
        name: str,
        g: GroupState,
        node_id: int,
        address: str,
        now_ms: int,
        how: str,
        base: int | None = None,
    ) -> None:
        old = g.master_id
        epoch = (g.epoch if base is None else base) + 1
        # on disk before anyone hears of the epoch; a failed write changes nothing
        self._persist(name, epoch=epoch, master_id=node_id, master_address=address, in_sync=frozenset())
        g.epoch = epoch
        g.master_id, g.master_address = node_id, address
        g.in_sync = frozenset()
        g.lease_until_ms = now_ms + self.lease_ms  # time for the new master to learn it
        g.restarted_ms = -1
        g.elections += how != "bootstrap"
        g.status = f"epoch {g.epoch}: node {node_id} elected ({how})"
        log.warning(
            "group %s: epoch %d, master %s -> %d at %s (%s)", name, g.epoch, old, node_id, address, how
        )

    def _persist(self, name: str, **changes: Any) -> None:
        """Save group `name`'s record with `changes` applied (the caller
        assigns them only after this returned). A conflict (another controller
        leads, or changed the group) steps this one down."""
        g = self._groups[name]
        rec = replace(GroupRecord(g.epoch, g.master_id, g.master_address, g.in_sync), **changes)
        try:
            self._versions[name] = self.store.save(name, rec, self._versions.get(name, 0))
        except StoreConflict as exc:
            self._leading_until = -1.0
            self._leader, self.token = None, 0
            log.warning("controller %s steps down: %s", self.me.name, exc)
            raise

    # ---- drills and status -------------------------------------------------------------

    def leader_of(self, group: str) -> tuple[int, int] | None:
        """(epoch, master node) the controller has elected for `group` (None: no state)."""
        with self._lock:
            g = self._groups.get(group)
            return None if g is None or g.master_id == NO_MASTER else (g.epoch, g.master_id)

    def elected(self, group: str, node: int, epoch: int, now_ms: int) -> tuple[int, int] | None:
        """`leader_of(group)`, as fresh as checking a master's claim needs: a
        standby whose copy does not back the claim re-reads the store (at
        most every CLAIM_RELOAD_MS; unreachable: its copy answers)."""
        found = self.leader_of(group)
        if found is not None and found[1] == node and epoch <= found[0]:
            return found
        with self._lock:
            if now_ms < self._leading_until or now_ms - self._claims_loaded_ms < CLAIM_RELOAD_MS:
                return found
            self._claims_loaded_ms = now_ms
        try:
            rows = self.store.load()
        except BrokerUnavailableError:
            return found
        with self._lock:
            if now_ms >= self._leading_until:  # a leader's own state is the newest
                for name, (rec, version) in rows.items():
                    g = self._groups.setdefault(name, GroupState())
                    g.epoch, g.master_id, g.master_address = rec.epoch, rec.master_id, rec.master_address
                    g.in_sync = rec.in_sync
                    self._versions[name] = version
        return self.leader_of(group)

    def role(self, now_ms: int) -> dict[str, Any]:
        """This controller's part: leading or standing by, and who leads."""
        with self._lock:
            leader = self._leader
            return {
                "name": self.me.name,
                "store": self.store.kind,
                "leading": now_ms < self._leading_until,
                "leader": leader.name if leader else "",
                "leader_address": leader.address if leader else "",
                "token": self.token,
                "leading_left_ms": (
                    -1 if math.isinf(self._leading_until) else max(0, int(self._leading_until - now_ms))
                ),
            }

    def isolate(self, address: str, duration_ms: int, now_ms: int) -> None:
        """Refuse `address`'s heartbeats for a while: a partition between the
        controller and that broker (drills, where network namespaces are not
        available)."""
        with self._lock:
            self._isolated[address] = now_ms + duration_ms

    def status(self, now_ms: int) -> dict[str, Any]:
        with self._lock:
            return {
                name: {
                    "epoch": g.epoch,
                    "master_id": g.master_id,
                    "master_address": g.master_address,
                    "in_sync": sorted(g.in_sync),
                    "lease_left_ms": max(0, g.lease_until_ms - now_ms) if g.master_id != NO_MASTER else 0,
                    "elections": g.elections,
                    "status": g.status,
                    "members": {
                        m.node_id: {
                            "address": m.address,
                            "max_offset": m.max_offset,
                            "alive": now_ms - m.last_seen_ms <= self.lease_ms,
                        }
                        for m in sorted(g.members.values(), key=lambda m: m.node_id)
                    },
                }
                for name, g in sorted(self._groups.items())
            }


def choose(candidates: list[Member]) -> Member:
    """Highest max offset, then highest priority, then lowest node id."""
    return max(candidates, key=lambda m: (m.max_offset, m.priority, -m.node_id))
