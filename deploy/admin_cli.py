"""The operator's commands (issue 19): `tailrace topic | group | message`.

    tailrace group list | describe GROUP [--topic T]
    tailrace group reset-offset GROUP --topic T (--to-earliest | --to-latest |
        --to-offset N | --to-time TIME) [--dry-run] [--force] [--skip-unreachable]
    tailrace topic create | list | describe T | delete T [--dry-run] [--force]
    tailrace message get --id ID [--topic T] | find --topic T --key K

Each goes through the nameservers (`--namesrv`, the profile's, or `--dir`
of a cluster `tailrace cluster up` started: its client profile), or to one
broker (`--broker`), signs as the profile's account (the BrokerAdmin RPCs
need admin), and prints a table, or one JSON document with `--json`. The
work is consumer/admin_ops.py's; this module parses and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consumer import Admin, admin_topics
from consumer import admin_ops as ops
from consumer.profile import Profile
from deploy.client_cli import _run_with_target, _target

Printer = Callable[[dict[str, Any]], None]


def _common(p: argparse.ArgumentParser) -> None:
    _target(p)
    p.add_argument(
        "--dir", type=Path, default=None, help="a cluster `tailrace cluster up` started: its client profile"
    )
    p.add_argument("--json", action="store_true")


def _from_dir(args: argparse.Namespace) -> None:
    """`--dir`: the cluster's client profile, or its nameservers when it has
    none (an --insecure cluster), unless the target was given otherwise."""
    if getattr(args, "dir", None) is None or args.broker or args.namesrv or args.profile:
        return
    from deploy.cluster import read_state

    state = read_state(args.dir)
    if state is None:
        raise SystemExit(f"tailrace {args.command}: no cluster in {args.dir} (tailrace cluster up first)")
    if state.get("profile"):
        args.profile = state["profile"]
    else:
        ns = [p["address"] for p in state["processes"] if p["role"] == "nameserver"]
        args.namesrv = ",".join(ns)


def _admin_command(fn: Callable[[argparse.Namespace, Admin], dict[str, Any]], show: Printer) -> Any:
    @_run_with_target
    def run(args: argparse.Namespace, profile: Profile, broker: str | None, namesrv: str | None) -> int:
        with Admin(broker, namesrv=namesrv, profile=profile) as admin:
            out = fn(args, admin)
        if args.json:
            print(json.dumps(out), flush=True)
        else:
            show(out)
        return exit_status(out)

    def with_dir(args: argparse.Namespace) -> int:
        _from_dir(args)
        return int(run(args))

    return with_dir


def exit_status(out: dict[str, Any]) -> int:
    """1 for a reset that did not reach every broker group, or a command done
    only in part (`ok` false; the output says where), else 0."""
    return 1 if out.get("not_reset") or not out.get("ok", True) else 0


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> None:
    """Columns (heading, key), each as wide as its widest cell."""
    cells = [[h for h, _k in cols]] + [
        ["-" if r.get(k) is None else str(r.get(k)) for _h, k in cols] for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())


def _when(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def _unreachable(out: dict[str, Any]) -> None:
    for address, why in sorted(out.get("unreachable", {}).items()):
        print(f"(not answering: {address}: {why})", file=sys.stderr)


# ---- group ----------------------------------------------------------------------


def add_group_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="group_command", required=True)
    ls = sub.add_parser("list", help="every consumer group: topics, members, total lag")
    _common(ls)
    d = sub.add_parser(
        "describe", help="per queue: offsets, lag, who holds it, read from master or slave and why"
    )
    d.add_argument("group")
    d.add_argument("--topic", default="")
    _common(d)
    r = sub.add_parser("reset-offset", help="move a group's committed offsets on a topic")
    r.add_argument("group")
    r.add_argument("--topic", required=True)
    to = r.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true")
    to.add_argument("--to-latest", action="store_true")
    to.add_argument("--to-offset", type=int, metavar="N", help="every queue (held to its range)")
    to.add_argument(
        "--to-time",
        metavar="TIME",
        help="first message stored at or after it: ISO 8601 (no zone: local time) or yyyy-MM-dd#HH:mm:ss:SSS",
    )
    r.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    r.add_argument(
        "--force",
        action="store_true",
        help="although members are live or the group popped lately (pop_live_ms)",
    )
    r.add_argument(
        "--skip-unreachable",
        action="store_true",
        help="reset the broker groups that answer although others cannot be reached (theirs stay as is)",
    )
    _common(r)


def _group(args: argparse.Namespace, admin: Admin) -> dict[str, Any]:
    cmd = args.group_command
    if cmd == "list":
        out = ops.describe_groups(admin)
        return {"groups": out["groups"], "unreachable": out["unreachable"]}
    if cmd == "describe":
        out = ops.describe_groups(admin, args.group, args.topic)
        return {"group": args.group, **out}
    if args.to_earliest:
        target, offset, at = "earliest", 0, 0
    elif args.to_latest:
        target, offset, at = "latest", 0, 0
    elif args.to_offset is not None:
        target, offset, at = "offset", args.to_offset, 0
    else:
        target, offset, at = "time", 0, ops.parse_time(args.to_time)
    return ops.reset_offset(
        admin, args.group, args.topic, target, offset, at, args.dry_run, args.force, args.skip_unreachable
    )


def _show_group(out: dict[str, Any]) -> None:
    if "plan" in out:
        _show_reset(out)
        return
    if "queues" not in out:
        _table(
            out["groups"],
            [("GROUP", "group"), ("TOPICS", "topics"), ("QUEUES", "queues"), ("LAG", "lag"),
             ("LAG_BYTES", "lag_bytes"), ("MEMBERS", "members"), ("POP_INFLIGHT", "pop_inflight")],
        )  # fmt: skip
    else:
        if not out["queues"]:
            print(f"no queue of group {out['group']!r} is known to any broker")
        rows = [
            {
                **q,
                "served": f"{q['read_from']}({q['read_broker_id']})" if q["read_from"] else "-",
                "last": _when(q["last_pull_ms"]),
                "lag_b": ("~" if q["lag_bytes_estimated"] else "") + str(q["lag_bytes"]),
            }
            for q in out["queues"]
        ]
        _table(
            rows,
            [("TOPIC", "topic"), ("BROKER", "broker_name"), ("QUEUE", "queue_id"), ("MAX", "max_offset"),
             ("COMMITTED", "committed_offset"), ("LAG", "lag"), ("LAG_BYTES", "lag_b"), ("MEMBER", "member"),
             ("READ_FROM", "served"), ("REASON", "reason"), ("LAST_PULL", "last"), ("POP", "pop_inflight")],
        )  # fmt: skip
    _unreachable(out)


def _show_reset(out: dict[str, Any]) -> None:
    verb = (
        "plan (dry run; nothing changed)" if out["dry_run"] else "reset" if out["applied"] else "PARTLY reset"
    )
    when = f" {out['instant']['local']} (UTC {out['instant']['utc']})" if "instant" in out else ""
    print(f"{out['group']} on {out['topic']}: {verb} to {out['target']}{when}")
    rows = [  # a pop group's cursor and messages in flight (dropped by the reset)
        {**r, "done": "yes" if r["applied"] else "no"}
        | ({"pop": r["pop_cursor"], "inflight": r["pop_inflight"]} if r.get("popped") else {})
        for r in out["plan"]
    ]
    _table(
        rows,
        [("BROKER", "broker_name"), ("QUEUE", "queue_id"), ("OLD", "old_offset"), ("NEW", "new_offset"),
         ("MIN", "min_offset"), ("MAX", "max_offset"), ("POP_CURSOR", "pop"), ("IN_FLIGHT", "inflight"),
         ("APPLIED", "done")],
    )  # fmt: skip
    for name, g in out["groups"].items():
        if g["status"] in ("failed", "unreachable"):
            print(f"broker group {name}: {g['status']}: {g['why']}", file=sys.stderr)
    if out["members"]:
        print(f"live members: {', '.join(out['members'])}")
    if out.get("last_pop_ms"):
        print(f"popped lately (pop consumers) on: {', '.join(out['last_pop_ms'])}")
    if out["not_reset"]:
        print(
            f"NOT reset on {', '.join(out['not_reset'])}; the other groups were. Run the same command again "
            "to finish: each group is planned again for the same target (one already there does not move).",
            file=sys.stderr,
        )


run_group = _admin_command(_group, _show_group)


# ---- topic ----------------------------------------------------------------------


def add_topic_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="topic_command", required=True)
    c = sub.add_parser("create", help="create a topic (on every master with --namesrv)")
    _common(c)
    c.add_argument("--topic", required=True)
    c.add_argument("--queues", type=int, default=8, help="queues per broker group")
    c.add_argument("--cluster", default=None, help="only this cluster's groups")
    c.add_argument(
        "--route-timeout-ms", type=int, default=30_000, help="--namesrv: how long to wait for the route"
    )
    ls = sub.add_parser("list", help="list topics")
    _common(ls)
    d = sub.add_parser("describe", help="routes, brokers, queue offsets and consumer groups of a topic")
    d.add_argument("name")
    _common(d)
    rm = sub.add_parser(
        "delete", help="delete a topic on every broker group's master (messages stay until retention)"
    )
    rm.add_argument("name")
    rm.add_argument("--dry-run", action="store_true", help="show what would go, change nothing")
    rm.add_argument("--force", action="store_true", help="a consumer group's %%RETRY%% or %%DLQ%% topic")
    rm.add_argument(
        "--route-timeout-ms", type=int, default=30_000, help="how long to wait for the routes to drop it"
    )
    _common(rm)


def _topic(args: argparse.Namespace, admin: Admin) -> dict[str, Any]:
    cmd = args.topic_command
    if cmd == "create":
        created = admin.create_topic(
            args.topic, args.queues, getattr(args, "cluster", None), args.route_timeout_ms / 1000
        )
        return {"topic": args.topic, "created": created}
    if cmd == "list":
        return {"topics": [{"name": n, "queues": q} for n, q in admin.list_topics().items()]}
    if cmd == "delete":
        return admin_topics.delete_topic(
            admin, args.name, args.dry_run, args.force, args.route_timeout_ms / 1000
        )
    return ops.describe_topic(admin, args.name)


def _show_deletion(out: dict[str, Any]) -> None:
    verb = "would delete (dry run; nothing changed)" if out["dry_run"] else "deleting"
    print(f"topic {out['topic']}: {verb}")
    for g in out["groups"]:
        what = g["outcome"].replace("_", " ")
        if "messages" in g:
            what += (
                f": {len(g['queues'])} queues, {g['messages']} messages (left in the log until retention), "
                f"{len(g['offsets'])} committed offsets, groups {', '.join(g['consumer_groups']) or '-'}, "
                f"{g['pop_inflight']} pop messages in flight"
            )
        error = f" ({g['error']})" if g["error"] else ""
        print(f"  {g['broker_name']}: {what}{error}")
    if out["routes_dropped"] is not None:
        print("routes: dropped" if out["routes_dropped"] else f"routes: {'; '.join(out['route_gaps'])}")
    if not out["ok"]:
        print(f"tailrace topic delete: {out['topic']} not deleted everywhere (see above)", file=sys.stderr)


def _show_topic(out: dict[str, Any]) -> None:
    if "dry_run" in out:
        _show_deletion(out)
    elif "created" in out:
        print(f"{out['topic']}: {'created' if out['created'] else 'unchanged'}")
    elif "topics" in out:
        for t in out["topics"]:
            print(f"{t['name']}\t{t['queues']}")
    else:
        print(f"topic {out['topic']}")
        for g in out["groups"]:
            brokers = ", ".join(
                f"{b['broker_id']}={b['address']}({b['role']}{'' if b['alive'] else ', down'})"
                for b in g["brokers"]
            )
            what = f"{g.get('messages', '?')} messages, perm {g['perm']}"
            print(f"  {g['broker_name']}: {what}; brokers {brokers}")
            for q in g.get("queues", []):
                print(f"    queue {q['queue_id']}: offsets {q['min_offset']}..{q['max_offset']}")
        for c in out["consumer_groups"]:
            print(f"  consumed by {c['group']}: lag {c['lag']}, members {', '.join(c['members']) or '-'}")


run_topic = _admin_command(_topic, _show_topic)


# ---- message --------------------------------------------------------------------


def add_message_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="message_command", required=True)
    g = sub.add_parser(
        "get", help="a message by id (native: <broker>@<offset>; else a RocketMQ id, with --topic)"
    )
    g.add_argument("--id", required=True)
    g.add_argument("--topic", default=None, help="for a RocketMQ client's message id")
    _common(g)
    f = sub.add_parser("find", help="messages with a key, from a bounded scan of the topic's newest entries")
    f.add_argument("--topic", required=True)
    f.add_argument("--key", required=True)
    f.add_argument("--max-scan", type=int, default=0, help="entries per queue, newest first (0: 10000)")
    f.add_argument("--max-messages", type=int, default=0, help="(0: 32)")
    _common(f)


def _message(args: argparse.Namespace, admin: Admin) -> dict[str, Any]:
    if args.message_command == "get":
        return ops.get_message(admin, args.id, args.topic)
    return ops.find_messages(admin, args.topic, args.key, args.max_scan, args.max_messages)


def _show_one(m: dict[str, Any]) -> None:
    print(f"{m['id']}  {m['topic']}/{m['queue_id']}@{m['queue_offset']}  stored {_when(m['store_ms'])}")
    print(f"  tags={m['tags']!r} keys={m['keys']!r} properties={m['properties']}")
    body = m.get("body", "(binary: see --json)")
    print(f"  body ({m['body_bytes']} bytes): {body[:200]}{'...' if len(body) > 200 else ''}")


def _show_message(out: dict[str, Any]) -> None:
    if "messages" not in out:
        _show_one(out)
        return
    for m in out["messages"]:
        _show_one(m)
    scope = "every queue to its oldest message" if out["complete"] else "the newest entries only (--max-scan)"
    print(f"{len(out['messages'])} found; scanned {out['scanned']} entries: {scope}")


run_message = _admin_command(_message, _show_message)
