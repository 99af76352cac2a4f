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
"""

from __future__ import annotations

import argparse
import functools
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

import grpc

from consumer.admin import Admin
from consumer.channels import open_channel
from consumer.profile import Profile
from core.errors import TailraceError
from core.pb.tailrace.v1 import broker_pb2, broker_pb2_grpc, nameserver_pb2, nameserver_pb2_grpc
from deploy import cluster
from deploy.drill_check import check, read_lines
from deploy.topology import Topology, load_topology, resolve_topology
from deploy.waits import WaitTimeout, poll_until, wait_routed

DRILLS = ("kill-master", "pause-master", "partition-master", "kill-slave", "restart-all", "rolling-restart")
TOPIC = "drill"
REPO = Path(__file__).resolve().parents[1]
POLL_S = 0.05  # how often the drill's waits ask (their conditions are RPCs)


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


class ClusterView:
    """The drill's handles on a running cluster (its state file, the controller)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        state = cluster.read_state(directory)
        assert state is not None
        self.procs = {p["name"]: p for p in state["processes"]}
        ctl = [p for p in state["processes"] if p.get("controller")]
        if not ctl:
            raise TailraceError("drill: the topology has no controller (set failover = true in [cluster])")
        self.controller = ctl[0]["address"]
        self.nameservers = [p["address"] for p in state["processes"] if p["role"] == "nameserver"]
        self.profile = cluster.state_profile(state)  # the cluster's client profile (TLS, the admin account)
        self.security = Profile.resolve(self.profile).security()
        self._ch = open_channel(self.controller, self.security)
        self.ctl = nameserver_pb2_grpc.NameServerStub(self._ch)

    def refresh(self) -> None:
        state = cluster.read_state(self.directory)
        assert state is not None
        self.procs = {p["name"]: p for p in state["processes"]}

    def group_status(self) -> dict[str, Any]:
        try:
            s = json.loads(
                self.ctl.ControllerStatus(nameserver_pb2.ControllerStatusRequest(), timeout=2).json
            )
        except grpc.RpcError:
            return {}
        groups = s.get("groups", {})
        return dict(next(iter(groups.values()))) if groups else {}

    def brokers(self) -> list[str]:
        return [n for n, p in self.procs.items() if p["role"] != "nameserver"]

    def master(self) -> str:
        addr = self.group_status().get("master_address", "")
        for n in self.brokers():
            if self.procs[n]["address"] == addr:
                return n
        raise TailraceError(f"drill: no broker at the master address {addr!r}")

    def role_of(self, name: str) -> str:
        with open_channel(self.procs[name]["address"], self.security) as ch:
            try:
                st = broker_pb2_grpc.BrokerStub(ch).Status(broker_pb2.StatusRequest(), timeout=2)
            except grpc.RpcError:
                return "down"
            return str(st.role)

    def signal(self, name: str, sig: signal.Signals) -> None:
        cluster.signal_process(self.directory, name, sig)

    def alive(self, name: str) -> bool:
        return cluster._alive(int(self.procs[name]["pid"]))

    def start(self, name: str) -> None:
        cluster.start_process(self.directory, name)
        self.refresh()

    def all_in_sync(self) -> bool:
        g = self.group_status()
        return bool(g) and len(g.get("in_sync", [])) == len(self.brokers()) - 1 and g.get("status") == "ok"

    def close(self) -> None:
        self._ch.close()


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
    try:

        def tune(t: Topology) -> None:
            if not t.failover:
                raise TailraceError("drill: the topology must set failover = true")
            if opt.fast:
                t.lease_ms, t.controller_heartbeat_ms, t.heartbeat_ms = 1000, 100, 200
            t.drills = True  # partition-master cuts the master off at the controller (Isolate)

        t_start = time.time()
        cluster.up(opt.topology, cdir, tune=tune)
        view = ClusterView(cdir)
        topo = load_topology(opt.topology)
        lease_s = (1000 if opt.fast else topo.lease_ms) / 1000
        poll_until(view.all_in_sync, 30, "every slave in sync", every_s=POLL_S)
        with Admin(namesrv=view.nameservers, profile=view.profile) as admin:
            admin.create_topic(TOPIC, 4)
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
        epoch0 = int(view.group_status().get("epoch", 0))
        t_fault = time.time()
        opt.log(f"drill {opt.name}: fault at {fault_at:.1f} s (epoch {epoch0})")
        events = _inject(opt.name, view, rng, lease_s, epoch0, opt.log)
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
        report.update(
            {
                "drill": opt.name,
                "seed": opt.seed,
                "fast": opt.fast,
                "fault_at_s": round(fault_at, 2),
                "failover_time_s": round(first_new - t_fault, 3) if first_new is not None else None,
                "epochs": [epoch0, int(view.group_status().get("epoch", 0))],
                "events": events,
                "seconds": round(time.time() - t_start, 1),
                "workdir": str(work) if opt.keep or opt.workdir else None,
            }
        )
        report["ok"] = not report["violations"]
        return report
    finally:
        for p in (producer, consumer):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        if view is not None:
            for n in view.brokers():  # a paused broker must not stay paused
                if view.alive(n):
                    view.signal(n, signal.SIGCONT)
            view.close()
        cluster.down(cdir)
        if tmp is not None and not opt.keep:
            tmp.cleanup()


