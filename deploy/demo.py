"""`make demo`: a cluster from `tailrace cluster up`, and a consumer being
redirected to a slave and handed back.

    tailrace demo [--dir DIR] [--backlog-mib 16]

1. `tailrace cluster up --topology local-1m-2s --set pull.budget_bytes=1048576`:
   a nameserver, a master and two slaves (sync replication), each its own
   process with data, log and ready file under DIR (default ./.tailrace/demo),
   the page-cache budget pinned to 1 MiB so a small backlog is "cold".
2. Builds a backlog of about 16 MiB through the nameserver.
3. Consumes it with a consumer-group member, printing, batch by batch,
   which broker served the messages and why the consumer moved (the master's
   `backlog_over_budget`, a slave's `caught_up` / `slave_end`); then fresh
   messages, which the master serves again.
4. `tailrace cluster status`, then `tailrace cluster down`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from consumer import Admin, Producer, PullConsumer
from deploy import cluster
from deploy.topology import resolve_topology
from deploy.waits import WaitTimeout, wait_routed

BUDGET = 1024 * 1024


def _print_status(directory: Path) -> None:
    for r in cluster.status(directory)["processes"]:
        extra = (
            ""
            if r["role"] == "nameserver"
            else f"  max_offset={r.get('max_offset')} redirects={r.get('redirects')}"
        )
        print(f"   {r['name']:<13} {r['role']:<10} {'healthy' if r['healthy'] else 'DOWN':<8}{extra}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tailrace demo", description=__doc__)
    p.add_argument("--dir", type=Path, default=Path(".tailrace/demo"))
    p.add_argument("--backlog-mib", type=int, default=16)
    args = p.parse_args(argv)
    cluster.down(args.dir)  # a cluster left over from an interrupted demo
    print("== tailrace cluster up --topology local-1m-2s --set pull.budget_bytes=1048576")
    state = cluster.up(resolve_topology("local-1m-2s"), args.dir, [f"pull.budget_bytes={BUDGET}"])
    try:
        procs = state["processes"]
        ns = [x["address"] for x in procs if x["role"] == "nameserver"]
        profile = cluster.state_profile(state)  # TLS and the admin account: every client below uses it
        print(f"   TLS and accounts on; client profile {profile}")
        master = next(x for x in procs if x["role"] == "master")
        names = {x["broker_id"]: ("master" if x["broker_id"] == 0 else f"slave-{x['broker_id']}")
                 for x in procs if x["role"] != "nameserver"}  # fmt: skip
        for x in procs:
            print(f"   {x['name']:<13} {x['role']:<10} {x['address']}  log {x['log']}")
        with Admin(master["address"], profile=profile) as admin:
            admin.create_topic("demo", 2)
        try:
            wait_routed(
                ns, "demo", groups=1, brokers=[0, 1, 2], profile=profile
            )  # the master and both slaves
        except WaitTimeout:
            raise SystemExit("the topic did not reach the nameserver's routes") from None
        per_queue = args.backlog_mib * 1024 // 2
        with Producer(namesrv=ns, profile=profile) as prod:
            for i in range(0, per_queue, 256):
                for q in (0, 1):
                    bodies = [f"{q}:{j}:".encode() + b"x" * 1000 for j in range(i, i + 256)]
                    prod.send_batch("demo", bodies, queue_id=q)
        total = 2 * per_queue
        behind = f"~{args.backlog_mib} MiB"
        print(f"== produced {total:,} x 1 KiB (sync replication): a new consumer is {behind} behind")
        got, n, last_line = 0, 0, ""
        with PullConsumer(group="demo", topic="demo", namesrv=ns, heartbeat_ms=500, profile=profile) as c:
            while got < total:
                batch = c.poll(500)
                if not batch:
                    continue
                n += 1
                got += len(batch)
                served = sorted({names.get(m.served_by, str(m.served_by)) for m in batch})
                advice = sorted(
                    {f"{names[a]} -> {names.get(s, str(s))}: {r}" for a, s, r in c.last_advice.values()}
                )
                line = f"served by {', '.join(served)}; last advice {advice}"
                if line != last_line or got >= total:  # print when who serves, or why, changes
                    print(f"   batch {n:4d}  {got:6,}/{total:,} consumed  {line}")
                    last_line = line
            print(f"== backlog consumed: served_by {dict((names[k], v) for k, v in c.served_by.items())}")
            with Producer(namesrv=ns, profile=profile) as prod:
                for q in (0, 1):
                    prod.send_batch("demo", [b"fresh"] * 100, queue_id=q)
            fresh: list[int] = []
            deadline = time.monotonic() + 10
            while len(fresh) < 200 and time.monotonic() < deadline:
                fresh += [m.served_by for m in c.poll(500)]
            print(f"== caught up: 200 new messages served by {dict(Counter(names[b] for b in fresh))}")
        print("== tailrace cluster status")
        _print_status(args.dir)
    finally:
        print("== tailrace cluster down")
        cluster.down(args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
