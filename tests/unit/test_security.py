"""The security decisions without sockets: member names, request signatures,
the ACL and its reload, and the policy's verdict per principal and RPC."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.errors import ConfigError, InvalidArgumentError, PermissionDeniedError, UnauthenticatedError
from core.security.acl import RECHECK_MS, AclFile, parse_acl
from core.security.guard import CLIENT_RULES, SecurityPolicy
from core.security.identity import ANONYMOUS, Account, Kind, Member, member_of, parse_member_uri
from core.security.signing import sign, verify

pytestmark = pytest.mark.unit
ME = Member("c1", Kind.BROKER, "g1", 1)
SECRET = "s3cret-s3cret-s3cret"
ACL = f"""
[[account]]
access_key = "app"
secret_key = "{SECRET}"
publish = ["orders", "audit.*"]
subscribe = ["orders"]
groups = ["billing"]
create = ["audit.*"]

[[account]]
access_key = "ops"
secret_key = "{SECRET}-ops"
admin = true

[[account]]
access_key = "bridge"
secret_key = "{SECRET}-bridge"
publish = ["*"]
subscribe = ["*"]
groups = ["*"]

[[account]]
access_key = "rmq-proxy"
secret_key = "{SECRET}-proxy"
proxy = true

[[account]]
access_key = "watch"
secret_key = "{SECRET}-watch"
monitor = true

