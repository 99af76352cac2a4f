"""Issue 15's attacks against a real cluster started by the harness.

Each attack is run twice. The first run targets a plaintext development
cluster: loopback, no accounts, the setup every cluster had before TLS. It
must succeed there, which proves the attack is real. The second run targets
the same topology with TLS, member certificates and accounts on, as
`tailrace cluster up` runs it. There it is refused, and nothing stored
changes.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from core.pb.tailrace.v1 import broker_pb2 as bpb
from core.pb.tailrace.v1 import nameserver_pb2 as npb
from core.pb.tailrace.v1 import replication_pb2 as rpb
from core.pb.tailrace.v1 import replication_pb2_grpc
from core.security.certs import CertificateAuthority, Issued
from core.security.identity import Kind, Member, member_dns
from deploy.harness import ProcessFailed, ProcessGroup, TailraceProcess
from deploy.pki import ADMIN, LocalPki
from deploy.waits import holds_for, poll_until
from tests.helpers.secure import broker, channel, code_of, nameserver, signed

pytestmark = pytest.mark.integration
CLUSTER = "DefaultCluster"
U = grpc.StatusCode.UNAUTHENTICATED
P = grpc.StatusCode.PERMISSION_DENIED


@dataclass
class Setup:
    procs: ProcessGroup
    ns: TailraceProcess
    master: TailraceProcess
    slave: TailraceProcess
    pki: LocalPki | None

    @property
    def ca(self) -> Path | None:
        return self.pki.ca_file if self.pki else None

    @property
    def admin(self) -> tuple[str, str] | None:
        return (ADMIN, self.pki.admin_secret) if self.pki else None

    def ctl_status(self) -> dict[str, Any]:
        ch = channel(self.ns.address, self.ca)
        reply = signed(nameserver(ch).ControllerStatus, npb.ControllerStatusRequest(), self.admin)
        return dict(json.loads(reply.json)["groups"]["g1"])

    def routes(self) -> list[tuple[int, str]]:
        ch = channel(self.ns.address, self.ca)
        try:
            r = signed(nameserver(ch).GetRoute, npb.GetRouteRequest(topic="t"), self.admin)
        except grpc.RpcError:
            return []
        return sorted((b.broker_id, b.address) for g in r.groups for b in g.brokers)


def _start(tmp: Path, secure: bool) -> Setup:
    """A nameserver running the controller, a sync master and a slave of
    group g1 (node ids 1 and 2), a topic `t` with some messages."""
    procs = ProcessGroup(tmp)
    try:
        pki = procs.secure(CLUSTER) if secure else None
        secret = [] if secure else ["--set", "replication.secret=dev-secret"]
        ns = procs.nameserver(
            "ns0",
            extra=[
                *("--set", "controller.enabled=true", "--set", "controller.lease_ms=2000"),
                *("--set", f"controller.data_dir={json.dumps(str(tmp / 'ctl'))}"),
            ],
        )
        ctl = [
            "--set",
            f"broker.controller={ns.member_address}",
            "--set",
            "broker.controller_heartbeat_ms=200",
        ]
        m = procs.broker(
            "g1",
            namesrv=[ns.member_address],
            extra=["--broker-id", "1", "--replication", "sync", *ctl, *secret],
        )
        s = procs.broker(
            "g1-s2",
            group="g1",
            namesrv=[ns.member_address],
            extra=["--broker-id", "2", "--role", "slave", "--master", m.address,
                   "--set", f"broker.master_member={m.member_address}", *ctl, *secret],
        )  # fmt: skip
        setup = Setup(procs, ns, m, s, pki)
        poll_until(lambda: setup.ctl_status().get("master_id") == 1, 20, "g1's master elected")
        b = broker(channel(m.address, setup.ca))
        signed(b.CreateTopic, bpb.CreateTopicRequest(topic="t", queues=2), setup.admin)
        batch = bpb.SendBatchRequest(topic="t", messages=[bpb.Message(body=b"x" * 100)] * 50)
        poll_until(lambda: _sent(b, batch, setup.admin), 20, "a sync send acknowledged")
        poll_until(lambda: len(setup.routes()) == 2, 20, "both brokers routed")
        return setup
    except BaseException:
        procs.close()
        raise


def _sent(b: Any, batch: Any, account: tuple[str, str] | None) -> bool:
    try:
        return bool(signed(b.SendBatch, batch, account).status == bpb.SEND_OK)
    except grpc.RpcError:
        return False


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    setup = _start(tmp_path_factory.mktemp("dev"), secure=False)
    try:
        yield setup
    finally:
        setup.procs.close()


@pytest.fixture(scope="module")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    setup = _start(tmp_path_factory.mktemp("sec"), secure=True)
    try:
        yield setup
    finally:
        setup.procs.close()


def _rogue_certs(pki: LocalPki, tmp: Path) -> dict[str, Issued]:
    """What an attacker may hold: a member certificate of another group from
    the cluster's own CA (a compromised member), one from a CA of its own,
    and an expired one from the cluster's CA."""
    foreign = CertificateAuthority.create("evil CA")
    old = pki.ca.issue_member(
        Member(CLUSTER, Kind.BROKER, "g1", 3), ["127.0.0.1"], tmp, "expired",
        days=1, not_before=_days_ago(10),
    )  # fmt: skip
    return {
        "same group, other node": pki.ca.issue_member(
            Member(CLUSTER, Kind.BROKER, "h1", 7), ["127.0.0.1"], tmp, "h1-n7"
        ),
        "other group": pki.ca.issue_member(
            Member(CLUSTER, Kind.BROKER, "evil", 9), ["127.0.0.1"], tmp, "evil"
        ),
        "foreign CA": foreign.issue_member(
            Member(CLUSTER, Kind.BROKER, "g1", 3), ["127.0.0.1"], tmp, "foreign"
        ),
        "expired": old,
    }


