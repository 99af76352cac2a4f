"""EtcdClient against real 3-member etcd clusters (deploy/etcd_cluster.py):
every call, failover when a member dies, quorum lost, deadlines, TLS, and
the lease reset on a leader change. (Compare-and-set, expiry and the
keepalive of an expired lease are in the contract: test_etcd_contract.py.) Tests that kill members start a
cluster of their own (`etcd3`); the others share one (`etcd3_module`)."""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.etcd import Compare, EtcdClient, EtcdOutcomeUnknown, EtcdUnavailable, KeyValue, Op
from core.security.certs import CertificateAuthority
from deploy.etcd_cluster import EtcdTls, LocalEtcd
from deploy.waits import poll_until
from tests.helpers.etcd import local_etcd

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix() -> bytes:
    return f"it/{uuid.uuid4().hex[:8]}/".encode()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An endpoint that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def follower_first(cluster: LocalEtcd) -> list[int]:
    leader = cluster.wait_leader()
    return [i for i in range(3) if i != leader] + [leader]


def test_every_call(etcd3_module: LocalEtcd, prefix: bytes) -> None:
    with etcd3_module.client() as c:
        k = prefix + b"k"
        rev = c.put(k, b"v1")
        got = c.get(k)
        assert got.kvs == [KeyValue(k, b"v1", rev, rev, 1, 0)] and got.revision >= rev
        poll_until(lambda: c.get(k, serializable=True).kvs, 5, "a serializable read to see the put")
        t = c.txn([Compare.version(k, "=", 1)], [Op.put(k, b"v2"), Op.get(k)], [Op.get(k)])
        assert t.succeeded and t.revision == rev + 1 and t.responses[0] is None
        lease, ttl = c.lease_grant(10)
        assert ttl == 10
        c.put(prefix + b"l", b"", lease=lease)
        assert c.lease_keepalive(lease) == 10 and 0 < c.lease_time_to_live(lease) <= 10
        with c.watch(prefix, prefix=True, timeout_s=5) as events:  # created before watch() returns
            c.lease_revoke(lease)
            event = next(events)
        assert event.type == "DELETE" and event.kv.key == prefix + b"l"
        assert c.delete(prefix, prefix=True) == 1
        assert c.get(prefix, prefix=True).kvs == []
        member_id, leader = c.member_status()
        assert member_id and leader


def test_watch_ends_after_its_timeout_without_events(etcd3_module: LocalEtcd, prefix: bytes) -> None:
    with etcd3_module.client() as c:
        t0 = time.monotonic()
        assert list(c.watch(prefix, prefix=True, timeout_s=0.3)) == []
        assert time.monotonic() - t0 < 2


def test_a_read_that_times_out_moves_on_and_a_write_is_not_retried(
    etcd3_module: LocalEtcd, black_hole: str, prefix: bytes
) -> None:
    with EtcdClient([black_hole, etcd3_module.endpoints[0]], timeout_s=0.5) as c:
        t0 = time.monotonic()
        with pytest.raises(EtcdOutcomeUnknown):
            c.put(prefix + b"k", b"v")
        assert 0.4 < time.monotonic() - t0 < 1.5
        assert c.get(prefix + b"k").revision > 0  # the read timed out on the black hole, the member answered
        assert c.endpoint == etcd3_module.endpoints[0]
        assert c.put(prefix + b"k", b"v") > 0  # and the client now sticks with it


def test_failover_when_the_member_in_use_is_killed(etcd3: LocalEtcd) -> None:
    order = follower_first(etcd3)
    with etcd3.client(members=order) as c:
        c.put(b"k", b"1")
        assert c.endpoint == etcd3.endpoints[order[0]]
        watch = c.watch(b"k", timeout_s=30)
        etcd3.kill(order[0])
        t0 = time.monotonic()
        assert list(watch) == []  # a broken stream ends the watch at once
        assert time.monotonic() - t0 < 5
        assert c.get(b"k").kvs[0].value == b"1"
        assert c.put(b"k", b"2") > 0
        assert c.endpoint == etcd3.endpoints[order[1]]
        etcd3.restart(order[0])  # it comes back on its data and catches up
        with etcd3.client(members=[order[0]]) as back:
            poll_until(
                lambda: back.get(b"k", serializable=True).kvs[0].value == b"2", 10, "the restarted member"
            )


