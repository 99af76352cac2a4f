"""The nameserver's broker registry: plain logic, the clock passed in.

Each registration renews a broker's liveness; a broker silent for 3 of its
own heartbeat intervals is dropped. Routes are computed on demand: per group,
the topic's queue counts (taken from the group's master, else any broker) and
every live broker, where of two brokers claiming id 0 only the higher epoch
is shown, and whether the group creates topics on first send (as its master,
else its newest broker, registered).

Broker groups are remembered past their last broker (`clusters()` lists a
group with no live broker, and no brokers, for `KNOWN_GROUP_MS` after the
last heartbeat of any of them; in memory, bounded): an operator's view
must show a group that is entirely down, not drop it. Routes do not list
such a group: clients would be given queues no broker serves.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from core.errors import PermissionDeniedError, brief
from core.route import BrokerEndpoint, GroupRoute, TopicRoute

MISSED_HEARTBEATS = 3
KNOWN_GROUP_MS = 24 * 3600 * 1000  # a group with no live broker is listed this long after its last one
MAX_KNOWN_GROUPS = 10_000


@dataclass(frozen=True, slots=True)
class TopicInfo:
    read_queues: int
    write_queues: int
    perm: str


@dataclass(slots=True)
class Registration:
    cluster: str
    broker_name: str
    broker_id: int
    address: str
    epoch: int
    role: str
    max_offset: int
    heartbeat_ms: int
    topics: dict[str, TopicInfo] = field(default_factory=dict)
    node_id: int = -1  # stable id in the group (failover); -1: same as broker_id
    auto_create: bool = False  # broker.auto_create_topics
    last_seen_ms: int = 0

    def __post_init__(self) -> None:
        if self.node_id < 0:
            self.node_id = self.broker_id

    def expired(self, now_ms: int) -> bool:
        return now_ms - self.last_seen_ms > MISSED_HEARTBEATS * self.heartbeat_ms


class BrokerRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._brokers: dict[str, Registration] = {}  # by address
        # broker group -> (cluster, last heartbeat ms of any of its brokers), oldest first
        self._known: dict[str, tuple[str, int]] = {}
        self._nodes: dict[str, dict[int, int]] = {}  # broker group -> node id -> its last heartbeat ms

    def register(self, reg: Registration, now_ms: int) -> int:
        """Record a heartbeat; returns the highest epoch known for the group."""
        reg.last_seen_ms = now_ms
        with self._lock:
            held = self._brokers.get(reg.address)
            if (
                held is not None
                and (held.broker_name, held.node_id) != (reg.broker_name, reg.node_id)
                and not held.expired(now_ms)
            ):
                # one broker per address: another may not take it over (and then unregister it)
                raise PermissionDeniedError(
                    f"{brief(reg.address)} is registered by {brief(held.broker_name)}/{held.node_id} "
                    f"(until it misses 3 heartbeats)"
                )
            # the same broker back on another address replaces its old entry
            # (a stale claimant of a higher epoch is kept: fencing, issue 8)
            for addr, old in list(self._brokers.items()):
                if (
                    addr != reg.address
                    and (old.broker_name, old.node_id) == (reg.broker_name, reg.node_id)
                    and old.epoch <= reg.epoch
                ):
                    del self._brokers[addr]
            self._brokers[reg.address] = reg
            self._known.pop(reg.broker_name, None)
            self._known[reg.broker_name] = (reg.cluster, now_ms)
            self._nodes.setdefault(reg.broker_name, {})[reg.node_id] = now_ms
            while len(self._known) > MAX_KNOWN_GROUPS:
                oldest = next(iter(self._known))
                del self._known[oldest]
                self._nodes.pop(oldest, None)
            return max(
                (r.epoch for r in self._brokers.values() if r.broker_name == reg.broker_name),
                default=reg.epoch,
            )

    def live_count(self, now_ms: int) -> int:
        with self._lock:
            return len(self._live(now_ms))

    def group_counts(self, now_ms: int) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(cluster, group) -> (live brokers, live masters, known brokers):
        the metrics' view. Known brokers are the group's nodes heard from in
        the last KNOWN_GROUP_MS, live or not: what the group should have, so
        an alert on live < known stays firing while one is down."""
        with self._lock:
            live = self._groups(now_ms)
            out = {}
            for name, (cluster, last_ms) in self._known.items():
                if now_ms - last_ms > KNOWN_GROUP_MS:
                    continue
                regs = live.get(name, [])
                known = sum(1 for at in self._nodes.get(name, {}).values() if now_ms - at <= KNOWN_GROUP_MS)
                out[(cluster, name)] = (len(regs), sum(1 for r in regs if r.broker_id == 0), known)
            return out

    def unregister(self, address: str, owner: tuple[str, int] | None = None) -> bool:
        """Forget the broker registered at `address`; with `owner` (group,
        node id: the caller's certificate), only if it is that broker."""
        with self._lock:
            reg = self._brokers.get(address)
            if reg is None or (owner is not None and (reg.broker_name, reg.node_id) != owner):
                return False
            del self._brokers[address]
            return True

    def expire(self, now_ms: int) -> list[Registration]:
        """Drop brokers silent for too long; returns them."""
        with self._lock:
            gone = [r for r in self._brokers.values() if r.expired(now_ms)]
            for r in gone:
                del self._brokers[r.address]
            return gone

    def _live(self, now_ms: int) -> list[Registration]:
        return [r for r in self._brokers.values() if not r.expired(now_ms)]

    def _group_route(self, regs: list[Registration], topic: str | None) -> GroupRoute | None:
        masters = [r for r in regs if r.broker_id == 0]
        top_master = max(masters, key=lambda r: (r.epoch, r.last_seen_ms)) if masters else None
        shown = [r for r in regs if r.broker_id != 0 or r is top_master]
        source = top_master or max(regs, key=lambda r: (r.epoch, r.last_seen_ms))
        if topic is not None:
            if top_master is not None and topic in top_master.topics:
                holder: Registration | None = top_master
            else:
                holder = next((r for r in shown if topic in r.topics), None)
            if holder is None:
                return None
            info = holder.topics[topic]
        else:
            info = TopicInfo(0, 0, "rw")
        return GroupRoute(
            broker_name=source.broker_name,
            cluster=source.cluster,
            read_queues=info.read_queues,
            write_queues=info.write_queues,
            perm=info.perm,
            brokers=tuple(
                BrokerEndpoint(
                    r.broker_id,
                    r.address,
                    "master" if r.broker_id == 0 else "slave",
                    r.epoch,
                    True,
                    r.max_offset,
                )
                for r in sorted(shown, key=lambda r: (r.broker_id, r.address))
            ),
            auto_create=source.auto_create,
        )

    def _groups(self, now_ms: int) -> dict[str, list[Registration]]:
        groups: dict[str, list[Registration]] = {}
        for r in self._live(now_ms):
            groups.setdefault(r.broker_name, []).append(r)
        return groups

    def route(self, topic: str, now_ms: int) -> TopicRoute | None:
        """The topic's route, or None when no live broker has it."""
        with self._lock:
            groups = [self._group_route(regs, topic) for regs in self._groups(now_ms).values()]
        found = tuple(sorted((g for g in groups if g is not None), key=lambda g: g.broker_name))
        return TopicRoute(topic, found) if found else None

    def clusters(self, now_ms: int) -> dict[str, list[GroupRoute]]:
        """Every broker group by cluster: its live brokers, and the groups
        known in the last KNOWN_GROUP_MS with none (no brokers listed)."""
        with self._lock:
            out: dict[str, list[GroupRoute]] = {}
            live = self._groups(now_ms)
            for regs in live.values():
                g = self._group_route(regs, None)
                if g is not None:
                    out.setdefault(g.cluster, []).append(g)
            for name, (cluster, last_ms) in self._known.items():
                if name not in live and now_ms - last_ms <= KNOWN_GROUP_MS:
                    out.setdefault(cluster, []).append(GroupRoute(name, cluster, 0, 0, ""))
        return {c: sorted(gs, key=lambda g: g.broker_name) for c, gs in sorted(out.items())}
