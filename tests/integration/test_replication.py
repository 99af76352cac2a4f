"""Master and slaves as real processes: identical logs, restarts, sync mode."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest

from consumer import Admin, Producer, PullConsumer, ReceivedMessage
from consumer.connection import BrokerConnection
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from core.record import iter_records
from core.route import TopicRoute
from deploy.harness import ProcessGroup, TailraceProcess
from deploy.waits import holds_for, max_offset, poll_until, wait_max_offset, wait_routed

pytestmark = pytest.mark.integration
SEG = 4 * 1024 * 1024  # small segments: 100,000 messages span many
SECRET = ["--set", "replication.secret=test-secret", "--set", "store.max_message_bytes=1048576"]


def log_digest(p: TailraceProcess, upto: int) -> str:
    """sha256 of the CommitLog bytes [0, upto) straight from the segment files."""
    d = Path(p.info["data_dir"]) / "commitlog"
    h = hashlib.sha256()
    pos = 0
    while pos < upto:
        seg = pos - pos % SEG
        with open(d / f"{seg:020d}", "rb") as f:
            f.seek(pos - seg)
            n = min(upto, seg + SEG) - pos
            h.update(f.read(n))
        pos += n
    return h.hexdigest()


def all_messages(address: str, topic: str, queues: int) -> list[bytes]:
    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = broker_pb2_grpc.BrokerStub(channel)
    out: list[bytes] = []
    for q in range(queues):
        off = 0
        while True:
            r = stub.Pull(
                pb.PullRequest(group="check", topic=topic, queue_id=q, queue_offset=off, max_messages=1024,
                               max_bytes=4 << 20), timeout=10,
            )  # fmt: skip
            if r.count == 0:
                break
            out += [m.body for m in iter_records(r.records)]
            off = r.next_queue_offset
    channel.close()
    return out


def produce(address: str, n: int, start: int = 0, topic: str = "R") -> None:
    with Producer(address) as prod:
        for i in range(start, start + n, 500):
            prod.send_batch(topic, [f"{j}:".encode() + b"x" * 200 for j in range(i, min(start + n, i + 500))])


def master_and_slaves(
    procs: ProcessGroup, slaves: int, mode: str = "async", extra: Sequence[str] = ()
) -> tuple[TailraceProcess, list[TailraceProcess]]:
    rs = procs.replica_set(
        "m", slaves, extra=SECRET, master_extra=["--replication", mode, *extra], segment_bytes=SEG
    )
    return rs.master, rs.slaves


def test_two_slaves_hold_byte_identical_logs(procs: ProcessGroup) -> None:
    m, (s1, s2) = master_and_slaves(procs, 2)
    produce(m.address, 100_000)
    end = max_offset(m)
    assert end > 5 * SEG
    wait_max_offset([s1, s2], end, what="slaves caught up")
    with Admin(m.address) as admin:
        st = admin.status()["details"]["replication"]
    assert sorted(st["in_sync"]) == [1, 2] and all(s["acked"] == end for s in st["slaves"])
    master_msgs = all_messages(m.address, "R", 8)
    assert len(master_msgs) == 100_000
    for s in (s1, s2):  # each slave's own ConsumeQueues serve the same messages
        assert all_messages(s.address, "R", 8) == master_msgs
    for p in (m, s1, s2):
        assert p.stop() == 0
    assert log_digest(s1, end) == log_digest(m, end) == log_digest(s2, end)


def test_restarts_and_a_new_slave_converge(procs: ProcessGroup) -> None:
    m, (s1,) = master_and_slaves(procs, 1)
    produce(m.address, 20_000)
    s1.kill()  # mid-stream: the master keeps taking writes
    produce(m.address, 20_000, start=20_000)
    s1.restart()
    m.restart()  # the slave reconnects and resumes from its own end
    produce(m.address, 20_000, start=40_000)
    late = procs.slave("s9", m, broker_id=9, extra=SECRET, segment_bytes=SEG)  # empty, master has segments
    end = max_offset(m)
    assert end > 3 * SEG
    wait_max_offset([s1, late], end, 60, "all converge")
    assert sorted(all_messages(late.address, "R", 8)) == sorted(all_messages(m.address, "R", 8))
    for p in (m, s1, late):
        assert p.stop() == 0
    assert log_digest(s1, end) == log_digest(m, end) == log_digest(late, end)


def test_a_stranger_is_refused(procs: ProcessGroup) -> None:
    m, _ = master_and_slaves(procs, 0)
    bad = procs.broker("intruder", extra=["--role", "slave", "--broker-id", "1", "--master", m.address,
                                          "--set", "replication.secret=wrong"], group="m")  # fmt: skip
    produce(m.address, 1000)
    poll_until(lambda: "secret" in bad.log_tail(), 10, "the refusal to show in the slave's log")
    assert max_offset(bad) == 0
    with Admin(m.address) as admin:
        assert admin.status()["details"]["replication"]["slaves"] == []


def test_sync_mode_without_its_slave_never_answers_ok(procs: ProcessGroup) -> None:
    m, (s1,) = master_and_slaves(procs, 1, "sync", ["--set", "replication.sync_timeout_ms=500",
                                                    "--set", "replication.max_ack_age_ms=1000"])  # fmt: skip
    # retry_timeout_s=0: the broker's answers as they are (producers retry
    # SLAVE_NOT_AVAILABLE within their retry window by default)
    with Producer(m.address, retry_timeout_s=0) as prod:
        assert prod.send("R", b"with slave").status == "SEND_OK"
        s1.kill()
        statuses = []
        t0 = time.monotonic()
        for i in range(10):
            t = time.monotonic()
            statuses.append(prod.send("R", f"alone {i}".encode()).status)
            assert time.monotonic() - t < 0.5 + 0.5  # sync_timeout_ms plus a margin
        assert set(statuses) <= {"SLAVE_TIMEOUT", "SLAVE_NOT_AVAILABLE"}, statuses
        assert "SLAVE_NOT_AVAILABLE" in statuses  # once the slave is out of the in-sync set
        assert time.monotonic() - t0 < 10


def test_async_mode_without_its_slave_keeps_answering_ok(procs: ProcessGroup) -> None:
    m, (s1,) = master_and_slaves(procs, 1, "async")
    s1.kill()
    with Producer(m.address) as prod:
        assert {prod.send("R", f"{i}".encode()).status for i in range(20)} == {"SEND_OK"}


def test_consumers_never_read_past_the_confirmed_offset(procs: ProcessGroup) -> None:
    m, (s1,) = master_and_slaves(procs, 1, "sync", ["--set", "replication.sync_timeout_ms=300"])
    produce(m.address, 1000)
    before = len(all_messages(m.address, "R", 8))
    assert before == 1000
    os.kill(s1.pid, signal.SIGSTOP)  # the slave stops acking: nothing new is confirmed
    try:
        with Producer(m.address) as prod:
            r = prod.send_batch("R", [b"unconfirmed"] * 10, queue_id=0)
        assert r[0].status == "SLAVE_TIMEOUT"  # stored on the master only
        with Admin(m.address) as admin:  # (the stopped slave cannot answer a Status call)
            st = admin.status()
        assert st["details"]["replication"]["slaves"][0]["acked"] < st["max_offset"]
        assert st["details"]["replication"]["confirmed"] < st["max_offset"]
        assert len(all_messages(m.address, "R", 8)) == before  # invisible on the master
    finally:
        os.kill(s1.pid, signal.SIGCONT)
    poll_until(lambda: len(all_messages(m.address, "R", 8)) == before + 10, 20, "confirmed after resume")
    # the slave learns the new confirmed offset with the next chunk or heartbeat
    poll_until(lambda: len(all_messages(s1.address, "R", 8)) == before + 10, 10, "confirmed on the slave")


def test_slave_refuses_writes_naming_its_master(procs: ProcessGroup) -> None:
    m, (s1,) = master_and_slaves(procs, 1)
    channel = grpc.insecure_channel(s1.address)
    stub = broker_pb2_grpc.BrokerStub(channel)
    r = stub.Send(pb.SendRequest(topic="R", queue_id=0, message=pb.Message(body=b"x")), timeout=5)
    channel.close()
    assert r.status == pb.NOT_MASTER and r.master_address == m.address
    assert max_offset(s1) == 0


def test_topics_and_committed_offsets_reach_the_slave(procs: ProcessGroup) -> None:
    m, (s1,) = master_and_slaves(procs, 1)
    with Admin(m.address) as admin:
        admin.create_topic("defined", 5)
    with Producer(m.address) as prod:  # a commit names an offset the queue holds (at most its end)
        for q in range(5):
            prod.send_batch("defined", [f"{q}:{i}".encode() for i in range(20)], queue_id=q)
    channel = grpc.insecure_channel(m.address)
    stub = broker_pb2_grpc.BrokerStub(channel)
    for q, off in ((0, 7), (3, 2), (0, 9)):  # the later commit of queue 0 wins everywhere
        stub.CommitOffset(
            pb.CommitOffsetRequest(group="g1", topic="defined", queue_id=q, offset=off), timeout=5
        )
    channel.close()

    def on_slave() -> tuple[dict[str, int], int, int]:
        ch = grpc.insecure_channel(s1.address)
        st = broker_pb2_grpc.BrokerStub(ch)
        try:
            topics = {t.name: t.queues for t in st.ListTopics(pb.ListTopicsRequest(), timeout=5).topics}
            q0 = st.QueryOffset(pb.QueryOffsetRequest(group="g1", topic="defined", queue_id=0), timeout=5)
            q3 = st.QueryOffset(pb.QueryOffsetRequest(group="g1", topic="defined", queue_id=3), timeout=5)
            return topics, q0.offset, q3.offset
        except grpc.RpcError:
            return {}, -1, -1
        finally:
            ch.close()

    poll_until(lambda: on_slave() == ({"defined": 5}, 9, 2), 10, "topic and offsets on the slave")
    s1.restart()  # applied state survives a restart (and is replayed from the log if needed)
    assert on_slave() == ({"defined": 5}, 9, 2)


def test_slave_registers_with_the_nameserver_under_its_id(procs: ProcessGroup) -> None:
    c = procs.cluster(("m",), slaves=1, extra=SECRET, segment_bytes=SEG)
    with Admin(c.groups["m"].master.address) as admin:
        admin.create_topic("R", 2)

    def master_and_slave(route: TopicRoute) -> bool:
        brokers = [(b.broker_id, b.role) for g in route.groups for b in g.brokers]
        return brokers == [(0, "master"), (1, "slave")]

    wait_routed(c.namesrv, "R", check=master_and_slave, timeout_s=10, what="master and slave routed")


def test_an_idle_sync_pair_stays_in_sync(procs: ProcessGroup) -> None:
    m, (_s1,) = master_and_slaves(
        procs, 1, "sync", ["--set", "replication.max_ack_age_ms=600", "--set", "replication.heartbeat_ms=100"]
    )
    with Producer(m.address) as prod:
        assert prod.send("R", b"first").status == "SEND_OK"
        with Admin(m.address) as admin:  # idle for more than three ack ages: heartbeats keep it in sync
            in_sync = lambda: admin.status()["details"]["replication"]["in_sync"]  # noqa: E731
            holds_for(lambda: in_sync() == [1], 2.0, "the slave in sync")
        assert prod.send("R", b"after idling").status == "SEND_OK"
    assert len(all_messages(m.address, "R", 8)) == 2


def test_retry_and_dead_letter_topics_replicate(procs: ProcessGroup) -> None:
    """A message sent back by a consumer travels through the schedule and the
    retry topic into the dead-letter topic on the master: the slave holds the
    same topics and the same dead letter."""
    m, (s1,) = master_and_slaves(procs, 1, "sync", ["--set", 'broker.retry_delays="100ms"'])
    with Producer(m.address) as prod:
        prod.send("R", b"poison", keys="k1")
    conn = BrokerConnection(m.address)
    try:
        props: dict[str, str] = {}
        for attempt in range(3):  # max_reconsume=1: one redelivery, then the dead-letter topic
            msg = pb.Message(body=b"poison", properties=props)
            req = pb.SendBackRequest(group="g", topic="R", message=msg, max_reconsume=1)
            r = conn.call(conn.stub.SendBack, req)
            if r.destination.startswith("%DLQ%"):
                break
            assert attempt == 0 and r.destination == "%SCHEDULE%"
            props = {"RECONSUME_TIMES": str(r.attempts)}
        assert r.destination == "%DLQ%g" and r.attempts == 2
    finally:
        conn.close()
    with Admin(m.address) as admin:
        poll_until(
            lambda: "%RETRY%g" in admin.list_topics() and admin.queue_offsets("%RETRY%g")[0][1] == 1,
            10,
            "the scheduler moving it",
        )
    for p in (m, s1):
        with Admin(p.address) as admin:
            poll_until(lambda a=admin: "%DLQ%g" in a.list_topics(), 10, f"the dead-letter topic on {p.name}")
            assert admin.queue_offsets("%DLQ%g")[0] == (0, 1)
            assert admin.queue_offsets("%RETRY%g")[0] == (0, 1)
    c = PullConsumer(s1.address, "reader", "%DLQ%g", auto_commit_interval_ms=0)  # from the slave itself
    got: list[ReceivedMessage] = []

    def polled() -> bool:
        got.extend(c.poll(200))
        return bool(got)

    try:
        poll_until(polled, 10, "the dead letter on the slave")
    finally:
        c.close(commit=False)  # a slave takes no commits
    assert got[0].body == b"poison" and got[0].properties["RECONSUME_TIMES"] == "2"
    assert got[0].properties["ORIGIN_TOPIC"] == "R"
