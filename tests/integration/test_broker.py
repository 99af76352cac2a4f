"""A real broker process on port 0, driven through the client library and CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import psutil
import pytest

from consumer import Admin, Producer, PullConsumer
from consumer.producer import OutgoingMessage
from core.errors import (
    InvalidQueueError,
    MessageTooLargeError,
)
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.pb.tailrace.v1 import broker_pb2_grpc
from core.record import iter_records
from deploy.harness import ProcessGroup
from deploy.waits import poll_until, wait_warm
from tests.helpers.cli import ROOT, cli

pytestmark = pytest.mark.integration


def read_log(path: Path) -> list[dict[str, object]]:
    """Deliveries (or sends) of a verifiable log; the consume log's commit lines are skipped."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in lines if "commit" not in e]


def test_produce_10k_consume_10k_identical(procs: ProcessGroup, tmp_path: Path) -> None:
    b = procs.broker("b")
    plog, clog = tmp_path / "produce.jsonl", tmp_path / "consume.jsonl"
    p = cli("produce", "--broker", b.address, "--topic", "T", "--count", "10000", "--size", "512",
            "--batch", "100", "--log", str(plog), "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    ps = json.loads(p.stdout)
    assert (ps["ok"], ps["failed"]) == (10000, 0)
    c = cli("consume", "--broker", b.address, "--group", "g", "--topic", "T", "--count", "10000",
            "--timeout-ms", "30000", "--log", str(clog), "--json")  # fmt: skip
    assert c.returncode == 0, c.stderr
    cs = json.loads(c.stdout)
    assert (cs["received"], cs["unique"], cs["duplicates"]) == (10000, 10000, 0)
    assert cs["served_by"] == {"0": 10000}
    produced = {(e["seq"], e["queue"], e["offset"]) for e in read_log(plog)}
    consumed = {(e["seq"], e["queue"], e["offset"]) for e in read_log(clog)}
    assert len(produced) == 10000 and produced == consumed


def test_message_ids_are_unique_and_locate_the_message(procs: ProcessGroup) -> None:
    b = procs.broker("b")
    with Producer(b.address) as prod:
        receipts = [prod.send("T", f"m{i}".encode(), queue_id=i % 2) for i in range(20)]
        receipts += prod.send_batch("T", [b"x", b"y"], queue_id=1)
    ids = [r.message_id for r in receipts]
    assert len(set(ids)) == len(ids)
    for r in receipts:
        name, _, hex_off = r.message_id.partition("@")
        assert name == "b" and int(hex_off, 16) == r.physical_offset
        assert r.status == "SEND_OK" and r.served_by == 0


def test_kill9_during_produce_loses_no_acknowledged_message(procs: ProcessGroup, tmp_path: Path) -> None:
    b = procs.broker("b", flush="sync")
    with Admin(b.address) as admin:
        admin.create_topic("K", 4)
    # a consumer group commits a position before the crash
    with Producer(b.address) as prod:
        prod.send_batch("K", [f"pre-{i}".encode() for i in range(10)], queue_id=0)
    with PullConsumer(b.address, "g1", "K") as cons:
        got = []
        poll_until(lambda: got.extend(cons.poll(200)) or len(got) >= 10, 30, "pre messages")
        cons.commit()
        committed = cons.positions()
    assert committed[0] == 10
    plog = tmp_path / "produce.jsonl"  # what it acknowledged: its output is not read
    producer = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "produce", "--broker", b.address, "--topic", "K",
         "--count", "1000000", "--batch", "50", "--size", "200", "--log", str(plog), "--json"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        poll_until(lambda: plog.exists() and plog.stat().st_size > 200_000, 60, "acks")
        b.kill()
        producer.kill()  # its log holds every acknowledged batch (flushed per batch)
        producer.wait(60)
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait()
    acked = {e["seq"] for e in read_log(plog)}
    assert len(acked) >= 1000
    b.restart()
    with PullConsumer(b.address, "verify", "K") as cons:
        seen: set[int] = set()
        deadline = time.monotonic() + 60
        while not acked <= seen and time.monotonic() < deadline:
            for m in cons.poll(500):
                if not m.body.startswith(b"pre-"):
                    seen.add(int(m.body.split(b":")[1]))
    assert acked <= seen, f"{len(acked - seen)} acknowledged messages missing"
    with PullConsumer(b.address, "g1", "K") as again:  # committed offsets survived
        assert again.position(0) == 10


def held_pulls(admin: Admin) -> int:
    return int(admin.status()["details"]["waiting_pulls"])


def test_long_poll_delivers_within_100ms_and_empty_pull_waits(procs: ProcessGroup) -> None:
    b = procs.broker("b")
    with Admin(b.address) as admin:
        admin.create_topic("L", 1)
    arrived: list[float] = []
    admin = Admin(b.address)
    with admin, PullConsumer(b.address, "g", "L", long_poll_ms=10_000) as cons:
        cons.poll(50)  # the long poll is now held by the broker

        def wait_for_message() -> None:
            while not arrived:
                if cons.poll(5000):
                    arrived.append(time.monotonic())

        t = threading.Thread(target=wait_for_message)
        t.start()
        poll_until(lambda: held_pulls(admin) == 1, 10, "the pull held by the broker")
        with Producer(b.address) as prod:
            sent = time.monotonic()
            prod.send("L", b"wake up", queue_id=0)
        t.join(10)
    assert arrived, "message never arrived"
    assert arrived[0] - sent < 0.1, f"long poll took {arrived[0] - sent:.3f}s"

    channel = grpc.insecure_channel(b.address)
    stub = broker_pb2_grpc.BrokerStub(channel)
    req = pb.PullRequest(group="g", topic="L", queue_id=0, queue_offset=1, max_wait_ms=400)
    t0 = time.monotonic()
    resp = stub.Pull(req, timeout=10)
    waited = time.monotonic() - t0
    assert resp.status == pb.NO_NEW_MSG and resp.count == 0
    assert 0.4 <= waited < 2.0, waited

    # ten held pulls cost the broker no CPU while they wait (once it has
    # finished pre-warming its segments, which is real kernel work)
    wait_warm(b, timeout_s=30)
    proc = psutil.Process(b.pid)
    futures = [
        stub.Pull.future(
            pb.PullRequest(group="g", topic="L", queue_id=0, queue_offset=1, max_wait_ms=1500),
            timeout=10,
        )
        for _ in range(10)
    ]
    with Admin(b.address) as admin:
        poll_until(lambda: held_pulls(admin) == 10, 10, "the ten pulls held by the broker")
    cpu0 = sum(proc.cpu_times()[:2])
    time.sleep(1.0)  # the measured window
    cpu1 = sum(proc.cpu_times()[:2])
    for f in futures:
        assert f.result().status == pb.NO_NEW_MSG
    channel.close()
    assert cpu1 - cpu0 < 0.05, f"held pulls used {cpu1 - cpu0:.3f}s of CPU in 1s"


def test_tag_filtering_on_broker_and_client(procs: ProcessGroup) -> None:
    b = procs.broker("b")
    with Producer(b.address) as prod:
        msgs = [OutgoingMessage(f"{i}".encode(), tags="A" if i % 3 == 0 else "B") for i in range(30)]
        prod.send_batch("G", msgs, queue_id=0)
    channel = grpc.insecure_channel(b.address)
    stub = broker_pb2_grpc.BrokerStub(channel)
    resp = stub.Pull(
        pb.PullRequest(group="g", topic="G", queue_id=0, max_messages=100, subscription="A"),
        timeout=10,
    )
    channel.close()
    assert resp.count == 10  # filtered on the broker: B records never left it
    assert {r.tags for r in iter_records(resp.records)} == {"A"}
    with PullConsumer(b.address, "g", "G", subscription="A || C") as cons:
        got = []
        poll_until(lambda: got.extend(cons.poll(200)) or len(got) >= 10, 30, "tagged")
    assert sorted(int(m.body) for m in got) == list(range(0, 30, 3))


def test_start_positions_and_commit_resume(procs: ProcessGroup) -> None:
    b = procs.broker("b")
    with Admin(b.address) as admin:
        admin.create_topic("S", 2)
    with Producer(b.address) as prod:
        for q in (0, 1):
            prod.send_batch("S", [f"old-{q}-{i}".encode() for i in range(50)], queue_id=q)
    with PullConsumer(b.address, "late", "S", start="last") as late:
        assert late.positions() == {0: 50, 1: 50}
        assert late.poll(300) == []
        with Producer(b.address) as prod:
            prod.send("S", b"new", queue_id=1)
        got = []
        poll_until(lambda: got.extend(late.poll(200)) or len(got) >= 1, 30, "new message")
        assert [m.body for m in got] == [b"new"]
    # commit part-way, resume from there
    with PullConsumer(b.address, "g", "S", max_messages=10, auto_commit_interval_ms=0) as first:
        batch: list[object] = []
        poll_until(lambda: batch.extend(first.poll(200)) or len(batch) >= 10, 30, "batch")
        polled = first.positions()
    # closing committed what was polled, no more and no less
    assert sum(polled.values()) == len(batch) and 10 <= len(batch) < 101
    with PullConsumer(b.address, "g", "S") as resumed:
        assert resumed.positions() == polled
        got: list[object] = []
        poll_until(lambda: got.extend(resumed.poll(200)) or len(got) + len(batch) >= 101, 30, "rest")
    assert len(got) + len(batch) == 101  # nothing skipped, nothing twice


def test_sigterm_stops_cleanly_and_restart_is_clean(procs: ProcessGroup) -> None:
    b = procs.broker("b")
    with Producer(b.address) as prod:
        prod.send_batch("T", [b"a", b"b", b"c"], queue_id=0)
    assert b.stop() == 0
    b.restart()
    with Admin(b.address) as admin:
        st = admin.status()
    assert st["details"]["recovery"]["clean"] is True
    assert st["role"] == "master" and st["broker_name"] == "b"
    with PullConsumer(b.address, "g", "T") as cons:
        got = []
        poll_until(lambda: got.extend(cons.poll(200)) or len(got) >= 3, 30, "messages")
    assert [m.body for m in got] == [b"a", b"b", b"c"]


def test_bad_config_is_refused_naming_the_key(tmp_path: Path) -> None:
    r = cli("broker", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path), "--set",
            "store.flush=sometimes")  # fmt: skip
    assert r.returncode == 2 and "store.flush" in r.stdout + r.stderr
    cfg = tmp_path / "b.toml"
    cfg.write_text('[broker]\nlisten = "127.0.0.1:0"\nno_such_key = 1\n')
    r = cli("broker", "--config", str(cfg))
    assert r.returncode == 2 and "broker.no_such_key" in r.stdout + r.stderr


