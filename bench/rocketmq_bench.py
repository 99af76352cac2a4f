"""RocketMQ 5's official client against Tailrace, measured (issue 18).

    tailrace bench rocketmq [--count 20000] [--size 1024] [--seconds 20] [--warmup-seconds 5]
                            [--runs 2] [--backlog-mib 1024] [--limit-mib 256]
                            [--skip-rates | --skip-cold] [--json]

Two parts, one run:

**rates**: one cluster (a nameserver, a master, an async slave) and a
`tailrace proxy`. On the same cluster, one after the other: the official
Python client (`rocketmq-python-client`, unmodified, in its own process:
bench/rmq_official.py) produces `count` messages of `size` bytes over v2,
one send at a time and then 32 in flight; our client does the same over
the native protocol (`Producer.send`, then single-message sends 32 in
flight). Then a SimpleConsumer over v2 (batches of 32, each message acked,
16 acks in flight) receives `count` of them, and on equal terms our
clients: native pops of 32 with each message acked (16 acks in flight:
`native_pop_acking`, the matching baseline) and a `PullConsumer` of 32 a
pull committing after every poll (`native_pull_committing`). msgs/s from
the client's start (after its startup) to its last message, and each v2
figure over the native one. (A pull consumer that commits in the
background, 256 a pull, is no baseline for a consumer that acks each
message: it measures the window's length.)

**cold** (bench/rocketmq_cold.py): a cold backlog received by an official
SimpleConsumer through the proxy, the proxy's cold reads on and off in
alternating arms, each arm after both brokers' cgroup page caches were
emptied; the master's reads per window (a warm-up window holding the
ConsumeQueue's one-off read-around, then the timed one) and per message.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.rocketmq_cold import cold, numbered
from consumer import Producer, PullConsumer
from consumer.pop_client import PopClient
from deploy.harness import process_group

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).resolve().parent / "rmq_official.py"
SEG = 64 * 1024 * 1024
COMMON = ["--set", "replication.secret=bench", "--set", "store.max_message_bytes=1048576"]


def official(home: Path, spec: dict[str, Any], timeout_s: float, cpu: str | None = None) -> dict[str, Any]:
    """The official client in its own process (pinned to `cpu`), run to its end."""
    env = {k: v for k, v in os.environ.items() if k != "TAILRACE_PROFILE"}
    env.update(HOME=str(home), TZ="UTC")
    cmd = [sys.executable, str(DRIVER)]
    r = subprocess.run(
        ["taskset", "-c", cpu, *cmd] if cpu else cmd, input=json.dumps(spec) + "\n", capture_output=True,
        text=True, env=env, cwd=home, timeout=timeout_s,
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"the official client failed: {r.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def _native_produce(ns: str, topic: str, count: int, size: int, window: int) -> dict[str, Any]:
    tag = f"n{window:02d}-"
    with Producer(namesrv=[ns], max_in_flight=max(window, 1)) as prod:
        t0 = time.monotonic()
        if window <= 1:
            for i in range(count):
                prod.send(topic, numbered(tag, i, size))
        else:
            futs = [prod.send_batch_async(topic, [numbered(tag, i, size)]) for i in range(count)]
            for f in futs:
                f.result()
        seconds = time.monotonic() - t0
    return {"sent": count, "seconds": round(seconds, 2), "msgs_per_s": round(count / seconds)}


def _native_pull_committing(ns: str, topic: str, count: int, timeout_s: float) -> dict[str, Any]:
    """A PullConsumer, 32 a pull, committing its positions after every poll."""
    seen = commits = 0
    with PullConsumer(group="native-pull-rx", topic=topic, namesrv=[ns], start="first", max_messages=32) as c:
        t0 = time.monotonic()
        while seen < count and time.monotonic() < t0 + timeout_s:
            got = c.poll(500)
            if got:
                c.commit()
                commits += 1
            seen += len(got)
        seconds = time.monotonic() - t0
    return {
        "received": seen, "commits": commits, "seconds": round(seconds, 2),
        "msgs_per_s": round(min(seen, count) / seconds),
    }  # fmt: skip


def _native_pop_acking(ns: str, topic: str, count: int, timeout_s: float, window: int = 16) -> dict[str, Any]:
    """Native pops of 32 (any queue, in turn over the broker groups), each
    message acked on its own, `window` acks in flight: what the v2
    SimpleConsumer does, over the native protocol."""
    seen: set[tuple[str, int, int]] = set()
    acked = 0
    with Producer(namesrv=[ns]) as prod:
        pops = PopClient(prod.routes, prod.pool)
        names = [g.broker_name for g in prod.routes.get(topic, timeout_s=10).groups]
        acks = ThreadPoolExecutor(max_workers=window)
        pending: deque[Future[Any]] = deque()
        t0 = time.monotonic()
        i = 0
        try:
            while len(seen) < count and time.monotonic() < t0 + timeout_s:
                name = names[i % len(names)]
                i += 1
                batch = pops.pop(name, "native-pop-rx", topic, 60_000, 10.0, max_messages=32, wait_ms=1000)
                for msg in batch.messages:
                    seen.add((name, msg.record.queue_id, msg.record.queue_offset))
                    pending.append(acks.submit(pops.ack, name, "native-pop-rx", topic, [msg.handle], 10.0))
                while len(pending) > window:
                    pending.popleft().result()
                    acked += 1
            while pending:
                pending.popleft().result()
                acked += 1
            seconds = time.monotonic() - t0
        finally:
            acks.shutdown()
    return {
        "received": len(seen), "acked": acked, "seconds": round(seconds, 2),
        "msgs_per_s": round(min(len(seen), count) / seconds),
    }  # fmt: skip


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    return round(float(a["msgs_per_s"]) / max(float(b["msgs_per_s"]), 1.0), 3)


def rates(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    home = root / "home-rates"
    home.mkdir(parents=True)
    n, size = args.count, args.size
    with process_group(root / "rates") as procs:
        c = procs.cluster(("m",), slaves=1, extra=COMMON, segment_bytes=SEG, topic="rates", queues=4)
        (ns,) = c.namesrv
        proxy = procs.proxy([ns])
        spec = {"endpoints": proxy.info["endpoint"], "topic": "rates", "count": n, "size": size}
        out: dict[str, Any] = {
            "v2_produce_sync": official(home, {**spec, "mode": "produce", "window": 1}, 1800),
            "native_produce_sync": _native_produce(ns, "rates", n, size, 1),
            "v2_produce_32_in_flight": official(home, {**spec, "mode": "produce", "window": 32}, 1800),
            "native_produce_32_in_flight": _native_produce(ns, "rates", n, size, 32),
        }
        out["v2_receive"] = official(
            home, {**spec, "mode": "receive", "group": "v2-rx", "seconds": 600, "size": size}, 900
        )
        out["native_pop_acking"] = _native_pop_acking(ns, "rates", n, 600)
        out["native_pull_committing"] = _native_pull_committing(ns, "rates", n, 600)
    out["v2_over_native"] = {
        "produce_sync": _ratio(out["v2_produce_sync"], out["native_produce_sync"]),
        "produce_32_in_flight": _ratio(out["v2_produce_32_in_flight"], out["native_produce_32_in_flight"]),
        "receive_vs_pop_acking": _ratio(out["v2_receive"], out["native_pop_acking"]),
        "receive_vs_pull_committing": _ratio(out["v2_receive"], out["native_pull_committing"]),
    }
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, default=20_000, help="messages per rate run")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--seconds", type=float, default=20.0, help="the cold receiver's timed window")
    p.add_argument(
        "--warmup-seconds",
        type=float,
        default=5.0,
        help="the window before the timed one (CQ read-around)",
    )
    p.add_argument("--runs", type=int, default=2, help="cold arms of each kind, alternating on/off")
    p.add_argument("--backlog-mib", type=int, default=1024)
    p.add_argument("--limit-mib", type=int, default=256, help="memory cgroup limit of master and slave")
    p.add_argument(
        "--idle-seconds", type=float, default=5.0, help="the master's reads measured idle after each drop"
    )
    p.add_argument("--skip-rates", action="store_true")
    p.add_argument("--skip-cold", action="store_true")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {"count": args.count, "size": args.size}
    with tempfile.TemporaryDirectory(prefix="tailrace-bench-rocketmq-", dir="/var/tmp") as tmp:
        root = Path(tmp)
        if not args.skip_rates:
            result["rates"] = rates(root, args)
        if not args.skip_cold:
            result["cold"] = cold(root, DRIVER, COMMON, args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0
