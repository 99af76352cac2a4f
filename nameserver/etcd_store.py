"""The controller's state in etcd v3: one key per broker group, every save one
transaction fenced by the controller leader key.

Keys under the prefix (default `/tailrace/<cluster>/controller/`):

- `leader`: the leading controller, `{"name", "address"}` (its members'
  address), attached to its etcd lease (nameserver/campaign.py). Its
  `create_revision` is the fencing token: a controller that lost the key and
  a successor that took it again see different revisions.
- `groups/<group>`: the group's record (GroupRecord as JSON).

A save succeeds only if the leader key still holds this controller's value
*and* the token it took it with, and the group key is still at the
`mod_revision` it last read or wrote: a paused controller resuming after
another took over finds the token changed and writes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from core.etcd import Compare, EtcdError, EtcdOutcomeUnknown, EtcdUnavailable, Op, RangeResult
from core.etcd.api import Etcd
from core.sidefiles import Damage
from nameserver.controller_store import (
    DamagedRecordError,
    GroupRecord,
    StoreConflict,
    StoreInDoubt,
    StoreUnavailable,
)


def default_prefix(cluster: str) -> str:
    return f"/tailrace/{cluster}/controller/"


class EtcdStore:
    kind = "etcd"

    def __init__(self, kv: Etcd, prefix: str) -> None:
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError(f"etcd prefix {prefix!r} must start and end with /")
        self.kv = kv
        self.prefix = prefix
        self.leader_key = (prefix + "leader").encode()
        self.groups_prefix = (prefix + "groups/").encode()
        self.lease_key = (prefix + "lease_ms").encode()
        self.token: tuple[bytes, int] | None = None  # (leader value, create_revision) while leading
        self._damaged: dict[str, str] = {}

    def group_key(self, group: str) -> bytes:
        return self.groups_prefix + group.encode()

    def load(self) -> dict[str, tuple[GroupRecord, int]]:
        try:
            r = self.kv.get(self.groups_prefix, prefix=True)
        except EtcdError as exc:
            raise StoreUnavailable(f"etcd: {exc}") from exc
        out, damaged = {}, {}
        for kv in r.kvs:
            name = kv.key[len(self.groups_prefix) :].decode("utf-8", "replace")
            try:
                out[name] = (parse_record(name, kv.value), kv.mod_revision)
            except DamagedRecordError as exc:  # that group stops; the others go on
                damaged[name] = str(exc)
        self._damaged = damaged
        return out

    def damaged(self) -> dict[str, str]:
        return dict(self._damaged)

    def save(self, group: str, record: GroupRecord, version: int) -> int:
        token = self.token
        if token is None:
            raise StoreConflict("this controller does not hold the leader key")
        value, revision = token
        key = self.group_key(group)
        body = json.dumps(record.to_json()).encode()
        try:
            r = self.kv.txn(
                [
                    Compare.value(self.leader_key, "=", value),
                    Compare.create_revision(self.leader_key, "=", revision),
                    Compare.mod_revision(key, "=", version),
                ],
                [Op.put(key, body)],
                [Op.get(self.leader_key), Op.get(key)],
            )
        except EtcdOutcomeUnknown as exc:
            return self._settle(group, body, version, exc)
        except EtcdUnavailable as exc:  # not sent anywhere: nothing applied
            raise StoreUnavailable(f"etcd: saving {group!r}: {exc}") from exc
        except EtcdError as exc:  # an answer that does not say whether it was applied
            return self._settle(group, body, version, exc)
        if r.succeeded:
            return r.revision
        leader = r.responses[0]
        held = isinstance(leader, RangeResult) and leader.kvs and leader.kvs[0].create_revision == revision
        if not held:
            raise StoreConflict(f"fenced: the leader key is no longer held with token {revision}")
        raise StoreConflict(f"group {group!r} changed in etcd since version {version}")

    def _settle(self, group: str, body: bytes, version: int, why: EtcdError) -> int:
        """A save whose answer was lost: read the record back (linearizable)
        to learn whether it was applied; its new version if it was."""
        try:
            r = self.kv.get(self.group_key(group))
        except EtcdError as exc:
            raise StoreInDoubt(
                f"etcd: saving {group!r}: no answer ({why}), and it cannot be read back ({exc})"
            ) from exc
        kv = r.kvs[0] if r.kvs else None
        stored = kv.mod_revision if kv is not None else 0
        if kv is not None and kv.value == body and stored != version:
            return stored  # applied
        if stored == version:
            raise StoreUnavailable(f"etcd: saving {group!r}: not applied ({why})")
        raise StoreConflict(f"group {group!r} changed in etcd since version {version} ({why})")


def parse_record(name: str, raw: bytes) -> GroupRecord:
    try:
        body: Any = json.loads(raw)
        return GroupRecord.from_json(name, body)
    except (ValueError, KeyError, TypeError, Damage) as exc:
        raise DamagedRecordError(f"etcd record of group {name!r} is damaged: {exc}") from exc
