"""The route model shared by the nameserver and the clients.

A topic's route lists, per broker group, its queue counts and permission and
the group's brokers (id, address, role, epoch, liveness). Queues are
addressed as `MessageQueue(broker_name, queue_id)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MASTER_ID = 0  # broker id of a group's master


@dataclass(frozen=True, slots=True, order=True)
class MessageQueue:
    broker_name: str
    queue_id: int

    def __str__(self) -> str:
        return f"{self.broker_name}/{self.queue_id}"


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    broker_id: int
    address: str
    role: str
    epoch: int
    alive: bool
    max_offset: int = 0


@dataclass(frozen=True, slots=True)
class GroupRoute:
    broker_name: str
    cluster: str
    read_queues: int
    write_queues: int
    perm: str
    brokers: tuple[BrokerEndpoint, ...] = field(default_factory=tuple)
    auto_create: bool = False  # its master creates a topic it lacks on first send

    @property
    def master(self) -> BrokerEndpoint | None:
        """The live broker with id 0 and the highest epoch."""
        masters = [b for b in self.brokers if b.broker_id == 0 and b.alive]
        return max(masters, key=lambda b: b.epoch) if masters else None

    @property
    def writable(self) -> bool:
        return "w" in self.perm and self.write_queues > 0

    @property
    def readable(self) -> bool:
        return "r" in self.perm and self.read_queues > 0


@dataclass(frozen=True, slots=True)
class TopicRoute:
    topic: str
    groups: tuple[GroupRoute, ...]

    def group(self, broker_name: str) -> GroupRoute | None:
        for g in self.groups:
            if g.broker_name == broker_name:
                return g
        return None

    def master_address(self, broker_name: str) -> str | None:
        """The address of a broker group's live master, or None."""
        g = self.group(broker_name)
        m = g.master if g is not None else None
        return m.address if m is not None else None

    def write_queues(self) -> list[MessageQueue]:
        """Every writable queue of every group with a live master, sorted."""
        return sorted(
            MessageQueue(g.broker_name, q)
            for g in self.groups
            if g.writable and g.master is not None
            for q in range(g.write_queues)
        )

    def read_queues(self) -> list[MessageQueue]:
        """Every readable queue of every group, sorted (the allocation order)."""
        return sorted(
            MessageQueue(g.broker_name, q) for g in self.groups if g.readable for q in range(g.read_queues)
        )


def allocate_average(queues: list[MessageQueue], members: list[str], me: str) -> list[MessageQueue]:
    """RocketMQ's averaging allocation: sorted queues, sorted members,
    contiguous blocks; the first `len(queues) % len(members)` members get one
    more. A member not in the list gets nothing."""
    qs = sorted(queues)
    ms = sorted(members)
    if me not in ms or not qs:
        return []
    i, n, m = ms.index(me), len(qs), len(ms)
    size = n // m + (1 if i < n % m else 0)
    start = i * (n // m) + min(i, n % m)
    return qs[start : start + size]
