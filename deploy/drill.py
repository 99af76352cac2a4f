"""`tailrace drill NAME`: a failure drill on a real cluster, checked from logs.

Starts the topology's cluster (failover on) under a work directory, creates a
topic, runs `tailrace produce --rate` and one `tailrace consume` member of a
consumer group as separate processes with their verifiable logs, injects the
fault at a seeded moment, heals it, lets the producer finish, drains the
consumer, and checks the logs (deploy/drill_check.py): every acknowledged
message consumed, no delivery below a commit, every queue read whole and in
order, one acknowledging master per epoch. The seed is printed; the same
seed replays the same schedule (moment, victim, durations).

Drills:
- `kill-master`: SIGKILL the master; restart it after a while (it rejoins as
  a slave and its divergent tail is cut).
- `pause-master`: SIGSTOP the master past its lease, then SIGCONT: it must
  come back fenced (a slave of the new epoch), never acknowledging again.
- `partition-master`: cut the master off from the controller (at the
  controller: its heartbeats are refused for 3 leases); it fences itself,
  a slave is elected, and it rejoins as a slave.
- `kill-slave`: SIGKILL a slave, restart it later: no failover, no loss.
- `restart-all`: SIGKILL every broker at once, then start them all.
- `rolling-restart`: SIGTERM and restart each broker in turn, waiting for it
  to serve again before the next.

The controller's drills (deploy/drill_ha.py, topology local-ha by default):
`kill-controller`, `pause-controller`, `etcd-member-down`,
`etcd-quorum-lost`, `kill-master-and-controller`.

Every drill ends by checking the whole cluster is healthy (every process up,
one controller leading and the others standing by under it, etcd members
agreeing on a leader, every slave in sync) and, after `cluster down`, that
none of its etcd processes is left. The report: the logs' counts
(`acknowledged`, `lost`, `duplicated`, ...), `failover_time_s` (the fault to
the first send acknowledged in a new epoch), `controller_takeover_s`,
`max_send_stall_s` (deploy/drill_check.py `send_stall`, from the fault to
the heal + STALL_AFTER_S), `epochs` and `controller_leaders` (before,
after), `events`, `seed`, `violations`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumer.admin import Admin
from core.errors import TailraceError
from deploy import cluster
from deploy.drill_check import check, read_lines, send_stall
from deploy.drill_faults import CLASSIC, POLL_S, Fault, inject_classic
from deploy.drill_ha import HA, PROBE_TOPIC, expectations, inject_ha
from deploy.drill_view import ClusterView
from deploy.topology import Topology, resolve_topology
from deploy.waits import WaitTimeout, poll_until, wait_routed

DRILLS = CLASSIC + HA
TOPIC = "drill"
REPO = Path(__file__).resolve().parents[1]
STALL_AFTER_S = 3.0  # the stall window runs this long past the heal
DURATION_S = {"etcd-quorum-lost": 45.0, "kill-master-and-controller": 30.0}  # default: 20 s


def default_topology(name: str) -> str:
    return "local-ha" if name in HA else "local-failover"


def default_duration(name: str) -> float:
    return DURATION_S.get(name, 20.0)


@dataclass
class DrillOptions:
    name: str
    topology: Path
    seed: int
    duration_s: float = 20.0
    rate: int = 2000  # messages per second
    fast: bool = False  # fast heartbeats and lease (CI)
    workdir: Path | None = None
    keep: bool = False
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)
    lease_ms: int | None = None  # override the topology's master lease
    controller_heartbeat_ms: int | None = None  # and its controller heartbeat


def _client(args: list[str], out: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", *args], stdout=f, stderr=subprocess.STDOUT, cwd=REPO
        )


def run_drill(opt: DrillOptions) -> dict[str, Any]:
    if opt.name not in DRILLS:
        raise TailraceError(f"drill: no drill {opt.name!r} (one of {', '.join(DRILLS)})")
    rng = random.Random(opt.seed)
    opt.log(f"drill {opt.name}: seed {opt.seed} (replay with --seed {opt.seed})")
    tmp = None
    if opt.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix=f"tailrace-drill-{opt.name}-")
        work = Path(tmp.name)
    else:
        work = opt.workdir
        work.mkdir(parents=True, exist_ok=True)
    cdir = work / "cluster"
    consumer: subprocess.Popen[bytes] | None = None
    producer: subprocess.Popen[bytes] | None = None
    view: ClusterView | None = None
    tuned: list[Topology] = []
    try:

        def tune(t: Topology) -> None:
            if not t.failover:
                raise TailraceError("drill: the topology must set failover = true")
            if opt.fast and t.controller_store == "etcd":  # the etcd lease bounds the master lease below
                t.lease_ms, t.controller_heartbeat_ms, t.heartbeat_ms = 2 * t.etcd_lease_ms, 250, 200
            elif opt.fast:
                t.lease_ms, t.controller_heartbeat_ms, t.heartbeat_ms = 1000, 100, 200
            t.lease_ms = opt.lease_ms or t.lease_ms
            t.controller_heartbeat_ms = opt.controller_heartbeat_ms or t.controller_heartbeat_ms
            t.drills = True  # partition-master cuts the master off at the controller (Isolate)
            tuned.append(t)

        t_start = time.time()
        cluster.up(opt.topology, cdir, tune=tune)
        topo = tuned[0]
        view = ClusterView(cdir)
        etcd_pids = view.pids("etcd")
        lease_s = topo.lease_ms / 1000
        poll_until(view.all_in_sync, 30, "every slave in sync", every_s=POLL_S)
        with Admin(namesrv=view.nameservers, profile=view.profile) as admin:
            admin.create_topic(TOPIC, 4)
            if opt.name in HA:
                admin.create_topic(PROBE_TOPIC, 1)
        wait_routed(view.nameservers, TOPIC, profile=view.profile)  # clients start from a route
        secure = ["--profile", str(view.profile)] if view.profile else []
        count = int(opt.rate * opt.duration_s)
        plog, clog = work / "produce.jsonl", work / "consume.jsonl"
        ns = ",".join(view.nameservers)
        producer = _client(
            ["produce", *secure, "--namesrv", ns, "--topic", TOPIC, "--count", str(count), "--batch", "16",
             "--rate", str(opt.rate), "--in-flight", "2", "--size", "256", "--log", str(plog), "--json"],
            work / "produce.out",
        )  # fmt: skip
        consumer = _client(
            ["consume", *secure, "--namesrv", ns, "--group", "drill", "--topic", TOPIC, "--count", str(count),
             "--from", "first", "--timeout-ms", str(int((opt.duration_s + 300) * 1000)),
             "--heartbeat-ms", "500", "--log", str(clog), "--json"],
            work / "consume.out",
        )  # fmt: skip
        fault_at = rng.uniform(0.25, 0.45) * opt.duration_s
        time.sleep(fault_at)  # the schedule itself, not a wait for a condition
        epoch0 = view.epoch()
        leaders = [view.controller_leader()]
        t_fault = time.time()
        opt.log(f"drill {opt.name}: fault at {fault_at:.1f} s (epoch {epoch0}, controller {leaders[0]})")
        fault = Fault(view, rng, lease_s, topo.etcd_lease_ms / 1000, epoch0, opt.log)
        (inject_ha if opt.name in HA else inject_classic)(opt.name, fault)
        t_heal = time.time()
        events = fault.events
        poll_until(
            lambda: producer is not None and producer.poll() is not None,
            opt.duration_s * 3 + 120,
            "the producer finishing",
            every_s=0.2,
        )
        produced = read_lines(plog)
        acked = {int(p["seq"]) for p in produced if p.get("status") == "SEND_OK"}

        def drained() -> bool:
            got = {int(c["seq"]) for c in read_lines(clog) if c.get("seq") is not None}
            return acked <= got

        try:
            poll_until(drained, 90, "the consumer draining every acknowledged message", every_s=0.5)
        except WaitTimeout as exc:
            events.append(str(exc))
        if consumer.poll() is not None and not drained():
            out = (work / "consume.out").read_text(errors="replace")[-2000:]
            raise TailraceError(f"drill: the consumer exited early ({consumer.returncode}):\n{out}")
        consumer.send_signal(signal.SIGTERM)  # stop, commit, leave the group
        consumer.wait(30)
        report = check(produced, read_lines(clog))
        first_new = min(
            (
                float(p["t"])
                for p in produced
                if p.get("status") == "SEND_OK" and int(p.get("epoch", 0)) > epoch0
            ),
            default=None,
        )
        fault.violations += _unhealthy(view, 30 + 5 * lease_s)
        leaders.append(view.controller_leader())
        report.update(
            {
                "drill": opt.name,
                "topology": opt.topology.stem,
                "seed": opt.seed,
                "fast": opt.fast,
                "lease_ms": topo.lease_ms,
                "controller_heartbeat_ms": topo.controller_heartbeat_ms,
                "fault_at_s": round(fault_at, 2),
                "failover_time_s": round(first_new - t_fault, 3) if first_new is not None else None,
                "controller_takeover_s": fault.takeover_s,
                **send_stall(produced, t_fault, t_heal + STALL_AFTER_S),
                "epochs": [epoch0, view.epoch()],
                "controller_leaders": leaders,
                **fault.extra,
                "events": events,
                "seconds": round(time.time() - t_start, 1),
                "workdir": str(work) if opt.keep or opt.workdir else None,
            }
        )
        for phase, (a, b) in report.get("phases", {}).items():  # etcd-quorum-lost: each outage's stall
            report[f"phase_{phase}_stall_s"] = send_stall(produced, a, b + STALL_AFTER_S)["max_send_stall_s"]
        if opt.name in HA:
            fault.violations += expectations(opt.name, report)
        _resume_all(view)
        view.close()
        view = None
        cluster.down(cdir)
        left = [pid for pid in etcd_pids + _etcd_pids(cdir) if cluster._alive(pid)]
        if left:
            fault.violations.append(f"etcd processes left after cluster down: {left}")
        report["violations"] = report["violations"] + fault.violations
        report["ok"] = not report["violations"]
        return report
    finally:
        for p in (producer, consumer):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        if view is not None:
            _resume_all(view)
            view.close()
        cluster.down(cdir)
        if tmp is not None and not opt.keep:
            tmp.cleanup()


def _resume_all(view: ClusterView) -> None:
    """A paused process must not stay paused (cluster down would wait for it)."""
    for n in view.procs:
        if view.alive(n):
            view.signal(n, signal.SIGCONT)


def _etcd_pids(cdir: Path) -> list[int]:
    state = cluster.read_state(cdir)
    return [int(p["pid"]) for p in (state or {}).get("processes", []) if p["role"] == "etcd"]


def _unhealthy(view: ClusterView, timeout_s: float) -> list[str]:
    """Wait until the whole cluster is healthy; what is still wrong at the deadline."""
    wrong: list[str] = []

    def healthy() -> bool:
        view.refresh()
        wrong[:] = [f"{n} is not running" for n in view.procs if not view.alive(n)]
        if view.etcd_members() and view.etcd_leader() is None:
            wrong.append("the etcd members do not agree on a leader")
        leader = view.controller_leader()
        if leader is None:
            wrong.append("no controller leads")
        for c in view.controllers:
            role = view.controller_role(c)
            if c != leader and (role is None or role.get("leading") or role.get("leader") != leader):
                wrong.append(f"{c} does not stand by under {leader}: {role}")
        if not wrong and not view.all_in_sync():
            wrong.append(f"the group is not whole: {view.group_status()}")
        return not wrong

    try:
        poll_until(healthy, timeout_s, "the whole cluster healthy", every_s=0.2)
    except WaitTimeout:
        return [f"unhealthy at the end: {'; '.join(wrong)}"]
    return []


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=DRILLS)
    p.add_argument(
        "--topology",
        default=None,
        help="file, or a shipped name (failover = true; default: local-ha for the controller's drills, "
        "else local-failover)",
    )
    p.add_argument("--seed", type=int, default=None, help="replay a schedule (default: random, printed)")
    p.add_argument(
        "--duration", type=float, default=None, help="seconds of producing (default: 20, more for some)"
    )
    p.add_argument("--rate", type=int, default=2000, help="messages per second")
    p.add_argument("--fast", action="store_true", help="fast heartbeats and a 1 s lease")
    p.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--lease-ms", type=int, default=None, help="override the topology's master lease")
    p.add_argument("--controller-heartbeat-ms", type=int, default=None, help="and its controller heartbeat")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    report = run_drill(
        DrillOptions(
            args.name,
            resolve_topology(args.topology or default_topology(args.name)),
            seed,
            args.duration or default_duration(args.name),
            args.rate,
            args.fast,
            args.dir,
            args.keep,
            lease_ms=args.lease_ms,
            controller_heartbeat_ms=args.controller_heartbeat_ms,
        )
    )
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        keys = (
            *("drill", "seed", "acknowledged", "consumed", "lost", "duplicated", "failover_time_s"),
            *("controller_takeover_s", "max_send_stall_s", "epochs", "controller_leaders", "ok"),
        )
        print("  ".join(f"{k}={report[k]}" for k in keys))
        for v in report["violations"]:
            print(f"VIOLATION: {v}")
    return 0 if report["ok"] else 1
