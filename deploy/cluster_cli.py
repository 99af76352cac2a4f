"""`tailrace cluster ...`'s arguments and output (deploy/cluster.py does the work)."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from deploy.cluster import STATE, down, signal_process, start_process, status, up
from deploy.topology import resolve_topology


def add_arguments(p: Any) -> None:
    sub = p.add_subparsers(dest="cluster_command", required=True)
    u = sub.add_parser("up", help="start a cluster in the background")
    u.add_argument("--topology", default=None, help="file, or a shipped name (local-1m-2s, local-2g)")
    u.add_argument("--dir", type=Path, default=Path(".tailrace"))
    u.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="for every broker")
    u.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext, no accounts (loopback only; for baselines): the default makes a CA and accounts",
    )
    d = sub.add_parser("down", help="stop every process (SIGTERM, then SIGKILL)")
    d.add_argument("--dir", type=Path, default=Path(".tailrace"))
    s = sub.add_parser("status", help="role, health, offsets, lag per process")
    s.add_argument("--dir", type=Path, default=Path(".tailrace"))
    s.add_argument("--json", action="store_true")
    s.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C (--json: a line each)")
    s.add_argument("--interval-s", type=float, default=2.0, help="--watch: seconds between refreshes")
    s.add_argument("--count", type=int, default=0, help="--watch: stop after this many (0: never)")
    m = sub.add_parser(
        "migrate-controller", help="move the file controller's epochs to etcd and restart it there"
    )
    m.add_argument("--dir", type=Path, default=Path(".tailrace"))
    m.add_argument("--etcd", required=True, help="comma-separated http(s)://HOST:PORT of the etcd members")
    for verb in ("kill", "stop", "start"):
        v = sub.add_parser(verb, help=f"{verb} one process")
        v.add_argument("name")
        v.add_argument("--dir", type=Path, default=Path(".tailrace"))


def run(args: Any) -> int:
    cmd = args.cluster_command
    if cmd == "up":
        state = up(resolve_topology(args.topology), args.dir, args.set, insecure=args.insecure)
        for p in state["processes"]:
            print(f"{p['name']:<16} {p['role']:<10} {p['address']:<22} pid {p['pid']}  log {p['log']}")
        print(f"cluster up: {len(state['processes'])} processes; state in {args.dir / STATE}")
        if state.get("profile"):
            print(f"TLS and accounts on; clients: export TAILRACE_PROFILE={state['profile']}")
        if state.get("console_url"):
            print(
                f"web console: {state['console_url']} (sign in with an admin account: see client.toml)"
                if state.get("secure")
                else f"web console: {state['console_url']}"
            )
        if state.get("rocketmq_endpoints"):
            print(f"RocketMQ 5 clients (tailrace proxy): {';'.join(state['rocketmq_endpoints'])}")
        return 0
    if cmd == "down":
        names = down(args.dir)
        print(f"cluster down: stopped {', '.join(names) if names else 'nothing (no cluster)'}")
        return 0
    if cmd == "status":
        if args.watch:
            return watch_status(args.dir, args.json, args.interval_s, args.count)
        st = status(args.dir)
        print(json.dumps(st) if args.json else "\n".join(status_lines(st)))
        return 0
    if cmd == "migrate-controller":
        from deploy.cluster_migrate import migrate_controller

        out = migrate_controller(args.dir, [e.strip() for e in args.etcd.split(",") if e.strip()])
        print(json.dumps(out))
        return 0
    if cmd == "kill":
        signal_process(args.dir, args.name, signal.SIGKILL)
        return 0
    if cmd == "stop":
        signal_process(args.dir, args.name, signal.SIGTERM)
        return 0
    start_process(args.dir, args.name)
    return 0


def status_lines(st: dict[str, Any]) -> list[str]:
    """`cluster status` as text: a line per process, then the controller's view."""
    lines = []
    for r in st["processes"]:
        extra = (
            ""
            if r["role"] == "etcd"
            else f" controller={r.get('controller', '-')}"
            if r["role"] == "nameserver"
            else (
                f" max_offset={r.get('max_offset')} lag={r.get('lag_bytes')}"
                f" in_sync={r.get('in_sync')} redirects={r.get('redirects')}"
            )
        )
        health = "healthy" if r["healthy"] else "DOWN"
        lines.append(f"{r['name']:<16} {r['role']:<10} {health:<8} {r['address']}{extra}")
    if "controller_leader" in st:
        lines.append(f"controller leader: {st['controller_leader'] or 'none'}")
    for group, g in st.get("controller", {}).items():
        if isinstance(g, dict):
            lines.append(
                f"controller: {group} epoch {g['epoch']} master {g['master_id']} "
                f"in_sync={g['in_sync']} lease_left_ms={g['lease_left_ms']}: {g['status']}"
            )
    return lines


CLEAR = "\x1b[H\x1b[J"  # cursor home, clear to the end of the screen


def watch_status(directory: Path, as_json: bool, interval_s: float, count: int) -> int:
    """`cluster status --watch`: the status again every `interval_s`, over
    the last one on a terminal (a timestamped block each when piped; a JSON
    line each with --json), until Ctrl-C or `count` refreshes."""
    if interval_s <= 0 or count < 0:
        print("tailrace cluster status: --interval-s > 0, --count >= 0", file=sys.stderr)
        return 2
    tty = sys.stdout.isatty()
    shown = 0
    try:
        while True:
            st = status(directory)
            if as_json:
                print(json.dumps({"t": round(time.time(), 3), **st}), flush=True)
            else:
                head = (
                    f"{time.strftime('%H:%M:%S')}  cluster {directory} (every {interval_s:g} s, Ctrl-C stops)"
                )
                text = "\n".join([head, *status_lines(st)])
                print(f"{CLEAR}{text}" if tty else f"{text}\n", flush=True)
            shown += 1
            if count and shown >= count:
                return 0
            time.sleep(interval_s)
    except KeyboardInterrupt:
        return 0
