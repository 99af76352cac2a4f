"""Push-consumer benchmark: throughput against handler cost and threads, and
memory against backlog with flow control.

    tailrace bench push-consumer [--json] [--zero-only]

One broker process holds a backlog (1 KiB messages, 8 queues). Each run is a
`tailrace consume --threads T --handler-ms H` process (a fresh consumer
group, from the first offset) reading until it has `count` messages, sized so
a run takes about 3 s; it reports msgs/s (first to last delivery).

1. throughput: H in 0, 1, 2, 10 ms per message, T in 1, 4, 16, 64. The
   1-thread run of each handler cost is the baseline its other runs are read
   against (`speedup`). Beside the zero-cost rows, the plain `PullConsumer`
   (`tailrace consume` without `--threads`, same backlog, same pull batch)
   reads the same broker, once before them and once after (the faster run is
   the baseline: drift never flatters the ratio), and each zero-cost row
   reports `push/pull` (`--zero-only`: these rows alone, no memory runs);
2. memory: a slow consumer (2 threads, 5 ms) against backlogs of growing
   size for 4 s, with flow control (1,000 messages per queue, the default)
   and without it (a limit above the backlog): the process's peak RSS and the
   most messages it held unprocessed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from consumer import Admin
from deploy.harness import process_group

ROOT = Path(__file__).resolve().parents[1]
COSTS_MS = (0.0, 1.0, 2.0, 10.0)
THREADS = (1, 4, 16, 64)


def _cli(*args: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "deploy.cli", *args, "--json"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)  # fmt: skip
    lines = r.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{args[0]} failed: {r.stderr[-2000:]}")
    return dict(json.loads(lines[-1]))


def _produce(address: str, topic: str, count: int) -> None:
    out = _cli("produce", "--broker", address, "--topic", topic, "--count", str(count), "--batch", "256",
               "--size", "1024", "--in-flight", "8")  # fmt: skip
    if out["failed"]:
        raise RuntimeError(f"produce failed: {out}")


def _pull(address: str, topic: str, group: str, count: int) -> dict[str, Any]:
    """The plain pull consumer's run: the ceiling a push consumer is read against."""
    return _cli("consume", "--broker", address, "--topic", topic, "--group", group, "--count", str(count),
                "--timeout-ms", "300000", "--batch", "64")  # fmt: skip


def _consume(address: str, topic: str, group: str, count: int, threads: int, cost_ms: float,
             max_cached: int = 1000, timeout_ms: int = 300_000) -> dict[str, Any]:  # fmt: skip
    return _cli("consume", "--broker", address, "--topic", topic, "--group", group, "--count", str(count),
                "--threads", str(threads), "--handler-ms", str(cost_ms), "--max-cached", str(max_cached),
                "--timeout-ms", str(timeout_ms), "--batch", "64",
                "--max-span", str(max(2000, 2 * max_cached)))  # fmt: skip


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="tailrace-bench-push-") as tmp, process_group(Path(tmp)) as procs:
        b = procs.broker("b", segment_bytes=256 * 1024 * 1024)
        with Admin(b.address) as admin:
            admin.create_topic("bench", 8)
        _produce(b.address, "bench", 100_000)
        throughput: dict[str, dict[str, Any]] = {}
        pull_runs: list[int] = []
        for cost in (0.0,) if args.zero_only else COSTS_MS:
            if cost == 0:
                pull_runs.append(_pull(b.address, "bench", "pull-before", 60_000)["msgs_per_s"])
                print(f"  pull consumer (baseline):   {pull_runs[-1]:>7,} msgs/s", flush=True)
            row: dict[str, Any] = {}
            for threads in THREADS:
                count = 60_000 if cost == 0 else max(300, min(60_000, int(3 * threads * 1000 / cost)))
                out = _consume(b.address, "bench", f"t{cost}-{threads}", count, threads, cost)
                row[str(threads)] = out["msgs_per_s"]
                print(
                    f"  handler {cost:g} ms, {threads:>2} threads: {out['msgs_per_s']:>7,} msgs/s", flush=True
                )
            base = row["1"] or 1
            row["speedup"] = {t: round(row[t] / base, 1) for t in map(str, THREADS)}
            throughput[f"{cost:g}ms"] = row
            if cost == 0:
                pull_runs.append(_pull(b.address, "bench", "pull-after", 60_000)["msgs_per_s"])
                pull = max(pull_runs) or 1
                row["pull"] = pull
                row["push_vs_pull"] = {t: round(row[t] / pull, 2) for t in map(str, THREADS)}
                ratios = "  ".join(f"{t} threads {r:.2f}x" for t, r in row["push_vs_pull"].items())
                print(f"  pull consumer (baseline):   {pull_runs[-1]:>7,} msgs/s", flush=True)
                print(f"  push/pull, zero-cost handler (pull {pull:,} msgs/s): {ratios}", flush=True)
        memory = []
        produced = 100_000
        for backlog in () if args.zero_only else (100_000, 300_000):
            if backlog > produced:
                _produce(b.address, "bench", backlog - produced)
                produced = backlog
            for label, limit in (("flow_control", 1000), ("unbounded", 10_000_000)):
                out = _consume(b.address, "bench", f"m{backlog}-{label}", backlog, 2, 5.0, limit, 4000)
                memory.append({"backlog": backlog, "mode": label, "rss_max_mb": out["rss_max_mb"],
                               "cached_max": out["cached_max"]})  # fmt: skip
                print(f"  backlog {backlog:,}, {label}: rss {out['rss_max_mb']} MB, "
                      f"held {out['cached_max']:,}", flush=True)  # fmt: skip
    result = {
        "throughput_msgs_per_s": throughput,
        "two_ms_16_vs_1_threads": throughput["2ms"]["speedup"]["16"] if "2ms" in throughput else None,
        "push_vs_pull_zero_cost": max(throughput["0ms"]["push_vs_pull"].values()),
        "memory": memory,
    }
    print(json.dumps(result, indent=1) if args.json else json.dumps(result))
    return 0 if args.zero_only or throughput["2ms"]["speedup"]["16"] >= 8 else 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")
    p.add_argument("--zero-only", action="store_true", help="only the zero-cost rows and the pull baseline")
