"""Names shared by brokers, the nameserver and the controller: roles,
replication modes, send statuses and the controller's directive.

Enums, not strings, from end to end: a typo is an AttributeError at import,
not a branch that never runs. They are `StrEnum`s, so they print, compare
and serialise (JSON logs, protobuf enum names) as the strings they replace.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.errors import InvalidArgumentError, brief

NO_MASTER = -1  # a Directive's master_id while a group has no master yet


class Role(StrEnum):
    """What a broker is in its group, as routes and the controller see it."""

    MASTER = "master"  # leads (with a controller: leads in its current epoch)
    SLAVE = "slave"  # follows a master
    # configured master, never directed by the controller: may bootstrap a new group
    INITIAL_MASTER = "initial-master"


def parse_role(text: str) -> Role:
    """A role name off the wire; an unknown one is bad input."""
    try:
        return Role(text)
    except ValueError:
        raise InvalidArgumentError(f"unknown role {brief(text)}") from None


class ReplicationMode(StrEnum):
    ASYNC = "async"  # a send is acknowledged once the master stored it
    SYNC = "sync"  # ... once enough in-sync slaves acked it too


class SendStatus(StrEnum):
    """The outcome of a send the broker handled (failures are exceptions)."""

    SEND_OK = "SEND_OK"
    FLUSH_DISK_TIMEOUT = "FLUSH_DISK_TIMEOUT"  # stored, durability not confirmed in time
    SLAVE_TIMEOUT = "SLAVE_TIMEOUT"  # stored on the master, not acked by enough slaves in time
    SLAVE_NOT_AVAILABLE = "SLAVE_NOT_AVAILABLE"  # not stored: too few in-sync slaves
    NOT_MASTER = "NOT_MASTER"  # not stored: this broker does not lead (demoted, or never led)
    # not stored: this broker leads its epoch, but no controller renewed its lease in time
    MASTER_LEASE_EXPIRED = "MASTER_LEASE_EXPIRED"

    @property
    def stored(self) -> bool:
        return self in (SendStatus.SEND_OK, SendStatus.FLUSH_DISK_TIMEOUT, SendStatus.SLAVE_TIMEOUT)


@dataclass(frozen=True, slots=True)
class Directive:
    """The controller's answer to every heartbeat: the group's epoch, master
    and confirmed in-sync set, and the lease a master's heartbeat renewed."""

    epoch: int
    master_id: int  # NO_MASTER: none yet
    master_address: str
    in_sync: frozenset[int]
    lease_ms: int
    master_member_address: str = ""  # the master's members' port (replication); "": master_address
