"""What TLS and accounts cost: produce and consume, secure against plaintext.

    tailrace bench security [--count N] [--size 1024] [--batch 256] [--in-flight 4] [--json]

Two replica sets run side by side, each a master with one slave and sync
replication (a send is acknowledged once the slave has it):

- plaintext: no TLS and no accounts, the development setup;
- secure: what `tailrace cluster up` runs. Both ports speak TLS, replication
  runs over mutual TLS, and every client call is signed by the admin account
  and checked against the ACL.

A threaded `Producer` sends `--count` messages of `--size` bytes to each
cluster, in batches of `--batch` with `--in-flight` outstanding. The order
is plaintext, secure, secure, plaintext, half the messages each time, so
drift in the machine's speed cancels out. Then a `PullConsumer` reads
everything back from each master.

Rates count from the first send, or from joining the group, to the last
answer. Ratios are secure over plaintext, from this one run. The issue's
target is at least 0.8x.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.clients import _batches, _rate, consume_threads, produce_threads
from consumer import Admin
from deploy.harness import ProcessGroup, process_group

SEGMENT = 256 * 1024 * 1024


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, default=200_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--in-flight", type=int, default=4)
    p.add_argument("--json", action="store_true")


def _replica_set(procs: ProcessGroup, secret: list[str]) -> tuple[str, Path | None]:
    rs = procs.replica_set(
        "m", 1, extra=secret, master_extra=["--replication", "sync"], segment_bytes=SEGMENT
    )
    profile = procs.pki.profile_file if procs.pki else None
    with Admin(rs.master.address, profile=profile) as admin:
        admin.create_topic("t", 8)
    return rs.master.address, profile


def run(args: argparse.Namespace) -> int:
    batches = _batches(args.count, args.size, args.batch)
    half = batches[: len(batches) // 2]
    with (
        tempfile.TemporaryDirectory(prefix="tailrace-security-") as tmp,
        process_group(Path(tmp) / "plain") as plain,
        process_group(Path(tmp) / "secure") as secure,
    ):
        secure.secure()
        targets = {
            "plaintext": _replica_set(plain, ["--set", "replication.secret=bench"]),
            "secure": _replica_set(secure, []),
        }
        produced: dict[str, list[tuple[int, float]]] = {"plaintext": [], "secure": []}
        for kind in ("plaintext", "secure", "secure", "plaintext"):
            address, profile = targets[kind]
            produced[kind].append(produce_threads(address, "t", half, args.in_flight, profile=profile))
        result: dict[str, Any] = {"count": args.count, "size": args.size, "batch": args.batch}
        for kind, runs in produced.items():
            ok, took = sum(r[0] for r in runs), sum(r[1] for r in runs)
            result[f"produce_{kind}_msgs_per_s"] = _rate(ok, took)
            result[f"produce_{kind}_failed"] = 2 * sum(len(b) for b in half) - ok
            address, profile = targets[kind]
            n, secs = consume_threads(address, "t", f"bench-{kind}", ok, profile=profile)
            result[f"consume_{kind}_msgs_per_s"] = _rate(n, secs)
    for what in ("produce", "consume"):
        base = max(1, result[f"{what}_plaintext_msgs_per_s"])
        result[f"{what}_secure_vs_plaintext"] = round(result[f"{what}_secure_msgs_per_s"] / base, 2)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:34s} {v}")
    return 0
