"""Conformance: RocketMQ 5's official Python client (`rocketmq-python-client`
5.1.2, unmodified, in its own processes: tests/helpers/rmq_client.py)
consuming through `tailrace proxy` from a secure cluster started by the
harness: a SimpleConsumer receives, acks, changes an invisible duration
and gets a message back after its invisible duration; a PushConsumer
consumes and acks, and a message its handler keeps failing is retried
(its attempts counted) until the brokers store it in `%DLQ%<group>`.

One cluster for the module: two broker groups of 2 queues,
`broker.pop_max_attempts = 3` (a quick dead letter) and a proxy whose
push consumers' messages stay invisible 3 s (`proxy.auto_renew_invisible_ms`),
so a push delivery that was not acked would come back within the test."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from consumer import Admin, PullConsumer, ReceivedMessage
from core.errors import TailraceError
from core.pb.rocketmq.v2 import definition_pb2 as d
from core.pb.rocketmq.v2 import service_pb2 as s
from core.pb.rocketmq.v2 import service_pb2_grpc
from core.rocketmq import translate
from core.security.mqv2 import date_of, header
from deploy.harness import process_group
from deploy.waits import poll_until, wait_routed
from tests.helpers.rmq_setup import Running, Setup, official

pytestmark = pytest.mark.integration
SIMPLE = "simple-t"
PUSH = "push-t"
MAX_ATTEMPTS = 3


@pytest.fixture(scope="module")
def rmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("rmqc")
    with process_group(workdir / "run") as procs:
        pki = procs.secure()
        pops = ["--set", f"broker.pop_max_attempts={MAX_ATTEMPTS}"]
        cluster = procs.cluster(("a", "b"), topic=SIMPLE, queues=2, extra=pops)
        with Admin(namesrv=cluster.namesrv, profile=pki.profile_file) as admin:
            admin.create_topic(PUSH, 2)
        wait_routed(cluster.namesrv, PUSH, groups=("a", "b"), brokers=[0], profile=pki.profile_file)
        proxy = procs.proxy(cluster.namesrv, extra=["--set", "proxy.auto_renew_invisible_ms=3000"])
        home = workdir / "home"
        home.mkdir()
        yield Setup(procs, pki, cluster, proxy, home)
        log = proxy.log_path.read_text()
        assert " ERROR " not in log and "Traceback" not in log, log[-3000:]


def run(rmq: Setup, **spec: Any) -> dict[str, Any]:
    return official(rmq.home, rmq.pki.ca_file, rmq.spec(**spec))


def produce(rmq: Setup, topic: str, messages: list[dict[str, Any]]) -> list[str]:
    out = run(rmq, mode="produce", topic=topic, messages=messages)
    assert all(r["ok"] for r in out["results"]), out
    return [r["message_id"] for r in out["results"]]


def by_id(deliveries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for x in deliveries:
        out[x["id"]].append(x)
    return out


def test_simple_consumer_receives_acks_changes_and_gets_unacked_messages_back(rmq: Setup) -> None:
    messages = [
        {"body": f"simple-{i}", "tag": f"t{i % 2}", "keys": [f"k{i}", f"o-{i}"], "properties": {"p": str(i)}}
        for i in range(6)
    ]
    ids = produce(rmq, SIMPLE, messages)
    out = run(rmq, mode="simple", topic=SIMPLE, group="simple-g", expect=6, invisible_s=3, change_s=60)
    assert out["errors"] == "", out["errors"]
    assert out["acked"] == sorted(ids)  # every message received and acknowledged
    got = by_id(out["deliveries"])
    for sent, message_id in zip(messages, ids, strict=True):
        last = got[message_id][-1]  # exactly as sent
        assert (last["body"], last["tag"], last["keys"]) == (sent["body"], sent["tag"], sorted(sent["keys"]))
        assert last["properties"] == sent["properties"] and not last["corrupted"]
    held = got[out["held_back"]]  # left unacked: back after its invisible duration, its attempt counted
    assert [x["attempt"] for x in held] == [1, 2]
    assert held[1]["at"] - held[0]["at"] >= 2.5
    for message_id in set(ids) - {out["held_back"]}:
        assert [x["attempt"] for x in got[message_id]] == [1]  # acked at once: never back
    assert "INVALID_RECEIPT_HANDLE" in out["old_ack_error"] or "BadRequest" in out["old_ack_error"]
    # a tag filter: another group subscribed to t1 gets the odd ones only (the rest count as consumed)
    tagged = run(rmq, mode="simple", topic=SIMPLE, group="tagged-g", filter="t1", expect=3, plain=True)
    assert tagged["errors"] == "" and tagged["acked"] == sorted(ids[1::2]), tagged
    assert {x["tag"] for x in tagged["deliveries"]} == {"t1"}


def dead_letters(rmq: Setup, group: str) -> list[ReceivedMessage]:
    """What the brokers stored in `%DLQ%<group>`."""
    out: list[ReceivedMessage] = []
    for g in rmq.cluster.groups.values():
        address, topic = g.master.address, f"%DLQ%{group}"
        try:
            with Admin(address, profile=rmq.pki.profile_file) as admin:
                stored = sum(hi for _, hi in admin.queue_offsets(topic).values())
        except TailraceError:  # not made yet
            continue
        if stored:
            out.extend(read_all(address, topic, stored, rmq))
    return out


def read_all(address: str, topic: str, count: int, rmq: Setup) -> list[ReceivedMessage]:
    got: list[ReceivedMessage] = []
    with PullConsumer(address, "dlq-reader", topic, profile=rmq.pki.profile_file) as c:

        def enough() -> bool:
            got.extend(c.poll(200))
            return len(got) >= count

        poll_until(enough, 10, f"{count} from {topic}")
    return got


def test_push_consumer_acks_and_a_failing_message_ends_in_the_dead_letter_queue(rmq: Setup) -> None:
    bodies = [f"push-ok-{i}" for i in range(4)] + ["poison"]
    ids = produce(rmq, PUSH, [{"body": b} for b in bodies])
    spec = rmq.spec(mode="push", topic=PUSH, group="push-g", fail=["poison"])
    client = Running(rmq.home, rmq.pki.ca_file, spec)
    dead: list[ReceivedMessage] = []

    def dead_lettered() -> bool:
        dead[:] = dead_letters(rmq, "push-g")
        return bool(dead)

    try:
        poll_until(dead_lettered, 60, "the poison in the DLQ")
    finally:
        out = client.stop()
    got = by_id(out["deliveries"])
    assert sorted(got) == sorted(ids)
    poison = ids[-1]
    assert [x["attempt"] for x in got[poison]] == list(range(1, MAX_ATTEMPTS + 1))  # retried, counted
    for message_id in ids[:-1]:  # acked: not delivered again although unacked ones are back within 3 s
        assert [x["attempt"] for x in got[message_id]] == [1]
    assert [m.body for m in dead] == [b"poison"]
    assert dead[0].properties[translate.MESSAGE_ID] == poison


def test_a_forwarded_message_is_dead_lettered_once_and_settled(rmq: Setup) -> None:
    """ForwardMessageToDeadLetterQueue (a FIFO push consumer's last resort),
    in raw v2 calls: stored in `%DLQ%<group>` and acked, so neither a second
    forward nor an ack of the same handle does anything."""
    topic, group = "fwd-t", "fwd-g"
    with Admin(namesrv=rmq.cluster.namesrv, profile=rmq.pki.profile_file) as admin:
        admin.create_topic(topic, 1)
    wait_routed(rmq.cluster.namesrv, topic, groups=("a", "b"), brokers=[0], profile=rmq.pki.profile_file)
    (message_id,) = produce(rmq, topic, [{"body": "to-the-dlq"}])
    creds = grpc.ssl_channel_credentials(rmq.pki.ca_file.read_bytes())
    channel = grpc.secure_channel(rmq.endpoint, creds)
    stub = service_pb2_grpc.MessagingServiceStub(channel)  # type: ignore[no-untyped-call]

    def md() -> Any:
        return header("admin", rmq.pki.admin_secret, date_of(int(time.time() * 1000)))

    def receive(broker: str) -> list[d.Message]:
        req = s.ReceiveMessageRequest(group=d.Resource(name=group), batch_size=4)
        req.message_queue.topic.name = topic
        req.message_queue.id = 0
        req.message_queue.broker.name = broker
        req.invisible_duration.FromSeconds(30)
        req.long_polling_timeout.FromSeconds(5)
        frames = list(stub.ReceiveMessage(req, metadata=md(), timeout=10))
        return [f.message for f in frames if f.HasField("message")]

    try:
        got: list[d.Message] = []
        poll_until(lambda: got.extend(receive("a") + receive("b")) or got, 30, "the message received")
        (m,) = got
        assert m.system_properties.message_id == message_id
        fwd = s.ForwardMessageToDeadLetterQueueRequest(
            group=d.Resource(name=group), topic=d.Resource(name=topic), message_id=message_id,
            receipt_handle=m.system_properties.receipt_handle, delivery_attempt=1, max_delivery_attempts=1,
        )  # fmt: skip
        assert stub.ForwardMessageToDeadLetterQueue(fwd, metadata=md(), timeout=10).status.code == d.OK
        again = stub.ForwardMessageToDeadLetterQueue(fwd, metadata=md(), timeout=10)
        assert again.status.code == d.INVALID_RECEIPT_HANDLE  # settled: not stored twice
        ack = s.AckMessageRequest(group=d.Resource(name=group), topic=d.Resource(name=topic))
        ack.entries.add(message_id=message_id, receipt_handle=m.system_properties.receipt_handle)
        assert (
            stub.AckMessage(ack, metadata=md(), timeout=10).entries[0].status.code == d.INVALID_RECEIPT_HANDLE
        )
    finally:
        channel.close()
    dead: list[ReceivedMessage] = []
    poll_until(lambda: dead.extend(dead_letters(rmq, group)) or dead, 10, "the forwarded message in the DLQ")
    assert [x.body for x in dead] == [b"to-the-dlq"]
    assert dead[0].properties[translate.MESSAGE_ID] == message_id
