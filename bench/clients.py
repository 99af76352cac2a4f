"""The client libraries side by side: threads against asyncio.

    tailrace bench clients [--count N] [--size 1024] [--batch 256] [--in-flight 4] [--json]

One broker process (harness, port 0, temp dir); the clients run in this
process, one after another, on the same broker and topic: the threaded
`Producer` (`send_batch_async`, `--in-flight` calls outstanding) and the
`AsyncProducer` (as many concurrent `send_batch` tasks), each twice with
half the messages, in the order threads, asyncio, asyncio, threads (the
broker's log grows under them; the order cancels that drift), then a
`PullConsumer` and an `AsyncPullConsumer` reading everything back (a fresh
group each), then a `PushConsumer` (20 threads) and an `AsyncPushConsumer`
(20 concurrent coroutines) handling `--push-count` of them with a zero-cost
handler, one message per call (rates from the first handler call to the
last). Rates count from the first send (or joining the group) to the
last answer: starting and closing a client are not part of them (closing
grpc.aio channels alone takes about a second). Ratios are asyncio over
threads, from this one run.

Then the time for a `--give-up-count` produce to give up against a dead
broker (SIGKILLed after one message went through), for each client: with
the circuit breaker it is about `retry_timeout_s`, however many messages
are left.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from consumer import Admin, Producer, PullConsumer, PushConsumer, ReceivedMessage
from consumer.aio import AsyncProducer, AsyncPullConsumer, AsyncPushConsumer
from core.errors import TailraceError
from deploy.harness import TailraceProcess, process_group

READ_LIMIT_S = 300.0  # a consume that has not finished by then has failed


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, default=300_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--in-flight", type=int, default=4)
    p.add_argument("--give-up-count", type=int, default=100_000)
    p.add_argument("--push-count", type=int, default=100_000, help="messages each push consumer handles")
    p.add_argument("--retry-timeout-s", type=float, default=20.0)
    p.add_argument("--json", action="store_true")


def _batches(count: int, size: int, batch: int) -> list[list[bytes]]:
    body = b"x" * size
    return [[body] * min(batch, count - i) for i in range(0, count, batch)]


def produce_threads(
    address: str, topic: str, batches: list[list[bytes]], in_flight: int, **kw: Any
) -> tuple[int, float]:
    """(messages stored, seconds from the first send to the last answer:
    starting and closing the client are not counted)"""
    ok = 0
    with Producer(address, max_in_flight=in_flight, **kw) as p:
        t0 = time.perf_counter()
        futures = [p.send_batch_async(topic, b) for b in batches]
        for f in futures:
            with contextlib.suppress(TailraceError):
                ok += sum(1 for r in f.result() if r.status == "SEND_OK")
        took = time.perf_counter() - t0
    return ok, took


async def produce_asyncio(
    address: str, topic: str, batches: list[list[bytes]], in_flight: int, **kw: Any
) -> tuple[int, float]:
    ok = [0]
    async with AsyncProducer(address, **kw) as p:
        window = asyncio.Semaphore(in_flight)

        async def one(b: list[bytes]) -> None:
            async with window:
                with contextlib.suppress(TailraceError):
                    receipts = await p.send_batch(topic, b)  # (not `ok[0] += ...await...`: the
                    ok[0] += sum(1 for r in receipts if r.status == "SEND_OK")  # read precedes the await)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in batches))
        took = time.perf_counter() - t0
    return ok[0], took


def consume_threads(address: str, topic: str, group: str, count: int, **kw: Any) -> tuple[int, float]:
    """(messages read, seconds from joining the group to the last one)"""
    n = 0
    with PullConsumer(address, group, topic, max_messages=256, auto_commit_interval_ms=0, **kw) as c:
        t0 = time.perf_counter()
        while n < count:
            if time.perf_counter() - t0 > READ_LIMIT_S:
                raise TailraceError(f"read {n} of {count} in {READ_LIMIT_S} s")
            n += len(c.poll(1000))
        took = time.perf_counter() - t0
    return n, took


async def consume_asyncio(address: str, topic: str, group: str, count: int) -> tuple[int, float]:
    n = 0
    async with AsyncPullConsumer(broker=address, group=group, topic=topic, max_messages=256,
                                 auto_commit_interval_ms=0) as c:  # fmt: skip
        t0 = time.perf_counter()
        while n < count:
            if time.perf_counter() - t0 > READ_LIMIT_S:
                raise TailraceError(f"read {n} of {count} in {READ_LIMIT_S} s")
            n += len(await c.poll(1000))
        took = time.perf_counter() - t0
    return n, took


class _Tally:
    """Messages handled, and the time from the first to the `count`th."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.n = 0
        self.first = self.last = 0.0

    def add(self, k: int) -> bool:
        """Count `k` more; True once, when the count is reached."""
        now = time.perf_counter()
        self.first = self.first or now
        reached = self.n < self.count <= self.n + k
        self.n += k
        if reached:
            self.last = now
        return reached

    def result(self) -> tuple[int, float]:
        if self.n < self.count:
            raise TailraceError(f"handled {self.n} of {self.count} in {READ_LIMIT_S} s")
        return self.n, self.last - self.first


