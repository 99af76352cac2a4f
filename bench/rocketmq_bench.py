"""RocketMQ 5's official client against Tailrace, measured (issue 18).

    tailrace bench rocketmq [--count 20000] [--size 1024] [--seconds 20]
                            [--backlog-mib 1024] [--limit-mib 256] [--skip-rates | --skip-cold] [--json]

Two parts, one run:

**rates**: one cluster (a nameserver, a master, an async slave) and a
`tailrace proxy`. On the same cluster, one after the other: the official
Python client (`rocketmq-python-client`, unmodified, in its own process:
bench/rmq_official.py) produces `count` messages of `size` bytes over v2,
one send at a time and then 32 in flight; our client does the same over
the native protocol (`Producer.send`, then single-message sends 32 in
flight). Then a SimpleConsumer over v2 (batches of 32, each message acked)
and our `PullConsumer` each receive `count` of them. msgs/s from the
client's start (after its startup) to its last message, and each v2 figure
over the native one.

**cold**: master and slave in memory cgroups (`limit-mib`, below a
`backlog-mib` backlog: each has its own page cache on this one machine, as
issue 6's `bench redirect`), the master on core 0, the slave, the proxy and
the receiver on core 1 (as if another machine). An official SimpleConsumer
receives the cold backlog through the proxy for `seconds`, twice: with the
master's redirect on (the proxy pops with `bodies_elsewhere` and reads the
bodies from the slave) and off (the master reads them). Reported: the
master's and the slave's disk reads in the window (/proc/PID/io), messages
received per second, whether every body arrived whole and once, where the
master says the bodies were read (Status `popped`), and the on/off ratio of
the master's disk reads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from consumer import Producer, PullConsumer
from deploy.cgroups import MemoryCgroup, process_read_bytes
from deploy.harness import process_group
from deploy.waits import broker_status, wait_caught_up

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


def numbered(tag: str, i: int, size: int) -> bytes:
    """A body a receiver tells apart without a message id (our native sends carry none)."""
    return f"{tag}{i:016d}".encode()[:24].ljust(max(size, 24), b"x")


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


def _native_receive(ns: str, topic: str, count: int, timeout_s: float) -> dict[str, Any]:
    seen = 0
    with PullConsumer(group="native-rx", topic=topic, namesrv=[ns], start="first") as c:
        t0 = time.monotonic()
        while seen < count and time.monotonic() < t0 + timeout_s:
            seen += len(c.poll(500))
        seconds = time.monotonic() - t0
    return {"received": seen, "seconds": round(seconds, 2), "msgs_per_s": round(min(seen, count) / seconds)}


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
        out["native_receive"] = _native_receive(ns, "rates", n, 600)
    out["v2_over_native"] = {
        "produce_sync": _ratio(out["v2_produce_sync"], out["native_produce_sync"]),
        "produce_32_in_flight": _ratio(out["v2_produce_32_in_flight"], out["native_produce_32_in_flight"]),
        "receive": _ratio(out["v2_receive"], out["native_receive"]),
    }
    return out


def _cold_run(root: Path, args: argparse.Namespace, redirect: bool) -> dict[str, Any]:
    limit = args.limit_mib * 1024 * 1024
    tag = f"cold-{'on' if redirect else 'off'}"
    cg_m = MemoryCgroup.create(f"tailrace-rmq-{tag}-m", limit)
    cg_s = MemoryCgroup.create(f"tailrace-rmq-{tag}-s", limit)
    if cg_m is None or cg_s is None:
        raise SystemExit("memory cgroups cannot be created here: run with --skip-cold")
    home = root / f"home-{tag}"
    home.mkdir(parents=True)
    try:
        with process_group(root / tag) as procs:
            c = procs.cluster(
                ("m",), slaves=1, extra=COMMON,
                master_extra=["--set", f"pull.redirect={'true' if redirect else 'false'}"],
                segment_bytes=SEG, exec_prefix=[*cg_m.exec_prefix, "taskset", "-c", "0"],
                slave_exec_prefix=[*cg_s.exec_prefix, "taskset", "-c", "1"], topic="cold", queues=4,
            )  # fmt: skip
            (ns,) = c.namesrv
            m, (s,) = c.groups["m"].master, c.groups["m"].slaves
            per_batch = max(1, (256 * 1024) // args.size)
            batches = args.backlog_mib * 1024 * 1024 // (per_batch * args.size)
            with Producer(m.address, max_in_flight=4) as prod:
                futs = [
                    prod.send_batch_async(
                        "cold", [numbered("c-", b * per_batch + i, args.size) for i in range(per_batch)]
                    )
                    for b in range(batches)
                ]
                for f in futs:
                    f.result()
            wait_caught_up(m, [s], timeout_s=600)
            proxy = procs.proxy([ns], exec_prefix=["taskset", "-c", "1"])
            spec = {
                "mode": "receive", "endpoints": proxy.info["endpoint"], "topic": "cold", "group": "cold-v2",
                "count": 1 << 40, "seconds": args.seconds, "size": args.size,
            }  # fmt: skip
            idle0 = process_read_bytes(m.pid)  # what the master reads anyway (its own pages evicted, ...)
            time.sleep(args.idle_seconds)
            m0, s0 = process_read_bytes(m.pid), process_read_bytes(s.pid)
            idle_mb = (m0 - idle0) / 1e6
            rx = official(home, spec, args.seconds + 120, cpu="1")
            m1, s1 = process_read_bytes(m.pid), process_read_bytes(s.pid)
            status = broker_status(m)["details"]
            proxy.stop()
            cold_log = [line for line in proxy.log_tail().splitlines() if "cold reads" in line][-1:]
    finally:
        cg_m.remove()
        cg_s.remove()
    return {
        "master_disk_read_mb": round((m1 - m0) / 1e6, 1),
        "master_disk_read_mb_idle_before": round(idle_mb, 1),  # over idle_seconds, no receiver
        "slave_disk_read_mb": round((s1 - s0) / 1e6, 1),
        "received": rx,
        "master_popped": status.get("popped", {}),
        "master_advice": status["redirect"]["reasons"],
        "proxy_cold_reads": cold_log[0] if cold_log else "",
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, default=20_000, help="messages per rate run")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--seconds", type=float, default=20.0, help="the cold receiver's window")
    p.add_argument("--backlog-mib", type=int, default=1024)
    p.add_argument("--limit-mib", type=int, default=256, help="memory cgroup limit of master and slave")
    p.add_argument("--idle-seconds", type=float, default=10.0, help="the master's reads measured idle first")
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
            on = _cold_run(root, args, redirect=True)
            off = _cold_run(root, args, redirect=False)
            result["cold"] = {
                "backlog_mib": args.backlog_mib, "limit_mib": args.limit_mib, "seconds": args.seconds,
                "redirect_on": on, "redirect_off": off,
                "master_disk_read_on_over_off": round(
                    on["master_disk_read_mb"] / max(off["master_disk_read_mb"], 0.1), 4
                ),
            }  # fmt: skip
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0