def _days_ago(n: int) -> Any:
    import datetime

    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=n)


def _leaders(state_file: Path) -> dict[str, tuple[int, int, str]]:
    """Each group's (epoch, master, address) in the controller's state file."""
    groups = json.loads(state_file.read_text())["groups"]
    return {n: (g["epoch"], g["master_id"], g["master_address"]) for n, g in groups.items()}


def _heartbeat(epoch: int = 1) -> npb.ControllerHeartbeatRequest:
    """g1's master (node 1) heartbeating from the attacker's address."""
    return npb.ControllerHeartbeatRequest(
        cluster=CLUSTER, group="g1", node_id=1, address=EVIL, epoch=epoch, role="master",
        max_offset=1 << 50, priority=100,
    )  # fmt: skip


EVIL = "10.6.6.6:1"


# ---- the control plane --------------------------------------------------------------------


def test_a_forged_controller_heartbeat_moves_a_dev_clusters_master(dev: Setup) -> None:
    """The attack is real: on plaintext, one heartbeat claiming to be g1's
    master at another address makes the controller send every broker there."""
    epoch = dev.ctl_status()["epoch"]
    reply = nameserver(channel(dev.ns.member_address)).ControllerHeartbeat(_heartbeat(epoch), timeout=5)
    assert reply.master_address == EVIL  # the controller's directive to the group now names the attacker


