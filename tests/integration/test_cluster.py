"""Nameservers, two broker groups, producers and consumer groups: real processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import psutil
import pytest

from consumer import Admin, Producer, PullConsumer
from consumer.connection import BrokerConnection
from consumer.producer import by_key
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import MessageQueue
from deploy.harness import ProcessGroup, TailraceProcess
from deploy.waits import holds_for, master_groups, poll_until, route_of, wait_routed

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
HB_MS = 200  # broker and consumer heartbeats in these tests
REBALANCE_MS = 1000


def route_groups(ns: list[str], topic: str) -> list[str]:
    return master_groups(route_of(ns, topic))


def cluster(
    procs: ProcessGroup, nameservers: int = 1, queues: int = 4
) -> tuple[list[str], dict[str, TailraceProcess]]:
    c = procs.cluster(("ga", "gb"), nameservers=nameservers, heartbeat_ms=HB_MS, topic="T", queues=queues)
    return c.namesrv, {name: rs.master for name, rs in c.groups.items()}


def consumer(ns: list[str], group: str = "G") -> PullConsumer:
    return PullConsumer(
        group=group, topic="T", namesrv=ns, heartbeat_ms=HB_MS, rebalance_interval_ms=REBALANCE_MS,
        auto_commit_interval_ms=500, long_poll_ms=1000,
    )  # fmt: skip


class Collector:
    """Polls a consumer on a thread, keeping what it receives."""

    def __init__(self, c: PullConsumer) -> None:
        self.c = c
        self.got: list[tuple[str, int, int, bytes]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self.c.poll(100)
            with self._lock:
                self.got += [(m.broker_name, m.queue_id, m.queue_offset, m.body) for m in batch]

    def bodies(self) -> list[bytes]:
        with self._lock:
            return [g[3] for g in self.got]

    def stop(self, close: bool = True) -> None:
        self._stop.set()
        self.t.join(10)
        if close:
            self.c.close()


def test_three_consumers_share_eight_queues_over_two_groups(procs: ProcessGroup) -> None:
    ns, _ = cluster(procs)
    members = [consumer(ns) for _ in range(3)]
    cols = [Collector(c) for c in members]  # polling drives rebalancing
    try:
        poll_until(
            lambda: (
                all(len(c.membership.members) == 3 for c in members)
                and sorted(q for c in members for q in c.assignment)
                == [MessageQueue(g, q) for g in ("ga", "gb") for q in range(4)]
            ),
            30,
            "every queue assigned exactly once",
        )
        with Producer(namesrv=ns) as prod:
            for i in range(0, 30_000, 100):
                prod.send_batch("T", [f"m{j}".encode() for j in range(i, i + 100)])
        poll_until(lambda: sum(len(c.bodies()) for c in cols) >= 30_000, 60, "30,000 consumed")
        everything = [b for c in cols for b in c.bodies()]
        assert len(everything) == 30_000 and len(set(everything)) == 30_000  # none twice
        assert set(everything) == {f"m{j}".encode() for j in range(30_000)}  # none lost
        assert all(len(c.bodies()) > 0 for c in cols)
    finally:
        for c in cols:
            c.stop(close=False)
        for c in members:
            c.close()


def test_rebalance_after_leave_and_kill_resumes_from_committed_offsets(
    procs: ProcessGroup, tmp_path: Path
) -> None:
    ns, _brokers = cluster(procs)
    a, b = consumer(ns), consumer(ns)
    clog = tmp_path / "c.jsonl"
    c_proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "consume", "--namesrv", ",".join(ns), "--group", "G",
         "--topic", "T", "--count", "1000000", "--timeout-ms", "120000", "--heartbeat-ms",
         str(HB_MS), "--rebalance-ms", str(REBALANCE_MS), "--log", str(clog)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    cols = [Collector(a), Collector(b)]
    try:
        poll_until(lambda: len(b.membership.members) == 3, 30, "three members")
        poll_until(lambda: len(a.assignment) + len(b.assignment) < 8, 30, "c owns queues")

        def c_got() -> list[str]:
            text = clog.read_text() if clog.exists() else ""
            lines = [json.loads(line) for line in text.splitlines() if line.strip()]
            return [e["seq"] for e in lines if "commit" not in e]  # deliveries, not commits

        def c_commits() -> int:
            text = clog.read_text() if clog.exists() else ""
            return sum(1 for line in text.splitlines() if line.strip() and "commit" in json.loads(line))

        with Producer(namesrv=ns) as prod:
            for i in range(0, 3000, 100):
                prod.send_batch("T", [f"r:{j}:".encode() for j in range(i, i + 100)])
        poll_until(
            lambda: len(set(cols[0].bodies()) | set(cols[1].bodies())) + len(set(c_got())) >= 3000,
            30,
            "phase 1 consumed",
        )
        # a leaves cleanly: b and c split the queues within a rebalance period
        cols[0].stop(close=True)
        took = poll_until(lambda: len(b.assignment) == 4, 10, "b to take half of a's queues")
        assert took < REBALANCE_MS / 1000 + 3 * HB_MS / 1000 + 2
        c_queues = sorted(set(MessageQueue(g, q) for g in ("ga", "gb") for q in range(4)) - set(b.assignment))
        # c is killed: b takes everything after c's heartbeats expire
        # let c auto-commit (every 1 s) what it polled; its tail stays uncommitted
        before = c_commits()
        poll_until(lambda: c_commits() > before, 10, "c's next auto-commit")
        c_proc.send_signal(signal.SIGKILL)
        c_proc.wait(10)
        committed = {}
        with Admin(namesrv=ns) as admin:
            masters = admin.masters()
        for mq in c_queues:
            conn = BrokerConnection(masters[mq.broker_name])
            r = conn.call(
                conn.stub.QueryOffset, pb.QueryOffsetRequest(group="G", topic="T", queue_id=mq.queue_id)
            )
            conn.close()
            committed[mq] = r.offset if r.found else 0
        seen_before = len(cols[1].got)
        took = poll_until(lambda: len(b.assignment) == 8, 15, "b to take c's queues")
        assert took < REBALANCE_MS / 1000 + 3 * HB_MS / 1000 + 3
        with Producer(namesrv=ns) as prod:
            for i in range(3000, 6000, 100):
                prod.send_batch("T", [f"r:{j}:".encode() for j in range(i, i + 100)])
        wanted = {f"r:{j}:".encode() for j in range(6000)}
        poll_until(
            lambda: (
                wanted
                <= set(cols[1].bodies()) | {f"r:{s}:".encode() for s in c_got()} | set(cols[0].bodies())
            ),
            30,
            "every message consumed by someone",
        )
        # b resumed each of c's queues exactly at c's last committed offset
        taken = [g for g in cols[1].got[seen_before:] if MessageQueue(g[0], g[1]) in committed]
        for mq, off in committed.items():
            offsets = [g[2] for g in taken if (g[0], g[1]) == (mq.broker_name, mq.queue_id)]
            assert offsets and min(offsets) == off, (mq, off, offsets[:3])
    finally:
        if c_proc.poll() is None:
            c_proc.kill()
            c_proc.wait()
        for c in cols:
            c.stop(close=False)
        a.close()
        b.close()


def test_producer_rides_over_a_dead_group_and_routes_drop_it(procs: ProcessGroup) -> None:
    ns, brokers = cluster(procs)
    errors: list[Exception] = []
    sent: Counter[str] = Counter()
    stop = threading.Event()
    prod = Producer(namesrv=ns, backoff_s=5.0)

    def keep_sending() -> None:
        i = 0
        while not stop.is_set():
            try:
                r = prod.send_batch("T", [f"p{i}".encode()] * 10)
                sent[r[0].broker_name] += 1
            except Exception as exc:
                errors.append(exc)
            i += 1

    t = threading.Thread(target=keep_sending)
    t.start()
    try:
        poll_until(lambda: sent["ga"] > 20 and sent["gb"] > 20, 30, "sends to both groups")
        brokers["gb"].kill()
        before = sent["ga"]
        poll_until(lambda: sent["ga"] > before + 200, 20, "sends to continue on ga")
        took = wait_routed(ns, "T", groups=["ga"], timeout_s=10, what="gb dropped from routes")
        assert took < 3 * HB_MS / 1000 + 2
    finally:
        stop.set()
        t.join(30)
        prod.close()
    assert errors == [], errors[:3]


def test_one_of_two_nameservers_killed(procs: ProcessGroup) -> None:
    ns, _ = cluster(procs, nameservers=2)
    procs.processes["ns0"].kill()
    with Producer(namesrv=ns) as prod:  # ns0 is first in the list and dead
        receipts = [prod.send("T", f"k{i}".encode()) for i in range(40)]
    assert {r.broker_name for r in receipts} == {"ga", "gb"}
    c = consumer(ns, group="after-kill")
    try:
        got: list[bytes] = []
        poll_until(lambda: got.extend(m.body for m in c.poll(100)) or len(got) >= 40, 30, "consume")
        assert sorted(got) == sorted(f"k{i}".encode() for i in range(40))
    finally:
        c.close()
    # brokers keep registering with the survivor: their routes outlive the expiry window
    holds_for(lambda: route_groups([ns[1]], "T") == ["ga", "gb"], 4 * HB_MS / 1000, "both groups routed")
    # a restarted nameserver is whole again after the next heartbeats
    procs.processes["ns0"].restart()
    took = wait_routed([ns[0]], "T", groups=["ga", "gb"], timeout_s=10, what="ns0 refilled")
    assert took < 2 * HB_MS / 1000 + 2


def test_key_selector_keeps_a_key_on_one_queue(procs: ProcessGroup) -> None:
    ns, _ = cluster(procs)
    with Producer(namesrv=ns, selector=by_key) as prod:
        places = {
            key: {(r.broker_name, r.queue_id) for r in (prod.send("T", b"x", key=key) for _ in range(5))}
            for key in ("alice", "bob", "carol", "dave")
        }
    assert all(len(p) == 1 for p in places.values()), places


def test_nameserver_metrics_count_brokers_and_lookups(procs: ProcessGroup) -> None:
    import urllib.request

    ns, _ = cluster(procs)
    route_groups(ns, "T")
    route_groups(ns, "no-such-topic")
    url = f"http://{procs.processes['ns0'].info['metrics_address']}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(values["tailrace_live_brokers"]) == 2
    assert float(values['tailrace_route_lookups_total{outcome="found"}']) >= 1
    assert float(values['tailrace_route_lookups_total{outcome="unknown_topic"}']) >= 1


def test_a_consumer_connects_only_to_the_brokers_it_reads(procs: ProcessGroup, tmp_path: Path) -> None:
    """A push consumer that joins a group as the member owning group ga's
    queues (its id sorts first) holds TCP connections to ga's master only,
    never to gb, whose queues the other member reads."""
    ns, brokers = cluster(procs, queues=2)
    ports = {name: int(b.address.rsplit(":", 1)[1]) for name, b in brokers.items()}
    args = ["consume", "--namesrv", ",".join(ns), "--group", "G", "--topic", "T", "--count", "100000",
            "--threads", "2", "--heartbeat-ms", str(HB_MS), "--rebalance-ms", str(REBALANCE_MS),
            "--timeout-ms", "60000"]  # fmt: skip
    logs = {cid: tmp_path / f"{cid}.jsonl" for cid in ("z-first", "a-late")}
    ps: dict[str, subprocess.Popen[bytes]] = {}

    def start(cid: str) -> None:
        ps[cid] = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", *args, "--client-id", cid, "--log", str(logs[cid])],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def groups_read(cid: str) -> set[str]:
        text = logs[cid].read_text() if logs[cid].exists() else ""
        return {json.loads(x)["broker"] for x in text.splitlines() if '"seq"' in x}

    try:
        start("z-first")
        with Producer(namesrv=ns) as prod:
            for i in range(40):
                prod.send("T", f"early {i}".encode())
            poll_until(lambda: groups_read("z-first") == {"ga", "gb"}, 30, "the first member reading both")
            start("a-late")  # sorts first: the averaging allocation gives it ga's two queues
            for i in range(400):
                prod.send("T", f"late {i}".encode())
            poll_until(lambda: groups_read("a-late") == {"ga"}, 30, "the late member reading ga")
        p = psutil.Process(ps["a-late"].pid)
        connected = {c.raddr.port for c in p.net_connections("tcp") if c.raddr}
        assert ports["ga"] in connected
        assert ports["gb"] not in connected, (connected, ports)  # never a broker it does not read
        assert groups_read("a-late") == {"ga"}
    finally:
        for proc in ps.values():
            proc.send_signal(signal.SIGTERM)
        for proc in ps.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
