"""The controller's drills, seeded, in a row; and master failover with the
etcd store against the file store.

    tailrace bench ha-drills [--runs N] [--seed S] [--drills a,b] [--failover-runs M] [--out FILE]

Part 1: each of the HA drills (deploy/drill_ha.py: kill-controller,
pause-controller, etcd-member-down, etcd-quorum-lost,
kill-master-and-controller) `--runs` times on local-ha with seeds S, S+1,
...; one table row per run (acknowledged, lost, duplicated, the controller
takeover, the longest send stall, the failover time, epochs, controller
leaders, violations) and a summary per drill.

Part 2: `kill-master` `--failover-runs` times on local-ha (etcd store, three
controllers) and as often on local-failover (file store, one controller)
tuned to local-ha's timings (lease_ms, controller_heartbeat_ms), alternating,
in the same run: the failover time of each (SIGKILL to the first send
acknowledged in the new epoch) and the ratio of the medians.

Runs one drill at a time; every line is printed (and appended to `--out`)
as it is known, so a long run can be watched and an interrupted one keeps
what it had.
"""

from __future__ import annotations

import argparse
import statistics
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.drill import DrillOptions, default_duration, run_drill
from deploy.drill_ha import HA
from deploy.topology import load_topology, resolve_topology

COLUMNS = (
    ("drill", 26), ("seed", 5), ("ack", 6), ("lost", 4), ("dup", 5), ("takeover_s", 10),
    ("stall_s", 7), ("failover_s", 10), ("epochs", 7), ("controllers", 22), ("ok", 5), ("secs", 5),
)  # fmt: skip


EXTRA = (  # etcd-quorum-lost's phases, shown under its row
    *("phase_a_stall_s", "phase_a_controller"),
    *("lease_refused_after_s", "sends_resumed_after_s", "phase_b_stall_s"),
)


def _cell(v: Any) -> str:
    if isinstance(v, list):
        return "->".join(str(x) for x in v)
    return "-" if v is None else str(v)


def _row(r: dict[str, Any]) -> str:
    values = (
        r["drill"], r["seed"], r.get("acknowledged"), r.get("lost"), r.get("duplicated"),
        r.get("controller_takeover_s"), r.get("max_send_stall_s"), r.get("failover_time_s"),
        r.get("epochs"), r.get("controller_leaders"), r.get("ok"), r.get("seconds"),
    )  # fmt: skip
    line = " ".join(_cell(v).ljust(w) for v, (_, w) in zip(values, COLUMNS, strict=True))
    extra = [f"{k}={r[k]}" for k in EXTRA if r.get(k) is not None]
    line += f"\n    {' '.join(extra)}" if extra else ""
    return line + "".join(f"\n    VIOLATION: {v}" for v in r.get("violations", []))


def _one(name: str, topology: str, seed: int, **tuning: Any) -> dict[str, Any]:
    try:
        return run_drill(
            DrillOptions(name, resolve_topology(topology), seed, default_duration(name), log=lambda s: None,
                         **tuning)
        )  # fmt: skip
    except Exception as exc:  # a drill that failed to run is a row too
        tail = traceback.format_exc().strip().splitlines()[-1]
        return {"drill": name, "seed": seed, "ok": False, "violations": [f"drill failed: {exc!r} ({tail})"]}


def _summary(rows: list[dict[str, Any]]) -> str:
    def most(key: str) -> Any:
        vals = [r[key] for r in rows if r.get(key) is not None]
        return max(vals) if vals else None

    def total(key: str) -> int:
        return sum(int(r.get(key, 0)) for r in rows)

    return (
        f"  {rows[0]['drill']}: {sum(bool(r['ok']) for r in rows)}/{len(rows)} ok, "
        f"acknowledged {total('acknowledged')}, lost {total('lost')}, "
        f"duplicated {total('duplicated')}, max stall {most('max_send_stall_s')} s, "
        f"max takeover {most('controller_takeover_s')} s, max failover {most('failover_time_s')} s"
    )


def _failover(runs: int, seed: int, say: Callable[[str], None]) -> bool:
    ha = load_topology(resolve_topology("local-ha"))
    tuning = {"lease_ms": ha.lease_ms, "controller_heartbeat_ms": ha.controller_heartbeat_ms}
    say(
        f"\nmaster failover (kill-master), etcd store (local-ha) against the file store (local-failover "
        f"tuned to lease_ms={ha.lease_ms}, controller_heartbeat_ms={ha.controller_heartbeat_ms})"
    )
    times: dict[str, list[float]] = {"local-ha": [], "local-failover": []}
    ok = True
    for i in range(runs):
        for topology in times:
            r = _one("kill-master", topology, seed + i, **tuning)
            r["drill"] = f"kill-master@{topology}"
            say(_row(r))
            ok = ok and bool(r["ok"])
            if r.get("failover_time_s") is not None:
                times[topology].append(float(r["failover_time_s"]))
    med = {k: statistics.median(v) if v else None for k, v in times.items()}
    for k, v in times.items():
        say(f"  {k}: failover_time_s {v}: median {med[k]}, max {max(v) if v else None}")
    if med["local-ha"] and med["local-failover"]:
        say(f"  ratio of medians etcd/file: {med['local-ha'] / med['local-failover']:.2f}")
    return ok


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=10, help="seeded runs of each HA drill")
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--drills", default=",".join(HA), help="comma-separated (default: every HA drill)")
    p.add_argument("--failover-runs", type=int, default=3, help="kill-master runs per store (0: none)")
    p.add_argument("--out", type=Path, default=None, help="also append every line to this file")


def run(args: argparse.Namespace) -> int:
    out = args.out
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        print(line, flush=True)
        if out is not None:
            with open(out, "a") as f:
                f.write(line + "\n")

    say(" ".join(name.ljust(w) for name, w in COLUMNS))
    summaries, ok = [], True
    for name in [d for d in args.drills.split(",") if d]:
        rows = []
        for i in range(args.runs):
            r = _one(name, "local-ha", args.seed + i)
            rows.append(r)
            say(_row(r))
            ok = ok and bool(r["ok"])
        if rows:
            summaries.append(_summary(rows))
            say(summaries[-1])
    say("\nsummary")
    for s in summaries:
        say(s)
    if args.failover_runs:
        ok = _failover(args.failover_runs, args.seed, say) and ok
    return 0 if ok else 1
