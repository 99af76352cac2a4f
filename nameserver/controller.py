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

Persistence: `controller.json` holds every group's epoch, master and in-sync
set; it is written (fsync, rename) before a new epoch or set is announced, so
a restarted controller never reuses an epoch. After a restart every master is
given a full lease before it can be replaced: the controller cannot know when
it last renewed.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import BrokerUnavailableError, InvalidArgumentError, QuotaExceededError, brief
from core.roles import NO_MASTER, Directive, Role
from core.sidefiles import Damage, DamagedFileError, count, need, read_json, write_json

log = logging.getLogger(__name__)
STATE_FILE = "controller.json"
MASTER = Role.MASTER  # a broker leading in its epoch
INITIAL_MASTER = Role.INITIAL_MASTER  # configured master, never directed: may bootstrap a new group
ADVICE = (
    "it cannot be rebuilt (no log holds it): restore it from a backup, or move it aside and start "
    "again with no state: a group then gets a master again when its master heartbeats, in an epoch "
    "above the one that master reports (while that master is down, nothing is elected)"
)

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


def _parse(raw: Any) -> dict[str, GroupState]:
    """controller.json's groups, shape-checked (anything else is Damage)."""
    need(isinstance(raw, dict) and isinstance(raw.get("groups"), dict), "no groups table")
    out = {}
    for name, g in raw["groups"].items():
        need(isinstance(g, dict) and isinstance(g["master_address"], str), f"group {name!r}")
        need(isinstance(g["in_sync"], list), f"in-sync set of {name!r}")
        out[name] = GroupState(
            epoch=count(g["epoch"], f"epoch of {name!r}"),
            master_id=count(g["master_id"], f"master of {name!r}", NO_MASTER, 1 << 31),
            master_address=g["master_address"],
            in_sync=frozenset(count(i, f"in-sync member of {name!r}", 0, 1 << 31) for i in g["in_sync"]),
        )
    return out


class Controller:
    def __init__(
        self,
        data_dir: Path | None,
        lease_ms: int,
        unclean_election: bool = False,
        now_ms: int = 0,
    ) -> None:
        if lease_ms <= 0:
            raise InvalidArgumentError("lease_ms must be positive")
        self.lease_ms = lease_ms
        self.unclean_election = unclean_election
        self.path = data_dir / STATE_FILE if data_dir is not None else None
        self._lock = threading.Lock()
        self._groups: dict[str, GroupState] = {}
        self._isolated: dict[str, int] = {}  # address -> until (drills: cut off at the controller)
        if self.path is not None:
            try:
                saved = read_json(self.path, _parse) or {}
            except Damage as exc:  # no log to rebuild it from: the operator decides
                raise DamagedFileError(self.path, str(exc), ADVICE) from exc
            for name, g in saved.items():
                g.lease_until_ms = now_ms + lease_ms  # benefit of the doubt after a restart
                g.status = "restarted: the master has a full lease to renew"
                self._groups[name] = g

    # ---- heartbeats --------------------------------------------------------------------

    def heartbeat(self, hb: Heartbeat, now_ms: int) -> Directive:
        if not hb.group or hb.node_id <= 0 or not hb.address:
            raise InvalidArgumentError("a controller heartbeat needs group, node_id > 0 and address")
        if not _NAME.fullmatch(hb.group) or hb.node_id > MAX_NODE_ID:
            raise InvalidArgumentError(f"group {brief(hb.group)} or node id {hb.node_id} out of range")
        with self._lock:
            if self._isolated.get(hb.address, 0) > now_ms:
                raise BrokerUnavailableError(f"{brief(hb.address)} is cut off at the controller (drill)")
            self._isolated = {a: t for a, t in self._isolated.items() if t > now_ms}
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
            return [name for name, g in self._groups.items() if self._elect_if_expired(name, g, now_ms)]

    def _elect_if_expired(self, name: str, g: GroupState, now_ms: int) -> bool:
        if g.master_id == NO_MASTER or now_ms <= g.lease_until_ms:
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
        """Write every group's state, with `changes` applied to group `name`
        (the caller assigns them only after this returned)."""
        if self.path is None:
            return
        groups: dict[str, dict[str, Any]] = {}
        for n, g in sorted(self._groups.items()):
            row: dict[str, Any] = {"epoch": g.epoch, "master_id": g.master_id,
                                   "master_address": g.master_address, "in_sync": g.in_sync}  # fmt: skip
            if n == name:
                row.update(changes)
            row["in_sync"] = sorted(int(i) for i in row["in_sync"])
            groups[n] = row
        write_json(self.path, {"groups": groups}, indent=1)

    # ---- drills and status -------------------------------------------------------------

    def leader_of(self, group: str) -> tuple[int, int] | None:
        """(epoch, master node) the controller has elected for `group` (None: no state)."""
        with self._lock:
            g = self._groups.get(group)
            return None if g is None or g.master_id == NO_MASTER else (g.epoch, g.master_id)

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
