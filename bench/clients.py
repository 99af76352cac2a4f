"""The client libraries side by side: threads against asyncio.

    tailrace bench clients [--count N] [--size 1024] [--batch 256] [--in-flight 4] [--json]

One broker process (harness, port 0, temp dir); the clients run in this
process, one after another, on the same broker and topic: the threaded
`Producer` (`send_batch_async`, `--in-flight` calls outstanding) and the
`AsyncProducer` (as many concurrent `send_batch` tasks), then a
`PullConsumer` and an `AsyncPullConsumer` reading everything back (a fresh
group each). Ratios are asyncio over threads, from this one run.

Then the time for a `--give-up-count` produce to give up against a dead
broker (SIGKILLed after one message went through), for each client: with
the circuit breaker it is about `retry_timeout_s`, however many messages
are left.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from consumer import Admin, Producer, PullConsumer
from consumer.aio import AsyncProducer, AsyncPullConsumer
from core.errors import TailraceError
from deploy.harness import TailraceProcess, process_group


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, default=300_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--in-flight", type=int, default=4)
    p.add_argument("--give-up-count", type=int, default=100_000)
    p.add_argument("--retry-timeout-s", type=float, default=20.0)
    p.add_argument("--json", action="store_true")


def _batches(count: int, size: int, batch: int) -> list[list[bytes]]:
    body = b"x" * size
    return [[body] * min(batch, count - i) for i in range(0, count, batch)]


def produce_threads(
    address: str, topic: str, batches: list[list[bytes]], in_flight: int, **kw: Any
) -> tuple[int, int]:
    """(messages stored, messages failed)"""
    ok = failed = 0
    with Producer(address, max_in_flight=in_flight, **kw) as p:
        futures = [p.send_batch_async(topic, b) for b in batches]
        for f in futures:
            try:
                ok += sum(1 for r in f.result() if r.status == "SEND_OK")
            except TailraceError:
                failed += 1
    return ok, failed


async def produce_asyncio(
    address: str, topic: str, batches: list[list[bytes]], in_flight: int, **kw: Any
) -> tuple[int, int]:
    counts = [0, 0]
    async with AsyncProducer(address, **kw) as p:
        window = asyncio.Semaphore(in_flight)

        async def one(b: list[bytes]) -> None:
            async with window:
                try:
                    counts[0] += sum(1 for r in await p.send_batch(topic, b) if r.status == "SEND_OK")
                except TailraceError:
                    counts[1] += 1

        await asyncio.gather(*(one(b) for b in batches))
    return counts[0], counts[1]


def consume_threads(address: str, topic: str, group: str, count: int) -> int:
    n = 0
    with PullConsumer(address, group, topic, max_messages=256, auto_commit_interval_ms=0) as c:
        while n < count:
            n += len(c.poll(1000))
    return n


async def consume_asyncio(address: str, topic: str, group: str, count: int) -> int:
    n = 0
    async with AsyncPullConsumer(broker=address, group=group, topic=topic, max_messages=256,
                                 auto_commit_interval_ms=0) as c:  # fmt: skip
        while n < count:
            n += len(await c.poll(1000))
    return n


def _rate(n: int, seconds: float) -> int:
    return round(n / seconds) if seconds > 0 else 0


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def give_up_seconds(
    broker: TailraceProcess, kind: str, count: int, batch: int, in_flight: int, retry_s: float
) -> float:
    """SIGKILL the broker after one good send; time a `count`-message produce to give up."""
    with Producer(broker.address) as p:
        p.send_batch("dead", [b"first"])
    broker.kill()
    batches = _batches(count, 1024, batch)
    if kind == "threads":
        (ok, _), took = _timed(lambda: produce_threads(broker.address, "dead", batches, in_flight,
                                                        retry_timeout_s=retry_s))  # fmt: skip
    else:
        (ok, _), took = _timed(lambda: asyncio.run(produce_asyncio(broker.address, "dead", batches, in_flight,
                                                                  retry_timeout_s=retry_s)))  # fmt: skip
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
        (ok_t, _), s_t = _timed(lambda: produce_threads(b.address, "t", batches, args.in_flight))
        (ok_a, _), s_a = _timed(lambda: asyncio.run(produce_asyncio(b.address, "t", batches, args.in_flight)))
        total = ok_t + ok_a
        n_t, c_t = _timed(lambda: consume_threads(b.address, "t", "bench-threads", total))
        n_a, c_a = _timed(lambda: asyncio.run(consume_asyncio(b.address, "t", "bench-asyncio", total)))
        result.update(
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