def _inject(
    name: str, view: ClusterView, rng: random.Random, lease_s: float, epoch0: int, log: Callable[[str], None]
) -> list[str]:
    """Inject the fault and heal it; returns what happened, for the report."""
    events: list[str] = []

    def new_epoch() -> bool:
        return int(view.group_status().get("epoch", 0)) > epoch0

    def note(text: str) -> None:
        events.append(text)
        log(f"  {text}")

    def elected() -> None:
        poll_until(new_epoch, 10 * lease_s + 30, "an election", every_s=POLL_S)
        note(f"elected {view.master()}")

    def back_as_slave(m: str, timeout_s: float, what: str) -> None:
        poll_until(lambda: view.role_of(m) == "slave", timeout_s, f"{m} {what}", every_s=POLL_S)

    slaves_before = [n for n in view.brokers() if n != view.master()]
    if name == "kill-master":
        m = view.master()
        view.signal(m, signal.SIGKILL)
        note(f"SIGKILL {m}")
        elected()
        time.sleep(rng.uniform(0.5, 2.0) * lease_s)  # the schedule: how long it stays down
        view.start(m)
        back_as_slave(m, 30, "rejoining as a slave")
        note(f"restarted {m}: slave")
    elif name == "pause-master":
        m = view.master()
        view.signal(m, signal.SIGSTOP)
        note(f"SIGSTOP {m}")
        elected()
        time.sleep(rng.uniform(0.5, 1.5) * lease_s)  # the schedule: how long it stays paused
        view.signal(m, signal.SIGCONT)
        note(f"SIGCONT {m}")
        back_as_slave(m, 30, "coming back fenced, as a slave")
        note(f"{m} is a slave")
    elif name == "partition-master":
        m = view.master()
        cut_ms = int(3 * lease_s * 1000)
        view.ctl.Isolate(nameserver_pb2.IsolateRequest(address=view.procs[m]["address"], duration_ms=cut_ms))
        note(f"cut {m} off from the controller for {cut_ms} ms")
        elected()
        back_as_slave(m, cut_ms / 1000 + 30, "rejoining as a slave")
        note(f"{m} is a slave")
    elif name == "kill-slave":
        s = rng.choice(slaves_before)
        view.signal(s, signal.SIGKILL)
        note(f"SIGKILL {s}")
        time.sleep(rng.uniform(1.0, 3.0) * lease_s)
        view.start(s)
        poll_until(view.all_in_sync, 60, f"{s} back in sync", every_s=POLL_S)
        note(f"restarted {s}: in sync")
    elif name == "restart-all":
        names = view.brokers()
        for n in names:
            view.signal(n, signal.SIGKILL)
        note(f"SIGKILL {', '.join(names)}")
        poll_until(lambda: not any(view.alive(n) for n in names), 10, "every broker exiting", every_s=POLL_S)
        time.sleep(rng.uniform(0.2, 1.0) * lease_s)
        for n in rng.sample(names, len(names)):
            view.start(n)
        note("restarted every broker")
        poll_until(view.all_in_sync, 60 + 10 * lease_s, "a master with every slave in sync", every_s=POLL_S)
        note(f"master {view.master()}")
    elif name == "rolling-restart":
        for n in rng.sample(view.brokers(), len(view.brokers())):
            view.signal(n, signal.SIGTERM)
            poll_until(functools.partial(_stopped, view, n), 30, f"{n} stopping", every_s=POLL_S)
            view.start(n)
            poll_until(view.all_in_sync, 60 + 10 * lease_s, f"{n} back in sync", every_s=POLL_S)
            note(f"restarted {n}")
    return events


def _stopped(view: ClusterView, name: str) -> bool:
    return not view.alive(name)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=DRILLS)
    p.add_argument("--topology", default="local-failover", help="file, or a shipped name (failover = true)")
    p.add_argument("--seed", type=int, default=None, help="replay a schedule (default: random, printed)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of producing")
    p.add_argument("--rate", type=int, default=2000, help="messages per second")
    p.add_argument("--fast", action="store_true", help="fast heartbeats and a 1 s lease")
    p.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    report = run_drill(
        DrillOptions(
            args.name,
            resolve_topology(args.topology),
            seed,
            args.duration,
            args.rate,
            args.fast,
            args.dir,
            args.keep,
        )
    )
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        keys = ("drill", "seed", "acknowledged", "consumed", "lost", "duplicated", "failover_time_s", "ok")
        print("  ".join(f"{k}={report[k]}" for k in keys))
        for v in report["violations"]:
            print(f"VIOLATION: {v}")
    return 0 if report["ok"] else 1