def test_auto_create_only_for_a_batch_that_is_accepted(procs: ProcessGroup) -> None:
    b = procs.broker("b", extra=["--set", "store.max_message_bytes=65536"])
    with Producer(b.address) as prod:
        with pytest.raises(InvalidQueueError):
            prod.send("fresh", b"x", queue_id=99)
        with pytest.raises(MessageTooLargeError):
            prod.send("fresh2", b"x" * 100_000)
        with Admin(b.address) as admin:
            assert admin.list_topics() == {}
            assert admin.status()["max_offset"] == 0
        assert prod.send("fresh", b"x", queue_id=3).queue_id == 3
    with Admin(b.address) as admin:
        assert admin.list_topics() == {"fresh": 8}


def test_group_membership_is_per_topic(procs: ProcessGroup) -> None:
    b = procs.broker("b")
    with Admin(b.address) as admin:
        admin.create_topic("A", 4)
        admin.create_topic("B", 4)
    with (
        PullConsumer(b.address, "g", "A", heartbeat_ms=200) as ca,
        PullConsumer(b.address, "g", "B", heartbeat_ms=200) as cb,
    ):
        # a few heartbeats each, both registered: neither may see the other as a co-member
        start = (ca.membership.answered, cb.membership.answered)
        poll_until(
            lambda: ca.membership.answered >= start[0] + 3 and cb.membership.answered >= start[1] + 3,
            10,
            "three more heartbeats answered for each consumer",
        )
        ca.poll(50)
        cb.poll(50)
        assert ca.membership.members == [ca.client_id] and len(ca.assignment) == 4
        assert cb.membership.members == [cb.client_id] and len(cb.assignment) == 4


