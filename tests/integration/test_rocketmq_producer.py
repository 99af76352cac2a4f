"""Conformance: RocketMQ 5's official Python client (`rocketmq-python-client`
5.1.2, unmodified, in its own processes: tests/helpers/rmq_client.py)
producing through `tailrace proxy` into a secure cluster started by the
harness, read back with our own consumer from the brokers.

pytest never imports `rocketmq` (it logs under $HOME at import, needs
opentelemetry and warns); raw v2 calls use our generated code."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from consumer import Admin, Profile, PullConsumer, ReceivedMessage
from core.pb.rocketmq.v2 import definition_pb2 as d
from core.pb.rocketmq.v2 import service_pb2 as s
from core.pb.rocketmq.v2 import service_pb2_grpc
from core.rocketmq import routes, translate
from core.security.mqv2 import date_of, header
from deploy.harness import process_group
from deploy.proxy_backend import body_limit
from deploy.waits import holds_for, poll_until, route_of
from tests.helpers.cli import alive, cli
from tests.helpers.rmq_setup import Running, Setup, official

pytestmark = pytest.mark.integration
TOPIC = "orders"
LIMITED = "limited"
LIMITED_SECRET = "limited-secret-0123456789"
STORE_LIMIT = 3 * 1024 * 1024  # the brokers' record limit: not the default, so the proxy must ask for it
# orphan checks after 2 s, again every 3 s (RocketMQ: 6 s, 60 s): the test waits for them
TXN_TIMES = [
    "--set",
    "broker.transaction_check_after_ms=2000",
    "--set",
    "broker.transaction_check_interval_ms=3000",
]


@pytest.fixture(scope="module")
def rmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """Two broker groups (4 queues each), a nameserver and a proxy, TLS and
    accounts on; an extra account that may publish only to `other`."""
    workdir = tmp_path_factory.mktemp("rmq")
    with process_group(workdir / "run") as procs:
        pki = procs.secure()
        with pki.acl_file.open("a") as f:
            f.write(f'[[account]]\naccess_key = "{LIMITED}"\nsecret_key = "{LIMITED_SECRET}"\n')
            f.write('publish = ["other"]\n')
        store_limit = ["--set", f"store.max_message_bytes={STORE_LIMIT}", *TXN_TIMES]
        cluster = procs.cluster(("a", "b"), topic=TOPIC, queues=4, extra=store_limit)
        proxy = procs.proxy(cluster.namesrv)
        home = workdir / "home"
        home.mkdir()
        yield Setup(procs, pki, cluster, proxy, home)
        log = proxy.log_path.read_text()
        assert " ERROR " not in log and "Traceback" not in log, log[-3000:]  # clients came and went cleanly


def run_client(rmq: Setup, spec: dict[str, Any], tz: str = "UTC") -> dict[str, Any]:
    full = {"endpoints": rmq.endpoint, "tls": True, "topic": TOPIC, "ak": "admin", "sk": rmq.pki.admin_secret}
    return official(rmq.home, rmq.pki.ca_file, {**full, **spec}, tz=tz)


def read_back(rmq: Setup, group: str, count: int) -> list[ReceivedMessage]:
    got: list[ReceivedMessage] = []
    profile = rmq.pki.profile_file
    with PullConsumer(namesrv=rmq.cluster.namesrv, group=group, topic=TOPIC, profile=profile) as c:
        poll_until(lambda: got.extend(c.poll(200)) or len(got) >= count, 30, f"{count} messages")
    return got


def stored_total(rmq: Setup) -> int:
    total = 0
    for g in rmq.cluster.groups.values():
        with Admin(g.master.address, profile=rmq.pki.profile_file) as admin:
            total += sum(hi for _, hi in admin.queue_offsets(TOPIC).values())
    return total


def test_a_delay_message_is_stored_in_its_topic_not_before_its_timestamp(rmq: Setup) -> None:
    """The official client sends a DELAY message due a few seconds ahead,
    then a normal one; read from the real topic with our consumer, the
    normal one arrives first and the delayed one not before its time (its
    record's store time, and the moment our consumer first saw it)."""
    due_s = int(time.time()) + 4  # the client takes whole epoch seconds
    messages = [
        {"body": "delay-later", "keys": ["dk"], "properties": {"p": "d"}, "delivery_timestamp": due_s},
        {"body": "delay-now"},
    ]
    out = run_client(rmq, {"mode": "produce", "messages": messages})
    assert all(r["ok"] for r in out["results"]), out
    seen: dict[bytes, tuple[float, ReceivedMessage]] = {}
    profile = rmq.pki.profile_file
    with PullConsumer(namesrv=rmq.cluster.namesrv, group="verify-delay", topic=TOPIC, profile=profile) as c:

        def both() -> bool:
            for m in c.poll(200):
                if m.body.startswith(b"delay-"):
                    seen.setdefault(m.body, (time.time(), m))
            return len(seen) == 2

        poll_until(both, 30, "the normal and the delayed message")
    (now_seen, normal), (later_seen, later) = seen[b"delay-now"], seen[b"delay-later"]
    assert now_seen < due_s and normal.store_ms < due_s * 1000  # the normal one did not wait
    assert later_seen >= due_s and later.store_ms >= due_s * 1000  # never before its timestamp
    assert later.keys == "dk" and later.properties["p"] == "d"
    assert (
        translate.read_back(later.tags, later.keys, later.properties)["delivery_timestamp_ms"] == due_s * 1000
    )
    assert later.properties[translate.MESSAGE_ID] == out["results"][0]["message_id"]


def test_normal_sends_are_stored_with_their_tags_keys_and_properties(rmq: Setup) -> None:
    before = stored_total(rmq)
    messages = [
        {
            "body": f"normal-{i}",
            "tag": f"tag{i % 2}",
            "keys": [f"k{i}", f"order-{i}"],
            "properties": {"p": str(i)},
        }
        for i in range(6)
    ]
    out = run_client(rmq, {"mode": "produce", "messages": messages})
    assert all(r["ok"] for r in out["results"]), out
    ids = [r["message_id"] for r in out["results"]]
    assert len(set(ids)) == 6
    got = read_back(rmq, "verify-normal", before + 6)
    mine = {m.properties[translate.MESSAGE_ID]: m for m in got if m.body.startswith(b"normal-")}
    assert sorted(mine) == sorted(ids)
    for sent, receipt in zip(messages, out["results"], strict=True):
        m = mine[receipt["message_id"]]
        assert m.body.decode() == sent["body"] and m.tags == sent["tag"]
        assert sorted(m.keys.split(" ")) == sorted(sent["keys"])
        assert m.properties["p"] == sent["properties"]["p"] and translate.BORN_HOST in m.properties
        assert m.queue_offset == receipt["offset"]
    assert {m.broker_name for m in mine.values()} == {"a", "b"}  # round robin over both groups


def test_an_official_client_in_shanghai_time_signs_in_unmodified(rmq: Setup) -> None:
    """It signs its local time labelled Z (8 h off UTC): accepted (auth.mqv2_any_timezone)."""
    out = run_client(rmq, {"mode": "produce", "messages": [{"body": "from-shanghai"}]}, tz="Asia/Shanghai")
    assert [r["ok"] for r in out["results"]] == [True], out


def test_fifo_sends_keep_each_groups_order_in_its_queue(rmq: Setup) -> None:
    groups = ["g1", "g2", "g3", "g4"]
    messages = [{"body": f"fifo-{g}-{i}", "group": g} for i in range(5) for g in groups]
    out = run_client(rmq, {"mode": "produce", "messages": messages})
    assert all(r["ok"] for r in out["results"]), out
    got = read_back(rmq, "verify-fifo", stored_total(rmq))
    fifo = [m for m in got if m.body.startswith(b"fifo-")]
    assert len(fifo) == len(messages)
    route = route_of(rmq.cluster.namesrv, TOPIC, profile=rmq.pki.profile_file)
    assert route is not None
    queues = routes.writable(route)
    for g in groups:
        of_group = [m for m in fifo if m.properties[translate.MESSAGE_GROUP] == g]
        assert len({(m.broker_name, m.queue_id) for m in of_group}) == 1  # one queue per group
        expected = routes.fifo_queue(g, queues)
        assert (of_group[0].broker_name, of_group[0].queue_id) == (expected.broker_name, expected.queue_id)
        in_queue_order = sorted(of_group, key=lambda m: m.queue_offset)
        assert [m.body.decode() for m in in_queue_order] == [f"fifo-{g}-{i}" for i in range(5)]
    receipts = [r["queue_id"] for r, m in zip(out["results"], messages, strict=True) if m["group"] == "g1"]
    assert set(receipts) == {routes.fifo_queue("g1", queues).queue_id}  # the client's pick is ours


def _stub(rmq: Setup) -> tuple[grpc.Channel, service_pb2_grpc.MessagingServiceStub]:
    creds = grpc.ssl_channel_credentials(rmq.pki.ca_file.read_bytes())
    channel = grpc.secure_channel(rmq.endpoint, creds)
    return channel, service_pb2_grpc.MessagingServiceStub(channel)  # type: ignore[no-untyped-call]


def _message(body: bytes) -> d.Message:
    m = d.Message(topic=d.Resource(name=TOPIC), body=body)
    m.system_properties.message_id = "01" + "AB" * 16
    m.system_properties.message_type = d.NORMAL
    m.system_properties.body_encoding = d.IDENTITY
    return m


def test_wrong_secrets_and_missing_permissions_are_refused_and_store_nothing(rmq: Setup) -> None:
    before = stored_total(rmq)
    out = run_client(rmq, {"mode": "produce", "sk": "not-the-secret-at-all", "messages": [{"body": "nope"}]})
    assert [r["ok"] for r in out["results"]] == [False], out  # its route query was refused already
    channel, stub = _stub(rmq)
    with channel:
        req = s.SendMessageRequest(messages=[_message(b"forged")])
        now = int(time.time() * 1000)
        wrong = stub.SendMessage(req, metadata=header("admin", "wrong-wrong-wrong", date_of(now)), timeout=5)
        assert wrong.status.code == d.UNAUTHORIZED and wrong.entries[0].status.code == d.UNAUTHORIZED
        stale = stub.SendMessage(
            req, metadata=header("admin", rmq.pki.admin_secret, date_of(now - 20 * 3600_000))
        )
        assert stale.status.code == d.UNAUTHORIZED
        limited = stub.SendMessage(req, metadata=header(LIMITED, LIMITED_SECRET, date_of(now)), timeout=5)
        assert limited.status.code == d.FORBIDDEN
        assert stub.SendMessage(req, timeout=5).status.code == d.UNAUTHORIZED  # anonymous: off
    assert stored_total(rmq) == before


def test_unimplemented_rpcs_answer_not_implemented_at_once(rmq: Setup) -> None:
    channel, stub = _stub(rmq)
    with channel:
        md = header("admin", rmq.pki.admin_secret, date_of(int(time.time() * 1000)))
        t0 = time.monotonic()
        frames = list(stub.PullMessage(s.PullMessageRequest(), metadata=md, timeout=5))
        assert [f.status.code for f in frames] == [d.NOT_IMPLEMENTED]
        for call, req in (
            (stub.UpdateOffset, s.UpdateOffsetRequest()),
            (stub.QueryOffset, s.QueryOffsetRequest()),
        ):
            assert call(req, metadata=md, timeout=5).status.code == d.NOT_IMPLEMENTED
        assert time.monotonic() - t0 < 2


def test_cluster_up_records_rocketmq_endpoints_that_official_clients_use(tmp_path: Path) -> None:
    """The tooling contract: `cluster up` with a proxy in the topology writes
    `rocketmq_endpoints` into cluster.json and the client profile, and a
    script hands them to the official client as they are."""
    d_ = tmp_path / "c"
    r = cli("cluster", "up", "--topology", "local-rocketmq", "--dir", str(d_))
    pids: list[int] = []
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        state = json.loads((d_ / "cluster.json").read_text())
        pids = [p["pid"] for p in state["processes"]]
        endpoints = state["rocketmq_endpoints"]
        assert len(endpoints) == 1 and [p["role"] for p in state["processes"]][-1] == "proxy"
        profile = Profile.load(d_ / "client.toml")
        assert list(profile.rocketmq_endpoints) == endpoints
        with Admin(namesrv=list(profile.namesrv), profile=profile) as admin:
            admin.create_topic(TOPIC, 2)
        home = tmp_path / "home"
        home.mkdir()
        spec = {
            "mode": "produce", "endpoints": ";".join(endpoints), "tls": True, "topic": TOPIC,
            "ak": profile.access_key, "sk": profile.secret_key, "messages": [{"body": "via-launcher"}],
        }  # fmt: skip
        out = official(home, Path(profile.ca_file), spec)
        assert [x["ok"] for x in out["results"]] == [True], out
        st = json.loads(cli("cluster", "status", "--dir", str(d_), "--json").stdout)
        assert all(p["healthy"] for p in st["processes"]), st
    finally:
        down = cli("cluster", "down", "--dir", str(d_))
    assert down.returncode == 0
    assert not any(alive(pid) for pid in pids)


def test_telemetry_answers_settings_with_the_brokers_limit_and_stays_open(rmq: Setup) -> None:
    outbox: queue.Queue[s.TelemetryCommand | None] = queue.Queue()

    def commands() -> Iterator[s.TelemetryCommand]:
        while (c := outbox.get()) is not None:
            yield c

    settings = d.Settings(client_type=d.PRODUCER)
    settings.publishing.max_body_size = 128 * 1024 * 1024
    channel, stub = _stub(rmq)
    with channel:
        md = header("admin", rmq.pki.admin_secret, date_of(int(time.time() * 1000)))
        stream = stub.Telemetry(commands(), metadata=md, timeout=30)
        try:
            for _ in range(2):  # a second exchange on the same stream: it stayed open
                outbox.put(s.TelemetryCommand(settings=settings))
                reply = next(stream)
                assert reply.status.code == d.OK
                assert reply.settings.publishing.max_body_size == body_limit([STORE_LIMIT], 0)
                assert not reply.settings.metric.on
        finally:
            outbox.put(None)
            stream.cancel()


def open_transactions(rmq: Setup) -> int:
    total = 0
    for g in rmq.cluster.groups.values():
        with Admin(g.master.address, profile=rmq.pki.profile_file) as admin:
            total += admin.status()["details"].get("transactions", {}).get("open", 0)
    return total


def test_transactions_commit_roll_back_and_the_servers_check_decides_orphans(rmq: Setup) -> None:
    """The official producer commits one transaction, rolls one back and
    leaves two open; the brokers find the orphans after their check time,
    the proxy asks the producer over its Telemetry stream, and its checker
    commits one and rolls the other back. Read back from the real topic:
    each committed message once (fields kept), the rolled-back ones never."""
    messages = [
        {
            "body": "txn-commit",
            "keys": ["tk"],
            "properties": {"p": "t"},
            "tag": "tt",
            "transaction": "commit",
        },
        {"body": "txn-rollback", "transaction": "rollback"},
        {"body": "txn-orphan-commit", "transaction": "orphan"},
        {"body": "txn-orphan-rollback", "transaction": "orphan"},
    ]
    spec = rmq.spec(
        mode="produce",
        topic=TOPIC,
        messages=messages,
        check_commit=["txn-orphan-commit"],
        until_stdin_closes=True,
    )
    seen: list[ReceivedMessage] = []
    client = Running(rmq.home, rmq.pki.ca_file, spec)
    try:
        profile = rmq.pki.profile_file
        with PullConsumer(namesrv=rmq.cluster.namesrv, group="verify-txn", topic=TOPIC, profile=profile) as c:

            def committed() -> bool:
                seen.extend(m for m in c.poll(200) if m.body.startswith(b"txn-"))
                return {m.body for m in seen} >= {b"txn-commit", b"txn-orphan-commit"}

            poll_until(committed, 40, "the committed and the checked-and-committed message")
            poll_until(
                lambda: open_transactions(rmq) == 0, 20, "every transaction ended (the check's rollback)"
            )

            def clean() -> bool:
                committed()
                return sorted(m.body for m in seen) == [b"txn-commit", b"txn-orphan-commit"]

            holds_for(clean, 1.0, "no rolled-back message nor a second copy arrives")
    finally:
        out = client.stop()
    assert all(r["ok"] and r["transaction_id"] for r in out["results"]), out
    checked = sorted({c["body"] for c in out["checked"]})
    assert checked == ["txn-orphan-commit", "txn-orphan-rollback"], (
        out
    )  # the server's checks reached the checker
    ids = {r["message_id"] for r in out["results"][2:]}
    assert {c["message_id"] for c in out["checked"]} == ids
    assert sorted(m.body for m in seen) == [b"txn-commit", b"txn-orphan-commit"]  # each once, no rollback
    first = next(m for m in seen if m.body == b"txn-commit")
    assert (first.tags, first.keys, first.properties["p"]) == ("tt", "tk", "t")
    assert first.properties[translate.MESSAGE_ID] == out["results"][0]["message_id"]
