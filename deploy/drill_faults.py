"""The brokers' fault injections of `tailrace drill` (any failover topology),
and `Fault`, what every injection is given and fills in.

An injection injects its fault, heals it and waits (every wait a
`poll_until` with a deadline) until the cluster shows what should follow;
the seeded `rng` decides moments, victims and durations (the schedule may
sleep). What it saw goes to `events`, what it expected and did not see to
`violations`.
"""

from __future__ import annotations

import functools
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deploy.drill_view import ClusterView
from deploy.waits import poll_until

POLL_S = 0.05  # how often the drill's waits ask (their conditions are RPCs)
CLASSIC = ("kill-master", "pause-master", "partition-master", "kill-slave", "restart-all", "rolling-restart")


@dataclass
class Fault:
    view: ClusterView
    rng: random.Random
    lease_s: float  # the master lease
    etcd_lease_s: float  # the controller leader key's lease (etcd store)
    epoch0: int
    log: Callable[[str], None]
    events: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    takeover_s: float | None = None  # a controller leader lost: until another leads
    extra: dict[str, Any] = field(default_factory=dict)  # drill-specific report fields

    def note(self, text: str) -> None:
        self.events.append(text)
        self.log(f"  {text}")

    def expect(self, ok: bool, text: str) -> None:
        if not ok:
            self.violations.append(text)
            self.log(f"  VIOLATION: {text}")

    def new_epoch(self) -> bool:
        return self.view.epoch() > self.epoch0

    def elected(self) -> None:
        poll_until(self.new_epoch, 10 * self.lease_s + 30, "an election", every_s=POLL_S)
        self.note(f"elected {self.view.master()}")

    def back_as_slave(self, m: str, timeout_s: float, what: str) -> None:
        poll_until(lambda: self.view.role_of(m) == "slave", timeout_s, f"{m} {what}", every_s=POLL_S)


def inject_classic(name: str, f: Fault) -> None:
    """The brokers' drills: the master killed, paused or cut off, a slave
    killed, every broker killed or restarted in turn."""
    view, rng, lease_s = f.view, f.rng, f.lease_s
    slaves_before = [n for n in view.brokers() if n != view.master()]
    if name == "kill-master":
        m = view.master()
        view.signal(m, signal.SIGKILL)
        f.note(f"SIGKILL {m}")
        f.elected()
        time.sleep(rng.uniform(0.5, 2.0) * lease_s)  # the schedule: how long it stays down
        view.start(m)
        f.back_as_slave(m, 30, "rejoining as a slave")
        f.note(f"restarted {m}: slave")
    elif name == "pause-master":
        m = view.master()
        view.signal(m, signal.SIGSTOP)
        f.note(f"SIGSTOP {m}")
        f.elected()
        time.sleep(rng.uniform(0.5, 1.5) * lease_s)  # the schedule: how long it stays paused
        view.signal(m, signal.SIGCONT)
        f.note(f"SIGCONT {m}")
        f.back_as_slave(m, 30, "coming back fenced, as a slave")
        f.note(f"{m} is a slave")
    elif name == "partition-master":
        m = view.master()
        cut_ms = int(3 * lease_s * 1000)
        view.isolate(view.procs[m]["address"], cut_ms)
        f.note(f"cut {m} off from the controller for {cut_ms} ms")
        f.elected()
        f.back_as_slave(m, cut_ms / 1000 + 30, "rejoining as a slave")
        f.note(f"{m} is a slave")
    elif name == "kill-slave":
        s = rng.choice(slaves_before)
        view.signal(s, signal.SIGKILL)
        f.note(f"SIGKILL {s}")
        time.sleep(rng.uniform(1.0, 3.0) * lease_s)
        view.start(s)
        poll_until(view.all_in_sync, 60, f"{s} back in sync", every_s=POLL_S)
        f.note(f"restarted {s}: in sync")
    elif name == "restart-all":
        names = view.brokers()
        for n in names:
            view.signal(n, signal.SIGKILL)
        f.note(f"SIGKILL {', '.join(names)}")
        poll_until(lambda: not any(view.alive(n) for n in names), 10, "every broker exiting", every_s=POLL_S)
        time.sleep(rng.uniform(0.2, 1.0) * lease_s)
        for n in rng.sample(names, len(names)):
            view.start(n)
        f.note("restarted every broker")
        poll_until(view.all_in_sync, 60 + 10 * lease_s, "a master with every slave in sync", every_s=POLL_S)
        f.note(f"master {view.master()}")
    elif name == "rolling-restart":
        for n in rng.sample(view.brokers(), len(view.brokers())):
            view.signal(n, signal.SIGTERM)
            poll_until(functools.partial(_stopped, view, n), 30, f"{n} stopping", every_s=POLL_S)
            view.start(n)
            poll_until(view.all_in_sync, 60 + 10 * lease_s, f"{n} back in sync", every_s=POLL_S)
            f.note(f"restarted {n}")
    else:
        raise ValueError(f"not a broker drill: {name}")


def _stopped(view: ClusterView, name: str) -> bool:
    return not view.alive(name)
