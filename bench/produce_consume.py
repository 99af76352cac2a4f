"""End-to-end throughput: one broker process, one producer, one consumer.

    tailrace bench produce-consume [--count N] [--size 1024] [--batch 256] [--json]

Starts a broker (harness, port 0, temp dir), runs `tailrace produce` and then
`tailrace consume` as separate processes (the same tools drills use), and
reports their rates. The baseline, measured in the same script, is the
storage engine alone appending the same records in-process, so
`produce_vs_store` says what the network path costs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.store_bench import run_once
from core.store import StoreConfig
from deploy.harness import process_group

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "deploy.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"tailrace {args[0]} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, default=500_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--in-flight", type=int, default=4)
    p.add_argument("--segment-bytes", type=int, default=256 * 1024 * 1024)
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="tailrace-bench-") as tmp:
        base = run_once(
            Path(tmp) / "store",
            min(args.count, 300_000),
            args.size,
            args.batch,
            4,
            StoreConfig(segment_bytes=args.segment_bytes),
        )
        with process_group(Path(tmp) / "run") as procs:
            b = procs.broker("bench", segment_bytes=args.segment_bytes)
            produce = _cli(
                "produce", "--broker", b.address, "--topic", "bench", "--count", str(args.count),
                "--size", str(args.size), "--batch", str(args.batch),
                "--in-flight", str(args.in_flight), "--json",
            )  # fmt: skip
            consume = _cli(
                "consume", "--broker", b.address, "--group", "bench", "--topic", "bench",
                "--count", str(args.count), "--batch", str(args.batch),
                "--timeout-ms", "600000", "--json",
            )  # fmt: skip
    result = {
        "count": args.count,
        "size": args.size,
        "batch": args.batch,
        "produce_msgs_per_s": produce["msgs_per_s"],
        "produce_failed": produce["failed"],
        "consume_msgs_per_s": consume["msgs_per_s"],
        "consume_unique": consume["unique"],
        "consume_duplicates": consume["duplicates"],
        "baseline_store_appends_per_s": base["appends_per_s"],
        "produce_vs_store": round(produce["msgs_per_s"] / base["appends_per_s"], 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"produce {result['produce_msgs_per_s']:,} msgs/s   "
            f"consume {result['consume_msgs_per_s']:,} msgs/s   "
            f"(store alone {result['baseline_store_appends_per_s']:,} appends/s; "
            f"produce/store = {result['produce_vs_store']})"
        )
    ok = consume["unique"] == args.count and produce["failed"] == 0
    return 0 if ok else 1
