"""PushConsumer against a real broker process: parallel processing that
scales with threads, commits that never skip (also across a SIGKILL of the
consumer process), and memory bounded by flow control."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from consumer import Admin, ConsumeStatus, PullConsumer, PushConsumer, ReceivedMessage
from core.route import MessageQueue
from deploy.client_cli import parse_body
from deploy.harness import ProcessGroup
from deploy.waits import poll_until
from tests.helpers.cli import ROOT, cli, cli_json, read_jsonl

pytestmark = pytest.mark.integration


def broker_with(procs: ProcessGroup, count: int, size: int = 256, queues: int = 8) -> str:
    b = procs.broker("b")
    with Admin(b.address) as admin:
        admin.create_topic("t", queues)
    r = cli("produce", "--broker", b.address, "--topic", "t", "--count", str(count), "--batch", "100",
            "--size", str(size), "--log", str(Path(str(b.workdir)) / "produced.jsonl"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    return b.address


def test_throughput_grows_with_threads_and_commits_stay_safe(procs: ProcessGroup) -> None:
    address = broker_with(procs, 6000)
    rates = {}
    for threads in (1, 16):
        out = cli_json("consume", "--broker", address, "--group", f"g{threads}", "--topic", "t",
                       "--count", "1500", "--threads", str(threads), "--handler-ms", "2")  # fmt: skip
        assert out["unique"] >= 1500
        rates[threads] = out["msgs_per_s"]
    print(rates)
    assert rates[16] >= 6 * rates[1]  # 2 ms per message: 1 thread ~500/s

    # out-of-order completion: every committed offset is one below which all was processed
    done: dict[tuple[str, int], set[int]] = defaultdict(set)
    lock = threading.Lock()

    def slow_evens(batch: list[ReceivedMessage]) -> None:
        for m in batch:
            time.sleep(0.004 if m.queue_offset % 2 == 0 else 0.0005)
            with lock:
                done[(m.broker_name, m.queue_id)].add(m.queue_offset)

    commits: list[tuple[str, int, int]] = []
    skipped: list[tuple[int, int]] = []

    def check_commit(mq: MessageQueue, offset: int) -> None:
        with lock:
            have = done[(mq.broker_name, mq.queue_id)]
            if not all(o in have for o in range(offset)):
                skipped.append((mq.queue_id, offset))  # a commit past an unprocessed message
            commits.append((mq.broker_name, mq.queue_id, offset))

    c = PushConsumer("safe", "t", slow_evens, broker=address, consume_threads=16, batch_size=4,
                     auto_commit_interval_ms=100, on_commit=check_commit)  # fmt: skip
    try:
        poll_until(lambda: sum(len(v) for v in done.values()) >= 6000, 60, "every message processed")
    finally:
        c.close()
    assert len(commits) > 8 and skipped == []  # committed all along, none past a gap
    with Admin(address) as admin:
        ends = admin.queue_offsets("t")
        for q in range(8):
            assert admin.query_offset("safe", "t", q) == ends[q][1]


def test_sigkill_mid_run_skips_nothing(procs: ProcessGroup, tmp_path: Path) -> None:
    address = broker_with(procs, 8000)
    produced = {int(e["seq"]) for e in read_jsonl(Path(str(procs.processes["b"].workdir)) / "produced.jsonl")}
    log1 = tmp_path / "c1.jsonl"
    args = ["consume", "--broker", address, "--group", "crash", "--topic", "t", "--count", "8000",
            "--threads", "8", "--handler-ms", "1", "--timeout-ms", "60000"]  # fmt: skip
    with open(tmp_path / "c1.out", "wb") as out:
        p = subprocess.Popen([sys.executable, "-m", "deploy.cli", *args, "--log", str(log1)], cwd=ROOT,
                             stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:

        def under_way() -> bool:
            text = log1.read_text() if log1.exists() else ""
            return text.count('"commit"') >= 3 and text.count('"seq"') >= 2000

        poll_until(under_way, 60, "a run under way")
        p.send_signal(signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
    first = read_jsonl(log1)
    last_commit: dict[int, int] = {}
    for e in first:
        if "commit" in e:
            last_commit[int(e["queue"])] = int(e["commit"])
    # the restart (here in-process): a new member of the same group
    second: list[tuple[int, int, int]] = []  # (queue, offset, seq)
    lock = threading.Lock()

    def record(batch: list[ReceivedMessage]) -> None:
        with lock:
            for m in batch:
                ident = parse_body(m.body)
                assert ident is not None
                second.append((m.queue_id, m.queue_offset, ident[1]))

    first_seqs = {int(e["seq"]) for e in first if "seq" in e}
    c = PushConsumer("crash", "t", record, broker=address, consume_threads=8)
    try:
        poll_until(lambda: first_seqs | {x[2] for x in list(second)} >= produced, 60, "the rest consumed")
    finally:
        c.close()
    assert first_seqs | {x[2] for x in second} == produced  # nothing skipped
    # the restart begins at the committed offsets: what repeats is after the last commit
    for queue_id, offset, _ in second:
        assert offset >= last_commit.get(queue_id, 0), (queue_id, offset, last_commit)
    redelivered = first_seqs & {x[2] for x in second}
    assert len(first_seqs) >= 2000 and len(second) < len(produced)
    print(f"first run: {len(first_seqs)} processed; redelivered after the kill: {len(redelivered)}")


def test_flow_control_bounds_memory(procs: ProcessGroup) -> None:
    address = broker_with(procs, 60_000, size=1024)  # ~60 MiB of backlog
    common = ["consume", "--broker", address, "--topic", "t", "--count", "60000", "--threads", "2",
              "--handler-ms", "5", "--timeout-ms", "4000", "--batch", "256"]  # fmt: skip
    bounded = cli_json(*common, "--group", "bounded", "--max-cached", "64")
    unbounded = cli_json(
        *common, "--group", "unbounded", "--max-cached", "1000000", "--max-span", "100000000"
    )
    print(bounded, unbounded)
    assert bounded["cached_max"] <= 8 * (64 + 256)  # per queue: the limit plus one pull in flight
    assert unbounded["cached_max"] > 20_000  # without the bound the backlog piles up
    assert unbounded["rss_max_mb"] - bounded["rss_max_mb"] > 20  # and so does memory


def test_local_retry_holds_the_commit_point(procs: ProcessGroup) -> None:
    address = broker_with(procs, 200, queues=1)
    attempts: dict[int, int] = defaultdict(int)

    def flaky(batch: list[ReceivedMessage]) -> ConsumeStatus:
        m = batch[0]
        attempts[m.queue_offset] += 1
        if m.queue_offset == 50 and attempts[50] < 3:
            return ConsumeStatus.RETRY_LATER
        if m.queue_offset == 60 and attempts[60] < 2:
            raise RuntimeError("boom")
        return ConsumeStatus.SUCCESS

    commits: list[int] = []
    c = PushConsumer("flaky", "t", flaky, broker=address, consume_threads=4, retry_delays_s=[0.3, 0.6],
                     send_back=False, auto_commit_interval_ms=50,
                     on_commit=lambda mq, o: commits.append(o))  # fmt: skip
    try:
        poll_until(lambda: attempts[50] >= 3 and len(attempts) == 200, 30, "the retries")
        poll_until(lambda: bool(commits) and commits[-1] == 200, 30, "the final commit")
    finally:
        c.close()
    assert attempts[50] == 3 and attempts[60] == 2
    assert all(o <= 50 for o in commits[: commits.index(200)] if o <= 50) and 200 in commits
    assert max(o for o in commits if o < 200) <= 50  # held at 50 until it succeeded


def test_failed_messages_retry_with_growing_delays_then_dead_letter(procs: ProcessGroup) -> None:
    b = procs.broker("b", extra=["--set", 'broker.retry_delays="200ms 400ms 800ms"'])
    with Admin(b.address) as admin:
        admin.create_topic("t", 4)
    r = cli(
        "produce", "--broker", b.address, "--topic", "t", "--count", "300", "--batch", "50", "--size", "64"
    )
    assert r.returncode == 0, r.stderr
    failing = {7, 100, 222}
    calls: dict[int, list[tuple[float, str]]] = defaultdict(list)
    lock = threading.Lock()

    def handler(batch: list[ReceivedMessage]) -> ConsumeStatus:
        ident = parse_body(batch[0].body)
        assert ident is not None
        with lock:
            calls[ident[1]].append((time.monotonic(), batch[0].properties.get("RECONSUME_TIMES", "0")))
        return ConsumeStatus.RETRY_LATER if ident[1] in failing else ConsumeStatus.SUCCESS

    c = PushConsumer("g", "t", handler, broker=b.address, consume_threads=4, max_reconsume=3)
    try:
        poll_until(
            lambda: all(len(calls[s]) == 4 for s in failing) and len(calls) == 300, 30, "every attempt"
        )
        # the fourth failure goes to the dead-letter topic
        dead: list[ReceivedMessage] = []
        with PullConsumer(b.address, "dlq-reader", "%DLQ%g") as dlq:

            def three_dead() -> bool:
                dead.extend(dlq.poll(200))
                return len(dead) >= 3

            poll_until(three_dead, 20, "three dead letters")
    finally:
        c.close()
    for s in failing:
        times = [t for t, _ in calls[s]]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert [n for _, n in calls[s]] == ["0", "1", "2", "3"]  # attempts counted in the message
        assert gaps[0] >= 0.15 and gaps[1] >= 0.35 and gaps[2] >= 0.7, gaps  # growing delays
        assert gaps[0] < gaps[1] < gaps[2]
    assert all(len(v) == 1 for k, v in calls.items() if k not in failing)  # the rest: once
    assert sorted(parse_body(m.body)[1] for m in dead) == sorted(failing)  # type: ignore[index]
    assert {m.properties["RECONSUME_TIMES"] for m in dead} == {"4"}
    assert {m.properties["ORIGIN_TOPIC"] for m in dead} == {"t"}
    # the dead letters are readable with the command line too
    out = cli_json("consume", "--broker", b.address, "--group", "cli", "--topic", "%DLQ%g", "--count", "3")
    assert out["unique"] == 3


def test_orderly_mode_keeps_queue_order_across_a_rebalance(procs: ProcessGroup) -> None:
    address = broker_with(procs, 4000, queues=4)
    events: list[tuple[str, int, int, float, float]] = []  # (member, queue, offset, start, end)
    lock = threading.Lock()
    busy: dict[int, str] = {}
    overlaps: list[tuple[int, str, str]] = []

    def handler_for(member: str):  # type: ignore[no-untyped-def]
        def handle(batch: list[ReceivedMessage]) -> None:
            m = batch[0]
            with lock:
                if m.queue_id in busy:  # another thread (or member) is in this queue now
                    overlaps.append((m.queue_id, busy[m.queue_id], member))
                busy[m.queue_id] = member
            t0 = time.monotonic()
            time.sleep(0.002)
            with lock:
                del busy[m.queue_id]
                events.append((member, m.queue_id, m.queue_offset, t0, time.monotonic()))

        return handle

    opts = dict(broker=address, orderly=True, consume_threads=8, heartbeat_ms=200,
                rebalance_interval_ms=1000, lock_lease_ms=2000)  # fmt: skip
    a = PushConsumer("ord", "t", handler_for("a"), **opts)  # type: ignore[arg-type]
    b: PushConsumer | None = None
    try:
        poll_until(lambda: len(events) >= 600, 30, "member a under way")
        b = PushConsumer("ord", "t", handler_for("b"), **opts)  # type: ignore[arg-type]
        poll_until(lambda: {e[1] for e in events if e[0] == "b"} != set(), 30, "b taking over queues")
        poll_until(lambda: len({(e[1], e[2]) for e in events}) == 4000, 60, "everything processed")
    finally:
        if b is not None:
            b.close()
        a.close()
    assert overlaps == []  # one thread at a time per queue, across members too
    moved = {e[1] for e in events if e[0] == "b"}
    assert moved and len(moved) < 4
    for q in range(4):
        seq = [e for e in events if e[1] == q]
        offsets = [e[2] for e in seq]
        assert offsets == sorted(offsets) == list(range(1000)), f"queue {q} out of order or incomplete"
        if q in moved:  # handed over exactly once, at a's last processed offset + 1
            owners = [e[0] for e in seq]
            switch = owners.index("b")
            assert set(owners[:switch]) == {"a"} and set(owners[switch:]) == {"b"}
            assert seq[switch][3] >= seq[switch - 1][4]  # b began after a finished


def test_orderly_handler_outliving_the_revoke_keeps_its_lock(procs: ProcessGroup) -> None:
    """A's handler is still running when its queues are given up (the revoke
    waits only 0.3 s here): A keeps the lock until it returns, so B never
    processes a queue beside it; B then redoes that message (at least once)."""
    address = broker_with(procs, 800, queues=4)
    lock = threading.Lock()
    busy: dict[int, str] = {}
    overlaps: list[tuple[int, str, str]] = []
    done: list[tuple[str, int, int]] = []
    slow = threading.Event()

    def handler_for(member: str):  # type: ignore[no-untyped-def]
        def handle(batch: list[ReceivedMessage]) -> None:
            m = batch[0]
            with lock:
                if m.queue_id in busy:
                    overlaps.append((m.queue_id, busy[m.queue_id], member))
                busy[m.queue_id] = member
            time.sleep(1.5 if member == "a" and slow.is_set() else 0.002)
            with lock:
                del busy[m.queue_id]
                done.append((member, m.queue_id, m.queue_offset))

        return handle

    opts = dict(broker=address, orderly=True, consume_threads=8, heartbeat_ms=200, rebalance_interval_ms=1000,
                lock_lease_ms=2000, shutdown_timeout_s=0.3)  # fmt: skip
    a = PushConsumer("ord2", "t", handler_for("a"), **opts)  # type: ignore[arg-type]
    b: PushConsumer | None = None
    try:
        poll_until(lambda: len(done) >= 100, 30, "member a under way")
        slow.set()  # a's handlers now outlive the revoke wait
        b = PushConsumer("ord2", "t", handler_for("b"), **opts)  # type: ignore[arg-type]
        poll_until(lambda: any(x[0] == "b" for x in done), 30, "b taking over a queue")
        slow.clear()
        poll_until(lambda: len({(q, o) for _, q, o in done}) == 800, 60, "everything processed")
    finally:
        slow.clear()
        if b is not None:
            b.close()
        a.close()
    assert overlaps == []  # never two members (or threads) in one queue
    for q in {x[1] for x in done if x[0] == "b"}:
        for member in ("a", "b"):
            offs = [o for m, qq, o in done if qq == q and m == member]
            assert offs == sorted(offs)  # each member in offset order
