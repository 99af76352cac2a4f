"""The benefit of read redirection, measured.

    tailrace bench redirect [--seconds 20] [--backlog-mib 1024] [--limit-mib 256] [--json]

Master and slave run in their own memory cgroups (limit smaller than the
backlog), so each has its own page cache on this one machine, and the slave
and the cold consumer run on CPU core 1 while the master, the producer and
the tail consumer share core 0 (as if the slave were another machine;
without this the 2-core machine's CPU contention, not the page cache, decides
every latency). Load: a
producer at a fixed rate, a tail consumer (end-to-end latency), and a cold
consumer reading a backlog several times the master's memory limit. Three
runs: no cold consumer (the baseline), cold consumer with redirect on, and
with redirect off. Reported per run: producer send p50/p99, tail consumer
end-to-end p50/p99, master disk read bytes (/proc/PID/io), cold consumer
catch-up rate; and the on/off p99 ratios against the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from consumer import Producer, PullConsumer
from deploy.cgroups import MemoryCgroup, process_read_bytes
from deploy.harness import process_group
from deploy.waits import broker_status, wait_caught_up

ROOT = Path(__file__).resolve().parents[1]
SEG = 64 * 1024 * 1024
COMMON = ["--set", "replication.secret=bench", "--set", "store.max_message_bytes=1048576"]


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))], 2)


def _run(root: Path, args: argparse.Namespace, cold: bool, redirect: bool) -> dict[str, Any]:
    limit = args.limit_mib * 1024 * 1024
    tag = f"{'cold' if cold else 'base'}-{'on' if redirect else 'off'}"
    cg_m = MemoryCgroup.create(f"tailrace-{tag}-m", limit)
    cg_s = MemoryCgroup.create(f"tailrace-{tag}-s", limit)
    if cg_m is None or cg_s is None:
        raise SystemExit("memory cgroups cannot be created here: skipping the redirect benchmark")
    try:
        with process_group(root / tag) as procs:
            # core 0: the master with the latency-sensitive clients (producer, tail
            # consumer: this process); core 1: the slave and the cold consumer, as
            # if they were another machine (this one has 2 cores)
            c = procs.cluster(
                ("m",),
                slaves=1,
                extra=COMMON,
                master_extra=["--set", f"pull.redirect={'true' if redirect else 'false'}"],
                segment_bytes=SEG,
                exec_prefix=[*cg_m.exec_prefix, "taskset", "-c", "0"],
                slave_exec_prefix=[*cg_s.exec_prefix, "taskset", "-c", "1"],
                topic="load",
                queues=4,
            )
            (ns,) = c.namesrv
            m, (s,) = c.groups["m"].master, c.groups["m"].slaves
            # the backlog the cold consumer will read: several times the master's memory
            body = b"x" * 1024
            with Producer(m.address, max_in_flight=4) as prod:
                futs = [prod.send_batch_async("load", [body] * 256) for _ in range(args.backlog_mib * 4)]
                for f in futs:
                    f.result()
            wait_caught_up(m, [s], timeout_s=600)
            send_ms: list[float] = []
            e2e_ms: list[float] = []
            cold_count = [0]
            stop = threading.Event()

            def produce() -> None:  # fixed rate: 50 messages every 5 ms = 10k msgs/s
                with Producer(m.address) as prod:
                    nxt = time.monotonic()
                    while not stop.is_set():
                        t = time.monotonic()
                        prod.send_batch("load", [b"t" * 1024] * 50)
                        send_ms.append((time.monotonic() - t) * 1000)
                        nxt += 0.005
                        time.sleep(max(0.0, nxt - time.monotonic()))

            def tail() -> None:
                with PullConsumer(group="tail", topic="load", namesrv=[ns], start="last") as c:
                    while not stop.is_set():
                        batch = c.poll(200)
                        now = time.time() * 1000  # after the poll returned: when the app has them
                        e2e_ms.extend(now - msg.born_ms for msg in batch)

            threads = [threading.Thread(target=produce), threading.Thread(target=tail)]
            read0 = process_read_bytes(m.pid)
            for t in threads:
                t.start()
            cold_proc = None
            if cold:  # its own process: its decoding must not share this one's GIL
                cold_proc = subprocess.Popen(
                    ["taskset", "-c", "1", sys.executable, "-m", "deploy.cli", "consume",
                     "--namesrv", ns, "--group", "cold", "--topic", "load", "--count", str(1 << 40),
                     "--timeout-ms", str(int(args.seconds * 1000)), "--json"],
                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                )  # fmt: skip
            time.sleep(args.seconds)  # the measured window (the load runs meanwhile)
            stop.set()
            for t in threads:
                t.join(30)
            if cold_proc is not None:
                out, _ = cold_proc.communicate(timeout=60)
                cold_summary = json.loads(out.strip().splitlines()[-1])
                cold_count[0] = cold_summary["msgs_per_s"]  # first to last message it received
            read1 = process_read_bytes(m.pid)
            served = broker_status(m)["details"]["redirect"]["reasons"]
    finally:
        cg_m.remove()
        cg_s.remove()
    return {
        "producer_send_ms": {"p50": _pct(send_ms, 50), "p99": _pct(send_ms, 99)},
        "tail_e2e_ms": {"p50": _pct(e2e_ms, 50), "p99": _pct(e2e_ms, 99), "messages": len(e2e_ms)},
        "master_disk_read_mb": round((read1 - read0) / 1e6, 1),
        "cold_msgs_per_s": cold_count[0] if cold else None,
        "master_advice": served,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--backlog-mib", type=int, default=1024)
    p.add_argument("--limit-mib", type=int, default=256, help="memory cgroup limit of master and slave")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    if len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {0})  # the producer and tail consumer share the master's core
    with tempfile.TemporaryDirectory(prefix="tailrace-bench-redirect-", dir="/var/tmp") as tmp:
        root = Path(tmp)
        base = _run(root, args, cold=False, redirect=True)
        on = _run(root, args, cold=True, redirect=True)
        off = _run(root, args, cold=True, redirect=False)

    def ratio(run: dict[str, Any], key: str) -> float:
        b = float(base[key]["p99"]) or 1e-9
        return round(float(run[key]["p99"]) / b, 2)

    result = {
        "baseline_no_cold_consumer": base,
        "redirect_on": on,
        "redirect_off": off,
        "p99_vs_baseline": {
            "on": {"producer": ratio(on, "producer_send_ms"), "tail": ratio(on, "tail_e2e_ms")},
            "off": {"producer": ratio(off, "producer_send_ms"), "tail": ratio(off, "tail_e2e_ms")},
        },
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0