def test_held_pulls_never_take_every_server_thread(procs: ProcessGroup) -> None:
    b = procs.broker("b", extra=["--set", "server.max_workers=4", "--set", "pull.max_held_pulls=2"])
    with Admin(b.address) as admin:
        admin.create_topic("H", 8)
    channel = grpc.insecure_channel(b.address)
    stub = broker_pb2_grpc.BrokerStub(channel)
    held = [
        stub.Pull.future(
            pb.PullRequest(group="g", topic="H", queue_id=q, queue_offset=0, max_wait_ms=5000), timeout=10
        )
        for q in range(6)
    ]
    try:
        poll_until(lambda: sum(f.done() for f in held) >= 4, 5, "pulls beyond the cap answered")
        with Producer(b.address, timeout_s=2.0) as prod:  # a thread is still free for this
            assert prod.send("H", b"through", queue_id=7).status == "SEND_OK"
        with Admin(b.address) as admin:
            assert admin.status()["details"]["pulls_not_held"] >= 4
    finally:
        for f in held:
            f.cancel()
        channel.close()


def test_metrics_endpoint_counts_a_produce_run(procs: ProcessGroup) -> None:
    import urllib.request

    b = procs.broker("b")
    with Producer(b.address) as prod:
        for _ in range(10):
            prod.send_batch("M", [b"y" * 100] * 100)
    with PullConsumer(b.address, "g", "M") as cons:
        got: list[object] = []
        poll_until(lambda: got.extend(cons.poll(200)) or len(got) >= 1000, 30, "consume")

    def metric(text: str, name: str) -> float:
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not exported")

    url = f"http://{b.info['metrics_address']}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert metric(text, 'tailrace_messages_in_total{topic="M"}') == 1000
    assert metric(text, 'tailrace_bytes_in_total{topic="M"}') == 100_000
    assert metric(text, 'tailrace_messages_out_total{topic="M"}') == 1000
    assert metric(text, "tailrace_append_seconds_count") == 10
    assert metric(text, "tailrace_max_offset") > 100_000
    assert metric(text, "tailrace_process_rss_bytes") > 0
