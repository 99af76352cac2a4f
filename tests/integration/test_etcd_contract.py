"""The etcd contract (tests/helpers/etcd_contract.py) against a real 3-member
cluster: what FakeEtcd promises, etcd does."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from deploy.etcd_cluster import MIN_LEASE_TTL_S, LocalEtcd
from deploy.waits import poll_until
from tests.helpers.etcd_contract import CASES, Backend

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_contract(case: Callable[[Backend], None], etcd3_module: LocalEtcd) -> None:
    with etcd3_module.client() as client:

        def let_expire(lease: int, key: bytes) -> None:
            poll_until(lambda: not client.get(key).kvs, MIN_LEASE_TTL_S + 5, "the lease's key deleted", 0.05)

        case(Backend(client, f"contract/{uuid.uuid4().hex[:8]}/".encode(), let_expire))