[anonymous]
subscribe = ["public"]
groups = ["*"]
"""


def test_member_uris_round_trip_and_refuse_anything_else() -> None:
    for m in (ME, Member("c1", Kind.NAMESERVER, "ns-1")):
        assert parse_member_uri(m.uri) == m
    bad_uris = [
        "https://c1/broker/g1/1",
        "tailrace://c1/broker/g1",
        "tailrace://c1/broker/g 1/1",
        "tailrace://c1/broker/g1/-1",
        "tailrace://c1/client/x",
        "tailrace://c1/broker/g1/1/x",
    ]
    for bad in bad_uris:
        with pytest.raises(InvalidArgumentError):
            parse_member_uri(bad)
    assert member_of({"peer_uri": [ME.uri.encode()]}) == ME
    assert member_of({}) is None and member_of({"peer_uri": [b"spiffe://x"]}) is None


def test_a_signature_binds_key_method_and_time() -> None:
    def secret_of(ak: str) -> str | None:
        return SECRET if ak == "app" else None

    md = sign("app", SECRET, "/tailrace.v1.Broker/Send", 1_000_000)
    assert verify(md, "/tailrace.v1.Broker/Send", 1_000_000 + 5_000, secret_of) == Account("app")
    assert verify((), "/tailrace.v1.Broker/Send", 1_000_000, secret_of) is None  # unsigned
    cases = {
        "another method": (md, "/tailrace.v1.Broker/CreateTopic", 1_000_000),
        "stale": (md, "/tailrace.v1.Broker/Send", 1_000_000 + 301_000),
        "from the future": (md, "/tailrace.v1.Broker/Send", 1_000_000 - 301_000),
        "wrong secret": (sign("app", "not-the-secret-at-all", "/m", 1), "/m", 1),
        "unknown key": (sign("nobody", SECRET, "/m", 1), "/m", 1),
        "garbage": ((("authorization", "Basic abc"),), "/m", 1),
        "no date": (md[1:], "/tailrace.v1.Broker/Send", 1_000_000),
    }
    for why, (metadata, method, now) in cases.items():
        with pytest.raises(UnauthenticatedError):
            verify(metadata, method, now, secret_of)
            pytest.fail(why)


def test_the_acl_grants_by_pattern_and_a_group_owns_its_retry_and_dead_letter_topics() -> None:
    acl = parse_acl(ACL)
    app, ops = acl.permissions["app"], acl.permissions["ops"]
    assert app.may_publish("orders") and app.may_publish("audit.eu") and not app.may_publish("payments")
    assert app.may_subscribe("orders", "billing") and not app.may_subscribe("orders", "other")
    assert app.may_subscribe("%RETRY%billing", "billing") and not app.may_subscribe("%RETRY%other")
    # a dead-letter topic holds every topic the group read: only an exact grant opens it
    assert not app.may_subscribe("%DLQ%billing") and not app.may_subscribe("audit.eu", "billing")
    assert ops.may_publish("anything") and ops.admin and not app.admin
    assert app.may_create("audit.x") and not app.may_create("orders") and ops.may_create("orders")
    # patterns never reach the broker's own names: `*` is not the scheduler's group
    wide = parse_acl(
        '[[account]]\naccess_key = "w"\nsecret_key = "0123456789abcdef"\nsubscribe = ["*", "%*"]\n'
        'groups = ["*"]\npublish = ["*"]\n'
    ).permissions["w"]
    for system in ("%SCHEDULER%", "%SCHEDULE%", "%DLQ%billing"):
        assert not wide.may_use_group(system) and not wide.may_subscribe(system)
    assert not wide.may_publish("%SCHEDULE%") and wide.may_subscribe("%RETRY%billing", "billing")
    exact = parse_acl(
        '[[account]]\naccess_key = "d"\nsecret_key = "0123456789abcdef"\nsubscribe = ["%DLQ%b"]\n'
    )
    assert exact.permissions["d"].may_subscribe("%DLQ%b")
    for bad in ('[[account]]\naccess_key = "a"\nsecret_key = "short"', '[[account]]\naccess_key = "a b"',
                '[x]\n', '[[account]]\naccess_key = "a"\nsecret_key = "0123456789abcdef"\npublish = "t"',
                '[[account]]\naccess_key = "a"\nsecret_key = "0123456789abcdef"\nadmin = "yes"',
                '[[account]]\naccess_key = "a"\nsecret_key = "0123456789abcdef"\nproxy = 1'):  # fmt: skip
        with pytest.raises(ConfigError):
            parse_acl(bad)


def test_the_acl_file_is_private_reloaded_on_change_and_a_bad_change_keeps_the_old(tmp_path: Path) -> None:
    path = tmp_path / "acl.toml"
    path.write_text(ACL)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        AclFile(path, 0)
    path.chmod(0o600)
    f = AclFile(path, 0)
    assert set(f.current(0).secrets) == {"app", "ops", "bridge", "rmq-proxy", "watch"}
    path.write_text(ACL.replace('access_key = "ops"', 'access_key = "ops2"'))
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    assert set(f.current(1).secrets) == {
        "app",
        "ops",
        "bridge",
        "rmq-proxy",
        "watch",
    }  # not re-read before RECHECK_MS
    assert set(f.current(RECHECK_MS + 1).secrets) == {"app", "ops2", "bridge", "rmq-proxy", "watch"}
    path.write_text("not toml [")
    os.utime(path, ns=(2, 2))
    assert (
        set(f.current(3 * RECHECK_MS).secrets) == {"app", "ops2", "bridge", "rmq-proxy", "watch"}
        and f.reloads == 1
        and f.refused
    )
    # a refused file is tried again: made readable by others, then fixed by chmod alone
    path.write_text(ACL)
    path.chmod(0o644)
    os.utime(path, ns=(3, 3))
    assert (
        set(f.current(5 * RECHECK_MS).secrets) == {"app", "ops2", "bridge", "rmq-proxy", "watch"}
        and "readable by others" in f.refused
    )
    path.chmod(0o600)  # only the mode changes (and ctime)
    assert (
        set(f.current(7 * RECHECK_MS).secrets) == {"app", "ops", "bridge", "rmq-proxy", "watch"}
        and f.refused == ""
    )


def _policy(tmp_path: Path, **kw: object) -> SecurityPolicy:
    path = tmp_path / "acl.toml"
    path.write_text(ACL)
    path.chmod(0o600)
    return SecurityPolicy(ME, tls=True, acl=AclFile(path, 0), **kw)  # type: ignore[arg-type]


def _req(**fields: object) -> SimpleNamespace:
    return SimpleNamespace(**fields)


def test_accounts_are_authorized_per_rpc(tmp_path: Path) -> None:
    p = _policy(tmp_path)
    app, ops = Account("app"), Account("ops")
    p.authorize(app, "/tailrace.v1.Broker/SendBatch", _req(topic="orders"), 0)
    p.authorize(app, "/tailrace.v1.Broker/CommitOffset", _req(topic="orders", group="billing"), 0)
    p.authorize(app, "/tailrace.v1.Broker/SendBack", _req(topic="orders", group="billing"), 0)
    p.authorize(ops, "/tailrace.v1.Broker/CreateTopic", _req(topic="x"), 0)
    p.authorize(app, "/tailrace.v1.Broker/CreateTopic", _req(topic="audit.new"), 0)  # its `create`
    denied = [
        ("/tailrace.v1.Broker/SendBatch", _req(topic="payments")),
        ("/tailrace.v1.Broker/CommitOffset", _req(topic="orders", group="%SCHEDULER%")),
        ("/tailrace.v1.Broker/UnlockQueues", _req(topic="orders", group="other")),
        ("/tailrace.v1.Broker/SendBack", _req(topic="orders", group="other")),
        ("/tailrace.v1.Broker/CreateTopic", _req(topic="x")),
    ]
    for method, request in denied:
        with pytest.raises(PermissionDeniedError, match="account 'app' may not"):
            p.authorize(app, method, request, 0)
    # orphan checks carry every topic's uncommitted bodies (review B6): a proxy's account or admin,
    # never publish (or subscribe) to every topic alone
    polls = "/tailrace.v1.Broker/PollOrphanTransactions"
    for who in (Account("bridge"), app):
        with pytest.raises(PermissionDeniedError, match="take orphan checks"):
            p.authorize(who, polls, _req(), 0)
    p.authorize(Account("rmq-proxy"), polls, _req(), 0)
    p.authorize(ops, polls, _req(), 0)
    # a monitor account (the console's, review R1) reads offsets and members, of any topic and group,
    # and nothing else: no message body, no reset or delete, no send, pull, commit or create
    watch = Account("watch")
    p.authorize(watch, "/tailrace.v1.BrokerAdmin/DescribeGroups", _req(group="", topic=""), 0)
    p.authorize(watch, "/tailrace.v1.Broker/GetQueueOffsets", _req(topic="orders"), 0)
    p.authorize(watch, "/tailrace.v1.Broker/Status", _req(), 0)
    for method in ("ResetOffset", "DeleteTopic", "GetMessage", "FindMessages"):
        with pytest.raises(PermissionDeniedError, match="administer"):
            p.authorize(watch, f"/tailrace.v1.BrokerAdmin/{method}", _req(topic="orders", group="g"), 0)
    for method in ("SendBatch", "Pull", "CommitOffset", "Pop", "CreateTopic", "PollOrphanTransactions"):
        with pytest.raises(PermissionDeniedError):
            p.authorize(watch, f"/tailrace.v1.Broker/{method}", _req(topic="orders", group="g"), 0)
    with pytest.raises(PermissionDeniedError, match="admin or monitor"):
        p.authorize(app, "/tailrace.v1.BrokerAdmin/DescribeGroups", _req(group="billing", topic=""), 0)
    with pytest.raises(UnauthenticatedError, match="anonymous"):
        p.authorize(ANONYMOUS, "/tailrace.v1.Broker/Pull", _req(topic="public", group="g"), 0)
    anon = _policy(tmp_path, allow_anonymous=True)
    anon.authorize(ANONYMOUS, "/tailrace.v1.Broker/Pull", _req(topic="public", group="g"), 0)
    with pytest.raises(PermissionDeniedError):
        anon.authorize(ANONYMOUS, "/tailrace.v1.Broker/Send", _req(topic="public"), 0)
    p.authorize(ANONYMOUS, "/grpc.health.v1.Health/Check", None, 0)  # probes need no account
    with pytest.raises(PermissionDeniedError, match="not in the access table"):
        p.authorize(ops, "/tailrace.v1.Broker/Unknown", None, 0)


def test_members_speak_only_for_themselves_and_clients_are_not_members(tmp_path: Path) -> None:
    p = _policy(tmp_path)
    other_group, same_group = Member("c1", Kind.BROKER, "g2", 1), Member("c1", Kind.BROKER, "g1", 2)
    p.authorize(same_group, "/tailrace.v1.Replication/Replicate", None, 0)
    with pytest.raises(PermissionDeniedError):
        p.authorize(other_group, "/tailrace.v1.Replication/Replicate", None, 0)
    reg = _req(broker=_req(broker_name="g1", node_id=2, broker_id=2))
    p.authorize(same_group, "/tailrace.v1.NameServer/RegisterBroker", reg, 0)
    master_claim = _req(broker=_req(broker_name="g1", node_id=2, broker_id=0))  # its controller checks it
    p.authorize(same_group, "/tailrace.v1.NameServer/RegisterBroker", master_claim, 0)
    with pytest.raises(PermissionDeniedError, match="speak for broker"):
        p.authorize(other_group, "/tailrace.v1.NameServer/RegisterBroker", reg, 0)
    node0 = Member("c1", Kind.BROKER, "g1", 0)  # node_id 0 reads as the broker id: it speaks for node 2
    with pytest.raises(PermissionDeniedError, match="speak for broker"):
        p.authorize(
            node0,
            "/tailrace.v1.NameServer/RegisterBroker",
            _req(broker=_req(broker_name="g1", node_id=0, broker_id=2)),
            0,
        )
    with pytest.raises(PermissionDeniedError, match="as broker id"):
        p.authorize(
            same_group,
            "/tailrace.v1.NameServer/RegisterBroker",
            _req(broker=_req(broker_name="g1", node_id=2, broker_id=5)),
            0,
        )
    with pytest.raises(PermissionDeniedError, match="speak for broker"):
        p.authorize(same_group, "/tailrace.v1.NameServer/ControllerHeartbeat", _req(group="g1", node_id=1), 0)
    for who in (ANONYMOUS, Account("ops")):  # an account, even admin, is no member
        with pytest.raises(UnauthenticatedError, match="cluster members"):
            p.authorize(who, "/tailrace.v1.NameServer/ControllerHeartbeat", _req(group="g1", node_id=2), 0)
    with pytest.raises(PermissionDeniedError, match="is for clients"):
        p.authorize(same_group, "/tailrace.v1.Broker/CommitOffset", _req(topic="t", group="g"), 0)
    with pytest.raises(UnauthenticatedError, match="not a member of cluster"):
        p.authenticate((), {"peer_uri": [b"tailrace://c2/broker/g1/2"]}, "/m", 0)
    assert p.authenticate((), {"peer_uri": [same_group.uri.encode()]}, "/m", 0) == same_group


def test_drill_rpcs_are_off_unless_enabled_and_then_admin_only(tmp_path: Path) -> None:
    isolate = "/tailrace.v1.NameServer/Isolate"
    with pytest.raises(PermissionDeniedError, match="drills are off"):
        _policy(tmp_path).authorize(Account("ops"), isolate, _req(address="x"), 0)
    on = _policy(tmp_path, drills=True)
    on.authorize(Account("ops"), isolate, _req(address="x"), 0)
    with pytest.raises(PermissionDeniedError):
        on.authorize(Account("app"), isolate, _req(address="x"), 0)


def test_without_tls_or_accounts_the_development_setup_is_open() -> None:
    p = SecurityPolicy(ME, tls=False, acl=None)
    p.authorize(
        ANONYMOUS, "/tailrace.v1.NameServer/RegisterBroker", _req(broker=_req(broker_name="x", node_id=9)), 0
    )
    p.authorize(ANONYMOUS, "/tailrace.v1.Broker/CreateTopic", _req(topic="x"), 0)


def test_every_client_rpc_of_the_access_table_has_a_rule() -> None:
    from core.access import RPC_ACCESS, Callers

    clients = {m for m, a in RPC_ACCESS.items() if a.callers is Callers.CLIENTS and "grpc.health" not in m}
    assert clients == set(CLIENT_RULES)


def test_an_address_belongs_to_one_broker_and_only_it_unregisters_itself() -> None:
    """A member of another group can neither take over a live broker's
    address in the registry nor, through it, unregister that broker."""
    from nameserver.registry import BrokerRegistry, Registration

    def reg(group: str, node: int, address: str) -> Registration:
        return Registration("c1", group, node, address, 1, "master", 0, 1000, node_id=node)

    r = BrokerRegistry()
    r.register(reg("g1", 0, "10.0.0.1:1"), 0)
    with pytest.raises(PermissionDeniedError, match="registered by 'g1'/0"):
        r.register(reg("g9", 1, "10.0.0.1:1"), 500)
    assert not r.unregister("10.0.0.1:1", owner=("g9", 1))  # not its registration
    assert r.live_count(500) == 1
    r.register(reg("g1", 0, "10.0.0.1:1"), 600)  # the broker itself, again: fine
    r.register(reg("g9", 1, "10.0.0.1:1"), 600 + 3 * 1000 + 1)  # once the old one expired: taken over
    assert r.unregister("10.0.0.1:1", owner=("g9", 1))
