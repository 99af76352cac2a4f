"""RocketMQ 5's protocol as plain logic: the v2 signature, message
translation, routes, settings, and the servicer's decisions with a fake
backend and a fake call context (no sockets)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from core.errors import BrokerUnavailableError, PermissionDeniedError, UnauthenticatedError, UnknownTopicError
from core.pb.rocketmq.v2 import definition_pb2 as d
from core.rocketmq import routes, translate
from core.rocketmq.codes import Refused, code_for
from core.rocketmq.settings import ServerSettings, answer
from core.route import GroupRoute, MessageQueue, TopicRoute
from core.security.mqv2 import Mqv2Policy, any_account, date_of, header, publish, verify_mqv2
from tests.helpers.rocketmq_cases import CAPTURED, CAPTURED_MS, SECRET, _acl, _msg, _route

pytestmark = pytest.mark.unit


def _secret(ak: str) -> str | None:
    return {"myak": "mysk", "app": SECRET}.get(ak)


# ---- the v2 signature ------------------------------------------------------------------


def test_a_captured_official_header_verifies_and_a_wrong_secret_does_not() -> None:
    account = verify_mqv2(CAPTURED, CAPTURED_MS, _secret)
    assert account is not None and account.access_key == "myak"
    with pytest.raises(UnauthenticatedError, match="does not verify"):
        verify_mqv2(CAPTURED, CAPTURED_MS, lambda ak: "not-the-secret")
    with pytest.raises(UnauthenticatedError, match="does not verify"):  # unknown key: same answer
        verify_mqv2(CAPTURED, CAPTURED_MS, lambda ak: None)


def _local_header(now_ms: int, utc_offset_min: int) -> tuple[tuple[str, str], ...]:
    """What an official client in that zone signs: its local time labelled Z."""
    return header("app", SECRET, date_of(now_ms + utc_offset_min * 60_000))


def test_the_skew_window_is_the_native_one() -> None:
    assert verify_mqv2(CAPTURED, CAPTURED_MS + 299_000, _secret, any_timezone=False) is not None
    with pytest.raises(UnauthenticatedError, match="TZ=UTC"):
        verify_mqv2(CAPTURED, CAPTURED_MS + 301_000, _secret, any_timezone=False)
    with pytest.raises(UnauthenticatedError):  # a client in UTC+2 without TZ=UTC
        verify_mqv2(CAPTURED, CAPTURED_MS - 2 * 3600_000, _secret, any_timezone=False)


def test_clients_in_any_time_zone_verify_by_default() -> None:
    now = CAPTURED_MS
    for offset_min in (
        8 * 60,
        -5 * 60,
        5 * 60 + 45,
        14 * 60,
        -12 * 60,
        0,
    ):  # Shanghai, New York, Kathmandu...
        assert verify_mqv2(_local_header(now + 120_000, offset_min), now, _secret) is not None, offset_min
        with pytest.raises(UnauthenticatedError):  # the same zone, outside the skew
            verify_mqv2(_local_header(now + 400_000, offset_min), now, _secret)
    for offset_min in (8 * 60, -5 * 60):
        with pytest.raises(UnauthenticatedError, match="TZ=UTC"):
            verify_mqv2(_local_header(now, offset_min), now, _secret, any_timezone=False)
    for beyond in (15 * 60, -13 * 60, 8 * 60 + 7):  # no such zone (nor a quarter hour)
        with pytest.raises(UnauthenticatedError):
            verify_mqv2(_local_header(now, beyond), now, _secret)


def test_anonymous_forms_and_malformed_headers() -> None:
    assert verify_mqv2([], CAPTURED_MS, _secret) is None
    empty = header("", "", "20261126T062131Z")  # the client's Credentials(): Credential=
    assert verify_mqv2(empty, CAPTURED_MS, _secret) is None
    for bad in (
        [("authorization", "TAILRACE-HMAC-SHA256 Credential=a, SignedHeaders=x, Signature=00")],
        [("authorization", CAPTURED[1][1].replace("x-mq-date-time", "x-mq-date-time;host"))],
        [("x-mq-date-time", "2026-11-26"), CAPTURED[1]],
        [CAPTURED[1]],
    ):
        with pytest.raises(UnauthenticatedError):
            verify_mqv2(bad, CAPTURED_MS, _secret)


def test_policy_checks_the_account_against_the_acl(tmp_path: Path) -> None:
    now = CAPTURED_MS
    policy = Mqv2Policy(_acl(tmp_path))
    md = header("app", SECRET, date_of(now))
    assert policy.check(md, now, publish("orders")) is not None
    with pytest.raises(PermissionDeniedError, match="publish to topic 'other'"):
        policy.check(md, now, publish("other"))
    with pytest.raises(UnauthenticatedError, match="anonymous access is off"):
        policy.check([], now, any_account)
    open_policy = Mqv2Policy(_acl(tmp_path, '[anonymous]\npublish = ["pub"]\n'), True)
    assert open_policy.check([], now, publish("pub")) is not None
    with pytest.raises(PermissionDeniedError):
        open_policy.check([], now, publish("orders"))
    assert Mqv2Policy(None).check([], now, publish("anything")) is not None  # no ACL: open


# ---- translation -----------------------------------------------------------------------


def test_a_normal_message_maps_to_a_native_record() -> None:
    m = _msg(tag="tagA", keys=["k1", "k2"])
    m.user_properties["p"] = "v"
    got = translate.incoming(m, 1024, 0)
    assert (got.topic, got.body, got.tags, got.keys, got.group) == ("orders", b"hello", "tagA", "k1 k2", "")
    assert got.born_ms == 1_795_674_091_000
    assert got.properties == {
        "p": "v",
        translate.MESSAGE_ID: "0102FC0000000121C90B1969EB00000000",
        translate.BORN_HOST: "192.0.2.2",
    }
    back = translate.read_back(got.tags, got.keys, got.properties)
    assert back["keys"] == ["k1", "k2"] and back["user_properties"] == {"p": "v"}


def _delay(seconds: int, **sp: object) -> d.Message:
    m = _msg(**sp)
    m.system_properties.delivery_timestamp.seconds = seconds
    m.system_properties.delivery_timestamp.nanos = 250_000_000
    return m


def test_a_delay_message_carries_its_delivery_time_to_the_native_send() -> None:
    got = translate.incoming(_delay(1_795_674_100, message_type=d.DELAY), 1024, 0)
    assert got.deliver_at_ms == 1_795_674_100_250 and got.group == ""
    unspecified = translate.incoming(_delay(1_795_674_100, message_type=d.MESSAGE_TYPE_UNSPECIFIED), 1024, 0)
    assert unspecified.deliver_at_ms == 1_795_674_100_250  # the type read from its fields
    assert translate.incoming(_msg(), 1024, 0).deliver_at_ms == 0
    stored = {**got.properties, "TIMER_DELIVER_MS": "1795674100250"}  # as the timer stores it
    assert translate.read_back("", "", stored)["delivery_timestamp_ms"] == 1_795_674_100_250
    for bad, code in [
        (_delay(1, message_type=d.NORMAL), d.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE),
        (_delay(1, message_type=d.FIFO, message_group="g"), d.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE),
        (_delay(1, message_type=d.DELAY, message_group="g"), d.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE),
        (_delay(-5, message_type=d.DELAY), d.ILLEGAL_DELIVERY_TIME),
    ]:
        with pytest.raises(Refused) as info:
            translate.incoming(bad, 1024, 0)
        assert info.value.code == code, bad


def test_fifo_keeps_its_group_and_types_not_served_are_refused() -> None:
    fifo = translate.incoming(_msg(message_type=d.FIFO, message_group="g1"), 1024, 0)
    assert fifo.group == "g1" and fifo.properties[translate.MESSAGE_GROUP] == "g1"
    cases = [
        (_msg(message_type=d.DELAY), d.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE),  # no delivery timestamp
        (_msg(message_type=d.LITE), d.NOT_IMPLEMENTED),
        (_msg(message_type=d.TRANSACTION, message_group="g"), d.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE),
        (_msg(message_type=d.FIFO), d.ILLEGAL_MESSAGE_GROUP),
        (_msg(message_group="g"), d.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE),
        (_msg(b""), d.MESSAGE_BODY_EMPTY),
        (_msg(b"x" * 1025), d.MESSAGE_BODY_TOO_LARGE),
        (_msg(tag="a|b"), d.ILLEGAL_MESSAGE_TAG),
        (_msg(born_host="h" * 256), d.BAD_REQUEST),  # refused, never cut
        (_msg(trace_context="t" * 1025), d.BAD_REQUEST),
        (_msg(message_id=""), d.ILLEGAL_MESSAGE_ID),
    ]
    for name in (
        "RECONSUME_TIMES",
        "ORIGIN_MSG_ID",
        "PGROUP",
        "__STARTDELIVERTIME",
        "WAIT",
        "REAL_QID",
        "TRANSACTION_CHECK_TIMES",
        "CHECK_IMMUNITY_TIME_IN_SECONDS",
        "__RMQ.TRANSIENT.X",
        "TXN_OP",  # the broker's transaction ops (review B1)
        "TXN_HALF",
        "TXN_CHECKS",
        "TXN_NONCE",
    ):
        reserved = _msg()
        reserved.user_properties[name] = "0"
        cases.append((reserved, d.ILLEGAL_MESSAGE_PROPERTY_KEY))
    big = _msg()
    big.user_properties["p"] = "v" * 70_000
    cases.append((big, d.MESSAGE_PROPERTIES_TOO_LARGE))
    many = _msg()
    for i in range(20):
        many.user_properties[f"p{i}"] = "v" * 1000
    cases.append((many, d.MESSAGE_PROPERTIES_TOO_LARGE))
    namespaced = _msg()
    namespaced.topic.resource_namespace = "ns"
    cases.append((namespaced, d.UNSUPPORTED))
    broker_topic = _msg()
    broker_topic.topic.name = "%RETRY%g"
    cases.append((broker_topic, d.ILLEGAL_TOPIC))
    for m, code in cases:
        with pytest.raises(Refused) as info:
            translate.incoming(m, 1024, 0)
        assert info.value.code == code, (m, info.value.message)


def test_a_key_with_a_space_is_stored_and_reads_back_split_as_in_rocketmq() -> None:
    got = translate.incoming(_msg(keys=["order 17", "k2"]), 1024, 0)
    assert got.keys == "order 17 k2"
    assert translate.read_back(got.tags, got.keys, got.properties)["keys"] == ["order", "17", "k2"]


def test_body_encoding_and_digest() -> None:
    body = b"payload" * 10
    zipped = _msg(gzip.compress(body), body_encoding=d.GZIP)
    assert translate.incoming(zipped, 1024, 0).body == body
    with pytest.raises(Refused) as info:
        translate.incoming(_msg(gzip.compress(b"x" * 2000), body_encoding=d.GZIP), 1024, 0)
    assert info.value.code == d.MESSAGE_BODY_TOO_LARGE  # inflated within the limit, not past it
    two_members = gzip.compress(b"ab") + gzip.compress(b"cd")  # RFC 1952: a body of two members
    assert translate.incoming(_msg(two_members, body_encoding=d.GZIP), 1024, 0).body == b"abcd"
    whole = gzip.compress(body)
    for corrupted in (whole[:-4], whole[:20], whole + b"junk", whole + gzip.compress(b"x")[:-3], b"nozip"):
        with pytest.raises(Refused) as info:
            translate.incoming(_msg(corrupted, body_encoding=d.GZIP), 1024, 0)
        assert info.value.code == d.MESSAGE_CORRUPTED, corrupted
    bomb = gzip.compress(b"\0" * 10_000_000)  # ~10 KB inflating to 10 MB: stopped at the limit
    with pytest.raises(Refused) as info:
        translate.incoming(_msg(bomb, body_encoding=d.GZIP), 1024, 0)
    assert info.value.code == d.MESSAGE_BODY_TOO_LARGE
    split_bomb = gzip.compress(b"x" * 1000) + gzip.compress(b"y" * 1000)  # each member fits, both do not
    with pytest.raises(Refused) as info:
        translate.incoming(_msg(split_bomb, body_encoding=d.GZIP), 1024, 0)
    assert info.value.code == d.MESSAGE_BODY_TOO_LARGE
    for kind in (d.CRC32, d.MD5, d.SHA1):
        ok = _msg(body)
        ok.system_properties.body_digest.type = kind
        ok.system_properties.body_digest.checksum = translate.digest(body, kind)
        assert translate.incoming(ok, 1024, 0).body == body
        ok.system_properties.body_digest.checksum = translate.digest(b"other", kind)
        with pytest.raises(Refused) as info:
            translate.incoming(ok, 1024, 0)
        assert info.value.code == d.MESSAGE_CORRUPTED


def test_errors_map_to_v2_codes() -> None:
    assert code_for(UnauthenticatedError("x")) == d.UNAUTHORIZED
    assert code_for(PermissionDeniedError("x")) == d.FORBIDDEN
    assert code_for(UnknownTopicError("x")) == d.TOPIC_NOT_FOUND
    assert code_for(BrokerUnavailableError("x")) == d.HA_NOT_AVAILABLE


# ---- routes and settings ---------------------------------------------------------------


def test_routes_name_the_proxy_in_a_stable_order() -> None:
    route = _route(("b", 2, True), ("a", 3, False))
    proxy = routes.endpoints("127.0.0.1:8081")
    mqs = routes.message_queues(route, proxy)
    assert [(q.broker.name, q.id) for q in mqs] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    assert all(q.broker.id == 0 and q.broker.endpoints == proxy for q in mqs)
    assert all(
        q.permission == d.READ_WRITE
        and list(q.accept_message_types) == [d.NORMAL, d.FIFO, d.DELAY, d.TRANSACTION]
        for q in mqs
    )
    assert proxy.scheme == d.IPv4 and routes.endpoints("[::1]:1").scheme == d.IPv6
    assert routes.endpoints("proxy.example:1").scheme == d.DOMAIN_NAME
    read_only = TopicRoute("t", (GroupRoute("a", "c", 2, 1, "rw", ()),))
    perms = [q.permission for q in routes.message_queues(read_only, proxy)]
    assert perms == [d.READ_WRITE, d.READ]
    assert routes.writable(read_only) == [MessageQueue("a", 0)]


# captured from rocketmq-python-client 5.1.2: QueueSelector(list(range(n))).select_queue_by_hash_key(group)
# for n in OFFICIAL_NS, run once in its own process (issue 18's review)
OFFICIAL_NS = (1, 2, 3, 5, 8, 16)
OFFICIAL_PICKS = {
    "g1": [0, 0, 2, 4, 0, 8],
    "g2": [0, 1, 0, 0, 5, 13],
    "order-17": [0, 1, 2, 0, 3, 11],
    "客户-42": [0, 1, 1, 0, 5, 5],
}


def test_fifo_queue_is_the_official_python_clients_choice() -> None:
    for group, picks in OFFICIAL_PICKS.items():
        for n, pick in zip(OFFICIAL_NS, picks, strict=True):
            queues = [MessageQueue("a", i) for i in range(n)]
            assert routes.fifo_queue(group, queues) == queues[pick], (group, n)
    with pytest.raises(Refused) as info:
        routes.fifo_queue("g1", [])
    assert info.value.code == d.TOPIC_NOT_FOUND


def test_settings_answer_is_complete() -> None:
    server = ServerSettings(max_body_bytes=4_000_000)
    producer = d.Settings(client_type=d.PRODUCER)
    producer.publishing.max_body_size = 134_217_728
    producer.metric.on = True
    out = answer(producer, server)
    assert out.publishing.max_body_size == 4_000_000 and not out.metric.on
    assert out.backoff_policy.max_attempts == 3 and out.backoff_policy.HasField("exponential_backoff")
    push = answer(d.Settings(client_type=d.PUSH_CONSUMER), server)
    assert push.subscription.long_polling_timeout.ToMilliseconds() == 20_000
    assert push.subscription.receive_batch_size == 32 and not push.subscription.fifo
    assert push.backoff_policy.customized_backoff.next[0].ToMilliseconds() == 1000
    simple = d.Settings(client_type=d.SIMPLE_CONSUMER)
    simple.subscription.long_polling_timeout.FromSeconds(600)
    assert answer(simple, server).subscription.long_polling_timeout.ToMilliseconds() == 20_000
    assert producer.publishing.max_body_size == 134_217_728  # the client's copy untouched


# ---- the launcher's part ---------------------------------------------------------------


def test_local_pki_gives_the_proxy_an_account_that_is_not_admin(tmp_path: Path) -> None:
    from consumer.profile import Profile
    from core.security.acl import load_acl
    from deploy.pki import PROXY, LocalPki

    pki = LocalPki(tmp_path / "c", "DefaultCluster")
    acl = load_acl(pki.acl_file)
    perms = acl.permissions[PROXY]
    assert not perms.admin and perms.may_publish("orders") and perms.may_subscribe("orders", "billing")
    assert not perms.may_publish("%SCHEDULE%") and not perms.may_create("orders")
    assert acl.permissions["admin"].admin
    again = LocalPki(tmp_path / "c", "DefaultCluster")  # a second `up` keeps both secrets
    assert (again.admin_secret, again.proxy_secret) == (pki.admin_secret, pki.proxy_secret)
    flags = pki.proxy_flags("proxy-1", ["127.0.0.1"], ["127.0.0.1:9876"])
    assert pki.proxy_secret not in " ".join(flags)  # paths on the command line, never a secret
    proxy_profile = Profile.load(pki.proxy_profile_file)
    assert proxy_profile.access_key == PROXY and proxy_profile.namesrv == ("127.0.0.1:9876",)
    pki.write_profile(["127.0.0.1:9876"], ["127.0.0.1:8081"])
    assert Profile.load(pki.profile_file).rocketmq_endpoints == ("127.0.0.1:8081",)


def test_topologies_ask_for_proxies(tmp_path: Path) -> None:
    from core.errors import ConfigError
    from deploy.topology import load_topology, resolve_topology

    assert load_topology(resolve_topology("local-rocketmq")).rocketmq_proxies == 1
    assert load_topology(resolve_topology("local-1m-2s")).rocketmq_proxies == 0
    bad = tmp_path / "t.toml"
    bad.write_text('[cluster]\nrocketmq_proxies = 99\n[[nameserver]]\nname = "n"\n[[group]]\nname = "g"\n')
    with pytest.raises(ConfigError, match="rocketmq_proxies"):
        load_topology(bad)


def test_the_body_limit_is_the_smallest_masters_less_headroom() -> None:
    from deploy.proxy_backend import HEADROOM_BYTES, body_limit

    assert body_limit([4 << 20, 8 << 20], 123) == (4 << 20) - HEADROOM_BYTES
    assert body_limit([], 123) == 123  # no master answered yet
    assert body_limit([1000], 123) == 1024  # never below 1 KiB


def test_the_limit_is_asked_of_the_proxys_cluster_only() -> None:
    from core.pb.tailrace.v1 import nameserver_pb2 as npb
    from deploy.proxy_backend import groups_of

    answer = npb.ListClustersResponse(
        clusters=[
            npb.ClusterInfo(name="mine", groups=[npb.GroupRoute(broker_name="a")]),
            npb.ClusterInfo(name="other", groups=[npb.GroupRoute(broker_name="b")]),
        ]
    )
    assert [g.broker_name for g in groups_of(answer, "mine")] == ["a"]
    assert [g.broker_name for g in groups_of(answer, "")] == ["a", "b"]


def test_consumers_are_told_the_masters_least_pop_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.profile import Profile
    from deploy.proxy_backend import ClusterBackend, body_limit

    monkeypatch.delenv("TAILRACE_PROFILE", raising=False)
    backend = ClusterBackend(["127.0.0.1:1"], Profile.resolve(None), 1000)
    try:
        assert backend.max_attempts(16) == 16  # none told yet
        told = [
            {"max_message_bytes": 2 << 20, "pop_max_attempts": 5},
            {"max_message_bytes": 4 << 20, "pop_max_attempts": 3},
            {},  # a master of an older version tells neither
        ]
        monkeypatch.setattr(backend, "_masters_limits", lambda: told)
        backend.refresh_limit()
        assert backend.max_attempts(16) == 3  # the first to dead-letter decides
        assert backend.max_body_bytes() == body_limit([2 << 20, 4 << 20], 0)
    finally:
        backend.close()


def test_proxy_config_is_checked_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import argparse

    from core.errors import ConfigError
    from deploy import proxy_main

    monkeypatch.delenv("TAILRACE_PROFILE", raising=False)

    def wiring(*sets: str, insecure: bool = False) -> tuple[object, list[str]]:
        p = argparse.ArgumentParser()
        proxy_main.add_arguments(p)
        argv = [x for item in sets for x in ("--set", item)] + (["--insecure"] if insecure else [])
        return proxy_main._wiring(proxy_main.load(p.parse_args(argv)))

    with pytest.raises(ConfigError, match=r"proxy\.namesrv"):
        wiring()
    with pytest.raises(ConfigError, match="not loopback"):
        wiring("proxy.namesrv=127.0.0.1:9876", "proxy.listen=10.1.2.3:8081")
    with pytest.raises(ConfigError, match=r"proxy\.advertise"):
        wiring("proxy.namesrv=127.0.0.1:9876", "proxy.listen=0.0.0.0:8081", insecure=True)
    with pytest.raises(ConfigError, match=r"proxy\.long_polling_ms"):
        wiring("proxy.namesrv=127.0.0.1:9876", "proxy.long_polling_ms=5")
    _, namesrv = wiring("proxy.namesrv=127.0.0.1:1,127.0.0.1:2")
    assert namesrv == ["127.0.0.1:1", "127.0.0.1:2"]
    # Telemetry streams must leave threads for other calls (the proxy's default: 256 workers)
    with pytest.raises(ConfigError, match=r"proxy\.max_telemetry_streams"):
        wiring("proxy.namesrv=127.0.0.1:9876", "server.max_workers=64", "proxy.max_telemetry_streams=64")
    wiring("proxy.namesrv=127.0.0.1:9876", "proxy.max_telemetry_streams=223")  # 223 + 32 receives < 256
    # so must the held receives, together with them
    with pytest.raises(ConfigError, match=r"proxy\.max_telemetry_streams"):
        wiring("proxy.namesrv=127.0.0.1:9876", "proxy.max_telemetry_streams=200", "proxy.max_receives=56")
    with pytest.raises(ConfigError, match=r"proxy\.auto_renew_invisible_ms"):
        wiring("proxy.namesrv=127.0.0.1:9876", "proxy.auto_renew_invisible_ms=10")
    # one account's share of the held receives is below (or at) all of them
    with pytest.raises(ConfigError, match=r"proxy\.max_receives_per_account"):
        wiring("proxy.namesrv=127.0.0.1:9876", "proxy.max_receives_per_account=33")
    with pytest.raises(ConfigError, match=r"proxy\.auto_renew_max_ms"):  # past RocketMQ's 3 h
        wiring("proxy.namesrv=127.0.0.1:9876", "proxy.auto_renew_max_ms=10800001")
    with pytest.raises(ConfigError, match=r"proxy\.client_alive_ms"):
        wiring("proxy.namesrv=127.0.0.1:9876", "proxy.client_alive_ms=10")
    with pytest.raises(ConfigError, match=r"proxy\.receive_write_ms"):
        wiring("proxy.namesrv=127.0.0.1:9876", "proxy.receive_write_ms=0")
    # a proxy holding an account but checking none of its callers would lend that account to anyone
    profile = tmp_path / "profile.toml"
    profile.write_text(
        'namesrv = ["127.0.0.1:9876"]\naccess_key = "proxy"\nsecret_key = "proxy-secret-0123"\n'
    )
    profile.chmod(0o600)
    with pytest.raises(ConfigError, match=r"auth\.acl_file"):
        wiring(f"proxy.profile={profile}")
    wiring(f"proxy.profile={profile}", "proxy.allow_anonymous=true")  # the loud opt-in


def test_refused_calls_are_logged_within_a_budget() -> None:
    from core.rocketmq.service import LogBudget

    budget = LogBudget(lines=2, window_s=10)
    assert [budget.allow(t) for t in (0, 1, 2, 3)] == [True, True, False, False]
    assert budget.dropped == 2
    assert budget.allow(10.5) and budget.dropped == 0  # a new window (the dropped count logged)


def test_a_transaction_message_is_a_half_and_is_not_mixed_with_others() -> None:
    half = translate.incoming(_msg(message_type=d.TRANSACTION, tag="t"), 1024, 0)
    assert half.transactional and half.properties["TRAN_MSG"] == "true" and half.tags == "t"
    assert not translate.incoming(_msg(), 1024, 0).transactional
    with pytest.raises(Refused) as info:
        translate.batch([_msg(message_type=d.TRANSACTION), _msg()], 1024, 0)
    assert info.value.code == d.BAD_REQUEST


@pytest.mark.parametrize("setting, elsewhere", [(None, True), ("true", True), ("false", False)])
def test_proxy_cold_reads_turns_the_pops_bodies_elsewhere_on_and_off(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, elsewhere: bool
) -> None:
    """proxy.cold_reads (default true): with false every pop asks the
    master for its bodies, whatever the masters' pull.redirect."""
    import argparse

    from consumer.profile import Profile
    from deploy import proxy_main
    from deploy.proxy_backend import ClusterBackend

    monkeypatch.delenv("TAILRACE_PROFILE", raising=False)
    p = argparse.ArgumentParser()
    proxy_main.add_arguments(p)
    sets = ["proxy.namesrv=127.0.0.1:1"] + ([f"proxy.cold_reads={setting}"] if setting else [])
    cfg = proxy_main.load(p.parse_args([x for s in sets for x in ("--set", s)]))
    assert cfg.proxy.cold_reads is elsewhere
    backend = ClusterBackend(["127.0.0.1:1"], Profile.resolve(None), 1000, cold_reads=cfg.proxy.cold_reads)
    try:
        assert backend.pops.bodies_elsewhere is elsewhere
    finally:
        backend.close()
