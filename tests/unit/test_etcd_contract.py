"""The etcd contract (tests/helpers/etcd_contract.py) against `FakeEtcd`,
plus the fake's fault helpers. The same cases run against a real cluster in
tests/integration/test_etcd_contract.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.etcd import Compare, EtcdOutcomeUnknown, EtcdUnavailable, Op
from core.etcd.fake import FakeEtcd
from tests.helpers.etcd_contract import CASES, Backend

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_backend() -> tuple[Backend, FakeEtcd, Clock]:
    clock = Clock()
    fake = FakeEtcd(clock)

    def let_expire(lease: int, key: bytes) -> None:
        clock.now += fake.lease_time_to_live(lease) + 1

    return Backend(fake, b"contract/", let_expire), fake, clock


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_contract(case: Callable[[Backend], None]) -> None:
    case(fake_backend()[0])


def test_revision_starts_at_one_and_counts_writes() -> None:
    _, fake, _ = fake_backend()
    assert fake.get(b"x").revision == 1
    assert fake.put(b"x", b"1") == 2
    assert fake.txn([], [Op.put(b"a", b""), Op.put(b"b", b""), Op.delete(b"x")]).revision == 3
    assert fake.delete(b"nothing") == 0 and fake.get(b"x").revision == 3


def test_keepalive_holds_a_lease_on_the_clock() -> None:
    _, fake, clock = fake_backend()
    lease, ttl = fake.lease_grant(5)
    fake.put(b"k", b"v", lease=lease)
    for _ in range(4):
        clock.now += ttl - 1
        assert fake.lease_keepalive(lease) == ttl
    clock.now += ttl - 0.5
    assert fake.lease_time_to_live(lease) == 0 and fake.get(b"k").kvs  # under a second left
    clock.now += 0.5
    assert fake.get(b"k").kvs == [] and fake.lease_keepalive(lease) == 0


def test_expire_ends_a_lease_now() -> None:
    _, fake, _ = fake_backend()
    lease, _ = fake.lease_grant(60)
    rev = fake.put(b"k", b"v", lease=lease)
    fake.put(b"other", b"v")
    fake.expire(lease)
    assert fake.get(b"k").kvs == [] and fake.get(b"other").kvs
    assert [e.type for e in fake.watch(b"k", start_revision=rev, timeout_s=1)] == ["PUT", "DELETE"]


def test_down_and_fail_next() -> None:
    _, fake, _ = fake_backend()
    fake.down = True
    with pytest.raises(EtcdUnavailable):
        fake.get(b"k")
    fake.down = False
    fake.fail_next(2)
    for call in (lambda: fake.put(b"k", b"v"), lambda: fake.get(b"k")):
        with pytest.raises(EtcdUnavailable) as info:
            call()
        assert not isinstance(info.value, EtcdOutcomeUnknown)
    assert fake.get(b"k").kvs == []  # nothing was applied


def test_outcome_unknown_applied_or_not() -> None:
    _, fake, _ = fake_backend()
    fake.fail_next(1, outcome_unknown=True, applied=False)
    with pytest.raises(EtcdOutcomeUnknown):
        fake.txn([Compare.create_revision(b"k", "=", 0)], [Op.put(b"k", b"1")])
    assert fake.get(b"k").kvs == []
    fake.fail_next(1, outcome_unknown=True, applied=True)
    with pytest.raises(EtcdOutcomeUnknown):
        fake.put(b"k", b"2")
    assert fake.get(b"k").kvs[0].value == b"2"
    fake.fail_next(1, outcome_unknown=True)
    with pytest.raises(EtcdUnavailable):  # a read never has an unknown outcome
        fake.get(b"k")
