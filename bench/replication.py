"""Replication benchmark: master + 1 slave on this machine.

    tailrace bench replication [--count N] [--json]

1. async and sync runs: `tailrace produce` (1 KiB, batches of 256) against a
   master with one slave; reports produce msgs/s and the append -> first
   slave ack lag (p50/p99, measured by the master);
2. catch-up: a new, empty slave joins a master that already holds the data;
   reports the replication stream's MB/s until it has everything.
The async run is the baseline the sync figures are read against.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from deploy.harness import process_group
from deploy.waits import broker_status, max_offset, poll_until, wait_caught_up, wait_warm

ROOT = Path(__file__).resolve().parents[1]
SEG = 256 * 1024 * 1024
COMMON = ["--set", "replication.secret=bench"]
IN_FLIGHT = 8  # sync sends wait for a slave ack: more in flight hides that latency


def _produce(address: str, count: int, batch: int) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "produce", "--broker", address, "--topic", "bench",
         "--count", str(count), "--size", "1024", "--batch", str(batch),
         "--in-flight", str(IN_FLIGHT), "--json"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"produce failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _mode_run(root: Path, mode: str, count: int, batch: int) -> dict[str, Any]:
    with process_group(root / mode) as procs:
        rs = procs.replica_set("m", 1, extra=COMMON, master_extra=["--replication", mode], segment_bytes=SEG)
        m, s = rs.master, rs.slaves[0]
        poll_until(lambda: broker_status(m)["details"]["replication"]["in_sync"], 30, "the slave in sync")
        wait_warm(m, s)  # pre-faulting the first segments is start-up work, not what is measured
        out = _produce(m.address, count, batch)
        wait_caught_up(m, [s], timeout_s=600)
        rep = broker_status(m)["details"]["replication"]
        return {
            "produce_msgs_per_s": out["msgs_per_s"],
            "failed": out["failed"],
            "ack_lag": rep["ack_lag"],
        }


def _catch_up(root: Path, count: int, batch: int) -> dict[str, Any]:
    with process_group(root / "catchup") as procs:
        m = procs.broker("m", extra=COMMON, segment_bytes=SEG)
        wait_warm(m)
        _produce(m.address, count, batch)
        nbytes = max_offset(m)
        s = procs.slave("s1", m, extra=COMMON, segment_bytes=SEG)
        # from the moment the slave serves (its stream opens as it starts)
        took = wait_caught_up(m, [s], timeout_s=600)
        return {"bytes": nbytes, "seconds": round(took, 3), "mb_per_s": round(nbytes / took / 1e6, 1)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, default=300_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="tailrace-bench-repl-") as tmp:
        root = Path(tmp)
        asyn = _mode_run(root, "async", args.count, args.batch)
        syn = _mode_run(root, "sync", args.count, args.batch)
        catch = _catch_up(root, args.count, args.batch)
    result = {
        "count": args.count,
        "batch": args.batch,
        "async": asyn,
        "sync": syn,
        "sync_vs_async_produce": round(syn["produce_msgs_per_s"] / asyn["produce_msgs_per_s"], 2),
        "catch_up": catch,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"async {asyn['produce_msgs_per_s']:,} msgs/s (ack lag {asyn['ack_lag']})\n"
            f"sync  {syn['produce_msgs_per_s']:,} msgs/s (ack lag {syn['ack_lag']})\n"
            f"catch-up stream {catch['mb_per_s']} MB/s ({catch['bytes']:,} bytes in {catch['seconds']} s)"
        )
    return 0 if asyn["failed"] == 0 and syn["failed"] == 0 else 1
