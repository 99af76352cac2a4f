"""Move the controller's state from its file to etcd, keeping every epoch.

The file controller must be stopped first (its state frozen): a copy taken
while it may still elect could leave etcd an epoch behind, and a controller
leading from there would hand out an epoch already used. The launcher's
`tailrace cluster migrate-controller` stops it, copies, and restarts it on
etcd; `tailrace controller migrate` is the copy alone.

The copy is refused, with nothing written, if a controller already leads
over the prefix, if etcd already holds a group with a different record, or
if the file's controller still runs (its pid file names a live process);
groups etcd already holds with the same record are left as they are (a
migration run twice is harmless). The writes go in transactions of at most
`BATCH` groups (etcd's default cap is 128 operations per transaction), each
creating only keys that are still absent and only while no controller leads:
past 64 groups, a copy that fails part way leaves the first batches in
place (running it again completes it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from core.errors import TailraceError
from core.etcd import Compare, EtcdError, Op
from nameserver.controller_store import GroupRecord
from nameserver.etcd_store import EtcdStore

BATCH = 64


class MigrationRefused(TailraceError):
    code = "MIGRATION_REFUSED"


@dataclass
class MigrationReport:
    copied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    epochs: dict[str, int] = field(default_factory=dict)


def migrate(groups: dict[str, GroupRecord], target: EtcdStore) -> MigrationReport:
    """Copy `groups` (the file's) into `target`'s prefix."""
    try:
        return _migrate(groups, target)
    except EtcdError as exc:
        raise MigrationRefused(f"etcd: {exc} (run it again: groups already copied are kept)") from exc


def _migrate(groups: dict[str, GroupRecord], target: EtcdStore) -> MigrationReport:
    kv = target.kv
    if kv.get(target.leader_key).kvs:
        raise MigrationRefused(
            f"a controller already leads over {target.prefix} in etcd: stop it, or migrate to another prefix"
        )
    present = target.load()
    report = MigrationReport(epochs={n: g.epoch for n, g in groups.items()})
    todo: list[tuple[str, GroupRecord]] = []
    for name, rec in sorted(groups.items()):
        if name in present:
            stored = present[name][0]
            if stored != rec:
                raise MigrationRefused(
                    f"etcd already holds group {name!r} as epoch {stored.epoch} master {stored.master_id}, "
                    f"the file says epoch {rec.epoch} master {rec.master_id}: nothing copied"
                )
            report.already.append(name)
        else:
            todo.append((name, rec))
    for i in range(0, len(todo), BATCH):
        chunk = todo[i : i + BATCH]
        keys = [target.group_key(n) for n, _ in chunk]
        r = kv.txn(
            [Compare.create_revision(target.leader_key, "=", 0)]
            + [Compare.create_revision(k, "=", 0) for k in keys],
            [Op.put(k, json.dumps(rec.to_json()).encode()) for k, (_, rec) in zip(keys, chunk, strict=True)],
        )
        if not r.succeeded:
            raise MigrationRefused(
                f"a controller started leading, or a group among {[n for n, _ in chunk]} appeared, "
                "in etcd during the copy; "
                f"copied so far: {report.copied}"
            )
        report.copied += [n for n, _ in chunk]
    return report
