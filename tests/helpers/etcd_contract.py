"""The etcd contract: cases run against `FakeEtcd` (tests/unit/test_etcd_contract.py)
and a real 3-member cluster (tests/integration/test_etcd_contract.py), so the
fake keeps etcd's compare-and-set, revision and lease rules.

Each case gets a `Backend`: the client, a key prefix of its own (the real
cluster is shared by a module), and `let_expire`, which lets a lease run out
(the fake's clock moves; against etcd, it waits until etcd has deleted the
lease's key).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from core.etcd import Compare, EtcdError, KeyValue, Op, RangeResult
from core.etcd.api import Etcd


@dataclass
class Backend:
    etcd: Etcd
    prefix: bytes
    let_expire: Callable[[int, bytes], None]  # (lease id, a key attached to it)

    def key(self, name: str) -> bytes:
        return self.prefix + name.encode()


def _only(result: RangeResult | int | None) -> KeyValue:
    assert isinstance(result, RangeResult) and len(result.kvs) == 1, result
    return result.kvs[0]


def create_if_absent(b: Backend) -> None:
    k = b.key("leader")
    first = b.etcd.txn([Compare.create_revision(k, "=", 0)], [Op.put(k, b"node-1")], [Op.get(k)])
    assert first.succeeded and first.responses == [None]
    second = b.etcd.txn([Compare.create_revision(k, "=", 0)], [Op.put(k, b"node-2")], [Op.get(k)])
    assert not second.succeeded
    kv = _only(second.responses[0])  # the failure branch returns the current holder
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"node-1", first.revision,
                                                                           first.revision, 1)  # fmt: skip
    assert second.revision == first.revision  # a txn that wrote nothing does not bump the revision


def compare_value_and_mod_revision(b: Backend) -> None:
    k = b.key("epoch")
    rev1 = b.etcd.put(k, b"1")
    assert b.etcd.txn([Compare.value(k, "=", b"1")], [Op.put(k, b"2")]).succeeded
    stale = b.etcd.txn([Compare.mod_revision(k, "=", rev1)], [Op.put(k, b"3")], [Op.get(k)])
    assert not stale.succeeded and _only(stale.responses[0]).value == b"2"
    current = _only(b.etcd.get(k))
    assert current.version == 2 and current.create_revision == rev1 and current.mod_revision > rev1
    fresh = b.etcd.txn([Compare.mod_revision(k, "=", current.mod_revision)], [Op.put(k, b"3")])
    assert fresh.succeeded and fresh.revision > current.mod_revision
    assert b.etcd.txn([Compare.value(k, ">", b"2"), Compare.version(k, "=", 3)], [Op.get(k)]).succeeded
    assert not b.etcd.txn([Compare.value(k, "<", b"3")], []).succeeded


def compare_on_a_missing_key(b: Backend) -> None:
    k = b.key("missing")
    assert not b.etcd.txn([Compare.value(k, "=", b"")], []).succeeded  # a value compare fails...
    assert not b.etcd.txn([Compare.value(k, "!=", b"x")], []).succeeded  # ...whatever the op
    for numbers in (Compare.version, Compare.create_revision, Compare.mod_revision, Compare.lease):
        assert b.etcd.txn([numbers(k, "=", 0)], []).succeeded  # the numbers are 0


def versions_and_revisions(b: Backend) -> None:
    k = b.key("v")
    r1 = b.etcd.put(k, b"a")
    r2 = b.etcd.put(k, b"b")
    got = b.etcd.get(k)
    assert r2 > r1 and got.revision >= r2
    assert got.kvs == [KeyValue(k, b"b", r1, r2, 2, 0)]
    assert b.etcd.delete(k) == 1 and b.etcd.delete(k) == 0
    r3 = b.etcd.put(k, b"")
    assert b.etcd.get(k).kvs == [KeyValue(k, b"", r3, r3, 1, 0)]  # created again: version 1


def prefix_get_and_delete(b: Backend) -> None:
    for name in ("p/b", "p/a", "p/c", "q"):
        b.etcd.put(b.key(name), name.encode())
    assert [kv.key for kv in b.etcd.get(b.key("p/"), prefix=True).kvs] == [
        b.key(n) for n in ("p/a", "p/b", "p/c")
    ]
    assert b.etcd.get(b.key("p/a"), serializable=True).kvs[0].value == b"p/a"
    assert b.etcd.delete(b.key("p/"), prefix=True) == 3
    assert b.etcd.get(b.key("p/"), prefix=True).kvs == []
    assert [kv.key for kv in b.etcd.get(b.prefix, prefix=True).kvs] == [b.key("q")]


def txn_failure_ops(b: Backend) -> None:
    k, other = b.key("k"), b.key("other")
    b.etcd.put(k, b"mine")
    b.etcd.put(other, b"x")
    t = b.etcd.txn(
        [Compare.value(k, "=", b"theirs")],
        [Op.put(k, b"theirs")],
        [Op.get(k), Op.delete(other), Op.put(b.key("seen"), b"1"), Op.delete(b.key("none"))],
    )
    assert not t.succeeded
    assert _only(t.responses[0]).value == b"mine" and t.responses[1:] == [1, None, 0]
    assert b.etcd.get(other).kvs == [] and b.etcd.get(b.key("seen")).kvs[0].value == b"1"


def txn_refusals(b: Backend) -> None:
    k = b.key("dup")
    with pytest.raises(EtcdError) as dup:
        b.etcd.txn([], [Op.put(k, b"1"), Op.put(k, b"2")])
    assert dup.value.code == 3
    with pytest.raises(EtcdError) as lease:
        b.etcd.put(k, b"1", lease=12345)
    assert lease.value.code == 5
    assert b.etcd.get(k).kvs == []


def leased_key_goes_with_revoke(b: Backend) -> None:
    lease, ttl = b.etcd.lease_grant(30)
    assert ttl == 30
    k = b.key("owner")
    b.etcd.put(k, b"me", lease=lease)
    assert b.etcd.get(k).kvs[0].lease == lease
    assert b.etcd.txn([Compare.lease(k, "=", lease)], []).succeeded
    assert 0 < b.etcd.lease_time_to_live(lease) <= 30
    b.etcd.lease_revoke(lease)
    assert b.etcd.get(k).kvs == []
    b.etcd.lease_revoke(lease)  # unknown now: not an error
    assert b.etcd.lease_keepalive(lease) == 0 and b.etcd.lease_time_to_live(lease) == -1


def leased_key_goes_with_expiry(b: Backend) -> None:
    lease, ttl = b.etcd.lease_grant(1)
    assert ttl == 2  # raised to the minimum (etcd's at our launcher's timings; the fake's default)
    k = b.key("owner")
    b.etcd.put(k, b"me", lease=lease)
    assert b.etcd.lease_keepalive(lease) == ttl
    b.let_expire(lease, k)
    assert b.etcd.get(k).kvs == []
    assert b.etcd.lease_keepalive(lease) == 0  # expired: 0, and not revived
    assert b.etcd.lease_time_to_live(lease) == -1
    assert b.etcd.lease_keepalive(123456789) == 0  # never granted: the same answer


def watch_sees_a_leased_key_go(b: Backend) -> None:
    lease, _ = b.etcd.lease_grant(30)
    k = b.key("watched")
    rev = b.etcd.put(k, b"me", lease=lease)
    b.etcd.lease_revoke(lease)
    events = list(b.etcd.watch(k, start_revision=rev, timeout_s=0.5))
    assert [e.type for e in events] == ["PUT", "DELETE"]
    assert events[0].kv == KeyValue(k, b"me", rev, rev, 1, lease)
    assert events[1].kv.key == k and events[1].kv.mod_revision > rev
    assert events[1].kv == KeyValue(k, mod_revision=events[1].kv.mod_revision)  # nothing else on a DELETE


CASES: list[Callable[[Backend], None]] = [
    create_if_absent,
    compare_value_and_mod_revision,
    compare_on_a_missing_key,
    versions_and_revisions,
    prefix_get_and_delete,
    txn_failure_ops,
    txn_refusals,
    leased_key_goes_with_revoke,
    leased_key_goes_with_expiry,
    watch_sees_a_leased_key_go,
]
