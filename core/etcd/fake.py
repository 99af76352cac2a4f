"""`FakeEtcd`: etcd in memory, for unit tests, with the client's API and
etcd's rules.

- One global revision (etcd starts at 1), bumped once per write: a put, a
  delete that deleted something, a txn that changed anything (all its writes
  share the revision), a lease's keys going;
- per key: `create_revision`, `mod_revision`, `version` (1 at creation,
  +1 per put; a deleted key starts again);
- compares on a missing key: version, revisions and lease are 0, a value
  compare fails; a branch that puts a key twice, or puts and deletes it, is
  refused (INVALID_ARGUMENT) and a put on an unknown lease NOT_FOUND, as etcd
  does, with nothing applied;
- leases run on the `clock` passed in (seconds): a lease expires `TTL` after
  its grant or last keepalive and its keys are deleted then (checked at
  every call); TTLs below `min_lease_ttl_s` are raised to it (etcd's minimum:
  2 s at our launcher's timings); a keepalive of an expired lease answers 0;
- `watch` is simplified: the matching events since `start_revision` (none
  for 0, "from now"), then the iteration ends; a leased key's expiry or
  revocation is a DELETE carrying only the key and `mod_revision`, as etcd's;
- faults: `down = True` makes every call raise `EtcdUnavailable` and
  stops lease expiry (etcd without quorum has no leader to expire leases);
  `new_leader()` then does what an etcd leader election does to leases:
  every one back to its full TTL;
  `fail_next(n)` the next n calls; with `outcome_unknown=True` the next n
  writes raise `EtcdOutcomeUnknown` instead, applied or not as `applied`
  says; `expire(lease_id)` ends a lease now.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from core.etcd.errors import INVALID_ARGUMENT, NOT_FOUND, EtcdError, EtcdOutcomeUnknown, EtcdUnavailable
from core.etcd.model import Compare, KeyValue, Op, RangeResult, TxnResult, WatchEvent, prefix_end


@dataclass
class _Lease:
    ttl: int
    expires_at: float
    keys: set[bytes] = field(default_factory=set)


def _in_range(k: bytes, key: bytes, prefix: bool) -> bool:
    if not prefix:
        return k == key
    end = prefix_end(key)
    return k >= key and (end == b"\0" or k < end)


class FakeEtcd:
    def __init__(self, clock: Callable[[], float], min_lease_ttl_s: int = 2) -> None:
        self._clock = clock
        self.min_lease_ttl_s = min_lease_ttl_s
        self.revision = 1
        self._kv: dict[bytes, KeyValue] = {}
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(7_587_869_000_000_000_001)
        self._history: list[tuple[int, WatchEvent]] = []
        self._lock = threading.RLock()
        self.down = False
        self._failures = 0
        self._unknown = False
        self._applied = False

    # -- faults ------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, outcome_unknown: bool = False, applied: bool = False) -> None:
        """The next `n` calls raise `EtcdUnavailable`; with `outcome_unknown`,
        writes raise `EtcdOutcomeUnknown`, after applying when `applied`."""
        with self._lock:
            self._failures, self._unknown, self._applied = n, outcome_unknown, applied

    def expire(self, lease_id: int) -> None:
        """End the lease now, as its expiry would (its keys are deleted)."""
        with self._lock:
            self._end_lease(lease_id)

    def new_leader(self) -> None:
        """etcd elected a new leader: every lease runs its full TTL again."""
        with self._lock:
            for lease in self._leases.values():
                lease.expires_at = self._clock() + lease.ttl

    def _fault(self, write: bool) -> bool:
        """Raise an injected failure; True when a write must apply and then
        raise `EtcdOutcomeUnknown`."""
        if self.down:
            raise EtcdUnavailable("fake etcd is down")
        self._expire_due()
        if self._failures <= 0:
            return False
        self._failures -= 1
        if write and self._unknown:
            if self._applied:
                return True
            raise EtcdOutcomeUnknown("fake etcd: write sent, no answer (not applied)")
        raise EtcdUnavailable("fake etcd: injected failure")

    # -- the API -----------------------------------------------------------------

    def get(self, key: bytes, *, prefix: bool = False, serializable: bool = False) -> RangeResult:
        with self._lock:
            self._fault(False)
            return RangeResult(self._range(key, prefix), self.revision)

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        return self.txn([], [Op.put(key, value, lease)]).revision

    def delete(self, key: bytes, *, prefix: bool = False) -> int:
        deleted = self.txn([], [Op.delete(key, prefix)]).responses[0]
        assert isinstance(deleted, int)
        return deleted

    def txn(self, compare: list[Compare], success: list[Op], failure: list[Op] | None = None) -> TxnResult:
        with self._lock:
            unknown = self._fault(True)
            failure = failure or []
            for branch in (success, failure):
                self._check_branch(branch)
            succeeded = all(c.holds(self._kv.get(c.key)) for c in compare)
            ops = success if succeeded else failure
            new_revision = self.revision + 1
            responses: list[RangeResult | int | None] = []
            changed = False
            for op in ops:
                if op.kind == "get":
                    responses.append(RangeResult(self._range(op.key, op.prefix), 0))
                elif op.kind == "put":
                    self._put(op, new_revision)
                    responses.append(None)
                    changed = True
                else:
                    count = self._delete([kv.key for kv in self._range(op.key, op.prefix)], new_revision)
                    responses.append(count)
                    changed = changed or count > 0
            if changed:
                self.revision = new_revision
            rev = self.revision
            answers = [replace(r, revision=rev) if isinstance(r, RangeResult) else r for r in responses]
            if unknown:
                raise EtcdOutcomeUnknown("fake etcd: write applied, no answer")
            return TxnResult(succeeded, rev, answers)

    def lease_grant(self, ttl_s: int) -> tuple[int, int]:
        with self._lock:
            unknown = self._fault(True)
            ttl = max(ttl_s, self.min_lease_ttl_s)
            lease_id = next(self._lease_ids)
            self._leases[lease_id] = _Lease(ttl, self._clock() + ttl)
            if unknown:
                raise EtcdOutcomeUnknown("fake etcd: lease granted, no answer")
            return lease_id, ttl

    def lease_keepalive(self, lease_id: int) -> int:
        with self._lock:
            self._fault(False)
            lease = self._leases.get(lease_id)
            if lease is None:
                return 0
            lease.expires_at = self._clock() + lease.ttl
            return lease.ttl

    def lease_revoke(self, lease_id: int) -> None:
        with self._lock:
            unknown = self._fault(True)
            self._end_lease(lease_id)
            if unknown:
                raise EtcdOutcomeUnknown("fake etcd: lease revoked, no answer")

    def lease_time_to_live(self, lease_id: int) -> int:
        with self._lock:
            self._fault(False)
            lease = self._leases.get(lease_id)
            return -1 if lease is None else max(int(lease.expires_at - self._clock()), 0)

    def watch(
        self, key: bytes, *, start_revision: int = 0, prefix: bool = False, timeout_s: float
    ) -> Iterator[WatchEvent]:
        with self._lock:
            self._fault(False)
            events = [
                e
                for rev, e in self._history
                if start_revision and rev >= start_revision and _in_range(e.kv.key, key, prefix)
            ]
        return iter(events)

    def member_status(self) -> tuple[int, int]:
        return 1, 1

    def close(self) -> None:
        pass

    # -- the store -----------------------------------------------------------------

    def _range(self, key: bytes, prefix: bool) -> list[KeyValue]:
        return [self._kv[k] for k in sorted(self._kv) if _in_range(k, key, prefix)]

    def _check_branch(self, ops: list[Op]) -> None:
        puts = [op.key for op in ops if op.kind == "put"]
        if len(set(puts)) != len(puts) or any(
            _in_range(k, op.key, op.prefix) for op in ops if op.kind == "delete" for k in puts
        ):
            raise EtcdError(INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
        for op in ops:
            if op.kind == "put" and op.lease and op.lease not in self._leases:
                raise EtcdError(NOT_FOUND, "etcdserver: requested lease not found")

    def _put(self, op: Op, revision: int) -> None:
        old = self._kv.get(op.key)
        if old is not None and old.lease in self._leases:
            self._leases[old.lease].keys.discard(op.key)
        kv = KeyValue(
            op.key,
            op.value,
            create_revision=old.create_revision if old else revision,
            mod_revision=revision,
            version=old.version + 1 if old else 1,
            lease=op.lease,
        )
        self._kv[op.key] = kv
        if op.lease:
            self._leases[op.lease].keys.add(op.key)
        self._history.append((revision, WatchEvent("PUT", kv)))

    def _delete(self, keys: list[bytes], revision: int) -> int:
        for k in sorted(keys):
            old = self._kv.pop(k)
            if old.lease in self._leases:
                self._leases[old.lease].keys.discard(k)
            self._history.append((revision, WatchEvent("DELETE", KeyValue(k, mod_revision=revision))))
        return len(keys)

    def _end_lease(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id, None)
        if lease is not None and self._delete(sorted(lease.keys & self._kv.keys()), self.revision + 1):
            self.revision += 1

    def _expire_due(self) -> None:
        now = self._clock()
        for lease_id in [i for i, lease in self._leases.items() if lease.expires_at <= now]:
            self._end_lease(lease_id)
