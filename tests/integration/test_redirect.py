"""Read redirection in a real cluster: nameserver, master, two slaves, 1 MiB budget."""

from __future__ import annotations

import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest

from consumer import Admin, Producer, PullConsumer
from deploy.harness import ProcessGroup, TailraceProcess
from deploy.waits import wait_caught_up

pytestmark = pytest.mark.integration
SEG = 8 * 1024 * 1024
COMMON = ["--set", "replication.secret=r", "--set", "store.max_message_bytes=1048576"]
BUDGET = 1024 * 1024


def cluster(
    procs: ProcessGroup, budget: int | None = BUDGET
) -> tuple[list[str], TailraceProcess, list[TailraceProcess]]:
    """A nameserver, a master and two slaves; topic B (2 queues) routed to all three."""
    opts = [*COMMON, "--budget-bytes", str(budget)] if budget else COMMON
    c = procs.cluster(("m",), slaves=2, extra=opts, segment_bytes=SEG, topic="B", queues=2)
    return c.namesrv, c.groups["m"].master, c.groups["m"].slaves


def backlog(m: TailraceProcess, slaves: list[TailraceProcess], n: int, start: int = 0) -> None:
    with Producer(m.address) as prod:
        for i in range(start, start + n, 256):
            for q in (0, 1):
                prod.send_batch(
                    "B", [f"{q}:{j}:".encode() + b"x" * 1000 for j in range(i, i + 256)], queue_id=q
                )
    wait_caught_up(m, slaves)


def consume_all(
    c: PullConsumer, expected: int, on_batch: Callable[[], None] = lambda: None
) -> dict[int, list[int]]:
    per_queue: dict[int, list[int]] = defaultdict(list)
    deadline = time.monotonic() + 60
    while sum(len(v) for v in per_queue.values()) < expected:
        assert time.monotonic() < deadline, f"consumed only {sum(len(v) for v in per_queue.values())}"
        for msg in c.poll(200):
            per_queue[msg.queue_id].append(msg.queue_offset)
        on_batch()
    return per_queue


def test_cold_consumer_goes_to_a_slave_and_comes_back(procs: ProcessGroup) -> None:
    ns, m, slaves = cluster(procs)
    backlog(m, slaves, 8192)  # 2 queues x 8192 x ~1.1 KiB: about 18 MiB behind
    c = PullConsumer(group="cold", topic="B", namesrv=ns, heartbeat_ms=200, max_messages=256)
    try:
        per_queue = consume_all(c, 2 * 8192)
        for q, offsets in per_queue.items():  # every message once, in order per queue
            assert offsets == list(range(8192)), q
        by_slaves = c.served_by[1] + c.served_by[2]
        assert by_slaves > 8192, dict(c.served_by)  # most of the cold backlog came from slaves
        assert c.served_by[0] > 0  # the master answered the first pulls (with its advice)
        with Admin(m.address) as admin:
            reasons = admin.status()["details"]["redirect"]["reasons"]
        assert reasons.get("backlog_over_budget", 0) > 0
        # caught up: new messages come from the master again
        before = Counter(c.served_by)
        backlog(m, slaves, 256, start=8192)
        consume_all(c, 2 * 256)
        assert c.served_by[0] - before[0] == 512, dict(c.served_by)
    finally:
        c.close()


def test_the_slave_being_read_is_killed_midway(procs: ProcessGroup) -> None:
    ns, m, slaves = cluster(procs)
    backlog(m, slaves, 8192)
    c = PullConsumer(group="cold", topic="B", namesrv=ns, heartbeat_ms=200, max_messages=64)
    killed: list[int] = []

    def kill_the_slave_in_use() -> None:
        if killed:
            return
        using = {bid for bid in c._pull_from.values() if bid != 0}
        if using and sum(c.served_by[b] for b in using) > 2000:
            bid = sorted(using)[0]
            slaves[bid - 1].kill()
            killed.append(bid)

    try:
        per_queue = consume_all(c, 2 * 8192, kill_the_slave_in_use)
        assert killed, "no slave was ever used"
        for q, offsets in per_queue.items():  # no loss, no duplicate, order kept
            assert offsets == list(range(8192)), q
    finally:
        c.close()


def test_a_lagging_slave_sends_the_consumer_back(procs: ProcessGroup) -> None:
    ns, m, slaves = cluster(procs)
    backlog(m, slaves, 4096)
    c = PullConsumer(group="cold", topic="B", namesrv=ns, heartbeat_ms=200, max_messages=64)
    try:
        first = consume_all(c, 1000)
        assert sum(len(v) for v in first.values()) >= 1000
        for s in slaves:  # both slaves stop: the master keeps taking writes
            s.proc.send_signal(signal.SIGSTOP)
        try:
            with Producer(m.address) as prod:
                for q in (0, 1):
                    prod.send_batch("B", [f"{q}:late:".encode()] * 100, queue_id=q)
            rest = consume_all(c, 2 * 4096 + 200 - sum(len(v) for v in first.values()))
        finally:
            for s in slaves:
                s.proc.send_signal(signal.SIGCONT)
        for q in (0, 1):
            assert first[q] + rest[q] == list(range(4096 + 100)), q  # never stalled, nothing skipped
    finally:
        c.close()


def test_a_slave_answers_an_offset_it_lacks_with_retry_elsewhere(procs: ProcessGroup) -> None:
    import grpc

    from core.pb.tailrace.v1 import broker_pb2 as pb
    from core.pb.tailrace.v1 import broker_pb2_grpc

    _, m, slaves = cluster(procs)
    backlog(m, slaves, 256)
    channel = grpc.insecure_channel(slaves[0].address)
    stub = broker_pb2_grpc.BrokerStub(channel)
    far = pb.PullRequest(group="g", topic="B", queue_id=0, queue_offset=10_000, max_wait_ms=5000)
    t0 = time.monotonic()
    r = stub.Pull(far, timeout=5)
    assert time.monotonic() - t0 < 1.0  # answered at once, not held
    assert (r.status, r.suggested_broker_id, r.count) == (pb.RETRY_ELSEWHERE, 0, 0)
    assert r.next_queue_offset == 10_000  # never an offset reset or a skip
    at_end = stub.Pull(pb.PullRequest(group="g", topic="B", queue_id=0, queue_offset=256), timeout=5)
    assert (at_end.status, at_end.suggested_broker_id, at_end.suggestion_reason) == (
        pb.NO_NEW_MSG, 0, "slave_end",
    )  # fmt: skip
    channel.close()


def test_with_the_real_budget_a_small_backlog_stays_on_the_master(procs: ProcessGroup) -> None:
    ns, m, slaves = cluster(procs, budget=None)  # budget from psutil and the cgroup files
    with Admin(m.address) as admin:
        budget = admin.status()["details"]["redirect"]["budget_bytes"]
    assert budget > 64 * 1024 * 1024  # this machine has gigabytes of page cache to count on
    backlog(m, slaves, 2048)  # about 4.5 MiB behind
    c = PullConsumer(group="warm", topic="B", namesrv=ns, heartbeat_ms=200)
    try:
        consume_all(c, 2 * 2048)
        assert dict(c.served_by) == {0: 4096}
    finally:
        c.close()
    with Admin(m.address) as admin:
        assert "backlog_over_budget" not in admin.status()["details"]["redirect"]["reasons"]
