"""Failover benchmark: seeded `kill-master` drills in a row, sync replication.

    tailrace bench failover [--runs N] [--default-runs M] [--seed S] [--json]

Each run is a whole `tailrace drill kill-master` (local-failover topology:
one master, two slaves, sync replication) at 2,000 msgs/s: cluster up,
SIGKILL of the master at a seeded moment, restart of it, drain, checks.
`failover_time_s` is from the SIGKILL to the first send acknowledged in the
new epoch, as the producer's log records it. `--runs` use fast settings
(1 s lease, 100 ms controller heartbeats); `--default-runs` the shipped
defaults (4 s lease, 1 s heartbeats). Each figure is also given as a ratio
to its own lease, the part of the failover that is waiting by design.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from deploy.drill import DrillOptions, run_drill
from deploy.topology import resolve_topology


def _series(runs: int, seed: int, fast: bool, duration: float) -> dict[str, Any]:
    rows = []
    for i in range(runs):
        r = run_drill(
            DrillOptions("kill-master", resolve_topology("local-failover"), seed + i, duration, 2000, fast,
                         log=lambda s: None)
        )  # fmt: skip
        rows.append(r)
        print(
            f"  {'fast' if fast else 'default'} seed {seed + i}: acknowledged={r['acknowledged']} "
            f"lost={r['lost']} duplicated={r['duplicated']} failover_time_s={r['failover_time_s']} "
            f"ok={r['ok']}",
            flush=True,
        )
    times = [r["failover_time_s"] for r in rows if r["failover_time_s"] is not None]
    lease_s = 1.0 if fast else 4.0
    return {
        "settings": "fast (lease 1 s, heartbeat 100 ms)" if fast else "default (lease 4 s, heartbeat 1 s)",
        "runs": runs,
        "acknowledged": sum(r["acknowledged"] for r in rows),
        "lost": sum(r["lost"] for r in rows),
        "duplicated": sum(r["duplicated"] for r in rows),
        "violations": sum(len(r["violations"]) for r in rows),
        "failover_s_median": round(statistics.median(times), 3) if times else None,
        "failover_s_max": round(max(times), 3) if times else None,
        "failover_over_lease_median": round(statistics.median(times) / lease_s, 2) if times else None,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=20, help="kill-master drills with fast settings")
    p.add_argument("--default-runs", type=int, default=5, help="kill-master drills with default settings")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--duration", type=float, default=8.0, help="seconds of producing per drill")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    out = {
        "fast": _series(args.runs, args.seed, True, args.duration),
        "default": _series(args.default_runs, args.seed + 10_000, False, args.duration),
    }
    print(json.dumps(out, indent=1) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0 if all(s["lost"] == 0 and s["violations"] == 0 for s in out.values()) else 1
