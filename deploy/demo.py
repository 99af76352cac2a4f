"""`make demo`: a small cluster and a consumer being redirected to a slave.

    tailrace demo [--dir DIR] [--backlog-mib 16]

Starts a nameserver, a master and two slaves (separate processes, data under
DIR, default ./.tailrace/demo) with the master's page-cache budget pinned to
1 MiB, builds a backlog of about 16 MiB, and consumes it with a consumer
group member: batch by batch it shows which broker served the messages and
why the consumer moved (the master's `backlog_over_budget`, a slave's
`caught_up` / `slave_end`). Then it produces a little more, which the master
serves again, and stops the cluster with SIGTERM.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from consumer import Admin, Producer, PullConsumer
from consumer.routing import NameserverRoutes
from core.errors import TailraceError
from deploy.harness import process_group

BUDGET = 1024 * 1024
SEG = 16 * 1024 * 1024
COMMON = ["--set", "replication.secret=demo", "--set", "store.max_message_bytes=1048576"]


def _wait(cond: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("the cluster did not come up in time")
        time.sleep(0.05)


def _routed(ns: str) -> bool:
    routes = NameserverRoutes([ns])
    try:
        (g,) = routes.get("demo", refresh=True).groups
        return sorted(b.broker_id for b in g.brokers) == [0, 1, 2]
    except (TailraceError, ValueError):
        return False
    finally:
        routes.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tailrace demo", description=__doc__)
    p.add_argument("--dir", type=Path, default=Path(".tailrace/demo"))
    p.add_argument("--backlog-mib", type=int, default=16)
    args = p.parse_args(argv)
    if args.dir.exists():
        shutil.rmtree(args.dir)
    names = {0: "master", 1: "slave-1", 2: "slave-2"}
    with process_group(args.dir) as procs:
        ns = procs.nameserver("nameserver").address
        opts = [*COMMON, "--budget-bytes", str(BUDGET)]
        m = procs.broker("group-a", extra=opts, segment_bytes=SEG, namesrv=[ns])
        for i in (1, 2):
            procs.slave(f"group-a-s{i}", m, broker_id=i, extra=opts, segment_bytes=SEG, namesrv=[ns])
        print(f"== cluster up: nameserver {ns}, master {m.address} + 2 slaves; budget pinned to 1 MiB")
        with Admin(m.address) as admin:
            admin.create_topic("demo", 2)
        _wait(lambda: _routed(ns))
        per_queue = args.backlog_mib * 1024 // 2
        with Producer(namesrv=[ns]) as prod:
            for i in range(0, per_queue, 256):
                for q in (0, 1):
                    prod.send_batch(
                        "demo", [f"{q}:{j}:".encode() + b"x" * 1000 for j in range(i, i + 256)], queue_id=q
                    )
        behind = f"~{args.backlog_mib} MiB"
        print(f"== produced {2 * per_queue:,} x 1 KiB: a consumer starting now is {behind} behind")
        time.sleep(0.5)  # let the slaves' acks land (the demo reads, it does not assert)
        total = 2 * per_queue
        got = 0
        last_line = ""
        with PullConsumer(group="demo", topic="demo", namesrv=[ns], heartbeat_ms=500) as c:
            n = 0
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
            with Producer(namesrv=[ns]) as prod:
                for q in (0, 1):
                    prod.send_batch("demo", [b"fresh"] * 100, queue_id=q)
            fresh: list[int] = []
            deadline = time.monotonic() + 10
            while len(fresh) < 200 and time.monotonic() < deadline:
                fresh += [m.served_by for m in c.poll(500)]
            print(f"== caught up: 200 new messages served by {dict(Counter(names[b] for b in fresh))}")
        with Admin(m.address) as admin:
            reasons = admin.status()["details"]["redirect"]["reasons"]
        print(f"== master's advice counts: {reasons}")
    print("== cluster stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