def test_forged_heartbeats_and_registrations_change_nothing_on_a_secure_cluster(
    sec: Setup, tmp_path: Path
) -> None:
    assert sec.pki is not None
    rogue = _rogue_certs(sec.pki, tmp_path)
    before, routes = sec.ctl_status(), sec.routes()
    forged = _heartbeat(before["epoch"])
    state_file = sec.procs.workdir / "ctl" / "controller.json"
    stored = _leaders(state_file)
    fake = npb.RegisterBrokerRequest(
        broker=npb.BrokerRegistration(
            cluster=CLUSTER, broker_name="g1", broker_id=0, node_id=3, address=EVIL, epoch=1 << 62,
            role="master", heartbeat_ms=86_400_000,
        )
    )  # fmt: skip
    unregister = npb.UnregisterBrokerRequest(broker_name="g1", broker_id=0, address=sec.master.address)
    client_port = nameserver(channel(sec.ns.address, sec.ca))
    # on the client port: no certificate, so no member, whatever the account
    for account in (None, sec.admin):
        assert code_of(lambda a=account: signed(client_port.ControllerHeartbeat, forged, a)) == U
        assert code_of(lambda a=account: signed(client_port.RegisterBroker, fake, a)) == U
        assert code_of(lambda a=account: signed(client_port.UnregisterBroker, unregister, a)) == U
    # a member certificate of another group, from the cluster's own CA: proven, but not g1's
    member_port = nameserver(channel(sec.ns.member_address, sec.ca, rogue["other group"],
                                     member_dns(CLUSTER, Kind.NAMESERVER)))  # fmt: skip
    for _ in range(4):
        assert code_of(lambda: member_port.ControllerHeartbeat(forged, timeout=5)) == P
    assert code_of(lambda: member_port.RegisterBroker(fake, timeout=5)) == P
    member_port.UnregisterBroker(unregister, timeout=5)  # accepted, but removes only its own (none)
    # nor may it take the master's address over (and then unregister "its own" entry there)
    takeover = npb.RegisterBrokerRequest(
        broker=npb.BrokerRegistration(
            cluster=CLUSTER, broker_name="evil", broker_id=9, node_id=9, address=sec.master.address,
            epoch=1, role="slave", heartbeat_ms=1000,
        )
    )  # fmt: skip
    assert code_of(lambda: member_port.RegisterBroker(takeover, timeout=5)) == P
    # g1's own slave (its real certificate) claiming the group's mastership with a made-up epoch
    slave_cert = Issued(sec.pki.tls_dir / "g1-s2.pem", sec.pki.tls_dir / "g1-s2.key")
    ns_name = member_dns(CLUSTER, Kind.NAMESERVER)
    slave_port = nameserver(channel(sec.ns.member_address, sec.ca, slave_cert, ns_name))
    claim = npb.RegisterBrokerRequest(
        broker=npb.BrokerRegistration(
            cluster=CLUSTER, broker_name="g1", broker_id=0, node_id=2, address=sec.slave.address,
            epoch=1 << 62, role="master", heartbeat_ms=1000,
        )
    )  # fmt: skip
    assert code_of(lambda: slave_port.RegisterBroker(claim, timeout=5)) == P
    claim.broker.broker_id, claim.broker.epoch, claim.broker.heartbeat_ms = 2, 1, 86_400_000
    assert code_of(lambda: slave_port.RegisterBroker(claim, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
    # no TLS handshake at all with a foreign CA's or an expired certificate
    for which in ("foreign CA", "expired"):
        port = nameserver(
            channel(sec.ns.member_address, sec.ca, rogue[which], member_dns(CLUSTER, Kind.NAMESERVER))
        )
        assert code_of(lambda p=port: p.ControllerHeartbeat(forged, timeout=5)) == grpc.StatusCode.UNAVAILABLE

    def unchanged() -> bool:  # a registration or election in flight would show within a heartbeat
        now = sec.ctl_status()
        return (now["epoch"], now["master_id"], now["master_address"]) == (
            before["epoch"], before["master_id"], before["master_address"])  # fmt: skip

    holds_for(unchanged, 0.5, "the controller's view")
    after = sec.ctl_status()
    assert (after["epoch"], after["master_id"], after["master_address"]) == (
        before["epoch"], before["master_id"], before["master_address"])  # fmt: skip
    assert sec.routes() == routes and _leaders(state_file) == stored


def test_drill_rpcs_are_off(sec: Setup, dev: Setup) -> None:
    req = npb.IsolateRequest(address=EVIL, duration_ms=1)
    assert code_of(lambda: signed(nameserver(channel(sec.ns.address, sec.ca)).Isolate, req, sec.admin)) == P
    assert code_of(lambda: nameserver(channel(dev.ns.address)).Isolate(req, timeout=5)) == P


# ---- replication ---------------------------------------------------------------------------


class FakeMaster(replication_pb2_grpc.ReplicationServicer):
    """Answers any slave with "cut your log to 0", and records what it heard."""

    def __init__(self) -> None:
        self.handshakes: list[rpb.ReplicaHandshake] = []

    def Replicate(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        first = next(request_iterator)
        self.handshakes.append(first.handshake)
        yield rpb.ReplicateResponse(
            handshake_reply=rpb.ReplicaHandshakeReply(start_offset=0, truncate_to=0, master_max=0)
        )


def _fake_master(cert: Issued | None, ca: Path | None) -> tuple[grpc.Server, FakeMaster, str]:
    servicer = FakeMaster()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    replication_pb2_grpc.add_ReplicationServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    if cert is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        creds = grpc.ssl_server_credentials(
            [(cert.key_file.read_bytes(), cert.cert_file.read_bytes())],
            root_certificates=ca.read_bytes() if ca else None,
            require_client_auth=ca is not None,
        )
        port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    return server, servicer, f"127.0.0.1:{port}"


def _victim(setup: Setup, name: str) -> tuple[TailraceProcess, TailraceProcess, int]:
    """A plain (no controller) master `name` with data, and its slave, caught
    up: (master, slave, the slave's log end)."""
    procs = setup.procs
    secret = [] if setup.pki else ["--set", "replication.secret=dev-secret"]
    m = procs.broker(name, extra=secret)
    b = broker(channel(m.address, setup.ca))
    signed(b.CreateTopic, bpb.CreateTopicRequest(topic="v", queues=1), setup.admin)
    signed(
        b.SendBatch,
        bpb.SendBatchRequest(topic="v", messages=[bpb.Message(body=b"y" * 100)] * 20),
        setup.admin,
    )
    end = signed(b.Status, bpb.StatusRequest(), setup.admin).max_offset
    s = procs.slave(f"{name}-s1", m, extra=secret)
    sb = broker(channel(s.address, setup.ca))
    poll_until(lambda: signed(sb.Status, bpb.StatusRequest(), setup.admin).max_offset == end, 20, "caught up")
    return m, s, end


def _point_at(slave: TailraceProcess, fake: str) -> None:
    """Restart `slave` replicating from `fake` (as if its master's address were taken over)."""
    slave.stop()
    args, out = slave.args, []
    for i, arg in enumerate(args):
        pair = arg == "--set" and i + 1 < len(args) and args[i + 1].startswith("broker.master_member=")
        if not pair and not (i > 0 and args[i - 1] == "--set" and arg.startswith("broker.master_member=")):
            out.append(arg)
    slave.args = [*out, "--set", f"broker.master_member={fake}"]
    slave.start()


def test_a_fake_master_hears_a_dev_slaves_secret(dev: Setup) -> None:
    _, slave, _ = _victim(dev, "h1")
    server, fake, address = _fake_master(None, None)
    try:
        _point_at(slave, address)
        poll_until(lambda: bool(fake.handshakes), 20, "the slave to hand over its handshake")
        assert fake.handshakes[0].secret == "dev-secret"  # the attack is real: the secret, in clear
        assert fake.handshakes[0].max_offset > 0  # and its log end
    finally:
        server.stop(0)


def test_a_fake_master_without_the_groups_certificate_gets_nothing(sec: Setup, tmp_path: Path) -> None:
    assert sec.pki is not None
    rogue = _rogue_certs(sec.pki, tmp_path)
    _, slave, end = _victim(sec, "h1")
    for which in ("other group", "same group, other node", "foreign CA", "expired"):
        server, fake, address = _fake_master(rogue[which], sec.ca)
        try:
            _point_at(slave, address)
            # several reconnection attempts (0.1 s, doubling): the TLS handshake fails first, nothing is sent
            holds_for(lambda f=fake: f.handshakes == [], 2.0, f"no handshake reached it ({which})")
            st = signed(broker(channel(slave.address, sec.ca)).Status, bpb.StatusRequest(), sec.admin)
            assert st.max_offset == end, which  # its log as it was
        finally:
            server.stop(0)


# ---- clients --------------------------------------------------------------------------------


def test_a_plaintext_client_is_refused(sec: Setup) -> None:
    for address in (sec.master.address, sec.master.member_address, sec.ns.address):
        ch = channel(address)
        assert (
            code_of(lambda c=ch: broker(c).Status(bpb.StatusRequest(), timeout=3))
            == grpc.StatusCode.UNAVAILABLE
        )


ACCOUNTS = """
[[account]]
access_key = "a"
secret_key = "secret-of-account-a"
publish = ["t"]
subscribe = ["t"]
groups = ["ga"]

[[account]]
access_key = "b"
secret_key = "secret-of-account-b"
subscribe = ["t"]
groups = ["gb"]
"""


def _with_accounts(pki: LocalPki, extra: str) -> None:
    text = pki.acl_file.read_text().split("\n# ---- test accounts")[0]
    pki.acl_file.write_text(text + "\n# ---- test accounts\n" + extra)


def test_account_a_cannot_touch_group_b(sec: Setup) -> None:
    assert sec.pki is not None
    _with_accounts(sec.pki, ACCOUNTS)
    b = broker(channel(sec.master.address, sec.ca))
    a, bee = ("a", "secret-of-account-a"), ("b", "secret-of-account-b")
    commit_b = bpb.CommitOffsetRequest(group="gb", topic="t", queue_id=0, offset=3)
    poll_until(lambda: _ok(lambda: signed(b.CommitOffset, commit_b, bee)), 10, "the reloaded ACL to know b")
    lock: dict[str, Any] = {"group": "gb", "topic": "t", "client_id": "x", "queue_ids": [0, 1]}
    attacks = [
        (
            "commit B's offsets",
            b.CommitOffset,
            bpb.CommitOffsetRequest(**{**_q("gb"), "offset": (1 << 64) - 1}),
        ),
        (
            "commit the scheduler's",
            b.CommitOffset,
            bpb.CommitOffsetRequest(**{**_q("%SCHEDULER%"), "offset": 9}),
        ),
        ("unlock B's queues", b.UnlockQueues, bpb.LockQueuesRequest(**lock)),
        ("lock B's queues", b.LockQueues, bpb.LockQueuesRequest(**lock, lease_ms=60_000)),
        (
            "send into B's DLQ",
            b.SendBack,
            bpb.SendBackRequest(group="gb", topic="t", message=bpb.Message(body=b"e")),
        ),
        (
            "join group B",
            b.Heartbeat,
            bpb.HeartbeatRequest(group="gb", client_id="x", topic="t", heartbeat_ms=9000),
        ),
        ("create a topic", b.CreateTopic, bpb.CreateTopicRequest(topic="mine", queues=1)),
    ]
    for what, method, request in attacks:
        assert code_of(lambda m=method, r=request: signed(m, r, a)) == P, what
    assert signed(b.QueryOffset, bpb.QueryOffsetRequest(**_q("gb")), bee).offset == 3  # as B left it
    signed(b.CommitOffset, bpb.CommitOffsetRequest(**_q("ga"), offset=1), a)  # A's own group: fine


def _q(group: str) -> dict[str, Any]:
    return {"group": group, "topic": "t", "queue_id": 0}


def _ok(fn: Any) -> bool:
    try:
        fn()
        return True
    except grpc.RpcError:
        return False


def test_bad_signatures_stale_dates_and_revoked_keys_are_refused(sec: Setup) -> None:
    assert sec.pki is not None
    _with_accounts(sec.pki, ACCOUNTS)
    b = broker(channel(sec.master.address, sec.ca))
    a = ("a", "secret-of-account-a")
    status = bpb.StatusRequest()
    poll_until(lambda: _ok(lambda: signed(b.Status, status, a)), 10, "the reloaded ACL to know a")
    assert code_of(lambda: signed(b.Status, status, ("a", "not-the-secret-of-a"))) == U
    assert code_of(lambda: signed(b.Status, status, a, at_ms=int(time.time() * 1000) - 600_000)) == U
    assert code_of(lambda: signed(b.Status, status, None)) == U
    _with_accounts(sec.pki, ACCOUNTS.split('[[account]]\naccess_key = "b"')[0].replace('"a"', '"a2"', 1))
    poll_until(lambda: not _ok(lambda: signed(b.Status, status, a)), 10, "a's key revoked by the reload")
    assert code_of(lambda: signed(b.Status, status, a)) == U


# ---- certificates ---------------------------------------------------------------------------


def test_a_broker_with_an_expired_or_foreign_certificate_refuses_to_start(sec: Setup, tmp_path: Path) -> None:
    assert sec.pki is not None
    rogue = _rogue_certs(sec.pki, tmp_path)
    for which, says in (("expired", "expired on"), ("foreign CA", "not the configured CA")):
        cert = rogue[which]
        with pytest.raises(ProcessFailed) as info:
            files = ["--set", f'tls.cert_file="{cert.cert_file}"', "--set", f'tls.key_file="{cert.key_file}"']
            sec.procs.broker(
                f"bad-{which.replace(' ', '-')}", group="g1",
                extra=["--broker-id", "3", "--role", "slave", "--master", sec.master.address, *files],
            )  # fmt: skip
        assert says in str(info.value) and str(cert.cert_file) in str(info.value)


def test_tls_below_1_2_is_refused(sec: Setup) -> None:
    """The client port negotiates TLS 1.2 and 1.3 and nothing older: a
    client offering only TLS 1.1 (allowed on its side) gets no handshake."""
    assert sec.pki is not None
    host, port = sec.master.address.rsplit(":", 1)

    def handshake(version: ssl.TLSVersion) -> str:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(sec.pki.ca_file if sec.pki else ""))
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # this side would speak TLS 1.1
        ctx.minimum_version = ctx.maximum_version = version
        ctx.set_alpn_protocols(["h2"])
        try:
            with (
                socket.create_connection((host, int(port)), timeout=5) as s,
                ctx.wrap_socket(s, server_hostname="127.0.0.1") as t,
            ):
                return str(t.version())
        except (ssl.SSLError, OSError) as exc:
            return f"refused: {exc}"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1 itself is deprecated
        old = handshake(ssl.TLSVersion.TLSv1_1)
    assert old.startswith("refused"), old
    assert handshake(ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
