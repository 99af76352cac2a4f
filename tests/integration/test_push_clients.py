"""The push consumer's guarantees, against a real broker, for both engines:
the threaded `PushConsumer` (a pool of threads running a plain handler) and
the asyncio `AsyncPushConsumer` (tasks awaiting a coroutine handler). Both
drive one shared state (consumer/push_queues.py); these check that each
engine keeps its promises: commits never pass an unprocessed message,
failures come back through the retry topic and end in the DLQ, a local
retry holds the commit point, orderly mode keeps queue order across a
rebalance."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consumer import Admin, ConsumeStatus, PullConsumer, PushConsumer, ReceivedMessage
from consumer.aio import AsyncPushConsumer
from consumer.aio import consumer as aio_consumer
from consumer.connection import BrokerConnection
from core.errors import InvalidArgumentError, TailraceError
from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import MessageQueue
from deploy.client_cli import parse_body
from deploy.harness import ProcessGroup
from deploy.waits import poll_until
from tests.helpers.cli import cli, cli_json

pytestmark = pytest.mark.integration
ENGINES = ["threads", "asyncio"]

Before = Callable[[list[ReceivedMessage]], float]  # called first: how long the handler works
After = Callable[[list[ReceivedMessage]], "ConsumeStatus | None"]  # called last: its answer


class Pusher:
    """A push consumer of either engine running `before`, then `delay`
    seconds of work (`time.sleep` on a thread, `asyncio.sleep` in a
    coroutine), then `after`, whose answer is the handler's. `workers` is
    `consume_threads` or `concurrency`. The asyncio one runs on its own
    event loop thread; `close()` stops everything it started."""

    def __init__(self, kind: str, group: str, topic: str, before: Before, after: After, workers: int = 8,
                 **opts: Any) -> None:  # fmt: skip
        self.kind = kind
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.in_flight = 0
        self.peak = 0  # most handler calls running at once
        self._lock = threading.Lock()
        if kind == "threads":

            def handle(batch: list[ReceivedMessage]) -> ConsumeStatus | None:
                self._enter()
                try:
                    time.sleep(before(batch))
                    return after(batch)
                finally:
                    self._leave()

            self.c: Any = PushConsumer(group, topic, handle, consume_threads=workers, **opts)
            return

        async def ahandle(batch: list[ReceivedMessage]) -> ConsumeStatus | None:
            self._enter()
            try:
                await asyncio.sleep(before(batch))
                return after(batch)
            finally:
                self._leave()

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self.thread.start()
        c = AsyncPushConsumer(group=group, topic=topic, handler=ahandle, concurrency=workers, **opts)
        try:
            self.c = asyncio.run_coroutine_threadsafe(c.start(), self.loop).result(60)
        except BaseException:
            asyncio.run_coroutine_threadsafe(c.close(), self.loop).result(60)
            self._stop_loop()
            raise

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def close(self) -> None:
        if self.loop is None:
            self.c.close()
            return
        try:
            asyncio.run_coroutine_threadsafe(self.c.close(), self.loop).result(60)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        assert self.loop is not None and self.thread is not None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def broker_with(procs: ProcessGroup, count: int, queues: int, extra: list[str] | None = None) -> str:
    b = procs.broker("b", extra=extra or [])
    with Admin(b.address) as admin:
        admin.create_topic("t", queues)
    r = cli("produce", "--broker", b.address, "--topic", "t", "--count", str(count), "--batch", "100",
            "--size", "64", "--log", str(Path(str(b.workdir)) / "produced.jsonl"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    return b.address


def no_wait(batch: list[ReceivedMessage]) -> float:
    return 0.0


@pytest.mark.parametrize("kind", ENGINES)
def test_commits_never_pass_an_unprocessed_message(kind: str, procs: ProcessGroup) -> None:
    """Out-of-order completion (every other batch of 4 works 10 times longer):
    every commit is an offset below which everything was processed, and the
    last is the end."""
    address = broker_with(procs, 3000, queues=8)
    done: dict[tuple[str, int], set[int]] = defaultdict(set)
    lock = threading.Lock()

    def slow_evens(batch: list[ReceivedMessage]) -> float:
        return 0.02 if batch[0].queue_offset // 4 % 2 == 0 else 0.002

    def record(batch: list[ReceivedMessage]) -> None:
        with lock:
            for m in batch:
                done[(m.broker_name, m.queue_id)].add(m.queue_offset)

    commits: list[tuple[str, int, int]] = []
    skipped: list[tuple[int, int]] = []

    def check_commit(mq: MessageQueue, offset: int) -> None:
        with lock:
            have = done[(mq.broker_name, mq.queue_id)]
            if not all(o in have for o in range(offset)):
                skipped.append((mq.queue_id, offset))  # a commit past an unprocessed message
            commits.append((mq.broker_name, mq.queue_id, offset))

    c = Pusher(kind, "safe", "t", slow_evens, record, workers=16, broker=address, batch_size=4,
               auto_commit_interval_ms=100, on_commit=check_commit)  # fmt: skip
    try:
        poll_until(lambda: sum(len(v) for v in done.values()) >= 3000, 60, "every message processed")
    finally:
        c.close()
    assert len(commits) > 8 and skipped == []  # committed all along, none past a gap
    assert 1 < c.peak <= 16  # handlers ran side by side, never more than allowed
    assert c.c.consumed == 3000
    with Admin(address) as admin:
        ends = admin.queue_offsets("t")
        for q in range(8):
            assert admin.query_offset("safe", "t", q) == ends[q][1]


@pytest.mark.parametrize("kind", ENGINES)
def test_a_local_retry_holds_the_commit_point(kind: str, procs: ProcessGroup) -> None:
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
    c = Pusher(kind, "flaky", "t", no_wait, flaky, workers=4, broker=address, retry_delays_s=[0.3, 0.6],
               send_back=False, auto_commit_interval_ms=50,
               on_commit=lambda mq, o: commits.append(o))  # fmt: skip
    try:
        poll_until(lambda: attempts[50] >= 3 and len(attempts) == 200, 30, "the retries")
        poll_until(lambda: bool(commits) and commits[-1] == 200, 30, "the final commit")
    finally:
        c.close()
    assert attempts[50] == 3 and attempts[60] == 2
    assert max(o for o in commits if o < 200) <= 50  # held at 50 until it succeeded


@pytest.mark.parametrize("kind", ENGINES)
def test_failures_come_back_with_growing_delays_then_dead_letter(kind: str, procs: ProcessGroup) -> None:
    address = broker_with(procs, 300, queues=4, extra=["--set", 'broker.retry_delays="200ms 400ms 800ms"'])
    failing = {7, 100, 222}
    calls: dict[int, list[tuple[float, str]]] = defaultdict(list)
    lock = threading.Lock()

    def handler(batch: list[ReceivedMessage]) -> ConsumeStatus:
        ident = parse_body(batch[0].body)
        assert ident is not None
        with lock:
            calls[ident[1]].append((time.monotonic(), batch[0].properties.get("RECONSUME_TIMES", "0")))
        return ConsumeStatus.RETRY_LATER if ident[1] in failing else ConsumeStatus.SUCCESS

    c = Pusher(kind, "g", "t", no_wait, handler, workers=4, broker=address, max_reconsume=3)
    dead: list[ReceivedMessage] = []
    try:
        poll_until(
            lambda: all(len(calls[s]) == 4 for s in failing) and len(calls) == 300, 30, "every attempt"
        )
        with PullConsumer(address, "dlq-reader", "%DLQ%g") as dlq:  # the fourth failure: dead letter

            def three_dead() -> bool:
                dead.extend(dlq.poll(200))
                return len(dead) >= 3

            poll_until(three_dead, 20, "three dead letters")
    finally:
        c.close()
    assert c.c.sent_back == 3 * 4  # each failure went back to the broker, none retried locally
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
    if kind == "threads":  # the dead letters are readable with the command line too
        out = cli_json("consume", "--broker", address, "--group", "cli", "--topic", "%DLQ%g", "--count", "3")
        assert out["unique"] == 3


@pytest.mark.parametrize("kind", ENGINES)
def test_orderly_mode_keeps_queue_order_across_a_rebalance(kind: str, procs: ProcessGroup) -> None:
    address = broker_with(procs, 2000, queues=4)
    events: list[tuple[str, int, int, float, float]] = []  # (member, queue, offset, start, end)
    lock = threading.Lock()
    busy: dict[int, tuple[str, float]] = {}
    overlaps: list[tuple[int, str, str]] = []

    def member(name: str) -> tuple[Before, After]:
        def before(batch: list[ReceivedMessage]) -> float:
            q = batch[0].queue_id
            with lock:
                if q in busy:  # another handler (or member) is in this queue now
                    overlaps.append((q, busy[q][0], name))
                busy[q] = (name, time.monotonic())
            return 0.002

        def after(batch: list[ReceivedMessage]) -> None:
            m = batch[0]
            with lock:
                _, t0 = busy.pop(m.queue_id)
                events.append((name, m.queue_id, m.queue_offset, t0, time.monotonic()))

        return before, after

    opts: dict[str, Any] = dict(broker=address, orderly=True, heartbeat_ms=200, rebalance_interval_ms=1000,
                                lock_lease_ms=2000)  # fmt: skip
    a = Pusher(kind, "ord", "t", *member("a"), **opts)
    b: Pusher | None = None
    try:
        poll_until(lambda: len(events) >= 300, 30, "member a under way")
        b = Pusher(kind, "ord", "t", *member("b"), **opts)
        poll_until(lambda: {e[1] for e in events if e[0] == "b"} != set(), 30, "b taking over queues")
        poll_until(lambda: len({(e[1], e[2]) for e in events}) == 2000, 60, "everything processed")
    finally:
        if b is not None:
            b.close()
        a.close()
    assert overlaps == []  # one handler at a time per queue, across members too
    moved = {e[1] for e in events if e[0] == "b"}
    assert moved and len(moved) < 4
    for q in range(4):
        seq = [e for e in events if e[1] == q]
        offsets = [e[2] for e in seq]
        assert offsets == sorted(offsets) == list(range(500)), f"queue {q} out of order or incomplete"
        if q in moved:  # handed over exactly once, at a's last processed offset + 1
            owners = [e[0] for e in seq]
            switch = owners.index("b")
            assert set(owners[:switch]) == {"a"} and set(owners[switch:]) == {"b"}
            assert seq[switch][3] >= seq[switch - 1][4]  # b began after a finished


@pytest.mark.parametrize("kind", ENGINES)
def test_closing_with_a_handler_stuck_commits_below_it(kind: str, procs: ProcessGroup) -> None:
    """A handler still running when the shutdown wait ends is abandoned: the
    final commit stops at it, and the next member of the group gets it."""
    address = broker_with(procs, 40, queues=1)
    stuck, release = threading.Event(), threading.Event()

    def before(batch: list[ReceivedMessage]) -> float:
        if batch[0].queue_offset != 20:
            return 0.0
        stuck.set()
        if kind == "threads":  # its thread is stuck until the test has checked the commit
            release.wait(30)
            return 0.0
        return 30.0  # its task sleeps until cancelled

    handled: list[int] = []
    c = Pusher(kind, "stuck", "t", before, lambda b: handled.extend(m.queue_offset for m in b), workers=4,
               broker=address, shutdown_timeout_s=0.5, send_back=False)  # fmt: skip
    try:
        poll_until(lambda: stuck.is_set() and len(set(handled)) >= 20, 30, "offset 20 stuck, 20 others done")
    finally:
        try:
            c.close()
            with Admin(address) as admin:
                committed = admin.query_offset("stuck", "t", 0)
        finally:
            release.set()
    # never past the abandoned message; the asyncio engine marks each batch done
    # as it succeeds, the threaded pool a chunk's successes at the chunk's end
    # (those before 20 in its chunk are delivered again too)
    start = committed or 0
    assert start == 20 if kind == "asyncio" else start <= 20
    redelivered: list[int] = []
    again = Pusher(kind, "stuck", "t", no_wait, lambda b: redelivered.extend(m.queue_offset for m in b),
                   broker=address)  # fmt: skip
    try:
        poll_until(lambda: 20 in redelivered, 30, "offset 20 delivered again")
    finally:
        again.close()
    assert min(redelivered) == start  # the next member starts at the commit


@pytest.mark.parametrize("kind", ENGINES)
def test_an_orderly_handler_outliving_its_revoke_keeps_the_lock(kind: str, procs: ProcessGroup) -> None:
    """A's handler is still running when its queues are given up (the revoke
    waits only 0.3 s here): A keeps the lock until it returns, so B never
    processes a queue beside it; B then redoes that message (at least once)."""
    address = broker_with(procs, 800, queues=4)
    lock = threading.Lock()
    busy: dict[int, str] = {}
    overlaps: list[tuple[int, str, str]] = []
    done: list[tuple[str, int, int]] = []
    slow = threading.Event()

    def member(name: str) -> tuple[Before, After]:
        def before(batch: list[ReceivedMessage]) -> float:
            q = batch[0].queue_id
            with lock:
                if q in busy:
                    overlaps.append((q, busy[q], name))
                busy[q] = name
            return 1.5 if name == "a" and slow.is_set() else 0.002

        def after(batch: list[ReceivedMessage]) -> None:
            m = batch[0]
            with lock:
                del busy[m.queue_id]
                done.append((name, m.queue_id, m.queue_offset))

        return before, after

    opts: dict[str, Any] = dict(broker=address, orderly=True, heartbeat_ms=200, rebalance_interval_ms=1000,
                                lock_lease_ms=2000, shutdown_timeout_s=0.3)  # fmt: skip
    a = Pusher(kind, "ord2", "t", *member("a"), **opts)
    b: Pusher | None = None
    try:
        poll_until(lambda: len(done) >= 100, 30, "member a under way")
        slow.set()  # a's handlers now outlive the revoke wait
        b = Pusher(kind, "ord2", "t", *member("b"), **opts)
        poll_until(lambda: any(x[0] == "b" for x in done), 30, "b taking over a queue")
        slow.clear()
        poll_until(lambda: len({(q, o) for _, q, o in done}) == 800, 60, "everything processed")
    finally:
        slow.clear()
        if b is not None:
            b.close()
        a.close()
    assert overlaps == []  # never two members (or handlers) in one queue
    for q in {x[1] for x in done if x[0] == "b"}:
        for name in ("a", "b"):
            offs = [o for m, qq, o in done if qq == q and m == name]
            assert offs == sorted(offs)  # each member in offset order


# ---- the asyncio consumer's lifecycle ---------------------------------------------------------


def members(address: str, group: str, topic: str) -> set[str]:
    """The group's members as the broker sees them (the probe's own heartbeat left out)."""
    conn = BrokerConnection(address)
    try:
        req = pb.HeartbeatRequest(group=group, client_id="probe", topic=topic, heartbeat_ms=100)
        return set(conn.call(conn.stub.Heartbeat, req).members) - {"probe"}
    finally:
        conn.close()


@pytest.mark.parametrize("interrupt", ["cancel", "close"])
def test_an_interrupted_start_leaves_the_group(
    interrupt: str, procs: ProcessGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start cancelled (or a close) while the member is joining: once it
    has joined, it leaves again; the consumer cannot be started after a close."""
    address = broker_with(procs, 10, queues=2)
    joined, go_on = threading.Event(), threading.Event()

    class SlowJoin(PullConsumer):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            joined.set()
            go_on.wait(30)

    monkeypatch.setattr(aio_consumer, "PullConsumer", SlowJoin)

    async def handle(batch: list[ReceivedMessage]) -> None:
        return None

    async def scenario() -> None:
        c = AsyncPushConsumer(group="lc", topic="t", handler=handle, broker=address, client_id="m1",
                              heartbeat_ms=200)  # fmt: skip
        starting = asyncio.create_task(c.start())
        await asyncio.to_thread(joined.wait, 30)
        assert await asyncio.to_thread(members, address, "lc", "t") == {"m1"}  # it has joined
        if interrupt == "cancel":
            starting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await starting
        else:
            closing = asyncio.create_task(c.close())
            await asyncio.sleep(0.05)
            go_on.set()
            with pytest.raises(TailraceError, match="closed"):
                await starting
            await closing
        go_on.set()
        await c.close()
        with pytest.raises(TailraceError, match="closed"):
            await c.start()

    asyncio.run(scenario())
    poll_until(lambda: members(address, "lc", "t") == set(), 10, "the member gone from the group")


def test_a_plain_function_is_refused_as_an_async_handler() -> None:
    def plain(batch: list[ReceivedMessage]) -> None:
        return None

    class AsyncCallable:
        async def __call__(self, batch: list[ReceivedMessage]) -> None:
            return None

    with pytest.raises(InvalidArgumentError, match="coroutine function"):
        AsyncPushConsumer(group="g", topic="t", handler=plain, broker="127.0.0.1:1")  # type: ignore[arg-type]
    AsyncPushConsumer(group="g", topic="t", handler=AsyncCallable(), broker="127.0.0.1:1")  # accepted