def push_threads(address: str, topic: str, group: str, count: int) -> tuple[int, float]:
    """A `PushConsumer` with a zero-cost handler, one message per call:
    (messages handled, seconds from the first delivery to the `count`th)."""
    tally, done, lock = _Tally(count), threading.Event(), threading.Lock()

    def handle(batch: list[ReceivedMessage]) -> None:
        with lock:
            if tally.add(len(batch)):
                done.set()

    c = PushConsumer(group, topic, handle, broker=address, pull_batch=64, auto_commit_interval_ms=1000)
    try:
        done.wait(READ_LIMIT_S)
    finally:
        c.close()
    return tally.result()


async def push_asyncio(address: str, topic: str, group: str, count: int) -> tuple[int, float]:
    """The same with an `AsyncPushConsumer` and a coroutine handler."""
    tally, done = _Tally(count), asyncio.Event()

    async def handle(batch: list[ReceivedMessage]) -> None:
        if tally.add(len(batch)):
            done.set()

    async with AsyncPushConsumer(group=group, topic=topic, handler=handle, broker=address, max_messages=64,
                                 auto_commit_interval_ms=1000):  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), READ_LIMIT_S)
    return tally.result()


def _rate(n: int, seconds: float) -> int:
    return round(n / seconds) if seconds > 0 else 0


def give_up_seconds(
    broker: TailraceProcess, kind: str, count: int, batch: int, in_flight: int, retry_s: float
) -> float:
    """SIGKILL the broker after one good send; time a `count`-message produce to give up."""
    with Producer(broker.address) as p:
        p.send_batch("dead", [b"first"])
    broker.kill()
    batches = _batches(count, 1024, batch)
    if kind == "threads":
        ok, took = produce_threads(broker.address, "dead", batches, in_flight, retry_timeout_s=retry_s)
    else:
        ok, took = asyncio.run(
            produce_asyncio(broker.address, "dead", batches, in_flight, retry_timeout_s=retry_s)
        )
    assert ok == 0
    return took


def run(args: argparse.Namespace) -> int:
    batches = _batches(args.count, args.size, args.batch)
    result: dict[str, Any] = {
        "count": args.count,
        "size": args.size,
        "batch": args.batch,
        "in_flight": args.in_flight,
    }
    with tempfile.TemporaryDirectory(prefix="tailrace-clients-") as tmp, process_group(Path(tmp)) as procs:
        b = procs.broker("b", segment_bytes=256 * 1024 * 1024)
        with Admin(b.address) as admin:
            admin.create_topic("t", 8)
        half = batches[: len(batches) // 2]  # each client twice, in the order A B B A: drift cancels
        runs: dict[str, list[tuple[int, float]]] = {"threads": [], "asyncio": []}
        for kind in ("threads", "asyncio", "asyncio", "threads"):
            if kind == "threads":
                ok, took = produce_threads(b.address, "t", half, args.in_flight)
            else:
                ok, took = asyncio.run(produce_asyncio(b.address, "t", half, args.in_flight))
            runs[kind].append((ok, took))
        ok_t, s_t = sum(r[0] for r in runs["threads"]), sum(r[1] for r in runs["threads"])
        ok_a, s_a = sum(r[0] for r in runs["asyncio"]), sum(r[1] for r in runs["asyncio"])
        total = ok_t + ok_a
        n_t, c_t = consume_threads(b.address, "t", "bench-threads", total)
        n_a, c_a = asyncio.run(consume_asyncio(b.address, "t", "bench-asyncio", total))
        sent_each = 2 * sum(len(b) for b in half)
        result.update(
            produce_failed={"threads": sent_each - ok_t, "asyncio": sent_each - ok_a},  # should be 0
            produce_threads_msgs_per_s=_rate(ok_t, s_t),
            produce_asyncio_msgs_per_s=_rate(ok_a, s_a),
            consume_threads_msgs_per_s=_rate(n_t, c_t),
            consume_asyncio_msgs_per_s=_rate(n_a, c_a),
        )
        result["produce_asyncio_vs_threads"] = round(
            result["produce_asyncio_msgs_per_s"] / max(1, result["produce_threads_msgs_per_s"]), 2
        )
        result["consume_asyncio_vs_threads"] = round(
            result["consume_asyncio_msgs_per_s"] / max(1, result["consume_threads_msgs_per_s"]), 2
        )
        push_count = min(total, args.push_count)
        n_pt, s_pt = push_threads(b.address, "t", "bench-push-threads", push_count)
        n_pa, s_pa = asyncio.run(push_asyncio(b.address, "t", "bench-push-asyncio", push_count))
        result.update(
            push_threads_msgs_per_s=_rate(n_pt, s_pt),
            push_asyncio_msgs_per_s=_rate(n_pa, s_pa),
        )
        result["push_asyncio_vs_threads"] = round(
            result["push_asyncio_msgs_per_s"] / max(1, result["push_threads_msgs_per_s"]), 2
        )
        for kind in ("threads", "asyncio"):
            dead = procs.broker(f"dead-{kind}")
            result[f"give_up_{kind}_s"] = round(
                give_up_seconds(
                    dead, kind, args.give_up_count, args.batch, args.in_flight, args.retry_timeout_s
                ),
                1,
            )
        result["retry_timeout_s"] = args.retry_timeout_s
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:32s} {v}")
    return 0