def test_failover_when_the_leader_in_use_is_killed(etcd3: LocalEtcd) -> None:
    leader = etcd3.wait_leader()
    with etcd3.client(members=[leader, *(i for i in range(3) if i != leader)]) as c:
        c.put(b"k", b"1")
        etcd3.kill(leader)
        written: list[int] = []

        def put() -> bool:  # a caller retries: during the election a write can fail either way
            try:
                written.append(c.put(b"k", b"2"))
            except EtcdUnavailable:  # EtcdOutcomeUnknown included
                return False
            return True

        poll_until(put, 15, "a write through a survivor", every_s=0.1)
        assert c.get(b"k").kvs[0].value == b"2"
        assert etcd3.wait_leader(10, not_index=leader) != leader


def test_quorum_lost_fails_within_the_deadline(etcd3: LocalEtcd) -> None:
    survivor = etcd3.wait_leader()  # the leader survives: it still thinks it leads for a moment
    with etcd3.client(timeout_s=1.0) as c:
        c.put(b"k", b"1")
        for i in range(3):
            if i != survivor:
                etcd3.kill(i)
        t0 = time.monotonic()
        with pytest.raises(EtcdUnavailable) as read:
            c.get(b"k")
        assert not isinstance(read.value, EtcdOutcomeUnknown)
        t1 = time.monotonic()
        with pytest.raises(EtcdUnavailable):  # EtcdOutcomeUnknown (sent, unanswered) or refused at once
            c.put(b"k", b"2")
        t2 = time.monotonic()
        assert t1 - t0 < 2.5 and t2 - t1 < 2.5, (t1 - t0, t2 - t1)
    with etcd3.client(members=[survivor]) as local:
        assert local.get(b"k", serializable=True).kvs[0].value == b"1"  # its own copy still reads


def test_a_leader_change_resets_every_lease_to_its_full_ttl(etcd3: LocalEtcd) -> None:
    """Why a holder counts its lease from its own clock (core/etcd/client.py):
    etcd's new leader gives every lease its whole TTL again."""
    with etcd3.client() as c:
        lease, ttl = c.lease_grant(6)
        poll_until(lambda: c.lease_time_to_live(lease) <= 3, 10, "half the lease to run", 0.05)
        leader = etcd3.wait_leader()
        etcd3.kill(leader)
        etcd3.wait_leader(10, not_index=leader)
        left = c.lease_time_to_live(lease)
        print(f"lease {ttl} s: at most 3 s left before the leader died, {left} s after")
        assert left >= ttl - 1, f"a new leader gave the lease {left} s of {ttl} (had at most 3 left)"


def make_tls(directory: Path) -> tuple[EtcdTls, CertificateAuthority]:
    ca = CertificateAuthority.create("etcd-test-ca")
    ca_file = ca.save(directory / "ca").cert_file
    issued = ca.issue("etcd", [], ["localhost"], ["127.0.0.1"], directory, "etcd")
    return EtcdTls(ca_file, issued.cert_file, issued.key_file), ca


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    tls, _ = make_tls(tmp_path / "pki")
    with local_etcd(tmp_path, tls=tls) as cluster:
        assert all(url.startswith("https://") for url in cluster.endpoints)
        with EtcdClient(cluster.endpoints, 1.0, tls.client_context()) as c:
            assert c.put(b"k", b"v") > 0 and c.get(b"k").kvs[0].value == b"v"
        wrong_ca = make_tls(tmp_path / "other")[0].client_context()
        with EtcdClient(cluster.endpoints, 1.0, wrong_ca) as c, pytest.raises(EtcdUnavailable) as e:
            c.put(b"k", b"x")  # the members' certificate fails verification: nothing was sent
        assert not isinstance(e.value, EtcdOutcomeUnknown)
        no_cert = ssl.create_default_context(cafile=str(tls.ca_file))
        with EtcdClient(cluster.endpoints, 1.0, no_cert) as c, pytest.raises(EtcdUnavailable):
            c.get(b"k")  # no client certificate: every member refuses
