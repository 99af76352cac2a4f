"""Where the failover controller keeps each broker group's epoch, master and
in-sync set: the state store under the election logic (nameserver/controller.py).

Every change is a compare-and-set of one group's record against the version
the controller last read or wrote (`save(group, record, version)`; version 0:
the group has no record yet). A store that finds the record changed under it,
or that finds this controller no longer leads, raises `StoreConflict` and
changes nothing: the controller then steps down and re-reads before leading
again. A store that cannot be reached raises `StoreUnavailable`, and nothing
is known to have changed.

Two implementations:

- `FileStore`: `controller.json` (fsync, rename) for one controller on one
  machine, the default; it is the only writer, so its versions are a counter.
- `EtcdStore` (nameserver/etcd_store.py): one key per group, each save one
  transaction guarded by the leader key (nameserver/campaign.py).

`MemoryStore` keeps nothing (a controller with no data dir, and unit tests);
unit tests of the etcd rules run `EtcdStore` over `core/etcd/fake.py`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from core.errors import BrokerUnavailableError, NotControllerError, TailraceError
from core.fileutil import atomic_write
from core.roles import NO_MASTER
from core.sidefiles import Damage, DamagedFileError, count, need, read_json, write_json

STATE_FILE = "controller.json"
PID_FILE = "controller.pid"  # the process running a controller on this file (migration checks it)
ADVICE = (
    "it cannot be rebuilt (no log holds it): restore it from a backup, or move it aside and start "
    "again with no state: a group then gets a master again when its master heartbeats, in an epoch "
    "above the one that master reports (while that master is down, nothing is elected)"
)


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """What survives a controller: a group's epoch, master and confirmed in-sync set."""

    epoch: int = 0
    master_id: int = NO_MASTER
    master_address: str = ""
    in_sync: frozenset[int] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "master_id": self.master_id,
            "master_address": self.master_address,
            "in_sync": sorted(self.in_sync),
        }

    @staticmethod
    def from_json(name: str, g: Any) -> GroupRecord:
        """A stored record, shape-checked (anything else is Damage)."""
        need(isinstance(g, dict) and isinstance(g.get("master_address"), str), f"group {name!r}")
        need(isinstance(g.get("in_sync"), list), f"in-sync set of {name!r}")
        return GroupRecord(
            epoch=count(g["epoch"], f"epoch of {name!r}"),
            master_id=count(g["master_id"], f"master of {name!r}", NO_MASTER, 1 << 31),
            master_address=g["master_address"],
            in_sync=frozenset(count(i, f"in-sync member of {name!r}", 0, 1 << 31) for i in g["in_sync"]),
        )


class StoreConflict(NotControllerError):
    """The store changed under this controller, or it no longer leads:
    nothing was written; the controller steps down."""


class DamagedRecordError(TailraceError):
    """A group's stored record is not one a controller wrote: that group gets
    no answers (nothing is elected for it) until an operator repairs it."""

    code = "DAMAGED_FILE"


class StoreInDoubt(StoreConflict):
    """A save's answer was lost and the record could not be read back: it may
    or may not have been applied. The controller steps down (it renews no
    master while its memory may disagree with the store) and re-reads before
    leading again."""


class StoreUnavailable(BrokerUnavailableError):
    """The store could not be reached, and nothing was changed in it."""


class ControllerStore(Protocol):
    kind: str  # "file", "etcd", "memory": for status

    def load(self) -> dict[str, tuple[GroupRecord, int]]:
        """Every group's record and its version (a linearizable read)."""
        ...

    def save(self, group: str, record: GroupRecord, version: int) -> int:
        """Write `record` if the stored version is `version` (0: absent);
        return the new version."""
        ...

    def damaged(self) -> dict[str, str]:
        """Groups whose stored record the last load could not read, and why
        (their masters get no answer until an operator repairs them)."""
        ...


class MemoryStore:
    """Versions and records in memory only: the rules of a store, no durability."""

    kind = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[GroupRecord, int]] = {}
        self._next = 1

    def load(self) -> dict[str, tuple[GroupRecord, int]]:
        with self._lock:
            return dict(self._rows)

    def damaged(self) -> dict[str, str]:
        return {}

    def save(self, group: str, record: GroupRecord, version: int) -> int:
        with self._lock:
            _, stored = self._rows.get(group, (None, 0))
            if stored != version:
                raise StoreConflict(f"group {group!r} is at version {stored}, not {version}")
            self._next += 1
            self._rows[group] = (record, self._next)
            self._write(self._rows)
            return self._next

    def _write(self, rows: dict[str, tuple[GroupRecord, int]]) -> None:
        """Make `rows` durable (MemoryStore: nothing)."""


class FileStore(MemoryStore):
    """`controller.json`: every group, rewritten whole (temp, fsync, rename)
    before a change is applied in memory, so a failed write changes nothing."""

    kind = "file"

    def __init__(self, data_dir: Path, own: bool = True) -> None:
        """`own`: this process runs the controller on it (says so in the pid
        file); a reader (the migration) passes False."""
        super().__init__()
        self.path = data_dir / STATE_FILE
        if own:
            with contextlib.suppress(OSError):  # best effort: only the migration reads it
                atomic_write(data_dir / PID_FILE, str(os.getpid()).encode(), mode=0o600)
        try:
            saved = read_json(self.path, _parse) or {}
        except Damage as exc:  # no log to rebuild it from: the operator decides
            raise DamagedFileError(self.path, str(exc), ADVICE) from exc
        for name, rec in saved.items():
            self._next += 1
            self._rows[name] = (rec, self._next)

    def save(self, group: str, record: GroupRecord, version: int) -> int:
        with self._lock:
            _, stored = self._rows.get(group, (None, 0))
            if stored != version:
                raise StoreConflict(f"group {group!r} is at version {stored}, not {version}")
            rows = dict(self._rows)
            rows[group] = (record, self._next + 1)
            self._write(rows)  # StorageFullError: nothing changed
            self._next += 1
            self._rows = rows
            return self._next

    def _write(self, rows: dict[str, tuple[GroupRecord, int]]) -> None:
        groups = {n: rec.to_json() for n, (rec, _) in sorted(rows.items())}
        write_json(self.path, {"groups": groups}, indent=1)


def running_pid(data_dir: Path) -> int | None:
    """The live process (not this one) that runs a controller on `data_dir`'s file."""
    try:
        pid = int((data_dir / PID_FILE).read_text())
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def _parse(raw: Any) -> dict[str, GroupRecord]:
    """controller.json's groups, shape-checked (anything else is Damage)."""
    need(isinstance(raw, dict) and isinstance(raw.get("groups"), dict), "no groups table")
    return {name: GroupRecord.from_json(name, g) for name, g in raw["groups"].items()}
